"""A request that finds the database unreachable is answered 503 with Retry-After, not 500."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_an_unreachable_database_is_a_503_with_retry_after(project, manager, monkeypatch):
    from annotation import queue_sql

    def down(*args, **kwargs):
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(queue_sql, "project_with_role", down)
    client = APIClient()
    client.force_authenticate(manager)
    response = client.get(f"/api/v1/projects/{project.pk}/")
    assert response.status_code == 503 and response["Retry-After"] == "2"
    assert response.json()["code"] == "unavailable"
    client.force_login(manager)
    page = client.get(f"/projects/{project.pk}/tasks/")
    assert page.status_code == 503 and "unavailable" in page.content.decode()


def test_a_login_while_the_cache_is_unreachable_is_a_503_not_let_through(manager, settings):
    # A Redis cache on a port nothing listens on: the login throttle cannot count.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:9/1"}}  # fmt: skip
    response = APIClient().post("/accounts/login/", {"username": manager.username, "password": "wrong"})
    assert response.status_code == 503 and response["Retry-After"] == "2"


def test_other_errors_still_reach_the_500_handler(project, manager, monkeypatch):
    from annotation import queue_sql

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(queue_sql, "project_with_role", bug)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(manager)
    assert client.get(f"/api/v1/projects/{project.pk}/").status_code == 500
