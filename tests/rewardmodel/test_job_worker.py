"""Reward-model runs on real Celery worker processes, one of which is killed with SIGKILL.

Each worker is a ``celery worker --pool solo`` subprocess on the test database, listening
on a queue private to this test (``REWARDMODEL_QUEUE``), so parallel test runs sharing the
filesystem broker cannot take each other's messages. The test process plays the web
server (creates the run through the API) and the beat (calls the reaper).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotation.models import Membership, Role
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunState
from rewardmodel.services import reward_model_run_send, reward_model_runs_reap
from tests.factories import UserFactory
from tests.rewardmodel import test_services as shared
from tests.rewardmodel.test_services import rule_project, rule_snapshot

pytestmark = [pytest.mark.worker, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
STALE_SECONDS = 3.0
tiny_base = shared.tiny_base


class Workers:
    """Starts and kills ``celery worker`` subprocesses; fails a wait with their logs."""

    def __init__(self, env: dict[str, str], queue: str, log_dir: Path) -> None:
        self.env, self.queue, self.log_dir = env, queue, log_dir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self) -> subprocess.Popen:
        n = len(self.procs)
        log_path = self.log_dir / f"worker-{n}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "celery"), "-A", "arpad", "worker", "-Q", self.queue,
                    "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "-n", f"{self.queue}-{n}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
                ],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append((proc, log_path))
        self.wait_for(lambda: "ready." in log_path.read_text(errors="replace"), 90, f"worker {n} to start")
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for _, p in self.procs)

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}; worker logs:\n{self.logs()}")

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def workers(transactional_db, settings, tmp_path, monkeypatch) -> Iterator[Workers]:
    queue = f"rmtest-{uuid.uuid4().hex[:12]}"
    artifacts = tmp_path / "artifacts"
    settings.ARTIFACT_ROOT = artifacts
    settings.REWARDMODEL_QUEUE = queue
    settings.JOB_HEARTBEAT_STALE_SECONDS = STALE_SECONDS
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        database_url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="arpad.settings_test",
        ARTIFACT_ROOT=str(artifacts),
        REWARDMODEL_QUEUE=queue,
        JOB_HEARTBEAT_STALE_SECONDS=str(STALE_SECONDS),
        JOB_PROGRESS_INTERVAL_SECONDS="0.2",
        REWARDMODEL_DEVICE="cpu",
        OMP_NUM_THREADS="1",
    )
    pool = Workers(env, queue, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def test_a_killed_worker_run_is_reaped_resumed_elsewhere_and_registered_once(workers, tiny_base):
    project = rule_project(96)
    snapshot = rule_snapshot(project)
    manager = UserFactory(username="rm-worker-manager")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    client = APIClient()
    client.force_authenticate(manager)

    first = workers.start()
    config = {
        "epochs": 3,
        "groups_per_batch": 1,
        "max_length": 48,
        "checkpoint_every_steps": 5,
        "learning_rate": 1e-3,
    }
    response = client.post(
        f"/api/v1/projects/{project.pk}/reward-models/runs/",
        {"snapshot": snapshot.pk, "base_model": str(tiny_base), "config": config},
        format="json",
    )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    # The broker delivers the message twice: the second copy must change nothing.
    reward_model_run_send(run_id)

    def checkpointed() -> RewardModelRun | None:
        run = RewardModelRun.objects.get(pk=run_id)
        assert run.state in (RunState.QUEUED, RunState.RUNNING), (run.state, run.error, run.log_tail[-5:])
        return run if run.state == RunState.RUNNING and run.checkpoint_step else None

    running = workers.wait_for(checkpointed, 120, "the first checkpoint")
    assert running.attempts == 1 and running.step < running.total_steps
    killed_at = time.monotonic()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed = RewardModelRun.objects.get(pk=run_id)
    assert killed.state == RunState.RUNNING and killed.step < killed.total_steps
    assert not RewardModelVersion.objects.exists()

    # Nothing beats for the run any more: once its heartbeat is stale, the reaper requeues it.
    workers.wait_for(lambda: reward_model_runs_reap() == [(run_id, "requeued")], 30, "the reaper to requeue")
    assert RewardModelRun.objects.get(pk=run_id).state == RunState.QUEUED

    workers.start()
    run = workers.wait_for(
        lambda: (r := RewardModelRun.objects.get(pk=run_id)).is_finished and r, 180, "the resumed run to finish"
    )
    assert run.state == RunState.SUCCEEDED, (run.error, run.log_tail[-10:])
    print(
        f"killed at step {killed.step}/{killed.total_steps} (checkpoint {killed.checkpoint_step}); "
        f"resumed from step {run.resumed_from_step}; version registered {time.monotonic() - killed_at:.1f} s after the kill"
    )
    assert run.attempts == 2
    assert run.resumed_from_step is not None and run.resumed_from_step >= killed.checkpoint_step
    assert any("resumed from" in line for line in run.log_tail)
    assert RewardModelVersion.objects.filter(run_id=run_id).count() == 1
    steps = [p["step"] for p in run.metrics_history if p["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == run.total_steps
    # Left-over and duplicate messages on the queue reach the second worker too: still one version.
    reward_model_run_send(run_id)
    time.sleep(2)
    run.refresh_from_db()
    assert run.attempts == 2 and run.state == RunState.SUCCEEDED
    assert RewardModelVersion.objects.count() == 1
    detail = client.get(f"/api/v1/projects/{project.pk}/reward-models/runs/{run_id}/").json()
    assert detail["version"] == 1 and detail["progress"] == 1.0
