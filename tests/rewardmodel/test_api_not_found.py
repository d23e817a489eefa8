"""Missing versions and runs answer in the platform's refusal shape, saying what to do, not Django's words."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from exports.models import ExportSnapshot
from rewardmodel.models import RewardModelRun, RewardModelVersion

pytestmark = pytest.mark.django_db

ITEMS = {"items": [{"prompt": "x", "response": "y"}]}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def url(project, rest: str = "") -> str:
    return f"/api/v1/projects/{project.pk}/reward-models/{rest}"


def assert_refusal(response, *, code: str, field: str | None, says: str) -> None:
    assert response.status_code == 404, response.content
    body = response.json()
    assert set(body) == {"detail", "code", "field"}, body
    assert body["code"] == code and body["field"] == field, body
    assert says in body["detail"], body
    assert "matches the given query" not in body["detail"]


def test_scoring_with_no_version_yet_says_to_train_one(project, manager):
    response = client_for(manager).post(url(project, "active/score/"), ITEMS, format="json")
    assert_refusal(response, code="no_active_version", field=None, says="train one first")


def test_scoring_with_no_active_version_says_to_activate_one(project, manager):
    snapshot = ExportSnapshot.objects.create(project=project)
    run = RewardModelRun.objects.create(project=project, snapshot=snapshot, base_model="b", output_dir="rm/r")
    RewardModelVersion.objects.create(
        project=project, number=1, run=run, snapshot=snapshot, base_model="b", model_dir="rm/r/model"
    )
    response = client_for(manager).post(url(project, "active/score/"), ITEMS, format="json")
    assert_refusal(response, code="no_active_version", field=None, says="activate one")


@pytest.mark.parametrize(
    ("method", "rest"),
    [("post", "3/score/"), ("get", "3/"), ("post", "3/activate/")],
)
def test_a_missing_version_number(project, manager, method, rest):
    response = getattr(client_for(manager), method)(url(project, rest), ITEMS, format="json")
    assert_refusal(response, code="no_such_version", field="number", says="no reward-model version 3")


@pytest.mark.parametrize(("method", "rest"), [("get", "runs/99/"), ("post", "runs/99/cancel/")])
def test_a_missing_run(project, manager, method, rest):
    response = getattr(client_for(manager), method)(url(project, rest))
    assert_refusal(response, code="no_such_run", field="run_id", says="no run 99")


@pytest.mark.parametrize(
    ("method", "rest"), [("post", "active/score/"), ("post", "3/score/"), ("get", "3/"), ("get", "runs/99/")]
)
def test_outsiders_still_find_no_project(project, outsider, annotator, method, rest):
    # The project does not exist for an outsider, so nothing is said about its versions.
    response = getattr(client_for(outsider), method)(url(project, rest), ITEMS, format="json")
    assert response.status_code == 404
    assert response.json()["detail"] == "No such project."
    # An annotator of the project is refused before any lookup.
    assert getattr(client_for(annotator), method)(url(project, rest), ITEMS, format="json").status_code == 403
