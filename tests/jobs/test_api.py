"""The generic job endpoints: the same shape, list and cancel for every kind, the test-only one included."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from jobs.lifecycle import job_claim, job_create, job_execute
from jobs.models import JobState
from jobs.registry import get_kind
from tests.jobkinds.models import CountdownJob
from tests.jobs.test_lifecycle import KINDS, queued_job

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize("label", KINDS)
def test_one_shape_and_one_cancel_for_every_kind(project, manager, label):
    job = queued_job(label, project=project)
    running = queued_job(label, project=project)
    job_claim(kind=get_kind(label), job_id=running.pk, worker="w")
    api = client_for(manager)
    base = f"/api/v1/projects/{project.pk}/jobs/"

    listed = api.get(base, {"kind": label})
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()] == [running.pk, job.pk]
    row = listed.json()[0]
    assert row["kind"] == label and row["state"] == "running" and row["attempts"] == 1
    assert row["links"] == {"self": f"{base}{label}/{running.pk}/", "cancel": f"{base}{label}/{running.pk}/cancel/"}

    detail = api.get(f"{base}{label}/{running.pk}/").json()
    assert detail["state"] == "running" and detail["worker"] is None  # where it runs: staff only
    assert "metrics_history" in detail and "owner_token" not in detail

    cancelled = api.post(f"{base}{label}/{job.pk}/cancel/")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    stopping = api.post(f"{base}{label}/{running.pk}/cancel/")
    assert stopping.status_code == 202 and stopping.json()["state"] == "running"
    assert stopping.json()["cancel_requested"] is True
    again = api.post(f"{base}{label}/{job.pk}/cancel/")
    assert again.status_code == 409 and again.json()["code"] == "already_finished"


def test_the_list_mixes_kinds_newest_first_and_filters(project, manager, settings):
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0
    export = queued_job("export", project=project)
    countdown = job_create(CountdownJob, project=project, steps=3)
    job_execute(kind="countdown", job_id=countdown.pk, worker="w")
    api = client_for(manager)
    rows = api.get(f"/api/v1/projects/{project.pk}/jobs/").json()
    assert [(r["kind"], r["id"]) for r in rows] == [("countdown", countdown.pk), ("export", export.pk)]
    assert rows[0]["state"] == "succeeded" and rows[0]["progress"] == 1.0 and rows[0]["step"] == 3
    done = api.get(f"/api/v1/projects/{project.pk}/jobs/", {"state": "succeeded"}).json()
    assert [r["id"] for r in done] == [countdown.pk]
    assert api.get(f"/api/v1/projects/{project.pk}/jobs/", {"state": "exploded"}).status_code == 400
    assert api.get(f"/api/v1/projects/{project.pk}/jobs/", {"kind": "nope"}).json()["field"] == "kind"
    assert api.get(f"/api/v1/projects/{project.pk}/jobs/nope/1/").status_code == 404


def test_personas(project, manager, annotator, outsider, other_project):
    job = queued_job("countdown", project=project)
    theirs = queued_job("countdown", project=other_project)
    paths = [
        ("get", f"/api/v1/projects/{project.pk}/jobs/"),
        ("get", f"/api/v1/projects/{project.pk}/jobs/countdown/{job.pk}/"),
        ("post", f"/api/v1/projects/{project.pk}/jobs/countdown/{job.pk}/cancel/"),
    ]
    for method, path in paths:
        assert getattr(client_for(outsider), method)(path).status_code == 404, path
        assert getattr(client_for(annotator), method)(path).status_code == 403, path
        assert getattr(APIClient(), method)(path).status_code in (401, 403), path
    # Another project's job through this project's URL does not exist.
    assert client_for(manager).get(f"/api/v1/projects/{project.pk}/jobs/countdown/{theirs.pk}/").status_code == 404
    assert (
        client_for(manager).post(f"/api/v1/projects/{project.pk}/jobs/countdown/{theirs.pk}/cancel/").status_code == 404
    )
    assert CountdownJob.objects.get(pk=theirs.pk).state == JobState.QUEUED
