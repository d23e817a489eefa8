"""Answers that carry tasks, judgements, gold answers or tokens are never cached (issue 13, finding 7).

A browser or proxy cache must not keep them: on a shared computer the next person's back
button, or a proxy answering another user, would show them.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.exports.helpers import add_task, export, judge

pytestmark = pytest.mark.django_db
API = "/api/v1"


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def world(project, manager, annotator, outsider):
    """A judged task, gold on it, a live lease of the annotator's, and a finished export."""
    project.allow_ties = True
    project.save()
    judged, (a, b) = add_task(project)
    judged.is_gold = True
    judged.gold_tiers = [[a], [b]]
    judged.save()
    for n in range(3):
        judge(judged, f"voter{n}", [[a], [b]])
    add_task(project)
    snapshot = export(project)
    return project, judged, snapshot


def test_every_answer_with_judgements_gold_or_tokens_is_no_store(world, manager, annotator, outsider):
    project, judged, snapshot = world
    base = f"{API}/projects/{project.pk}"
    claim = api(annotator).post(f"{base}/claim/")
    assignment = claim.json()["assignment"]
    ranking = [[rid] for rid in assignment["display_order"]]
    answers = {
        "claim": claim,
        "submit": api(annotator).post(
            f"{API}/assignments/{assignment['id']}/submit/",
            {"ranking": ranking, "client_token": str(uuid.uuid4())},
            format="json",
        ),
        "judgements (manager)": api(manager).get(f"{base}/judgements/"),
        "judgements (annotator)": api(annotator).get(f"{base}/judgements/"),
        "tasks": api(manager).get(f"{base}/tasks/"),
        "task with gold and judgements": api(manager).get(f"{base}/tasks/{judged.pk}/"),
        "task (annotator)": api(annotator).get(f"{base}/tasks/{assignment['task_id']}/"),
        "export file": api(manager).get(f"{base}/exports/{snapshot.pk}/files/pairs.jsonl"),
        "token": APIClient().post(
            f"{API}/auth/token/", {"username": "annotator", "password": "pw-for-tests-only"}, format="json"
        ),
        # Refusals too: they may still say what exists.
        "claim (outsider)": api(outsider).post(f"{base}/claim/"),
        "resubmit (annotator)": api(annotator).post(
            f"{API}/assignments/{assignment['id']}/submit/",
            {"ranking": ranking[::-1], "client_token": str(uuid.uuid4())},
            format="json",
        ),
    }
    browser = Client()
    browser.force_login(manager)
    answers["item review page"] = browser.get(f"/projects/{project.pk}/tasks/{judged.pk}/")

    expected = {
        "claim": 200,
        "submit": 201,
        "export file": 200,
        "token": 200,
        "claim (outsider)": 404,
        "resubmit (annotator)": 409,
    }
    for name, response in answers.items():
        assert response.status_code == expected.get(name, 200), (name, response.status_code)
        assert response.get("Cache-Control") == "no-store", name


def test_pages_without_such_data_keep_their_caching(world, manager):
    """The header is where it is needed, not everywhere: the project list of the API has none."""
    assert "no-store" not in (api(manager).get(f"{API}/projects/").get("Cache-Control") or "")
