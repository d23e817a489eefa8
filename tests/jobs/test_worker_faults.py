"""Every job kind on real Celery worker processes: SIGKILL mid-run, duplicates, cancel, a broker that is down.

The test process plays the web server (creates each job through the REST API) and the
beat (calls the reaper). The first worker is slowed down (``ARPAD_TEST_JOB_PROGRESS_DELAY``,
read by the test-only ``tests.jobkinds`` app) so that it is surely mid-run when it is
killed; the second one is not. After the kill the job is reaped, and the second worker
resumes it (reward-model runs, from their checkpoint) or starts it over (imports roll
back, exports restart), finishing exactly once: one import, one published snapshot, one
version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from annotation.models import Membership, Prompt, Role, Task
from exports.models import ExportSnapshot
from jobs.lifecycle import deliver, job_create, jobs_reap
from jobs.models import JobState
from jobs.registry import get_kind
from rewardmodel.models import RewardModelVersion
from tests.factories import UserFactory
from tests.jobs.workers import REPO_ROOT, Workers, worker_env
from tests.rewardmodel import test_services as rm
from tests.rewardmodel.test_services import rule_project, rule_snapshot

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(420)]

STALE_SECONDS = 3.0
SLOW = "1.0"  # seconds the first worker sleeps before each progress report
tiny_base = rm.tiny_base
tiny = rm.tiny  # the same, registered as a base model by name


@dataclass
class Scenario:
    """How one kind is started through the API, what "mid-run" means for it, and what it produced."""

    label: str
    start: Callable[[APIClient], int]
    mid_run: Callable[[Any], bool]
    results: Callable[[], int]
    leftovers: Callable[[], list[Path]] = lambda: []


@pytest.fixture
def workers(transactional_db, settings, tmp_path) -> Iterator[Workers]:
    queue = f"jobtest-{uuid.uuid4().hex[:12]}"
    artifacts = tmp_path / "artifacts"
    settings.ARTIFACT_ROOT = artifacts
    settings.REWARDMODEL_QUEUE = queue
    settings.JOB_HEARTBEAT_STALE_SECONDS = STALE_SECONDS
    env = worker_env(
        ARTIFACT_ROOT=str(artifacts),
        REWARDMODEL_QUEUE=queue,
        JOB_HEARTBEAT_STALE_SECONDS=str(STALE_SECONDS),
        JOB_PROGRESS_INTERVAL_SECONDS="0.1",
        REWARDMODEL_DEVICE="cpu",
        OMP_NUM_THREADS="1",
    )
    pool = Workers(env, f"default,imports,{queue}", tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def manager_client(project) -> APIClient:
    manager = UserFactory(username=f"manager-{uuid.uuid4().hex[:6]}")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    client = APIClient()
    client.force_authenticate(manager)
    return client


def scenario(label: str, tiny: Path) -> tuple[Any, Scenario]:
    project = rule_project(96)
    if label == "import":
        records = [
            json.dumps({"id": f"p{i}", "prompt": f"Question {i}?", "responses": [f"answer {i} a", f"answer {i} b"]})
            for i in range(400)
        ]
        content = ("\n".join(records) + "\n").encode()

        def start(client: APIClient) -> int:
            response = client.post(
                f"/api/v1/projects/{project.pk}/imports/",
                {"file": SimpleUploadedFile("items.jsonl", content), "format": "jsonl"},
                format="multipart",
            )
            assert response.status_code == 202, response.content
            return response.json()["id"]

        before = Prompt.objects.filter(project=project).count()
        return project, Scenario(
            label,
            start,
            mid_run=lambda job: job.state == JobState.RUNNING,
            results=lambda: (Prompt.objects.filter(project=project).count() - before) // len(records),
        )
    if label == "export":

        def start(client: APIClient) -> int:
            response = client.post(f"/api/v1/projects/{project.pk}/exports/", {}, format="json")
            assert response.status_code == 202, response.content
            return response.json()["id"]

        def published() -> int:
            return ExportSnapshot.objects.filter(project=project, state=JobState.SUCCEEDED).count()

        def half_written() -> list[Path]:
            from django.conf import settings

            return sorted((Path(settings.ARTIFACT_ROOT) / "exports").glob(".tmp-*"))

        return project, Scenario(
            label, start, mid_run=lambda job: job.state == JobState.RUNNING, results=published, leftovers=half_written
        )
    snapshot = rule_snapshot(project)
    config = {"epochs": 3, "groups_per_batch": 1, "max_length": 48, "checkpoint_every_steps": 5, "learning_rate": 1e-3}

    def start(client: APIClient) -> int:
        response = client.post(
            f"/api/v1/projects/{project.pk}/reward-models/runs/",
            {"snapshot": snapshot.pk, "base_model": rm.TINY, "config": config},
            format="json",
        )
        assert response.status_code == 202, response.content
        return response.json()["id"]

    return project, Scenario(
        label,
        start,
        # Killed after a checkpoint, so that the retry has something to resume from.
        mid_run=lambda job: job.state == JobState.RUNNING and job.checkpoint_step is not None,
        results=lambda: RewardModelVersion.objects.filter(project=project).count(),
    )


def row(label: str, job_id: int) -> Any:
    return get_kind(label).model.objects.get(pk=job_id)


@pytest.mark.parametrize("label", ["import", "export", "reward_model"])
def test_a_killed_worker_is_reaped_and_the_job_finishes_exactly_once(label, workers, tiny, tiny_base):
    project, case = scenario(label, tiny_base)
    client = manager_client(project)
    first = workers.start(ARPAD_TEST_JOB_PROGRESS_DELAY=SLOW)
    job_id = case.start(client)

    def running_mid_job() -> Any:
        job = row(label, job_id)
        assert job.state in (JobState.QUEUED, JobState.RUNNING), (job.state, job.error, job.log_tail[-5:])
        return job if case.mid_run(job) else None

    killed = workers.wait_for(running_mid_job, 180, f"the {label} job to be mid-run")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = time.monotonic()
    assert row(label, job_id).state == JobState.RUNNING and case.results() == 0

    # Nothing beats for the job any more: once its heartbeat is stale, the reaper requeues it.
    def requeued() -> bool:
        return [(r.kind, r.job_id, r.outcome) for r in jobs_reap()] == [(label, job_id, "requeued")]

    workers.wait_for(requeued, 30, "the reaper to requeue the job")
    assert row(label, job_id).state == JobState.QUEUED

    workers.start()
    job = workers.wait_for(lambda: (j := row(label, job_id)).is_finished and j, 240, "the retried job to finish")
    assert job.state == JobState.SUCCEEDED, (job.error, job.log_tail[-10:])
    assert job.attempts == 2 and case.results() == 1
    assert case.leftovers() == []  # what the killed attempt left half-written is gone
    print(
        f"{label}: killed at {killed.progress:.0%} (step {killed.step}); finished "
        f"{time.monotonic() - killed_at:.1f} s after the kill"
    )
    if label == "reward_model":
        assert job.resumed_from_step is not None and job.resumed_from_step >= killed.checkpoint_step
        steps = [p["step"] for p in job.metrics_history if p["kind"] == "step"]
        assert steps == sorted(set(steps)) and steps[-1] == job.total_steps  # each step once
    # A duplicate message for the finished job changes nothing.
    deliver(label, job_id)
    time.sleep(2)
    again = row(label, job_id)
    assert (again.state, again.attempts, again.finished_at) == (job.state, job.attempts, job.finished_at)
    assert case.results() == 1


@pytest.mark.parametrize("label", ["import", "export", "reward_model"])
def test_cancel_mid_run_stops_the_worker_and_publishes_nothing(label, workers, tiny, tiny_base, postgres_only):
    # PostgreSQL only: on SQLite an import holds the single write lock until it ends, so a
    # cancel can only be written after it.
    project, case = scenario(label, tiny_base)
    client = manager_client(project)
    workers.start(ARPAD_TEST_JOB_PROGRESS_DELAY=SLOW)
    job_id = case.start(client)
    workers.wait_for(lambda: row(label, job_id).state == JobState.RUNNING, 180, "the job to run")
    response = client.post(f"/api/v1/projects/{project.pk}/jobs/{label}/{job_id}/cancel/")
    assert response.status_code == 202, response.content
    job = workers.wait_for(lambda: (j := row(label, job_id)).is_finished and j, 120, "the job to stop")
    assert job.state == JobState.CANCELLED, (job.state, job.error, job.log_tail[-5:])
    assert case.results() == 0 and case.leftovers() == []
    if label == "import":
        assert not Task.objects.filter(project=project, prompt__external_id__startswith="p").exists()


@pytest.mark.parametrize("label", ["import", "export", "reward_model"])
def test_a_broker_that_is_down_at_send_time_fails_the_job_with_the_reason(label, transactional_db, tiny_base):
    project, _ = scenario(label, tiny_base)
    if label == "import":
        from annotation.models import ImportJob

        job = job_create(ImportJob, project=project, format="jsonl", file_name="a.jsonl", file_path="/nowhere")
    elif label == "export":
        job = job_create(ExportSnapshot, project=project)
    else:
        from rewardmodel.models import RewardModelRun

        snapshot = ExportSnapshot.objects.filter(project=project, state=JobState.SUCCEEDED).first()
        job = job_create(RewardModelRun, project=project, snapshot=snapshot, base_model=str(tiny_base))
    # A separate process whose broker is a port nothing listens on, as a web server sees a dead Redis.
    script = f"import django; django.setup(); from jobs.lifecycle import deliver; deliver({label!r}, {job.pk})"
    env = worker_env(CELERY_BROKER_URL="redis://127.0.0.1:9/0")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "could not reach the task queue" in job.error, job.error
