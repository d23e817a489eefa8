"""Request limits (arpad/http.py, arpad/parsers.py): hostile bodies and ids are refusals, never 500s."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from arpad.http import MAX_JSON_DEPTH, JSONInputError, loads_json
from tests.factories import UserFactory, make_task

TOKEN_URL = "/api/v1/auth/token/"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


class TestLoadsJson:
    def test_nesting_up_to_the_limit_is_read_and_one_more_level_is_refused(self):
        assert loads_json(nested(MAX_JSON_DEPTH)) == eval(nested(MAX_JSON_DEPTH))  # noqa: S307 - a literal
        with pytest.raises(JSONInputError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            loads_json(nested(MAX_JSON_DEPTH + 1))
        with pytest.raises(JSONInputError, match="nested deeper"):
            loads_json('{"a": ' + nested(100_000) + "}")  # past the interpreter's recursion limit

    @pytest.mark.parametrize(("text", "message"), [("[NaN]", "NaN"), ("-Infinity", "-Infinity"), ("1e400", "1e400")])
    def test_numbers_json_cannot_hold_are_refused(self, text, message):
        with pytest.raises(JSONInputError, match=message):
            loads_json(text)


@pytest.mark.django_db
class TestTokenEndpoint:
    """Anonymous and throttled only per address: the cheapest place to send a hostile body."""

    @pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 100_000])
    def test_deep_nesting_is_400(self, depth):
        body = '{"username": ' + nested(depth) + ', "password": "x"}'
        response = APIClient().post(TOKEN_URL, body, content_type="application/json")
        assert response.status_code == 400
        assert "nested deeper than" in response.json()["detail"]

    def test_valid_credentials_still_get_a_token(self):
        UserFactory(username="scripted")
        response = APIClient().post(TOKEN_URL, {"username": "scripted", "password": "pw-for-tests-only"}, format="json")
        assert response.status_code == 200 and response.json()["token"]


def _routes(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


@pytest.mark.django_db
@pytest.mark.parametrize("big", [2**63, 2**64])
def test_every_route_answers_an_id_beyond_64_bits_without_a_500(project, manager, annotator, big):
    """Django's <int:> takes any number of digits; the raw SQL behind the permission checks
    used to pass them to the database (OverflowError on SQLite)."""
    make_task(project)
    failures = []
    for user in (manager, annotator):
        client = Client(raise_request_exception=False)
        client.force_login(user)
        for route in _routes(get_resolver().url_patterns):
            names = re.findall(r"<int:(\w+)>", route)
            for target in names:
                url = route
                for name in names:
                    url = url.replace(f"<int:{name}>", str(big if name == target else project.pk))
                url = "/" + re.sub(r"<(?:\w+:)?\w+>", "x", url)
                for method in (client.get, client.post):
                    status = method(url).status_code
                    if status >= 500:
                        failures.append(f"{user.username} {method.__name__.upper()} {url}: {status}")
    assert not failures, "\n".join(failures)
