"""The server-rendered pages: login, project list, and the security headers they carry."""

from __future__ import annotations

import pytest

from annotation.models import Membership, Role


@pytest.mark.django_db
def test_project_list_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_project_list_shows_only_the_users_projects(client, project, annotator, other_project):
    client.force_login(annotator)
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert project.name in body
    assert other_project.name not in body


@pytest.mark.django_db
def test_project_names_are_escaped(client, project, annotator):
    project.name = "<script>alert(1)</script>"
    project.save()
    client.force_login(annotator)
    body = client.get("/").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


@pytest.mark.django_db
def test_pages_carry_a_strict_content_security_policy(client):
    response = client.get("/accounts/login/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "object-src 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_login_form_posts_need_csrf(project):
    from django.test import Client

    from tests.factories import UserFactory

    UserFactory(username="someone")
    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/accounts/login/", {"username": "someone", "password": "pw-for-tests-only"})
    assert response.status_code == 403
    assert Membership.objects.filter(role=Role.MANAGER).count() == 0
