"""Browser benchmark of the labeling page: Enter (submit) to the next task being usable.

What it measures
    What an annotator feels between tasks: the time from pressing Enter on a finished
    task to the next task being on screen and taking keys, in a real Chromium against
    gunicorn + PostgreSQL on this machine. The browser, gunicorn and PostgreSQL share the
    CPU, so the figures include their contention. It prints figures; it never asserts them.

How
    1. Creates a fresh PostgreSQL database (default ``arpad_bench_ui``), migrates it,
       collects the static files, and loads one pairwise project with ``--tasks`` + 1
       tasks (overlap 1; multi-turn prompts and markdown responses with lists, a table and
       a code block, about 1-2 kB each, so rendering and sanitizing cost what they do on
       real data) and one annotator.
    2. Starts gunicorn (production settings over plain http) on a free 127.0.0.1 port.
    3. Drives Debian's Chromium with Playwright: logs in, opens the labeling page, and for
       each task presses ``1`` then ``Enter``. A probe in the page stamps the Enter keydown
       (capture phase, before the page's own handler) and the moment the next task is
       drawn: the page sets the task's ``data-assignment`` and unhides it in the same
       script turn, a MutationObserver sees that, and the stamp is taken after the next
       animation frame and a macrotask, i.e. once the frame with the new task was
       produced and the page is idle to take the next key. The first ``--warmup``
       tasks are not counted.
    4. The old sequential path, for comparison: with the same session, from the same page,
       the three requests it made one after another (API submit, API claim, render of the
       claimed task), timed with ``performance.now()`` around the fetches alone, so this
       is a lower bound for that path (no drawing included), against the one request of
       the current path (``annotate-submit-next``), also timed alone.
    5. Prints count, median, p95 and max for each, checks in SQL that every task got
       exactly one judgement, stops gunicorn and drops the database unless ``--keep``.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, user postgres, trust auth)::

    .venv/bin/python bench/ui_latency.py                 # 150 tasks measured per path
    .venv/bin/python bench/ui_latency.py --tasks 300 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchdb import REPO_ROOT, database_name, django_env, migrate, recreate_database, release_database, setup_django

CHROMIUM = Path(os.environ.get("ARPAD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
PASSWORD = secrets.token_urlsafe(12)

# Installed into the page (through the DevTools protocol, so the CSP does not apply).
PROBE = """() => {
  window.__lat = [];
  let t0 = null;
  document.addEventListener("keydown", (e) => { if (e.key === "Enter") t0 = performance.now(); }, true);
  const task = document.getElementById("task");
  new MutationObserver(() => {
    if (t0 === null || task.hidden || !task.dataset.assignment) return;
    const start = t0;
    t0 = null;
    requestAnimationFrame(() => setTimeout(() => window.__lat.push(performance.now() - start), 0));
  }).observe(task, { attributes: true, attributeFilter: ["hidden", "data-assignment"] });
}"""

# The old sequential path, request by request, from inside the page with its session.
SEQUENTIAL = """async ([n, claimUrl, renderUrl, submitUrl]) => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const post = (url, body) => fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body)});
  const slot = (url, id) => url.replace("987654321", String(id));
  let cur = (await (await post(claimUrl)).json()).assignment;
  await (await fetch(slot(renderUrl, cur.id), {credentials: "same-origin"})).json();
  const out = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const body = {ranking: cur.display_order.map((id) => [id]), client_token: crypto.randomUUID()};
    const sub = await post(slot(submitUrl, cur.id), body);
    if (sub.status !== 201) throw new Error(`submit answered ${sub.status}`);
    const claim = await post(claimUrl);
    if (claim.status !== 200) throw new Error(`claim answered ${claim.status}`);
    cur = (await claim.json()).assignment;
    await (await fetch(slot(renderUrl, cur.id), {credentials: "same-origin"})).json();
    out.push(performance.now() - t0);
  }
  return out;
}"""

ONE_TRIP = """async ([n, nextUrl, submitNextUrl]) => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const post = (url, body) => fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body)});
  let cur = (await (await post(nextUrl)).json()).next;
  const out = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const body = {ranking: cur.display_order.map((id) => [id]), client_token: crypto.randomUUID()};
    const res = await post(submitNextUrl.replace("987654321", String(cur.id)), body);
    const data = await res.json();
    if (!res.ok || !data.submitted || !data.submitted.created) throw new Error(`submit answered ${res.status}`);
    cur = data.next;
    out.push(performance.now() - t0);
  }
  return out;
}"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/arpad_bench_ui",
        help="Throwaway PostgreSQL database (dropped and re-created; its name must contain 'bench').",
    )
    parser.add_argument("--tasks", type=int, default=150, help="Tasks measured per path (at least 100 to report).")
    parser.add_argument("--warmup", type=int, default=5, help="Tasks done first and not counted, per path.")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args(argv)
    if "bench" not in database_name(args.database_url):
        parser.error("the database name must contain 'bench': it is dropped and re-created")
    if args.tasks < 1 or args.warmup < 0:
        parser.error("--tasks must be positive and --warmup not negative")
    return args


