"""Exports through the API, run by a real Celery worker process on the configured broker."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from exports.models import ExportSnapshot, ExportState
from jobs.lifecycle import deliver, jobs_reap
from jobs.registry import get_kind
from tests.exports.helpers import add_task, judge, ranking_project

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def artifacts(monkeypatch, settings, tmp_path):
    # Autouse fixtures start first: the worker process inherits this environment.
    root = tmp_path / "artifacts"
    monkeypatch.setenv("ARTIFACT_ROOT", str(root))
    settings.ARTIFACT_ROOT = root
    return root


def finished(snapshot_id: int):
    snapshot = ExportSnapshot.objects.get(pk=snapshot_id)
    return snapshot if snapshot.is_finished else None


def test_worker_exports_and_the_manager_downloads(celery_worker_process, artifacts):
    from annotation.models import Membership, Role
    from tests.factories import UserFactory

    project = ranking_project(k=3)
    manager = UserFactory(username="export-manager")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    for t in range(20):
        task, ids = add_task(project)
        for n in range(3):
            judge(task, f"w{n}", [[r] for r in (ids if (t + n) % 3 else ids[::-1])])

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=manager)[0].key}")
    response = client.post(f"/api/v1/projects/{project.pk}/exports/", {"batch_pairs": 6}, format="json")
    assert response.status_code == 202, response.content
    snapshot_id = response.json()["id"]
    snapshot = celery_worker_process(lambda: finished(snapshot_id), timeout=120, what="the export")
    assert snapshot.state == ExportState.SUCCEEDED, snapshot.errors
    assert (artifacts / snapshot.path / "pairs.parquet").is_file()
    assert snapshot.counts["pairs_kept"] == 20 * 3

    detail = client.get(f"/api/v1/projects/{project.pk}/exports/{snapshot_id}/").json()
    assert detail["state"] == "succeeded" and detail["manifest"]["counts"]["pairs_kept"] == 60
    download = client.get(f"/api/v1/projects/{project.pk}/exports/{snapshot_id}/files/pairs.jsonl")
    assert download.status_code == 200
    assert len(b"".join(download.streaming_content).splitlines()) == 60

    # The broker delivers the same message again: the finished row makes it a no-op.
    deliver("export", snapshot_id)
    second = client.post(f"/api/v1/projects/{project.pk}/exports/", {"batch_pairs": 6}, format="json").json()
    again = celery_worker_process(lambda: finished(second["id"]), timeout=120, what="the second export")
    assert ExportSnapshot.objects.get(pk=snapshot_id).attempts == 1
    # Same project state, same parameters: same bytes, one shared directory.
    assert again.content_hash == snapshot.content_hash and again.path == snapshot.path


def test_the_reaper_resends_a_dead_run_to_the_real_worker_and_a_cancelled_one_stays_cancelled(
    celery_worker_process, artifacts
):
    from datetime import timedelta

    from django.utils import timezone

    from exports import services

    project = ranking_project(k=3)
    for t in range(6):
        task, ids = add_task(project)
        for n in range(3):
            judge(task, f"r{n}", [[r] for r in (ids if (t + n) % 3 else ids[::-1])])

    # A cancelled snapshot whose message still reaches the worker: the worker does nothing.
    cancelled = services.export_snapshot_create(project=project, params={}, user=None)
    assert services.export_snapshot_cancel(snapshot_id=cancelled.pk)
    deliver("export", cancelled.pk)

    # A worker died mid-run an hour ago: still "running", heartbeat stale, one attempt used.
    dead = services.export_snapshot_create(project=project, params={"threshold": 0.6}, user=None)
    ExportSnapshot.objects.filter(pk=dead.pk).update(
        state=ExportState.RUNNING,
        attempts=1,
        owner_token="dead-worker",
        worker="dead",
        started_at=timezone.now() - timedelta(hours=1),
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    # What beat runs every minute; its message goes through the broker to the worker.
    reaped = jobs_reap(kinds=[get_kind("export")])
    assert [(r.job_id, r.outcome) for r in reaped] == [(dead.pk, "requeued")]
    done = celery_worker_process(lambda: finished(dead.pk), timeout=120, what="the reaped export")
    assert done.state == ExportState.SUCCEEDED and done.attempts == 2, done.errors
    assert (artifacts / done.path / "pairs.jsonl").is_file()

    # The solo worker took the messages in order: the cancelled one was seen and left alone.
    still = ExportSnapshot.objects.get(pk=cancelled.pk)
    assert still.state == ExportState.CANCELLED and still.attempts == 0 and still.path == ""
