"""What a hostile or merely large import costs a worker: time to refuse a gzip bomb, memory of a big file.

What it measures
    1. ``bomb``: a gzip of ``--blank-mb`` MB of blank lines (about 51 KB for 50 MB) given to
       ``annotation.importers.import_file`` as a ``jsonl`` import with the default limits:
       seconds until it is refused, and the error it is refused with. A worker holds the
       import's queue for that long.
    2. ``pandalm-read``: the reading alone of a PandaLM-style JSON list of ``--pandalm-mb`` MB
       (items of about 1 KB, three annotator labels each): every item decoded and dropped,
       nothing checked or kept. The peak resident memory this adds to the process (VmHWM
       after ``clear_refs`` minus VmRSS before) and the seconds it takes.
    3. ``pandalm-refused``: the same file with a broken last item, given to ``import_file``:
       the whole file is read and checked (every record kept for the write phase, which the
       importer runs only for a file without errors), and nothing is written. Same figures.
    4. ``pandalm``: the file without the broken item, imported for real (parse and write):
       the same figures, and the items imported.

How
    The parent builds the input files and a throwaway database (SQLite in a temporary
    folder unless ``--database-url`` names a PostgreSQL database whose name contains
    ``bench``), runs ``manage.py migrate`` in a subprocess, then runs each phase in a
    subprocess of its own (this script with ``--phase``), so that each peak is its own.
    Before measuring, a phase imports a tiny file of the same format (every module loaded,
    every cache warm) and resets the peak counter (``/proc/self/clear_refs``, Linux). It
    prints figures and asserts nothing.

Run from the repository root::

    .venv/bin/python bench/import_limits.py                       # 50 MB bomb, 50 MB PandaLM file
    .venv/bin/python bench/import_limits.py --pandalm-mb 10 --phases bomb,pandalm-refused
    .venv/bin/python bench/import_limits.py --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchdb import REPO_ROOT, django_env, migrate, recreate_database, release_database, setup_django

PHASES = ("bomb", "pandalm-read", "pandalm-refused", "pandalm")
ITEM_TEXT = 300  # characters of each response and of the instruction: items of about 1 KB


# --- inputs ---------------------------------------------------------------------------------


def write_bomb(path: Path, megabytes: float) -> None:
    block = b"\n" * (1024 * 1024)
    with gzip.open(path, "wb", compresslevel=9) as out:
        for _ in range(int(megabytes)):
            out.write(block)


def pandalm_item(i: int) -> dict[str, Any]:
    words = f"item {i} " + "lorem ipsum dolor sit amet " * (ITEM_TEXT // 27)
    return {
        "idx": i,
        "motivation_app": "bench",
        "instruction": f"Question {i}: " + words,
        "input": "",
        "response1": "first " + words,
        "response2": "second " + words,
        "annotator1": 1,
        "annotator2": 2,
        "annotator3": 1 + i % 2,
    }


def write_pandalm(path: Path, megabytes: float, *, broken_last: bool) -> int:
    """A JSON list of about ``megabytes`` MB, one item per line as the published file has it."""
    target = int(megabytes * 1024 * 1024)
    written, count = 0, 0
    with path.open("w", encoding="utf-8") as out:
        out.write("[\n")
        while written < target:
            text = json.dumps(pandalm_item(count))
            out.write(("," if count else "") + text + "\n")
            written += len(text) + 2
            count += 1
        if broken_last:
            out.write(',{"idx": "broken", "instruction": "no responses", "annotator1": 7}\n')
        out.write("]\n")
    return count


# --- measuring, in the phase's own process --------------------------------------------------


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Make VmHWM start again from the current RSS (Linux 4.0+); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def read_list(project: Any, path: Path) -> int:
    """Items of a JSON list file, read as the PandaLM importer reads them; nothing kept."""
    from annotation.importers.base import ErrorCollector, ImportContext, ImportSummary
    from annotation.importers.reader import InputFile

    ctx = ImportContext(
        project=project,
        path=path,
        display_name=path.name,
        format="pandalm",
        options={},
        errors=ErrorCollector(path.name),
        summary=ImportSummary(),
        progress=lambda fraction: None,
    )
    source = InputFile(ctx)
    if hasattr(source, "json_list"):
        items = source.json_list()
    else:  # the reader before issue 13: the whole file read, joined and decoded, then split
        from annotation.importers.reader import json_list_items

        items = json_list_items(ctx, source.read_all())
    return sum(1 for _ in items)


def run_phase(phase: str, workdir: Path) -> dict[str, Any]:
    setup_django()
    from annotation.importers import ImportFailed, import_file
    from annotation.models import Project

    def project() -> Project:
        return Project.objects.create(name=f"bench {phase} {time.monotonic_ns()}", allow_ties=True)

    fmt = "jsonl" if phase == "bomb" else "pandalm"
    warm = workdir / ("warm.jsonl" if fmt == "jsonl" else "warm.json")
    import_file(project=project(), path=warm, format=fmt)  # every module loaded, every cache warm
    path = {
        "bomb": "bomb.jsonl.gz",
        "pandalm-read": "pandalm.json",
        "pandalm-refused": "pandalm-broken.json",
        "pandalm": "pandalm.json",
    }[phase]
    target = project()
    before = _proc_status_mb("VmRSS")
    peak_reset = reset_peak()
    started = time.perf_counter()
    outcome: dict[str, Any] = {}
    try:
        if phase == "pandalm-read":
            outcome = {"read": read_list(target, workdir / path)}
        else:
            summary = import_file(project=target, path=workdir / path, format=fmt)
            outcome = {"imported": summary.prompts}
    except ImportFailed as exc:
        first = exc.errors[0]
        outcome = {"refused": f"line {first.line}: {first.field}: {first.message}"[:160]}
    seconds = time.perf_counter() - started
    peak = _proc_status_mb("VmHWM")
    return {
        "phase": phase,
        "seconds": round(seconds, 3),
        "rss_before_mb": before,
        "peak_mb": peak,
        "peak_increase_mb": None if not peak_reset or peak is None or before is None else round(peak - before, 1),
        **outcome,
    }


# --- the parent -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blank-mb", type=float, default=50.0, help="decompressed size of the gzip bomb (MB)")
    parser.add_argument("--pandalm-mb", type=float, default=50.0, help="size of the PandaLM-style file (MB)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--database-url", help="a PostgreSQL database whose name contains 'bench' (default: SQLite)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (and database)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        print(json.dumps(run_phase(args.phase, args.workdir)))
        return

    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="arpad-import-bench-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    if args.database_url:
        if "bench" not in url.rsplit("/", 1)[-1]:
            parser.error("the database name must contain 'bench': it is dropped and re-created")
        recreate_database(url)
    env = django_env(url, workdir / "var")
    try:
        migrate(env)
        (workdir / "warm.jsonl").write_text(json.dumps({"prompt": "warm up", "responses": ["a", "b"]}) + "\n")
        (workdir / "warm.json").write_text(json.dumps([pandalm_item(0)]))
        sizes: dict[str, Any] = {}
        if "bomb" in phases:
            write_bomb(workdir / "bomb.jsonl.gz", args.blank_mb)
            sizes["bomb_gzip_kb"] = round((workdir / "bomb.jsonl.gz").stat().st_size / 1024, 1)
        if "pandalm-refused" in phases:
            write_pandalm(workdir / "pandalm-broken.json", args.pandalm_mb, broken_last=True)
        if "pandalm" in phases or "pandalm-read" in phases:
            sizes["pandalm_items"] = write_pandalm(workdir / "pandalm.json", args.pandalm_mb, broken_last=False)
            sizes["pandalm_mb"] = round((workdir / "pandalm.json").stat().st_size / 1024**2, 1)
        results = []
        for phase in phases:
            done = subprocess.run(
                [sys.executable, __file__, "--phase", phase, "--workdir", str(workdir)],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if args.database_url:
            release_database(url, created=True, keep=args.keep)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "database": "postgresql" if args.database_url else "sqlite",
        "inputs": {"blank_mb": args.blank_mb, "pandalm_mb": args.pandalm_mb, **sizes},
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['machine']}; {report['database']}; inputs {report['inputs']}")
    print(f"{'phase':<16} {'seconds':>8} {'peak +MB':>9}  outcome")
    for r in results:
        if "refused" in r:
            outcome = f"refused: {r['refused']}"
        else:
            outcome = f"read {r['read']} items" if "read" in r else f"imported {r['imported']} items"
        increase = "n/a" if r["peak_increase_mb"] is None else f"{r['peak_increase_mb']:.1f}"
        print(f"{r['phase']:<16} {r['seconds']:>8.2f} {increase:>9}  {outcome}")


if __name__ == "__main__":
    main()
