"""HTTP load benchmark of the annotation work queue: gunicorn + PostgreSQL, end to end.

What it measures
    How many annotations per second the REST API accepts while N annotators work at once,
    and how long a claim and a submit take (p50/p95/p99), with everything on one machine:
    the client, gunicorn and PostgreSQL share the CPU, so the figures are a floor for a
    deployment that runs them on separate hosts. It prints figures; it never asserts them.

How
    1. Creates a fresh PostgreSQL database (default ``arpad_bench``), runs ``manage.py
       migrate`` in a subprocess, and bulk-loads one pairwise project (overlap 3) with
       ``--tasks`` tasks through COPY: prompts and response pairs are sampled from the
       HH-RLHF test split in ``../shared/data`` when it is there, generated otherwise.
       Annotator accounts, their memberships and their API tokens go straight into the DB.
    2. Starts gunicorn (``arpad.wsgi:application``) on a free 127.0.0.1 port with the
       chosen worker class / workers / threads, and waits until it answers.
    3. Runs ``--annotators`` simulated annotators in one asyncio process (or several,
       ``--client-procs``) over keep-alive aiohttp connections. Each loops
       ``POST /projects/{id}/claim/`` -> ``POST /assignments/{id}/submit/`` with a random
       ranking and a fresh ``client_token``, without think time unless ``--think-time``
       is given (then each annotator pauses that long on average, as a person reading
       would, and the run measures latency at that request rate); a share of the accepted
       submits (``--retry-rate``) is sent again with the same token to exercise
       idempotency (those retries are not annotations). After ``--warmup`` seconds the
       measured window of ``--duration`` seconds starts; it ends early when no work is left.
    4. Prints accepted annotations per second over the window, totals, status counts,
       claim/submit latency percentiles, the gunicorn settings, and the CPU that the client,
       gunicorn and PostgreSQL used (polled from /proc), as cores and as milliseconds per
       annotation. On a shared machine other processes take cores from the run; they are
       shown separately, and the CPU per annotation is then the steadier figure.
    5. Re-checks the queue's invariants with SQL and prints PASS/FAIL for each.
    6. Stops gunicorn (always, also on Ctrl-C) and drops the database unless ``--keep``.

Run from the repository root::

    .venv/bin/python bench/annotate_load.py --annotators 64 --duration 60
    .venv/bin/python bench/annotate_load.py --annotators 16 --gunicorn-workers 3 --gunicorn-threads 4 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import multiprocessing
import os
import queue
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from benchdb import (
    REPO_ROOT,
    conninfo,
    database_name,
    django_env,
    migrate,
    recreate_database,
    release_database,
    setup_django,
)

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/arpad_bench"
API = "/api/v1"
OVERLAP = 3
RESPONSES_PER_TASK = 2


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HTTP load benchmark of claim -> submit against gunicorn + PostgreSQL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL URL of the bench database; it is DROPPED and re-created, so its name must contain 'bench'.",
    )
    parser.add_argument("--tasks", type=int, default=100_000, help="Pairwise tasks to load (overlap 3).")
    parser.add_argument("--annotators", type=int, default=64, help="Concurrent simulated annotators (and accounts).")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of the measured window.")
    parser.add_argument("--warmup", type=float, default=5.0, help="Seconds of load before the window opens.")
    parser.add_argument(
        "--think-time",
        type=float,
        default=0.0,
        help="Mean seconds (exponential) each annotator spends on a task between claim and submit; "
        "0 (default) is a closed loop at full speed, which measures throughput; a few seconds measures "
        "latency at a realistic request rate.",
    )
    parser.add_argument(
        "--retry-rate", type=float, default=0.02, help="Share of accepted submits re-sent with the same client_token."
    )
    parser.add_argument(
        "--gunicorn-workers",
        type=int,
        default=3,
        help="gunicorn worker processes; gthread 3 x 4 did best of those tried on a 2-core box at 64 annotators.",
    )
    parser.add_argument("--gunicorn-threads", type=int, default=4, help="Threads per worker (gthread worker class).")
    parser.add_argument(
        "--gunicorn-worker-class",
        default="gthread",
        choices=["gthread", "sync"],
        help="gunicorn worker class: gthread (threads, keep-alive) or sync (one request per process, no keep-alive).",
    )
    parser.add_argument(
        "--wsgi-app", default="arpad.wsgi:application", help="WSGI application gunicorn serves (module:attribute)."
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="Client processes; annotators are split among them and their latencies merged.",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="Seconds before a request counts as failed."
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="HH-RLHF jsonl.gz to sample texts from; generated if absent."
    )
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the data sampling and the rankings.")
    parser.add_argument("--keep", action="store_true", help="Keep the bench database afterwards (for inspection).")
    parser.add_argument("--json", action="store_true", help="Also print the summary as one JSON line at the end.")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.annotators < 1 or args.client_procs < 1:
        parser.error("--tasks, --annotators and --client-procs must be positive")
    if args.think_time < 0:
        parser.error("--think-time must not be negative")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if not 0.0 <= args.retry_rate <= 1.0:
        parser.error("--retry-rate must lie in [0, 1]")
    if args.gunicorn_workers < 1 or args.gunicorn_threads < 1:
        parser.error("--gunicorn-workers and --gunicorn-threads must be positive")
    if "bench" not in database_name(args.database_url):
        parser.error("the bench database is dropped and re-created: its name must contain 'bench'")
    if args.gunicorn_worker_class == "sync":
        args.gunicorn_threads = 1  # what gunicorn does anyway; keeps the report honest
    if args.gunicorn_workers * args.gunicorn_threads > 80:
        print("warning: more than 80 server threads, each holding a PostgreSQL connection", file=sys.stderr)
    args.client_procs = min(args.client_procs, args.annotators)
    return args


# --- data -----------------------------------------------------------------------------------

_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Sample:
    messages_json: str  # the prompt, as Prompt.messages
    responses: tuple[str, str]


def _split_dialogue(text: str) -> tuple[str, str] | None:
    cut = text.rfind("\n\nAssistant:")
    if cut < 0:
        return None
    return text[:cut], text[cut + len("\n\nAssistant:") :].strip()


def _messages(prefix: str) -> list[dict[str, str]]:
    parts = _TURN.split(prefix)
    return [
        {"role": _ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def read_hh_samples(path: Path) -> list[Sample]:
    """Prompt + (chosen, rejected) pairs from HH-RLHF; pairs whose prompts differ are left out."""
    samples = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            chosen, rejected = _split_dialogue(row["chosen"]), _split_dialogue(row["rejected"])
            if chosen is None or rejected is None or chosen[0] != rejected[0] or not chosen[1] or not rejected[1]:
                continue
            messages = _messages(chosen[0])
            if messages:
                samples.append(Sample(json.dumps(messages), (chosen[1], rejected[1])))
    return samples


def generated_samples(rng: random.Random, count: int = 2000) -> list[Sample]:
    """Stand-in texts of HH-like lengths: a 10-60 word prompt, 20-200 word responses."""
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(words, k=rng.randint(lo, hi)))

    return [
        Sample(json.dumps([{"role": "user", "content": text(10, 60) + "?"}]), (text(20, 200), text(20, 200)))
        for _ in range(count)
    ]


@dataclass
class LoadedProject:
    project_id: int
    tokens: list[str]
    username: str  # one annotator, to smoke-test the token endpoint
    password: str
    seconds: float
    source: str


def load_project(args: argparse.Namespace) -> LoadedProject:
    """Bulk-load one pairwise project with ``args.tasks`` tasks and ``args.annotators`` annotators."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection, transaction
    from rest_framework.authtoken.models import Token

    from annotation.models import Membership, Project, ProjectKind, Role

    rng = random.Random(args.seed)
    if args.data.is_file():
        samples = read_hh_samples(args.data)
        source = f"{args.data.name} ({len(samples):,} prompt/response pairs)"
    else:
        samples, source = generated_samples(rng), "generated text"

    started = time.perf_counter()
    now = datetime.now(UTC)
    with transaction.atomic():
        project = Project.objects.create(
            name="Load benchmark",
            kind=ProjectKind.PAIRWISE,
            responses_per_task=RESPONSES_PER_TASK,
            annotations_per_task=OVERLAP,
        )
        password = secrets.token_urlsafe(16)
        hashed = make_password(password)  # hashed once: every account shares it
        user_model = get_user_model()
        users = user_model.objects.bulk_create(
            user_model(username=f"bench{i:04d}", password=hashed) for i in range(args.annotators)
        )
        Membership.objects.bulk_create(Membership(project=project, user=u, role=Role.ANNOTATOR) for u in users)
        tokens = Token.objects.bulk_create(Token(key=secrets.token_hex(20), user=u) for u in users)

    picks = [rng.randrange(len(samples)) for _ in range(args.tasks)]
    pid = project.pk
    with transaction.atomic(), connection.cursor() as cursor:
        # Ids are given explicitly (the database is fresh), so the four COPYs need no round trip.
        with cursor.copy(
            "COPY annotation_prompt (id, project_id, external_id, messages, metadata, created_at) FROM STDIN"
        ) as copy:
            for i, pick in enumerate(picks, start=1):
                copy.write_row((i, pid, f"bench-{i}", samples[pick].messages_json, "{}", now))
        with cursor.copy(
            "COPY annotation_response (id, prompt_id, text, source, external_id, metadata, created_at) FROM STDIN"
        ) as copy:
            for i, pick in enumerate(picks, start=1):
                chosen, rejected = samples[pick].responses
                copy.write_row((2 * i - 1, i, chosen, "hh-chosen", "a", "{}", now))
                copy.write_row((2 * i, i, rejected, "hh-rejected", "b", "{}", now))
        with cursor.copy(
            "COPY annotation_task (id, project_id, prompt_id, num_responses, priority, required_annotations,"
            " judgement_count, state, source, rl_round, is_gold, gold_tiers, metadata, created_at, completed_at)"
            " FROM STDIN"
        ) as copy:
            for i in range(1, args.tasks + 1):
                copy.write_row(
                    (i, pid, i, RESPONSES_PER_TASK, 0, OVERLAP, 0, "open", "bench", None, False, None, "{}", now, None)
                )
        with cursor.copy("COPY annotation_taskresponse (id, task_id, response_id, position) FROM STDIN") as copy:
            for i in range(1, args.tasks + 1):
                copy.write_row((2 * i - 1, i, 2 * i - 1, 0))
                copy.write_row((2 * i, i, 2 * i, 1))
        for table in ("annotation_prompt", "annotation_response", "annotation_task", "annotation_taskresponse"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608
            )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - started
    connection.close()
    return LoadedProject(
        project_id=pid,
        tokens=[t.key for t in tokens],
        username=users[0].username,
        password=password,
        seconds=seconds,
        source=source,
    )


