"""Shared fixtures: the three personas of every permission test, and data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

from annotation.models import Membership, Role
from tests.factories import ProjectFactory, UserFactory

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ARPAD_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    """The real preference data beside the checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set ARPAD_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    """Every test starts with an empty cache: it holds the throttles' counts, which outlive a test."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://...")


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def manager(project):
    user = UserFactory(username="manager")
    Membership.objects.create(project=project, user=user, role=Role.MANAGER)
    return user


@pytest.fixture
def annotator(project):
    user = UserFactory(username="annotator")
    Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    return user


@pytest.fixture
def other_project(db):
    return ProjectFactory(name="Other project")


@pytest.fixture
def outsider(other_project):
    """An annotator of another project: must see nothing of ``project``."""
    user = UserFactory(username="outsider")
    Membership.objects.create(project=other_project, user=user, role=Role.ANNOTATOR)
    return user


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path):
    """A real ``celery worker`` process on the test database and the configured broker.

    Yields a function that waits for a condition, failing with the worker's log if it
    does not come true in time. Celery's eager mode is not a substitute: it skips
    serialisation, the broker, acks and the separate process.
    """
    import subprocess
    import sys
    import time

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        database_url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = dict(os.environ, DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="arpad.settings_test")
    log_path = tmp_path / "worker.log"
    bin_dir = Path(sys.executable).parent
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "celery"), "-A", "arpad", "worker", "-Q", "default,imports", "--pool", "solo", "-l", "info"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def read_log() -> str:
        return log_path.read_text(errors="replace")

    def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited with {proc.returncode}:\n{read_log()[-4000:]}")
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}; worker log:\n{read_log()[-4000:]}")

    try:
        wait_for(lambda: "ready." in read_log(), timeout=60, what="the worker to start")
        yield wait_for
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


class JobMessages(list):
    """The job messages that would have gone to the broker: ``(kind, job_id, queue)`` each."""

    def run(self, index: int = -1, **kwargs):
        """Do what a worker does with one recorded message; the job's row afterwards."""
        from jobs.lifecycle import job_execute

        kind, job_id, _queue = self[index]
        return job_execute(kind=kind, job_id=job_id, **kwargs)

    def ids(self, kind: str) -> list[int]:
        return [job_id for k, job_id, _ in self if k == kind]


@pytest.fixture
def job_messages(monkeypatch) -> JobMessages:
    """Stands in for the broker: every job sent is recorded instead (``jobs.tasks.run_job``)."""
    from jobs.tasks import run_job

    sent = JobMessages()

    def apply_async(args, queue=None, **kwargs):
        sent.append((args[0], args[1], queue))

    monkeypatch.setattr(run_job, "apply_async", apply_async)
    return sent


@pytest.fixture
def broker_down(monkeypatch) -> None:
    """A broker that refuses every message, as an unreachable Redis does."""
    from jobs.tasks import run_job

    def apply_async(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(run_job, "apply_async", apply_async)


@pytest.fixture
def thread_worker(monkeypatch):
    """Runs every job sent in a thread of this process, as a worker would (tests on ``transactional_db``).

    Yields the started threads; they are joined at the end.
    """
    import threading

    from jobs.tasks import run_job

    started: list[threading.Thread] = []

    def work(kind: str, job_id: int) -> None:
        from jobs.lifecycle import job_execute

        try:
            job_execute(kind=kind, job_id=job_id, worker=f"thread-worker:{job_id}")
        finally:
            connection.close()

    def apply_async(args, queue=None, **kwargs):
        thread = threading.Thread(target=work, args=tuple(args), daemon=True)
        thread.start()
        started.append(thread)

    monkeypatch.setattr(run_job, "apply_async", apply_async)
    yield started
    for thread in started:
        thread.join(timeout=120)