# --- data -----------------------------------------------------------------------------------


def _response_text(rng: random.Random, i: int, j: int) -> str:
    steps = "\n".join(
        f"{n}. Step {n}: {rng.choice(['check', 'measure', 'compare', 'write'])} the thing." for n in range(1, 5)
    )
    rows = "\n".join(f"| {k} | {rng.randint(1, 99)} | {rng.random():.3f} |" for k in range(3))
    code = "\n".join(f"    total += values[{k}] * {rng.randint(2, 9)}" for k in range(4))
    filler = " ".join(
        rng.choice(["the", "model", "answer", "reward", "policy", "helpful", "because"]) for _ in range(60)
    )
    return (
        f"Here is answer {j} to question {i}. {filler.capitalize()}.\n\n{steps}\n\n"
        f"| key | count | share |\n|---|---|---|\n{rows}\n\n```python\ndef score(values):\n    total = 0\n{code}\n"
        f"    return total\n```\n\nSee [the docs](https://example.org/docs/{i}) for *more* details."
    )


def load_project(n_tasks: int, *, name: str, annotator: Any) -> Any:
    from annotation.models import Membership, Project, Prompt, Response, Role, Task, TaskResponse

    rng = random.Random(n_tasks)
    project = Project.objects.create(name=name, annotations_per_task=1, allow_ties=True, lease_seconds=1800)
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    prompts = Prompt.objects.bulk_create(
        Prompt(
            project=project,
            external_id=f"{name}-{i}",
            messages=[
                {"role": "system", "content": "You are a careful assistant."},
                {"role": "user", "content": f"Question {i}: how do I compute a **weighted** total?"},
                {"role": "assistant", "content": "Do you have the weights?"},
                {"role": "user", "content": "Yes, in a list. Show code please."},
            ],
        )
        for i in range(n_tasks)
    )
    responses = Response.objects.bulk_create(
        Response(prompt=p, text=_response_text(rng, i, j), source=f"model-{j}")
        for i, p in enumerate(prompts)
        for j in range(2)
    )
    tasks = Task.objects.bulk_create(
        Task(project=project, prompt=p, num_responses=2, required_annotations=1) for p in prompts
    )
    TaskResponse.objects.bulk_create(
        TaskResponse(task=t, response=responses[2 * i + j], position=j) for i, t in enumerate(tasks) for j in range(2)
    )
    return project


# --- gunicorn -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(args: argparse.Namespace, env: dict[str, str], log_path: Path) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "arpad.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "gthread",
        "--workers",
        str(args.gunicorn_workers),
        "--threads",
        str(args.gunicorn_threads),
        "--keep-alive",
        "10",
        "--log-level",
        "warning",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/accounts/login/", timeout=2)  # noqa: S310 - our own local URL
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not answer within 60 s") from None
                time.sleep(0.1)
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the group of the process we started
                process.wait()


# --- browser --------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered))) - 1))]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


