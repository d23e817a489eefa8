"""API tokens (issue 13, finding 7): they expire, can be rotated and revoked, and survive a web logout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from arpad.authentication import TokenAuthentication

TOKEN = "/api/v1/auth/token/"
PASSWORD = "pw-for-tests-only"

pytestmark = pytest.mark.django_db


def obtain(username: str = "annotator", **extra) -> dict:
    response = APIClient().post(TOKEN, {"username": username, "password": PASSWORD, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def script(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def age(key: str, days: float) -> None:
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(days=days))


def test_a_token_says_when_it_expires(annotator, settings):
    body = obtain()
    issued = Token.objects.get(key=body["token"]).created
    assert parse_datetime(body["expires_at"]) == issued + timedelta(days=settings.ARPAD_API_TOKEN_MAX_AGE_DAYS)
    assert settings.ARPAD_API_TOKEN_MAX_AGE_DAYS == 30
    assert obtain()["token"] == body["token"]  # asked again: the same live token


def test_an_expired_token_is_refused_and_a_new_one_issued(annotator, project):
    key = obtain()["token"]
    age(key, 29.9)
    assert script(key).get("/api/v1/projects/").status_code == 200
    age(key, 30.1)
    refused = script(key).get("/api/v1/projects/")
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]
    fresh = obtain()["token"]
    assert fresh != key and not Token.objects.filter(key=key).exists()
    assert script(fresh).get("/api/v1/projects/").status_code == 200


def test_the_check_is_still_one_query(annotator, django_assert_num_queries):
    key = obtain()["token"]
    with django_assert_num_queries(1):
        user, _ = TokenAuthentication().authenticate_credentials(key)
    assert user == annotator
    age(key, 31)
    with django_assert_num_queries(1), pytest.raises(AuthenticationFailed, match="expired"):
        TokenAuthentication().authenticate_credentials(key)


def test_rotating_gives_a_new_token_and_the_old_one_stops_working(annotator):
    old = obtain()["token"]
    new = obtain(rotate=True)["token"]
    assert new != old
    assert script(old).get("/api/v1/projects/").status_code == 401
    assert script(new).get("/api/v1/projects/").status_code == 200


def test_rotating_takes_the_password(annotator):
    key = obtain()["token"]
    response = script(key).post(TOKEN, {"rotate": True}, format="json")
    assert response.status_code == 400
    assert Token.objects.get(user=annotator).key == key


def test_revoking_by_token(annotator):
    key = obtain()["token"]
    client = script(key)
    assert client.delete(TOKEN).status_code == 204
    assert not Token.objects.filter(user=annotator).exists()
    assert client.get("/api/v1/projects/").status_code == 401


def test_revoking_from_the_browser_needs_the_csrf_token(annotator):
    obtain()
    browser = APIClient(enforce_csrf_checks=True)
    assert browser.login(username="annotator", password=PASSWORD)
    assert browser.delete(TOKEN).status_code == 403
    assert Token.objects.filter(user=annotator).exists()
    browser.get("/accounts/login/")  # sets the CSRF cookie
    response = browser.delete(TOKEN, HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value)
    assert response.status_code == 204
    assert browser.delete(TOKEN, HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value).status_code == 404


def test_revoking_needs_a_caller(db):
    assert APIClient().delete(TOKEN).status_code in {401, 403}


def test_a_web_logout_leaves_the_scripts_token_alone(annotator):
    key = obtain()["token"]
    browser = Client()
    assert browser.login(username="annotator", password=PASSWORD)
    assert browser.post("/accounts/logout/").status_code == 302
    assert script(key).get("/api/v1/projects/").status_code == 200
