"""Real ``celery worker`` subprocesses for the fault tests: started, killed, and read when a wait fails.

Each worker is a ``celery worker --pool solo`` subprocess on the test database, listening
on queues private to one test, so parallel test runs sharing a broker cannot take each
other's messages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, DATABASE_URL=database_url(), DJANGO_SETTINGS_MODULE="arpad.settings_test", **extra)


class Workers:
    """Starts and kills ``celery worker`` subprocesses; fails a wait with their logs."""

    def __init__(self, env: dict[str, str], queue: str, log_dir: Path) -> None:
        self.env, self.queue, self.log_dir = env, queue, log_dir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, **extra_env: str) -> subprocess.Popen:
        n = len(self.procs)
        log_path = self.log_dir / f"worker-{n}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "celery"), "-A", "arpad", "worker", "-Q", self.queue,
                    "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "-n", f"{self.queue}-{n}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
                ],
                cwd=REPO_ROOT, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT,
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
