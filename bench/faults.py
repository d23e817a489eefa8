"""Faults under annotation load: PostgreSQL restarted, Redis stopped and started again.

What it shows
    The platform's promises when a service it depends on goes away for a moment, with
    real processes: gunicorn serving the REST API, a Celery worker, simulated annotators
    claiming and submitting (``bench/annotate_load.py``'s client), and a PostgreSQL and a
    Redis of the run's own, so that restarting them disturbs nothing else on the machine.
    It prints figures; it never asserts them (the invariant checks print PASS/FAIL).

Phases
    1. **PostgreSQL restart** (``pg_ctl restart -m fast``) while annotators work: the
       requests that fail meanwhile (status counts), how long the API answered nothing
       but errors (a probe reads the project every 100 ms), and afterwards the queue's
       invariants, among them that every submit that was answered 201 is in the database.
    2. **Redis stopped, then started**: annotation goes on (the hot path does not touch
       the broker); an export requested while Redis is down is a job row that fails at
       once with the reason instead of staying queued; one requested after Redis is back
       is run by the worker. The cache is on the same Redis (as in docker-compose.yml): a
       password check while it is away is refused with 503, never let through uncounted.

Run from the repository root (as root, or as a user that may run ``pg_ctl``)::

    .venv/bin/python bench/faults.py
    .venv/bin/python bench/faults.py --annotators 32 --phase-seconds 40 --json
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import annotate_load as load  # noqa: E402 - after the path above
from benchdb import REPO_ROOT, django_env, migrate, recreate_database, setup_django  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=32, help="Concurrent simulated annotators.")
    parser.add_argument("--tasks", type=int, default=20_000, help="Pairwise tasks to load.")
    parser.add_argument("--phase-seconds", type=float, default=30.0, help="Length of each phase's load.")
    parser.add_argument("--fault-at", type=float, default=8.0, help="Seconds into a phase when the fault starts.")
    parser.add_argument("--redis-down-seconds", type=float, default=8.0, help="How long Redis stays stopped.")
    parser.add_argument("--json", action="store_true", help="Also print the summary as one JSON line.")
    return parser.parse_args(argv)


# --- services of our own --------------------------------------------------------------------


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` account then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PrivatePostgres:
    """A throwaway cluster on a free 127.0.0.1 port, in a temporary directory."""

    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = Path(found[-1]).parent
        self.dir = root / "pg"
        self.dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = load.free_port()
        self.log = root / "postgres.log"
        self.log.touch()
        if os.geteuid() == 0:
            shutil.chown(self.log, "postgres", "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*_as_postgres_user(), str(self.bin / tool), *args], check=True, stdout=subprocess.DEVNULL, cwd="/"
        )

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/arpad_faults_bench"

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", action, "-D", str(self.dir / "data"), "-l", str(self.log), "-w", "-o", options, *extra)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", "immediate")


class PrivateRedis:
    """A redis-server on a free port, without persistence; stopped and started at will."""

    def __init__(self) -> None:
        self.port = load.free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "arpad", "worker", "-Q", "default", "--pool", "solo", "-l", "info"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{load.tail(log_path)}")
            time.sleep(0.2)
        yield process
    finally:
        load.stop_process(process)


# --- probing and load -----------------------------------------------------------------------


class Probe(threading.Thread):
    """Reads the project every 100 ms; records (time, ok) so outages can be measured."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.samples: list[tuple[float, bool]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        request = urllib.request.Request(self.url, headers={"Authorization": f"Token {self.token}"})  # noqa: S310
        while not self._halt.is_set():
            ok = False
            with (
                contextlib.suppress(urllib.error.URLError, OSError, TimeoutError),
                urllib.request.urlopen(request, timeout=5) as response,  # noqa: S310 - our 127.0.0.1 server
            ):
                ok = response.status == 200
            self.samples.append((time.monotonic(), ok))
            self._halt.wait(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def outage_after(self, moment: float) -> tuple[float, int]:
        """Seconds from ``moment`` to the first success after the last failure; and the failed probes."""
        failures = [t for t, ok in self.samples if not ok and t >= moment]
        if not failures:
            return 0.0, 0
        back = next((t for t, ok in self.samples if ok and t > failures[-1]), None)
        return ((back or failures[-1]) - moment), len(failures)


def load_args(args: argparse.Namespace, duration: float) -> argparse.Namespace:
    return load.parse_args(
        [
            "--annotators", str(args.annotators), "--tasks", str(args.tasks), "--duration", str(duration),
            "--warmup", "0", "--gunicorn-workers", "2", "--gunicorn-threads", "4",
        ]
    )  # fmt: skip


def api(base: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 server
        f"{base}/api/v1{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our 127.0.0.1 server
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def manager_token(project_id: int) -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from annotation.models import Membership, Role

    user = get_user_model().objects.create(username=f"fault-manager-{secrets.token_hex(3)}")
    Membership.objects.create(project_id=project_id, user=user, role=Role.MANAGER)
    key = Token.objects.create(user=user).key
    close_connections()
    return key


def close_connections() -> None:
    """This process's connections would not survive a restart of the server: open them fresh."""
    from django.db import connections

    connections.close_all()


def job_state(kind_table: str, job_id: int) -> tuple[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT state, error FROM {kind_table} WHERE id = %s", [job_id])  # noqa: S608 - fixed name
        row = cursor.fetchone()
    connection.close()
    return row[0], row[1]


def wait_for_job(job_id: int, timeout: float = 120.0) -> tuple[str, str, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state, error = job_state("exports_exportsnapshot", job_id)
        if state in ("succeeded", "failed", "cancelled"):
            return state, error, time.monotonic() - started
        time.sleep(0.2)
    return "timed out", "", timeout


def run_phase(
    args: argparse.Namespace, base: str, loaded: load.LoadedProject, fault: Any
) -> tuple[load.ShardResult, dict[str, Any]]:
    """Annotators work for a phase; ``fault(started)`` runs in a thread beside them and returns figures."""
    figures: dict[str, Any] = {}

    def inject(started: float) -> None:
        figures.update(fault(started))

    started = time.monotonic()
    injector = threading.Thread(target=inject, args=(started,), daemon=True)
    injector.start()
    result = load.run_clients(load_args(args, args.phase_seconds), base, loaded, time.time())
    injector.join()
    return result, figures


def errors_of(result: load.ShardResult) -> dict[str, int]:
    return {k: v for k, v in result.statuses.items() if k not in load.EXPECTED_STATUSES}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="arpad-faults-"))
    if os.geteuid() == 0:
        os.chmod(root, 0o755)  # noqa: S103 - the postgres account must reach its data directory inside
    postgres = PrivatePostgres(root)
    redis = PrivateRedis()
    summary: dict[str, Any] = {"annotators": args.annotators, "phase_s": args.phase_seconds}
    all_checks: list[tuple[str, bool, str]] = []
    try:
        postgres.start()
        redis.start()
        env = django_env(postgres.url, root / "var")
        env["CELERY_BROKER_URL"] = redis.url
        # As in docker-compose.yml: the cache (login and token throttles) on the same Redis.
        env["CACHE_URL"] = redis.url.rsplit("/", 1)[0] + "/1"
        print(f"PostgreSQL on :{postgres.port}, Redis on :{redis.port}; migrating ...", flush=True)
        recreate_database(postgres.url)
        migrate(env)
        setup_django(env)
        loaded = load.load_project(load_args(args, args.phase_seconds))
        token = manager_token(loaded.project_id)
        print(f"loaded {args.tasks:,} tasks; starting gunicorn and a worker ...", flush=True)
        with (
            celery_worker(env, root / "worker.log"),
            load.gunicorn(load_args(args, args.phase_seconds), env, root / "gunicorn.log") as (base, _pid),
        ):
            probe = Probe(f"{base}/api/v1/projects/{loaded.project_id}/", token)
            probe.start()

            # Phase 1: PostgreSQL restarts under load.
            def restart_postgres(started: float) -> dict[str, Any]:
                time.sleep(max(0.0, args.fault_at - (time.monotonic() - started)))
                at = time.monotonic()
                postgres.restart()
                took = time.monotonic() - at
                time.sleep(1.0)
                return {"restart_at": at, "restart_s": round(took, 2)}

            print("phase 1: PostgreSQL restart under load ...", flush=True)
            result, figures = run_phase(args, base, loaded, restart_postgres)
            outage, failed_probes = probe.outage_after(figures["restart_at"])
            close_connections()
            checks = load.check_invariants(loaded.project_id, result)
            all_checks += checks
            summary["postgres_restart"] = {
                "restart_s": figures["restart_s"],
                "api_unavailable_s": round(outage, 2),
                "failed_probes": failed_probes,
                "accepted": result.statuses["submit 201"],
                "errors": errors_of(result),
                "invariants": {name: passed for name, passed, _ in checks},
            }

            # Phase 2: Redis goes away and comes back.
            def bounce_redis(started: float) -> dict[str, Any]:
                time.sleep(max(0.0, args.fault_at - (time.monotonic() - started)))
                redis.stop()
                down_at = time.monotonic()
                status, body = api(base, token, "POST", f"/projects/{loaded.project_id}/exports/", {})
                during = {"status": status, "id": body.get("id") if isinstance(body, dict) else None}
                # A password check counts in the cache: refused (503) rather than let through uncounted.
                login_status, _ = api(base, token, "POST", "/auth/token/", {"username": "nobody", "password": "x"})
                time.sleep(max(0.0, args.redis_down_seconds - (time.monotonic() - down_at)))
                redis.start()
                status, body = api(base, token, "POST", f"/projects/{loaded.project_id}/exports/", {})
                after = {"status": status, "id": body.get("id") if isinstance(body, dict) else None}
                return {
                    "during": during,
                    "after": after,
                    "login_while_down": login_status,
                    "down_s": round(time.monotonic() - down_at, 1),
                }

            print("phase 2: Redis stopped and started under load ...", flush=True)
            first = result
            result, figures = run_phase(args, base, loaded, bounce_redis)
            # The invariants hold over everything accepted so far: both phases together.
            both = load.ShardResult()
            both.merge(first)
            both.merge(result)
            checks = load.check_invariants(loaded.project_id, both)
            all_checks += checks
            during_id, after_id = figures["during"]["id"], figures["after"]["id"]
            during_state = wait_for_job(during_id) if during_id else ("not created", "", 0.0)
            after_state = wait_for_job(after_id) if after_id else ("not created", "", 0.0)
            summary["redis_bounce"] = {
                "down_s": figures["down_s"],
                "accepted": result.statuses["submit 201"],
                "errors": errors_of(result),
                "export_while_down": {"http": figures["during"]["status"], "state": during_state[0],
                                      "error": during_state[1], "settled_s": round(during_state[2], 2)},
                "token_request_while_down": figures["login_while_down"],
                "export_after": {"http": figures["after"]["status"], "state": after_state[0],
                                 "settled_s": round(after_state[2], 2)},
                "invariants": {name: passed for name, passed, _ in checks},
            }  # fmt: skip
            probe.stop()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    print()
    for phase in ("postgres_restart", "redis_bounce"):
        print(f"{phase}:")
        for key, value in summary[phase].items():
            print(f"  {key:<20} {value}")
    print()
    for name, passed, detail in all_checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}  ({detail})")
    if args.json:
        print(json.dumps(summary, default=str))
    return 0 if all(passed for _, passed, _ in all_checks) else 1


if __name__ == "__main__":
    sys.exit(main())
