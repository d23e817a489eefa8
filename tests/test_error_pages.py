"""Refusals Django makes before any view runs take the API's shape under /api/, and stay pages elsewhere."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_an_unknown_api_url_is_a_json_404_and_a_page_stays_html():
    response = Client().get("/api/v1/nothing-here/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    page = Client().get("/nothing-here/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_too_many_fields_is_a_json_400(project, manager):
    client = Client()
    client.force_login(manager)
    query = "&".join(f"exclude_annotators={i}" for i in range(1500))
    response = client.get(f"/api/v1/projects/{project.pk}/exports/preview/?{query}")
    assert response.status_code == 400 and response.json()["code"] == "bad_request"
