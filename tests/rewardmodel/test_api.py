"""The reward-model API: personas on every endpoint, run creation, cancel, versions, scoring, compare."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from exports.models import ExportSnapshot, ExportState
from rewardmodel import jobs
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunState
from tests.rewardmodel import test_services as shared
from tests.rewardmodel.test_services import FAST, rule_project, rule_snapshot

# Fixtures shared with the service tests.
sent = shared.sent
tiny_base = shared.tiny_base
tiny = shared.tiny

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    from rewardmodel.services import scorer_cache

    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    scorer_cache.clear()
    return settings.ARTIFACT_ROOT


@pytest.fixture
def trained(project, manager, tiny_base):
    """The persona project, judged by the rule, exported, with one trained version."""
    rule_project(24, project=project)
    snapshot = rule_snapshot(project)
    run = RewardModelRun.objects.create(
        project=project, snapshot=snapshot, base_model=str(tiny_base), config=FAST, output_dir="rewardmodels/t/run"
    )
    version = jobs.reward_model_run_execute(run_id=run.pk, worker="w")
    assert version is not None, RewardModelRun.objects.get(pk=run.pk).error
    return snapshot, run, version


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def url(project, rest: str = "") -> str:
    return f"/api/v1/projects/{project.pk}/reward-models/{rest}"


def test_personas_on_every_endpoint(project, manager, annotator, outsider, trained):
    _, run, version = trained
    endpoints = [
        ("get", url(project), None),
        ("get", url(project, "runs/"), None),
        ("post", url(project, "runs/"), {}),
        ("get", url(project, f"runs/{run.pk}/"), None),
        ("post", url(project, f"runs/{run.pk}/cancel/"), None),
        ("get", url(project, f"{version.number}/"), None),
        ("post", url(project, f"{version.number}/activate/"), None),
        ("post", url(project, f"{version.number}/score/"), {"items": [{"prompt": "x", "response": "y"}]}),
        ("post", url(project, "active/score/"), {"items": [{"prompt": "x", "response": "y"}]}),
        ("get", url(project, f"compare/?a={version.number}&b={version.number}"), None),
    ]
    for method, path, body in endpoints:
        assert getattr(client_for(outsider), method)(path, body, format="json").status_code == 404, path
        assert getattr(client_for(annotator), method)(path, body, format="json").status_code == 403, path
        assert getattr(APIClient(), method)(path, body, format="json").status_code in (401, 403), path
    assert RewardModelRun.objects.count() == 1  # nobody but the manager created anything


def test_manager_creates_a_run_from_the_latest_snapshot(project, manager, trained, tiny, sent):
    snapshot, _, version = trained
    client = client_for(manager)
    response = client.post(
        url(project, "runs/"),
        {"base_model": tiny, "config": {"epochs": 2, "margin": True}, "parent_version": version.number},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "queued" and body["snapshot"] == snapshot.pk and body["parent_version"] == version.number
    assert body["config"]["epochs"] == 2 and body["trigger"] == "api"
    listed = client.get(url(project, "runs/")).json()
    assert [r["id"] for r in listed["results"]][0] == body["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {"epochs": -1}}, "config.epochs"),
        ({"config": {"nope": 1}}, "config.nope"),
        ({"snapshot": 999_999}, "snapshot"),
        ({"parent_version": 99}, "parent_version"),
        ({"base_model": "/does/not/exist"}, "base_model"),
    ],
)
def test_bad_run_requests_are_400_naming_the_field(project, manager, trained, body, field):
    response = client_for(manager).post(url(project, "runs/"), body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field and response.json()["detail"]
    assert RewardModelRun.objects.count() == 1


def test_a_snapshot_of_another_project_is_not_found(project, manager, trained, other_project):
    other = rule_snapshot(rule_project(4, project=other_project))
    response = client_for(manager).post(url(project, "runs/"), {"snapshot": other.pk}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "snapshot"


def test_no_export_yet_says_so(project, manager):
    response = client_for(manager).post(url(project, "runs/"), {}, format="json")
    assert response.status_code == 400 and "export" in response.json()["detail"]


def test_run_detail_shows_curves_and_log_and_cancel_is_409_when_finished(project, manager, trained):
    _, run, _ = trained
    client = client_for(manager)
    detail = client.get(url(project, f"runs/{run.pk}/")).json()
    assert detail["state"] == "succeeded" and detail["progress"] == 1.0 and detail["version"] == 1
    assert any(p["kind"] == "eval" for p in detail["metrics_history"]) and detail["log_tail"]
    refused = client.post(url(project, f"runs/{run.pk}/cancel/"))
    assert refused.status_code == 409 and refused.json()["code"] == "already_finished"


def test_cancel_a_queued_run(project, manager, trained, tiny, sent):
    snapshot, _, _ = trained
    client = client_for(manager)
    run_id = client.post(url(project, "runs/"), {"base_model": tiny}, format="json").json()["id"]
    response = client.post(url(project, f"runs/{run_id}/cancel/"))
    # The cancel of every job kind: 202 with the kind's shape; a second one is a conflict.
    assert response.status_code == 202 and response.json()["state"] == "cancelled"
    assert response.json()["cancelled_by"] == "manager" and response.json()["kind"] == "reward_model"
    again = client.post(url(project, f"runs/{run_id}/cancel/"))
    assert again.status_code == 409 and again.json()["code"] == "already_finished"


def test_versions_activate_and_score(project, manager, trained):
    _, _, version = trained
    client = client_for(manager)
    listed = client.get(url(project)).json()["results"]
    assert [(v["number"], v["is_active"]) for v in listed] == [(1, True)]
    assert listed[0]["metrics"] and listed[0]["snapshot"] == version.snapshot_id
    items = [
        {"prompt": "tell me about the river", "response": "good good good good alpha beta"},
        {"prompt": [{"role": "user", "content": "tell me about the river"}], "response": "alpha beta gamma delta"},
    ]
    scored = client.post(url(project, "1/score/"), {"items": items}, format="json")
    assert scored.status_code == 200, scored.content
    rewards = scored.json()["rewards"]
    assert len(rewards) == 2 and scored.json()["version"] == 1
    # Same input, same reward; the active alias names the same model.
    again = client.post(url(project, "active/score/"), {"items": items[:1]}, format="json").json()["rewards"]
    assert again[0] == pytest.approx(rewards[0], abs=1e-5)
    assert client.post(url(project, "1/activate/")).json()["is_active"] is True
    assert client.post(url(project, "7/score/"), {"items": items}, format="json").status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "items"),
        ({"items": []}, "items"),
        ({"items": [{"prompt": "x"}]}, "response"),
        ({"items": [{"prompt": 3, "response": "y"}]}, "prompt"),
        ({"items": [{"prompt": [{"role": "user"}], "response": "y"}]}, "prompt"),
        ({"items": [{"prompt": "x", "response": "y"}] * 300}, "at most 256 items"),
        ({"items": [{"prompt": "x" * 40_000, "response": "y"}]}, "characters"),
    ],
)
def test_bad_score_requests_are_400(project, manager, trained, body, needle):
    response = client_for(manager).post(url(project, "1/score/"), body, format="json")
    assert response.status_code == 400
    assert needle in response.content.decode()


def test_compare(project, manager, trained):
    _, _, version = trained
    client = client_for(manager)
    result = client.get(url(project, "compare/?a=1&b=1"))
    assert result.status_code == 200, result.content
    body = result.json()
    assert body["agreement"] == 1.0 and body["a"]["accuracy"] == body["b"]["accuracy"]
    assert body["pairs"] == ExportSnapshot.objects.get(pk=version.snapshot_id).counts["pairs"]["validation"]
    assert client.get(url(project, "compare/?a=1&b=9")).json()["field"] == "b"
    assert client.get(url(project, "compare/?a=x&b=1")).status_code == 400


def test_runs_of_another_project_are_invisible(project, manager, trained, other_project):
    _, run, _ = trained
    other_manager = client_for(manager)
    from annotation.models import Membership, Role

    Membership.objects.create(project=other_project, user=manager, role=Role.MANAGER)
    assert other_manager.get(url(other_project, f"runs/{run.pk}/")).status_code == 404
    assert other_manager.get(url(other_project)).json()["results"] == []
    assert RewardModelVersion.objects.filter(project=other_project).count() == 0
    assert ExportSnapshot.objects.filter(state=ExportState.SUCCEEDED).exists()
    assert RewardModelRun.objects.get(pk=run.pk).state == RunState.SUCCEEDED


def test_scoring_a_version_whose_files_are_gone_is_a_conflict(project, manager, trained, settings):
    import shutil
    from pathlib import Path

    _, _, version = trained
    shutil.rmtree(Path(settings.ARTIFACT_ROOT) / version.model_dir)
    response = client_for(manager).post(
        url(project, "1/score/"), {"items": [{"prompt": "x", "response": "y"}]}, format="json"
    )
    assert response.status_code == 409 and response.json()["code"] == "model_missing"


def test_answers_name_the_base_and_hold_no_server_path(
    project, manager, trained, settings, tiny_base, tmp_path_factory
):
    import json

    _, run, version = trained
    client = client_for(manager)
    answers = [
        client.get(url(project)),
        client.get(url(project, "1/")),
        client.get(url(project, "runs/")),
        client.get(url(project, f"runs/{run.pk}/")),
        client.get(f"/api/v1/projects/{project.pk}/jobs/reward_model/{run.pk}/"),
        client.post(url(project, "1/activate/")),
    ]
    temp = str(tmp_path_factory.getbasetemp())  # the tiny base and the artifacts both live under it
    for answer in answers:
        assert answer.status_code == 200, answer.content
        text = json.dumps(answer.json())
        assert temp not in text and str(settings.ARTIFACT_ROOT) not in text and "site-packages" not in text, text
    detail = answers[1].json()
    assert "model_dir" not in detail and "base_model" not in detail
    assert detail["base_model_name"] is None  # the tiny base is not registered here
    assert answers[3].json()["base_model_name"] is None and "base_model" not in answers[3].json()
    settings.REWARDMODEL_BASE_MODELS = {"tiny-gpt2": str(tiny_base)}
    assert client.get(url(project, "1/")).json()["base_model_name"] == "tiny-gpt2"
    assert client.get(url(project, "runs/")).json()["results"][0]["base_model_name"] == "tiny-gpt2"