# --- gunicorn -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_label(args: argparse.Namespace) -> str:
    threads = f" x {args.gunicorn_threads} threads" if args.gunicorn_worker_class == "gthread" else ""
    return f"{args.gunicorn_worker_class}, {args.gunicorn_workers} workers{threads}"


@contextlib.contextmanager
def gunicorn(args: argparse.Namespace, env: dict[str, str], log_path: Path) -> Iterator[tuple[str, int]]:
    """Run gunicorn for the duration of the block; yield (base URL, master pid). Always stopped."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        args.wsgi_app,
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        args.gunicorn_worker_class,
        "--workers",
        str(args.gunicorn_workers),
        "--threads",
        str(args.gunicorn_threads),
        "--timeout",
        "120",
        "--graceful-timeout",
        "5",
        "--keep-alive",
        "10",
        "--log-level",
        "warning",
    ]
    with open(log_path, "wb") as log:
        # Own session: Ctrl-C reaches only this script, which then stops the server itself.
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process, log_path)
        yield base, process.pid
    finally:
        stop_process(process)


def wait_until_serving(base: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base}{API}/", timeout=2):  # noqa: S310 - our own http://127.0.0.1 URL
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer (401, 404) means it is serving
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer within {timeout:.0f} s:\n{tail(log_path)}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group of the process we started, and only that
        process.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- CPU accounting -------------------------------------------------------------------------


def _proc_stats() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, parent pid, CPU seconds) for every process we can read."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw[raw.rfind(")") + 2 :].split()
        stats[int(entry)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return stats


def _machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int, stats: dict[int, tuple[str, int, float]]) -> set[int]:
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (_, ppid, _) in stats.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _our_postgres_pids(database_url: str) -> set[int]:
    """Backends of the bench database plus the server's own background processes (WAL writer, ...)."""
    import psycopg

    with psycopg.connect(conninfo(database_url, "postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s OR datname IS NULL", (database_name(database_url),)
        ).fetchall()
    return {pid for (pid,) in rows}


Snapshot = dict[str, dict[int, float]]


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and its descendants (gunicorn's master and workers), in MB."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in _descendants(root, _proc_stats()):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total / 1e6


def cpu_snapshot(gunicorn_pid: int, database_url: str) -> Snapshot:
    """CPU seconds per process so far, by party: client (this process tree), gunicorn, PostgreSQL, all."""
    postgres = _our_postgres_pids(database_url)
    stats = _proc_stats()
    server = _descendants(gunicorn_pid, stats)
    client = _descendants(os.getpid(), stats) - server
    parties: Snapshot = {"client": {}, "gunicorn": {}, "postgres": {}, "all": {}}
    for pid, (name, _, seconds) in stats.items():
        parties["all"][pid] = seconds
        if pid in server:
            parties["gunicorn"][pid] = seconds
        elif pid in client:
            parties["client"][pid] = seconds
        elif pid in postgres and name.startswith("postgres"):
            parties["postgres"][pid] = seconds
    return parties


class CpuSampler(threading.Thread):
    """Polls per-process CPU time through the measured window, once a second.

    Polling, not two snapshots: Django closes a database connection after CONN_MAX_AGE
    (60 s), so PostgreSQL backends come and go inside a window; a backend that exits
    keeps the CPU it was last seen with (it loses at most one interval), and a process
    that appears counts from zero.
    """

    def __init__(
        self, gunicorn_pid: int, database_url: str, start_at: float, end_at: float, interval: float = 1.0
    ) -> None:
        super().__init__(daemon=True)
        self.gunicorn_pid, self.database_url = gunicorn_pid, database_url
        self.start_at, self.end_at, self.interval = start_at, end_at, interval
        self.first: Snapshot | None = None
        self.last: Snapshot = {}
        self.times: list[float] = []
        self.busy: list[float] = []  # machine busy seconds at the first and the latest poll
        # gunicorn's resident memory (master + workers) at each poll: flat over a long run, or a leak.
        self.rss_mb: list[float] = []
        self.stop = threading.Event()

    def _poll(self) -> None:
        processes = cpu_snapshot(self.gunicorn_pid, self.database_url)
        if self.first is None:
            self.first = processes
            self.last = {party: {} for party in processes}
        for party, seen in processes.items():
            self.last[party].update(seen)
        self.times = [self.times[0] if self.times else time.time(), time.time()]
        busy = _machine_busy_seconds()
        self.busy = [self.busy[0] if self.busy else busy, busy]
        self.rss_mb.append(tree_rss_mb(self.gunicorn_pid))

    def run(self) -> None:
        if self.stop.wait(max(0.0, self.start_at - time.time())):
            return
        while True:
            with contextlib.suppress(Exception):  # a failed poll only widens the error bar
                self._poll()
            if time.time() >= self.end_at or self.stop.wait(min(self.interval, max(0.0, self.end_at - time.time()))):
                return

    def finish(self) -> dict[str, float] | None:
        """Cores used per party over the window (closing it now if the load ended early)."""
        self.stop.set()
        self.join()
        if self.first is not None and time.time() < self.end_at:
            self._poll()  # the load ended before the window did
        if self.first is None or len(self.times) < 2 or self.times[1] <= self.times[0]:
            return None
        first, span = self.first, self.times[1] - self.times[0]
        cores = {
            party: sum(seconds - first[party].get(pid, 0.0) for pid, seconds in self.last[party].items()) / span
            for party in ("client", "gunicorn", "postgres")
        }
        cores["machine"] = (self.busy[1] - self.busy[0]) / span
        cores["other"] = max(0.0, cores["machine"] - cores["client"] - cores["gunicorn"] - cores["postgres"])
        return cores


# --- the simulated annotators ---------------------------------------------------------------


@dataclass
class ShardConfig:
    base_url: str
    project_id: int
    tokens: list[str]
    warmup_end: float  # epoch seconds: the measured window opens
    end: float  # epoch seconds: no claim starts after this
    retry_rate: float
    request_timeout: float
    seed: int
    think_time: float = 0.0  # mean seconds an annotator reads before submitting (exponential)


@dataclass
class ShardResult:
    claim_ms: list[float] = field(default_factory=list)  # requests started inside the window
    submit_ms: list[float] = field(default_factory=list)
    retry_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # "claim 200", "submit 409", "submit ClientOSError"
    accepted: list[tuple[int, int]] = field(default_factory=list)  # (judgement id, assignment id) of every 201
    accepted_in_window: int = 0
    retries: int = 0
    retry_mismatches: int = 0  # a retry answered with another judgement, or without one
    unparsed: int = 0  # 201 bodies without a judgement id
    out_of_work: list[float] = field(default_factory=list)  # when annotators were told 204

    def merge(self, other: ShardResult) -> None:
        self.claim_ms += other.claim_ms
        self.submit_ms += other.submit_ms
        self.retry_ms += other.retry_ms
        self.statuses.update(other.statuses)
        self.accepted += other.accepted
        self.accepted_in_window += other.accepted_in_window
        self.retries += other.retries
        self.retry_mismatches += other.retry_mismatches
        self.unparsed += other.unparsed
        self.out_of_work += other.out_of_work


def judgement_id(body: Any) -> int | None:
    """The judgement id of a submit answer: ``{"id"}`` or ``{"judgement": {"id"}}``."""
    if isinstance(body, dict):
        if isinstance(body.get("judgement"), dict):
            body = body["judgement"]
        if isinstance(body.get("id"), int):
            return body["id"]
    return None


class Annotator:
    def __init__(self, config: ShardConfig, session: aiohttp.ClientSession, token: str, seed: int) -> None:
        self.config, self.session = config, session
        self.headers = {"Authorization": f"Token {token}"}
        self.rng = random.Random(seed)
        self.claim_url = f"{config.base_url}{API}/projects/{config.project_id}/claim/"

    async def _post(self, url: str, payload: dict[str, Any] | None) -> tuple[int, Any, float, float]:
        """POST and read the answer: (status, JSON body or None, start epoch, latency ms)."""
        started, clock = time.time(), time.perf_counter()
        async with self.session.post(url, json=payload, headers=self.headers) as response:
            raw = await response.read()
        elapsed = (time.perf_counter() - clock) * 1000
        body = None
        if raw and response.content_type == "application/json":
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        return response.status, body, started, elapsed

    def _record(
        self, result: ShardResult, samples: list[float], op: str, status: int, started: float, ms: float
    ) -> None:
        result.statuses[f"{op} {status}"] += 1
        if self.config.warmup_end <= started < self.config.end:
            samples.append(ms)

    async def _post_until_served(
        self, result: ShardResult, op: str, url: str, payload: dict[str, Any]
    ) -> tuple[int, Any, float, float]:
        """POST a submit; on 503 (a service away for a moment) wait as told and send the same request again.

        What a real client does: the client token makes the repeat safe, so an answer
        lost to an outage never costs the annotator their work.
        """
        samples = result.submit_ms if op == "submit" else result.retry_ms
        for _ in range(30):
            status, body, started, ms = await self._post(url, payload)
            self._record(result, samples, op, status, started, ms)
            if status != 503:
                break
            await asyncio.sleep(1.0)
        return status, body, started, ms

    async def run(self, result: ShardResult) -> None:
        config = self.config
        while time.time() < config.end:
            try:
                status, body, started, ms = await self._post(self.claim_url, None)
                self._record(result, result.claim_ms, "claim", status, started, ms)
                if status == 204:
                    result.out_of_work.append(time.time())
                    return
                try:
                    assignment = body["assignment"]
                    order = [r["id"] for r in assignment["responses"]]
                except (KeyError, TypeError):
                    if status == 200:
                        result.statuses["claim 200-unexpected-body"] += 1
                    await asyncio.sleep(0.05)  # an error: do not spin
                    continue
                self.rng.shuffle(order)
                if config.think_time > 0:
                    # A person reads before answering: an open-ish load instead of a closed loop.
                    await asyncio.sleep(self.rng.expovariate(1.0 / config.think_time))
                payload = {"ranking": [[rid] for rid in order], "client_token": str(uuid.uuid4())}
                submit_url = f"{config.base_url}{API}/assignments/{assignment['id']}/submit/"
                status, body, started, ms = await self._post_until_served(result, "submit", submit_url, payload)
                if status != 201:
                    continue
                jid = judgement_id(body)
                if jid is None:
                    result.unparsed += 1
                else:
                    result.accepted.append((jid, assignment["id"]))
                if config.warmup_end <= time.time() <= config.end:
                    result.accepted_in_window += 1
                if self.rng.random() < config.retry_rate:
                    # The same request again, as after a lost answer: must create nothing.
                    result.retries += 1
                    status, body, started, ms = await self._post_until_served(result, "retry", submit_url, payload)
                    if status != 200 or judgement_id(body) != jid:
                        result.retry_mismatches += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                result.statuses[f"request {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)


async def run_shard_async(config: ShardConfig) -> ShardResult:
    result = ShardResult()
    connector = aiohttp.TCPConnector(limit=len(config.tokens), keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout)
    headers = {"Accept": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        annotators = [
            Annotator(config, session, token, seed=config.seed * 1_000_003 + i) for i, token in enumerate(config.tokens)
        ]
        await asyncio.gather(*(a.run(result) for a in annotators))
    return result


def _client_process(config: ShardConfig, results: Any) -> None:
    """Entry point of a client process: run one shard and send its result back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends us
    results.put(asyncio.run(run_shard_async(config)))


def run_clients(args: argparse.Namespace, base_url: str, loaded: LoadedProject, warmup_end: float) -> ShardResult:
    end = warmup_end + args.duration
    shards = [
        ShardConfig(
            base_url=base_url,
            project_id=loaded.project_id,
            tokens=loaded.tokens[i :: args.client_procs],
            warmup_end=warmup_end,
            end=end,
            retry_rate=args.retry_rate,
            request_timeout=args.request_timeout,
            seed=args.seed + i,
            think_time=args.think_time,
        )
        for i in range(args.client_procs)
    ]
    if len(shards) == 1:
        return asyncio.run(run_shard_async(shards[0]))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_client_process, args=(shard, results), daemon=True) for shard in shards]
    merged = ShardResult()
    try:
        for process in processes:
            process.start()
        received = 0
        while received < len(processes):
            try:
                merged.merge(results.get(timeout=1.0))
                received += 1
            except queue.Empty:
                if sum(p.is_alive() for p in processes) < len(processes) - received:
                    raise RuntimeError("a client process died without a result") from None
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # only the client processes started above
            process.join()
    return merged


# --- invariants -----------------------------------------------------------------------------


def check_invariants(project_id: int, result: ShardResult) -> list[tuple[str, bool, str]]:
    """Re-check the queue's promises with SQL; returns (name, passed, detail) per check."""
    from django.db import connection

    checks: list[tuple[str, bool, str]] = []

    def scalar(query: str, *params: Any) -> int:
        cursor.execute(query, params)
        return int(cursor.fetchone()[0])

    with connection.cursor() as cursor:
        over = scalar(
            """
            SELECT count(*) FROM annotation_task t
            LEFT JOIN (SELECT task_id, count(*) AS n FROM annotation_judgement GROUP BY task_id) j ON j.task_id = t.id
            LEFT JOIN (SELECT task_id, count(*) AS n FROM annotation_assignment
                       WHERE state = 'leased' AND expires_at > now() GROUP BY task_id) l ON l.task_id = t.id
            WHERE t.project_id = %s AND coalesce(j.n, 0) + coalesce(l.n, 0) > t.required_annotations
            """,
            project_id,
        )
        checks.append(("no task has more judgements + live leases than it needs", over == 0, f"{over} tasks over"))

        dup_assign = scalar(
            """SELECT count(*) FROM (SELECT 1 FROM annotation_assignment WHERE project_id = %s
               GROUP BY task_id, annotator_id HAVING count(*) > 1) d""",
            project_id,
        )
        dup_judge = scalar(
            """SELECT count(*) FROM (SELECT 1 FROM annotation_judgement j JOIN annotation_task t ON t.id = j.task_id
               WHERE t.project_id = %s GROUP BY j.task_id, j.annotator_id HAVING count(*) > 1) d""",
            project_id,
        )
        checks.append(
            (
                "no duplicate (task, annotator) assignment or judgement",
                dup_assign == 0 and dup_judge == 0,
                f"{dup_assign} duplicate assignments, {dup_judge} duplicate judgements",
            )
        )

        cursor.execute("CREATE TEMPORARY TABLE bench_accepted (judgement_id bigint, assignment_id bigint)")
        with cursor.copy("COPY bench_accepted (judgement_id, assignment_id) FROM STDIN") as copy:
            for row in result.accepted:
                copy.write_row(row)
        missing = scalar(
            """SELECT count(*) FROM bench_accepted b LEFT JOIN annotation_judgement j
               ON j.id = b.judgement_id AND j.assignment_id = b.assignment_id WHERE j.id IS NULL"""
        )
        distinct = len({jid for jid, _ in result.accepted})
        received = result.statuses["submit 201"]
        checks.append(
            (
                "every 201 the clients received has its judgement in the database",
                missing == 0 and result.unparsed == 0 and distinct == received,
                f"{received} received, {distinct} distinct ids, {missing} missing, {result.unparsed} without an id",
            )
        )
        cursor.execute("DROP TABLE bench_accepted")

        judgements = scalar(
            """SELECT count(*) FROM annotation_judgement j JOIN annotation_task t ON t.id = j.task_id
               WHERE t.project_id = %s""",
            project_id,
        )
        submitted = scalar(
            "SELECT count(*) FROM annotation_assignment WHERE project_id = %s AND state = 'submitted'", project_id
        )
        checks.append(
            (
                "retries created nothing: judgements == accepted submits",
                judgements == received == submitted and result.retry_mismatches == 0,
                f"{judgements} judgements, {received} accepted submits, {submitted} submitted assignments, "
                f"{result.retries} retries, {result.retry_mismatches} retries not answered 200 with the same id",
            )
        )

        miscounted = scalar(
            """
            SELECT count(*) FROM annotation_task t
            LEFT JOIN (SELECT task_id, count(*) AS n FROM annotation_judgement GROUP BY task_id) j ON j.task_id = t.id
            WHERE t.project_id = %s AND (t.judgement_count <> coalesce(j.n, 0)
                OR (t.state = 'complete') <> (t.judgement_count >= t.required_annotations))
            """,
            project_id,
        )
        checks.append(
            (
                "task.judgement_count equals its judgements (and state follows it)",
                miscounted == 0,
                f"{miscounted} tasks off",
            )
        )

        bad_votes = scalar(
            """
            SELECT count(*) FROM annotation_judgement j JOIN annotation_task t ON t.id = j.task_id
            LEFT JOIN (SELECT judgement_id, count(*) AS n FROM annotation_pairvote GROUP BY judgement_id) p
                ON p.judgement_id = j.id
            WHERE t.project_id = %s AND coalesce(p.n, 0) <> t.num_responses * (t.num_responses - 1) / 2
            """,
            project_id,
        )
        checks.append(
            ("every judgement has exactly C(K,2) = 1 PairVote", bad_votes == 0, f"{bad_votes} judgements off")
        )
    return checks


# --- report ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of an unsorted list."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_row(values: list[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


EXPECTED_STATUSES = {"claim 200", "claim 204", "submit 201", "retry 200"}


def smoke_test_token_endpoint(base_url: str, loaded: LoadedProject) -> str:
    """Log one annotator in through POST /auth/token/; it must hand back the token we created."""
    request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 URL
        f"{base_url}{API}/auth/token/",
        data=json.dumps({"username": loaded.username, "password": loaded.password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            token = json.loads(response.read()).get("token")
    except (urllib.error.URLError, ValueError) as exc:
        return f"FAIL ({exc})"
    return "OK" if token == loaded.tokens[0] else f"FAIL (answered {token!r})"


def print_report(summary: dict[str, Any], checks: list[tuple[str, bool, str]]) -> None:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:8.1f}"

    print()
    print("=" * 78)
    print(f"Arpad annotate load: {summary['annotators']} annotators, {summary['window_s']:.1f} s measured")
    print("=" * 78)
    print(f"  gunicorn           {summary['gunicorn']}")
    print(f"  client             {summary['client_procs']} aiohttp process(es), keep-alive pool")
    print(f"  think time         {summary['think_time_s']:.1f} s mean per task (0 = closed loop at full speed)")
    print(f"  data               {summary['tasks']:,} pairwise tasks, overlap {OVERLAP}, from {summary['data']}")
    print(f"  load time          {summary['load_s']:.1f} s (COPY + VACUUM ANALYZE)")
    print(f"  token endpoint     {summary['token_endpoint']}")
    print("-" * 78)
    print(f"  annotations/s      {summary['annotations_per_s']:.1f}   (accepted submits in the measured window)")
    print(
        f"  annotations        {summary['annotations_in_window']:,} in window, {summary['annotations_total']:,} total"
    )
    print(f"  retries            {summary['retries']} sent, {summary['retry_mismatches']} not answered as expected")
    if summary["out_of_work"]:
        print(f"  out of work        {summary['out_of_work']} annotators got 204 (no work left)")
    print()
    print(f"  {'latency (ms)':14}{'count':>8}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}")
    for op in ("claim", "submit", "retry"):
        row = summary["latency_ms"][op]
        print(f"  {op:14}{row['count']:>8}  {fmt(row['p50'])}  {fmt(row['p95'])}  {fmt(row['p99'])}  {fmt(row['max'])}")
    print()
    print("  status counts      " + ", ".join(f"{k}: {v:,}" for k, v in sorted(summary["statuses"].items())))
    errors = summary["errors"]
    print("  errors             " + (", ".join(f"{k}: {v:,}" for k, v in sorted(errors.items())) or "none"))
    cores = summary["cpu_cores"]
    if cores:
        print(
            f"  CPU (cores busy)   client {cores['client']:.2f}, gunicorn {cores['gunicorn']:.2f}, "
            f"postgres {cores['postgres']:.2f}, other processes {cores['other']:.2f}; "
            f"machine {cores['machine']:.2f} of {os.cpu_count()}"
        )
    rss = summary.get("gunicorn_rss_mb")
    if rss:
        print(
            f"  gunicorn RSS       {rss['start']:.0f} MB at the window's start, {rss['end']:.0f} MB at its end "
            f"(max {rss['max']:.0f} MB; master + workers)"
        )
    per = summary["cpu_ms_per_annotation"]
    if per:
        print(
            f"  CPU per annotation client {per['client']:.1f} ms, gunicorn {per['gunicorn']:.1f} ms, "
            f"postgres {per['postgres']:.1f} ms (claim + submit + retries)"
        )
        print(
            f"  ceiling estimate   {summary['ceiling_per_s']:.0f} annotations/s if these three had all "
            f"{os.cpu_count()} cores to themselves (CPU-bound extrapolation, not a measurement)"
        )
    print("-" * 78)
    print("  invariants")
    for name, passed, detail in checks:
        print(f"    {'PASS' if passed else 'FAIL'}  {name}  [{detail}]")
    print("=" * 78)


# --- main -----------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C, so the finally blocks stop gunicorn and drop the database.
    signal.signal(signal.SIGTERM, _interrupt)
    var_dir = Path(tempfile.mkdtemp(prefix="arpad-bench-"))
    env = django_env(args.database_url, var_dir)
    created = False
    try:
        print(f"creating database {database_name(args.database_url)} and migrating ...", flush=True)
        recreate_database(args.database_url)
        created = True
        migrate(env)
        setup_django(env)
        print(f"loading {args.tasks:,} tasks and {args.annotators} annotators ...", flush=True)
        loaded = load_project(args)
        print(f"loaded in {loaded.seconds:.1f} s", flush=True)

        log_path = var_dir / "gunicorn.log"
        print(f"starting gunicorn ({gunicorn_label(args)}) ...", flush=True)
        with gunicorn(args, env, log_path) as (base_url, gunicorn_pid):
            token_endpoint = smoke_test_token_endpoint(base_url, loaded)
            warmup_end = time.time() + args.warmup
            sampler = CpuSampler(gunicorn_pid, args.database_url, warmup_end, warmup_end + args.duration)
            sampler.start()
            print(f"running: {args.warmup:.0f} s warm-up, then {args.duration:.0f} s measured ...", flush=True)
            result = run_clients(args, base_url, loaded, warmup_end)
            cores = sampler.finish()
            server_log = tail(log_path)

        end = warmup_end + args.duration
        if result.out_of_work and len(result.out_of_work) == args.annotators:
            end = min(end, max(result.out_of_work))  # the queue ran dry before the window closed
        window = max(end - warmup_end, 1e-9)
        checks = check_invariants(loaded.project_id, result)
        per_annotation, ceiling = None, None
        if cores and result.accepted_in_window:
            rate = result.accepted_in_window / window
            per_annotation = {k: cores[k] * 1000 / rate for k in ("client", "gunicorn", "postgres")}
            ceiling = (os.cpu_count() or 1) * 1000 / max(sum(per_annotation.values()), 1e-9)
        errors = {k: v for k, v in result.statuses.items() if k not in EXPECTED_STATUSES}
        summary: dict[str, Any] = {
            "annotators": args.annotators,
            "tasks": args.tasks,
            "data": loaded.source,
            "load_s": round(loaded.seconds, 2),
            "gunicorn": gunicorn_label(args),
            "think_time_s": args.think_time,
            "gunicorn_worker_class": args.gunicorn_worker_class,
            "gunicorn_workers": args.gunicorn_workers,
            "gunicorn_threads": args.gunicorn_threads,
            "client_procs": args.client_procs,
            "token_endpoint": token_endpoint,
            "window_s": window,
            "annotations_per_s": result.accepted_in_window / window,
            "annotations_in_window": result.accepted_in_window,
            "annotations_total": result.statuses["submit 201"],
            "retries": result.retries,
            "retry_mismatches": result.retry_mismatches,
            "out_of_work": len(result.out_of_work),
            "latency_ms": {
                "claim": latency_row(result.claim_ms),
                "submit": latency_row(result.submit_ms),
                "retry": latency_row(result.retry_ms),
            },
            "statuses": dict(result.statuses),
            "errors": errors,
            "cpu_cores": cores,
            "gunicorn_rss_mb": (
                {"start": sampler.rss_mb[0], "end": sampler.rss_mb[-1], "max": max(sampler.rss_mb)}
                if sampler.rss_mb
                else None
            ),
            "cpu_ms_per_annotation": per_annotation,
            "ceiling_per_s": ceiling,
            "invariants": {name: passed for name, passed, _ in checks},
        }
        print_report(summary, checks)
        if errors and server_log:
            print("last lines of the gunicorn log:\n" + server_log)
        if args.json:
            print(json.dumps(summary, default=float))
        return 0 if all(passed for _, passed, _ in checks) else 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        release_database(args.database_url, created=created, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