def run_browser(base: str, projects: dict[str, Any], args: argparse.Namespace) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    n, warm = args.tasks, args.warmup
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/accounts/login/")
        page.fill("#id_username", "bench-annotator")
        page.fill("#id_password", PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/")

        # 1. The page as annotators use it: keys, drawing, everything.
        page.goto(f"{base}/projects/{projects['ui'].pk}/annotate/")
        page.wait_for_selector("#task:not([hidden])[data-assignment]")
        page.evaluate(PROBE)
        for i in range(warm + n):
            page.keyboard.press("1")
            page.keyboard.press("Enter")
            page.wait_for_function("k => window.__lat.length >= k", arg=i + 1)
        ui = page.evaluate("() => window.__lat")[warm:]
        if errors:
            raise RuntimeError(f"the page raised: {errors}")

        # 2. Requests alone: the current single round trip against the old three.
        page.goto(f"{base}/projects/{projects['one_trip'].pk}/annotate/")
        page.wait_for_selector("#task:not([hidden])[data-assignment]")
        root = page.query_selector("#annotate")
        one_trip = page.evaluate(
            ONE_TRIP, [warm + n, root.get_attribute("data-next-url"), root.get_attribute("data-submit-next-url")]
        )[warm:]
        pid = projects["sequential"].pk
        sequential = page.evaluate(
            SEQUENTIAL,
            [
                warm + n,
                f"/api/v1/projects/{pid}/claim/",
                f"/projects/{pid}/annotate/assignments/987654321/",
                "/api/v1/assignments/987654321/submit/",
            ],
        )[warm:]
        browser.close()
    return {"ui_enter_to_next_task": ui, "requests_one_trip": one_trip, "requests_sequential": sequential}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CHROMIUM.exists():
        print(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="arpad-ui-bench-") as tmp:
        var_dir = Path(tmp)
        env = django_env(args.database_url, var_dir)
        recreate_database(args.database_url)
        try:
            migrate(env)
            subprocess.run(
                [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
                cwd=REPO_ROOT,
                env=env,
                check=True,
            )
            setup_django(env)
            from django.contrib.auth import get_user_model

            from annotation.models import Judgement, Task

            annotator = get_user_model().objects.create_user("bench-annotator", password=PASSWORD)
            # Each path gets its own tasks (+1: the last measured submit needs a next task).
            count = args.warmup + args.tasks + 1
            projects = {
                key: load_project(count, name=f"UI latency {key}", annotator=annotator)
                for key in ("ui", "one_trip", "sequential")
            }
            with gunicorn(args, env, var_dir / "gunicorn.log") as base:
                figures = run_browser(base, projects, args)
            checks = {}
            for key, project in projects.items():
                judgements = Judgement.objects.filter(task__project=project)
                checks[key] = {
                    "judgements": judgements.count(),
                    "expected": args.warmup + args.tasks,
                    # Overlap is 1: a second judgement on a task would be an over-assignment.
                    "over_assigned": judgements.count()
                    - judgements.values("task_id").distinct().count()
                    + Task.objects.filter(project=project, judgement_count__gt=1).count(),
                }
        finally:
            release_database(args.database_url, created=True, keep=args.keep)
    report = {key: summary(values) for key, values in figures.items()}
    report["checks"] = checks
    report["machine"] = {"cpus": os.cpu_count(), "gunicorn": f"gthread {args.gunicorn_workers}x{args.gunicorn_threads}"}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"UI latency over {args.tasks} tasks per path ({args.warmup} warm-up tasks not counted), {os.cpu_count()} CPUs"
        )
        labels = {
            "ui_enter_to_next_task": "Enter -> next task drawn and taking keys (browser, current path)",
            "requests_one_trip": "requests only: submit + next task in one round trip (current)",
            "requests_sequential": "requests only: submit, claim, render one after another (old path)",
        }
        for key, label in labels.items():
            s = report[key]
            print(
                f"  {label}\n      median {s['median_ms']:.1f} ms   p95 {s['p95_ms']:.1f} ms   max {s['max_ms']:.1f} ms   (n={s['n']})"
            )
        ok = all(c["judgements"] == c["expected"] and c["over_assigned"] == 0 for c in checks.values())
        print(f"  checks: every submit recorded once, no task over-assigned: {'PASS' if ok else 'FAIL'} {checks}")
    ok = all(c["judgements"] == c["expected"] and c["over_assigned"] == 0 for c in checks.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
