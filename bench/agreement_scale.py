"""Scale benchmark of the agreement recompute, the export snapshot and Krippendorff's alpha.

What it measures
    How long a full agreement recompute (``annotation.reports.agreement_report``) and an
    export snapshot (``exports.services``) take on a large K=4 ranking project, and how
    much memory each needs; and how the vectorised Krippendorff's alpha of
    ``annotation.agreement`` compares with a textbook reference implementation. It prints
    figures and targets (met / not met); it never asserts them.

How
    1. Creates a fresh PostgreSQL database (default ``arpad_agreement_bench``; the name must
       contain ``bench``), runs ``manage.py migrate`` in a subprocess, and bulk-loads one
       ranking project through COPY: K=4 responses per task, overlap 4, ``--judgements / 4``
       tasks, every task complete. Rows are built with numpy in chunks; the integer-only
       tables (TaskResponse, PairVote) go in as binary COPY, the rest as text COPY. FK
       triggers are skipped during the load (``session_replication_role = replica``); the
       rows are consistent by construction. PairVote's plain indexes are dropped for its
       COPY and built again after it. Then VACUUM ANALYZE.
    2. Synthetic annotators (``--annotators``): each task has latent true response
       qualities; an annotator's ranking sorts the qualities plus annotator-specific noise
       (reliabilities differ), with an annotator-specific tie tolerance (ties sometimes) and
       a pull towards the first-shown response (position bias, strong for a few); a few
       are spammers who rank at random. Each judgement has an Assignment with a shuffled
       display order, so position bias is computable, and a time taken (a few too fast).
       Workload per annotator varies (weighted sampling without replacement per task).
    3. Each measured phase runs in its own subprocess (this script with ``--phase``), so that
       its peak RSS (VmHWM of /proc/self/status) is its own:
         recompute  ``agreement_report(project=..., bootstrap=--bootstrap)``;
         export     ``export_snapshot_create(params={})`` + ``export_snapshot_run``: seconds,
                    groups/s, output sizes;
         alpha      Krippendorff's alpha (nominal, ordinal) of ``annotation.agreement`` on
                    every pair outcome (units: response pairs), read as one ``string_agg``
                    of int8 bytes per column, computed on the compact (slot x unit) matrix
                    (the same value as the rater x unit one, which at 1M judgements is 2.3 GB
                    of NaN and is not built); then the vectorised alpha versus a reference
                    with Python loops over units, on the (rater x unit) matrix of a subsample
                    of ``--reference-units`` units, side by side with the speed ratio and a
                    1e-9 agreement check.
       With ``--reuse`` the kept database is migrated first (the tree may have new migrations).
       ``--profile PHASE`` runs cProfile in that subprocess, ``--tracemalloc PHASE`` tracks
       allocations there (slow; use a small ``--judgements``).
    4. Prints a summary table (phase, seconds, peak MB, throughput, targets: recompute under
       60 s, export at least 20k groups/s, peak memory under 1 GB) and the machine.
    5. Drops the database unless ``--keep``.

Run from the repository root::

    .venv/bin/python bench/agreement_scale.py --judgements 20000
    .venv/bin/python bench/agreement_scale.py                      # 1M judgements, 6M pair votes
    .venv/bin/python bench/agreement_scale.py --judgements 200000 --profile recompute --profile export
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
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

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/arpad_agreement_bench"
K = 4
OVERLAP = 4
PAIRS = K * (K - 1) // 2
PHASES = ("recompute", "export", "alpha")
RESULT_PREFIX = "@@RESULT "
CHUNK_ROWS = 500_000

TARGET_RECOMPUTE_S = 60.0
TARGET_EXPORT_GROUPS_PER_S = 20_000.0
TARGET_PEAK_MB = 1024.0


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Scale benchmark: agreement recompute, export snapshot and Krippendorff's alpha "
        "on a large K=4 ranking project in PostgreSQL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL URL of the bench database; it is DROPPED and re-created, so its name must contain 'bench'.",
    )
    parser.add_argument(
        "--judgements",
        type=int,
        default=1_000_000,
        help="Judgements to load (rounded down to a multiple of the overlap, 4); tasks = judgements / 4, "
        "pair votes = 6 x judgements.",
    )
    parser.add_argument("--annotators", type=int, default=200, help="Synthetic annotators (at least 4).")
    parser.add_argument(
        "--spammers", type=float, default=0.04, help="Share of annotators who rank at random (ignore the responses)."
    )
    parser.add_argument(
        "--bootstrap", type=int, default=200, help="Bootstrap resamples of the agreement recompute (0: no intervals)."
    )
    parser.add_argument(
        "--reference-units",
        type=int,
        default=100_000,
        help="Units (response pairs) the Python-loop reference alpha runs on, sampled at random; 0: all units.",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="Which measured phases to run, each in its own subprocess.",
    )
    parser.add_argument(
        "--profile",
        action="append",
        choices=PHASES,
        default=[],
        help="Run this phase under cProfile and print its top functions (repeat for several phases).",
    )
    parser.add_argument(
        "--tracemalloc",
        action="append",
        choices=PHASES,
        default=[],
        help="Run this phase under tracemalloc and print the lines holding the most memory at its peak "
        "(slow: several times the run time; repeatable).",
    )
    parser.add_argument("--profile-top", type=int, default=30, help="Rows printed by --profile and --tracemalloc.")
    parser.add_argument(
        "--phase-timeout", type=float, default=1800.0, help="Seconds after which a phase subprocess is killed."
    )
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the synthetic data and the subsample.")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Do not re-create or load: measure the project already in --database-url (from an earlier --keep).",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the bench database afterwards (for inspection).")
    parser.add_argument("--json", action="store_true", help="Also print the summary as one JSON line at the end.")
    parser.add_argument(
        "--report-out",
        type=Path,
        help="Write the recompute's agreement report here as JSON (sorted keys, without generated_at), "
        "to compare two versions of the code byte for byte.",
    )
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # internal: run one phase and exit
    parser.add_argument("--project-id", type=int, help=argparse.SUPPRESS)  # internal, with --phase
    args = parser.parse_args(argv)
    args.judgements -= args.judgements % OVERLAP
    if args.judgements < OVERLAP:
        parser.error(f"--judgements must be at least {OVERLAP}")
    if args.annotators < OVERLAP:
        parser.error(f"--annotators must be at least the overlap, {OVERLAP}")
    if not 0.0 <= args.spammers < 1.0:
        parser.error("--spammers must lie in [0, 1)")
    if args.bootstrap < 0 or args.reference_units < 0:
        parser.error("--bootstrap and --reference-units must not be negative")
    if "bench" not in database_name(args.database_url):
        parser.error("the bench database is dropped and re-created: its name must contain 'bench'")
    return args


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


# --- synthetic data -------------------------------------------------------------------------


class Synthetic:
    """Every row of the project, as numpy arrays (ids are 1-based and dense)."""

    def __init__(self, n_tasks: int, n_annotators: int, spammer_share: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.n_tasks = n_tasks
        self.n_judgements = n_tasks * OVERLAP
        n = self.n_judgements

        # Annotators: reliability (noise), tie tolerance, position bias, speed, activity.
        a = n_annotators
        self.noise = rng.uniform(0.2, 1.6, a)
        self.spammer = np.zeros(a, dtype=bool)
        self.spammer[rng.choice(a, max(1, round(spammer_share * a)) if spammer_share > 0 else 0, replace=False)] = True
        self.tie_eps = rng.choice([0.0, 0.05, 0.15, 0.35], a, p=[0.3, 0.3, 0.3, 0.1])
        self.position_pull = np.where(rng.random(a) < 0.05, rng.uniform(0.8, 1.5, a), rng.uniform(0.0, 0.15, a))
        self.median_ms = np.where(rng.random(a) < 0.04, rng.uniform(800, 2500, a), rng.uniform(6000, 40000, a))
        activity = rng.lognormal(0.0, 0.6, a)

        # Which annotators judge each task: weighted sampling without replacement (Gumbel top-k).
        log_w = np.log(activity)
        annot = np.empty((n_tasks, OVERLAP), dtype=np.int64)
        for start in range(0, n_tasks, 20_000):
            stop = min(n_tasks, start + 20_000)
            keys = log_w - np.log(-np.log(rng.random((stop - start, a))))
            annot[start:stop] = np.argpartition(-keys, OVERLAP, axis=1)[:, :OVERLAP]
        self.annotator_index = annot.reshape(-1)  # 0-based, per judgement
        self.task_index = np.repeat(np.arange(n_tasks), OVERLAP)  # 0-based, per judgement

        # Latent quality per response; perceived = quality + noise + pull towards the first shown.
        quality = rng.normal(0.0, 1.0, (n_tasks, K))
        shown_order = np.argsort(rng.random((n, K)), axis=1)  # shown_order[j, s] = position shown s-th
        display_rank = np.argsort(shown_order, axis=1)  # display_rank[j, p] = when position p was shown
        ai = self.annotator_index
        perceived = quality[self.task_index] + self.noise[ai, None] * rng.normal(0.0, 1.0, (n, K))
        perceived -= self.position_pull[ai, None] * display_rank
        spam = self.spammer[ai]
        perceived[spam] = rng.normal(0.0, 1.0, (int(spam.sum()), K))
        # Tiers: sort best first; adjacent responses closer than the tie tolerance share a tier.
        order = np.argsort(-perceived, axis=1)
        ranked = np.take_along_axis(perceived, order, axis=1)
        new_tier = np.concatenate(
            [np.zeros((n, 1), dtype=bool), (ranked[:, :-1] - ranked[:, 1:]) >= self.tie_eps[ai, None]], axis=1
        )
        tier_sorted = np.cumsum(new_tier, axis=1)
        tier = np.empty_like(tier_sorted)
        np.put_along_axis(tier, order, tier_sorted, axis=1)
        self.tier = tier  # tier[j, p]: tier index (0 = best) of position p
        self.shown_order = shown_order
        self.display_rank = display_rank
        self.time_ms = np.maximum(300, rng.lognormal(np.log(self.median_ms[ai]), 0.5)).astype(np.int64)
        self.tokens = rng.integers(0, 2**63 - 1, (n, 2), dtype=np.int64)
        self.text_lengths = rng.integers(40, 600, n_tasks * K)

    # ids (1-based)
    def response_id(self, task_index: np.ndarray, position: np.ndarray | int) -> np.ndarray:
        return task_index * K + position + 1


# --- COPY helpers ---------------------------------------------------------------------------

_PG_BINARY = {"smallint": ">i2", "integer": ">i4", "bigint": ">i8", "boolean": "?"}
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")


def column_types(cursor: Any, table: str) -> dict[str, str]:
    cursor.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", [table])
    return dict(cursor.fetchall())


LOAD_STEPS: dict[str, float] = {}
"""Seconds of each load step (a table's COPY, VACUUM ANALYZE), filled by the load."""


def copy_binary(cursor: Any, table: str, columns: dict[str, np.ndarray]) -> int:
    """COPY integer/boolean columns (no NULLs) in PostgreSQL's binary format, built with numpy."""
    started = time.perf_counter()
    types = column_types(cursor, table)
    names = list(columns)
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for name in names:
        fields += [(f"{name}_len", ">i4"), (name, _PG_BINARY[types[name]])]
    dtype = np.dtype(fields)
    n_rows = len(next(iter(columns.values())))
    with cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(_BINARY_HEADER)
        for start in range(0, n_rows, CHUNK_ROWS):
            stop = min(n_rows, start + CHUNK_ROWS)
            block = np.empty(stop - start, dtype=dtype)
            block["n"] = len(names)
            for name in names:
                block[f"{name}_len"] = dtype[name].itemsize
                block[name] = columns[name][start:stop]
            copy.write(block.tobytes())
        copy.write((-1).to_bytes(2, "big", signed=True))
    LOAD_STEPS[table] = time.perf_counter() - started
    return n_rows


def copy_text(cursor: Any, table: str, columns: list[str], lines: Iterator[str]) -> None:
    """COPY pre-formatted text lines (tab-separated, newline-terminated), joined in chunks."""
    started = time.perf_counter()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 100_000:
                copy.write("".join(batch))
                batch.clear()
        if batch:
            copy.write("".join(batch))
    LOAD_STEPS[table] = time.perf_counter() - started


_WORDS = (
    "the",
    "model",
    "answer",
    "response",
    "helpful",
    "harmless",
    "assistant",
    "user",
    "question",
    "explain",
    "detail",
    "because",
    "however",
    "therefore",
    "example",
    "consider",
    "result",
    "method",
    "data",
    "value",
    "table",
    "figure",
    "clear",
    "short",
    "long",
    "correct",
    "wrong",
    "policy",
    "reward",
    "preference",
    "annotate",
    "rank",
    "compare",
    "better",
    "worse",
    "tie",
    "reason",
    "guideline",
    "summary",
)


def _texts(rng: np.random.Generator, lengths: np.ndarray, pool: int = 4096) -> list[str]:
    """Texts of about the given lengths, cut from a pool of random word sequences."""
    base = [" ".join(rng.choice(_WORDS, 140)) for _ in range(pool)]
    picks = rng.integers(0, pool, lengths.size)
    return [base[p][:n] for p, n in zip(picks.tolist(), lengths.tolist(), strict=True)]


def load_project(args: argparse.Namespace) -> tuple[int, float, dict[str, Any]]:
    """Bulk-load the ranking project; returns (project id, seconds, row counts)."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from annotation.models import Membership, Project, ProjectKind, Role

    started = time.perf_counter()
    n_tasks = args.judgements // OVERLAP
    data = Synthetic(n_tasks, args.annotators, args.spammers, args.seed)
    generated = time.perf_counter() - started
    rng = np.random.default_rng(args.seed + 1)
    now = datetime.now(UTC).isoformat()

    with transaction.atomic():
        project = Project.objects.create(
            name="Agreement scale benchmark",
            kind=ProjectKind.RANKING,
            responses_per_task=K,
            annotations_per_task=OVERLAP,
            allow_ties=True,
        )
        user_model = get_user_model()
        users = user_model.objects.bulk_create(
            user_model(username=f"rater{i:04d}", password="!") for i in range(args.annotators)
        )
        Membership.objects.bulk_create(Membership(project=project, user=u, role=Role.ANNOTATOR) for u in users)
    pid = project.pk
    user_ids = np.array([u.pk for u in users], dtype=np.int64)
    tasks = np.arange(n_tasks)
    n = data.n_judgements

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # skip FK triggers; rows are consistent
        copy_text(
            cursor,
            "annotation_prompt",
            ["id", "project_id", "external_id", "messages", "metadata", "created_at"],
            (
                f'{i + 1}\t{pid}\tbench-{i + 1}\t[{{"role": "user", "content": "Question {i + 1}: {text}?"}}]'
                f"\t{{}}\t{now}\n"
                for i, text in enumerate(_texts(rng, rng.integers(20, 200, n_tasks)))
            ),
        )
        copy_text(
            cursor,
            "annotation_response",
            ["id", "prompt_id", "text", "source", "external_id", "metadata", "created_at"],
            (
                f"{r + 1}\t{r // K + 1}\t{text}\tmodel-{r % K}\tr{r % K}\t{{}}\t{now}\n"
                for r, text in enumerate(_texts(rng, data.text_lengths))
            ),
        )
        copy_text(
            cursor,
            "annotation_task",
            [
                "id",
                "project_id",
                "prompt_id",
                "num_responses",
                "priority",
                "required_annotations",
                "judgement_count",
                "state",
                "source",
                "rl_round",
                "is_gold",
                "gold_tiers",
                "metadata",
                "created_at",
                "completed_at",
            ],
            (
                f"{i}\t{pid}\t{i}\t{K}\t0\t{OVERLAP}\t{OVERLAP}\tcomplete\tbench\t\\N\tf\t\\N\t{{}}\t{now}\t{now}\n"
                for i in range(1, n_tasks + 1)
            ),
        )
        positions = np.tile(np.arange(K), n_tasks)
        task_of = np.repeat(tasks, K)
        copy_binary(
            cursor,
            "annotation_taskresponse",
            {
                "id": np.arange(1, n_tasks * K + 1),
                "task_id": task_of + 1,
                "response_id": data.response_id(task_of, positions),
                "position": positions,
            },
        )
        # Assignments and judgements share ids (one judgement per submitted assignment).
        shown_ids = data.response_id(data.task_index[:, None], data.shown_order)
        annot_ids = user_ids[data.annotator_index]
        task_ids = data.task_index + 1
        copy_text(
            cursor,
            "annotation_assignment",
            [
                "id",
                "task_id",
                "annotator_id",
                "project_id",
                "state",
                "display_order",
                "leased_at",
                "expires_at",
                "finished_at",
                "skip_reason",
            ],
            (
                f"{j + 1}\t{t}\t{u}\t{pid}\tsubmitted\t[{s[0]}, {s[1]}, {s[2]}, {s[3]}]\t{now}\t2999-01-01T00:00:00Z"
                f"\t{now}\t\n"
                for j, (t, u, s) in enumerate(
                    zip(task_ids.tolist(), annot_ids.tolist(), shown_ids.tolist(), strict=True)
                )
            ),
        )
        tiers_json = _tiers_json(data)
        tokens = data.tokens.view(np.uint64)
        copy_text(
            cursor,
            "annotation_judgement",
            [
                "id",
                "task_id",
                "annotator_id",
                "assignment_id",
                "tiers",
                "confidence",
                "rationale",
                "time_taken_ms",
                "client_token",
                "source",
                "created_at",
            ],
            (
                f"{j + 1}\t{t}\t{u}\t{j + 1}\t{tj}\t\\N\t\t{ms}\t{hi:016x}{lo:016x}\tannotation\t{now}\n"
                for j, (t, u, tj, ms, hi, lo) in enumerate(
                    zip(
                        task_ids.tolist(),
                        annot_ids.tolist(),
                        tiers_json,
                        data.time_ms.tolist(),
                        tokens[:, 0].tolist(),
                        tokens[:, 1].tolist(),
                        strict=True,
                    )
                )
            ),
        )
        del tiers_json
        # PairVotes: C(4,2) per judgement, response_a < response_b (position p < q). Its
        # plain indexes (not those behind a constraint) are dropped for the COPY and built
        # again afterwards: one sort per index instead of 6M insertions into each.
        cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'annotation_pairvote'"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        )
        plain_indexes = cursor.fetchall()
        for name, _ in plain_indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        first, second = np.triu_indices(K, 1)
        tier_a, tier_b = data.tier[:, first], data.tier[:, second]
        winner = np.sign(tier_b - tier_a)  # +1: A (lower tier index = better) preferred
        a_first = data.display_rank[:, first] < data.display_rank[:, second]
        judgement_ids = np.repeat(np.arange(1, n + 1), PAIRS)
        copy_binary(
            cursor,
            "annotation_pairvote",
            {
                "id": np.arange(1, n * PAIRS + 1),
                "judgement_id": judgement_ids,
                "task_id": np.repeat(task_ids, PAIRS),
                "annotator_id": np.repeat(annot_ids, PAIRS),
                "response_a_id": data.response_id(data.task_index[:, None], first).reshape(-1),
                "response_b_id": data.response_id(data.task_index[:, None], second).reshape(-1),
                "winner": winner.reshape(-1),
                "a_shown_first": a_first.reshape(-1),
            },
        )
        index_started = time.perf_counter()
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        for _, definition in plain_indexes:
            cursor.execute(definition)
        LOAD_STEPS[f"pairvote indexes ({len(plain_indexes)})"] = time.perf_counter() - index_started
        for table in (
            "annotation_prompt",
            "annotation_response",
            "annotation_task",
            "annotation_taskresponse",
            "annotation_assignment",
            "annotation_judgement",
            "annotation_pairvote",
        ):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608
            )
    vacuum_started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    LOAD_STEPS["VACUUM ANALYZE"] = time.perf_counter() - vacuum_started
    seconds = time.perf_counter() - started
    connection.close()
    counts = {
        "tasks": n_tasks,
        "responses": n_tasks * K,
        "judgements": n,
        "pair_votes": n * PAIRS,
        "annotators": args.annotators,
        "spammers": int(data.spammer.sum()),
        "tie_votes_share": float(np.mean(winner == 0)),
        "generate_s": generated,
        "steps_s": {name.removeprefix("annotation_"): round(value, 1) for name, value in LOAD_STEPS.items()},
    }
    return pid, seconds, counts


def _tiers_json(data: Synthetic) -> list[str]:
    """Judgement.tiers as JSON text, from a template per distinct tier pattern."""
    patterns, inverse = np.unique(data.tier, axis=0, return_inverse=True)
    templates = []
    for pattern in patterns.tolist():
        groups = [[p for p in range(K) if pattern[p] == level] for level in range(max(pattern) + 1)]
        templates.append("[" + ", ".join("[" + ", ".join(f"{{{p}}}" for p in g) + "]" for g in groups) + "]")
    base = (data.task_index * K + 1).tolist()
    return [
        templates[i].format(b, b + 1, b + 2, b + 3) for i, b in zip(inverse.reshape(-1).tolist(), base, strict=True)
    ]


# --- phases (each runs in its own subprocess) -------------------------------------------------


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB.

    VmHWM (Linux) first: ``getrusage`` ``ru_maxrss`` is carried over from the parent across
    fork + exec, so in a subprocess of a large parent it reports the parent's peak.
    """
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    rss = _proc_status_mb("VmRSS")
    return float("nan") if rss is None else rss


def phase_recompute(args: argparse.Namespace) -> dict[str, Any]:
    from annotation.models import Project
    from annotation.reports import agreement_report

    project = Project.objects.get(pk=args.project_id)
    started = time.perf_counter()
    report = agreement_report(project=project, bootstrap=args.bootstrap, seed=0)
    seconds = time.perf_counter() - started
    encoded = json.dumps(report, allow_nan=False)
    if args.report_out is not None:
        stable = {key: value for key, value in report.items() if key != "generated_at"}
        args.report_out.write_text(json.dumps(stable, allow_nan=False, sort_keys=True))
    alpha = report["pairwise"]["krippendorff_alpha"]
    flagged = sum(1 for row in report["annotators"] if row["flags"])
    return {
        "seconds": seconds,
        "throughput": report["counts"]["pair_votes"] / seconds,
        "throughput_unit": "pair votes/s",
        "report_bytes": len(encoded),
        "counts": report["counts"],
        "alpha_nominal": alpha["nominal"]["value"],
        "alpha_ordinal": alpha["ordinal"]["value"],
        "fleiss_kappa": report["pairwise"]["fleiss_kappa"]["value"],
        "kendall_w": (report["ranking"] or {}).get("kendall_w", {}).get("value"),
        "cohen_pairs": len(report["pairwise"]["cohen_kappa"]["pairs"]),
        "annotators_flagged": flagged,
    }


def phase_export(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings

    from annotation.models import Project
    from exports.services import export_snapshot_create, export_snapshot_run

    project = Project.objects.get(pk=args.project_id)
    started = time.perf_counter()
    snapshot = export_snapshot_create(project=project, params={}, user=None)
    snapshot = export_snapshot_run(snapshot_id=snapshot.pk)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"seconds": seconds, "state": snapshot.state, "errors": snapshot.errors}
    counts = snapshot.counts or {}
    groups = sum((counts.get("groups") or {}).values())
    pairs = sum((counts.get("pairs") or {}).values())
    result.update(
        {
            "groups": groups,
            "pairs": pairs,
            "throughput": groups / seconds if seconds else float("nan"),
            "throughput_unit": "groups/s",
            "counts": counts,
        }
    )
    if snapshot.path:
        root = Path(settings.ARTIFACT_ROOT) / snapshot.path
        sizes: dict[str, int] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                key = path.name if path.parent == root else f"{path.parent.name}/*"
                sizes[key] = sizes.get(key, 0) + path.stat().st_size
        result["output_bytes"] = sizes
        result["output_total_bytes"] = sum(sizes.values())
    return result


def read_pair_outcomes(url: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit index, rater id, outcome) of every PairVote (units: response pairs).

    Each column comes as one ``string_agg`` of ``int8send`` bytes (what
    ``annotation.agreement_data`` does), so memory is the arrays plus one copy of the bytes.
    """
    import psycopg

    columns = ("response_a_id", "response_b_id", "annotator_id", "winner")
    select = ", ".join(f"string_agg(int8send({c}::int8), ''::bytea)" for c in columns)
    with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT {select} FROM annotation_pairvote", binary=True)  # noqa: S608 (fixed names)
        values = list(cursor.fetchone())
    arrays = []
    for index in range(len(values)):
        raw, values[index] = values[index], None
        arrays.append(np.frombuffer(raw or b"", dtype=">i8").astype(np.int64))
        del raw
    a, b, r, w = arrays
    keys = a * (int(b.max(initial=0)) + 1) + b
    del a, b
    _, unit = np.unique(keys, return_inverse=True)
    return unit.reshape(-1), r, w


def subsample_matrix(unit: np.ndarray, rater: np.ndarray, outcome: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The (rater x unit) matrix of the given unit indexes only (NaN = no vote), raters with a vote there."""
    keep = np.isin(unit, columns)
    raters, row = np.unique(rater[keep], return_inverse=True)
    column = np.searchsorted(columns, unit[keep])
    matrix = np.full((raters.size, columns.size), np.nan)
    matrix[row, column] = outcome[keep]
    return matrix


def reference_alpha(matrix: np.ndarray, level: str) -> float:
    """Textbook Krippendorff's alpha: coincidence matrix with Python loops over units (Krippendorff 2011)."""
    # One unit (column) at a time as a Python list: the whole matrix as nested lists would be
    # ~1 GB of float objects at 200 raters x 100k units.
    values_seen: set[float] = set()
    for index in range(matrix.shape[1]):
        values_seen.update(v for v in matrix[:, index].tolist() if v == v)
    values: list[float] = sorted(values_seen)
    where = {v: i for i, v in enumerate(values)}
    c = len(values)
    o = [[0.0] * c for _ in range(c)]
    for index in range(matrix.shape[1]):
        unit = [where[v] for v in matrix[:, index].tolist() if v == v]
        m = len(unit)
        if m < 2:
            continue
        for i in range(m):
            for j in range(m):
                if i != j:
                    o[unit[i]][unit[j]] += 1.0 / (m - 1)
    n_c = [sum(row) for row in o]
    n = sum(n_c)
    if n <= 1:
        return float("nan")

    def delta(a: int, b: int) -> float:
        if level == "nominal":
            return 0.0 if a == b else 1.0
        low, high = min(a, b), max(a, b)
        return (sum(n_c[g] for g in range(low, high + 1)) - (n_c[low] + n_c[high]) / 2.0) ** 2

    observed = sum(o[a][b] * delta(a, b) for a in range(c) for b in range(c))
    expected = sum(n_c[a] * n_c[b] * delta(a, b) for a in range(c) for b in range(c))
    if expected == 0:
        return float("nan")
    return 1.0 - (n - 1) * observed / expected


def phase_alpha(args: argparse.Namespace) -> dict[str, Any]:
    """Alpha on every vote, and the vectorised alpha next to the Python-loop reference on a subsample.

    The full (rater x unit) matrix is not built: at 200 raters x 1.5M units it is 2.3 GB of
    NaN. Alpha depends only on each unit's votes, so the compact (slot x unit) matrix gives
    the same value (checked in the tests); the side by side uses the dense matrix of the
    subsampled units, which is what the reference loops over.
    """
    from annotation.agreement import PairVotes, krippendorff_alpha
    from annotation.reports import compact_ratings

    started = time.perf_counter()
    unit, rater, outcome = read_pair_outcomes(os.environ["DATABASE_URL"])
    read_s = time.perf_counter() - started
    n_units = int(unit.max()) + 1 if unit.size else 0
    n_raters = int(np.unique(rater).size)
    t0 = time.perf_counter()
    compact = compact_ratings(PairVotes(unit=unit, rater=rater, outcome=outcome))
    matrix_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "read_s": read_s,
        "matrix_s": matrix_s,
        "dense_shape": [n_raters, n_units],
        "dense_mb": n_raters * n_units * 8 / 2**20,
        "votes": int(unit.size),
        "compact_shape": list(compact.shape),
    }
    full: dict[str, dict[str, float]] = {}
    for level in ("nominal", "ordinal"):
        t0 = time.perf_counter()
        value = krippendorff_alpha(compact, level).value
        full[level] = {"value": value, "seconds": time.perf_counter() - t0}
    result["full"] = full
    del compact

    rng = np.random.default_rng(args.seed)
    if args.reference_units and args.reference_units < n_units:
        columns = np.sort(rng.choice(n_units, args.reference_units, replace=False))
    else:
        columns = np.arange(n_units)
    sub = subsample_matrix(unit, rater, outcome, columns)
    side: dict[str, dict[str, float]] = {}
    for level in ("nominal", "ordinal"):
        t0 = time.perf_counter()
        vectorised = krippendorff_alpha(sub, level).value
        vec_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reference = reference_alpha(sub, level)
        ref_s = time.perf_counter() - t0
        side[level] = {
            "vectorised": vectorised,
            "vectorised_s": vec_s,
            "reference": reference,
            "reference_s": ref_s,
            "abs_diff": abs(vectorised - reference),
            "agree_1e9": bool(abs(vectorised - reference) <= 1e-9),
        }
    result["subsample_units"] = int(sub.shape[1])
    result["subsample_raters"] = int(sub.shape[0])
    result["side_by_side"] = side
    result["seconds"] = time.perf_counter() - started
    result["throughput"] = unit.size / (full["nominal"]["seconds"] or float("nan"))
    result["throughput_unit"] = "votes/s (nominal, all votes)"
    return result


PHASE_FUNCTIONS = {"recompute": phase_recompute, "export": phase_export, "alpha": phase_alpha}


def run_phase_here(args: argparse.Namespace) -> int:
    """Body of a phase subprocess: run one phase, print its result as one prefixed JSON line."""
    setup_django()
    baseline = peak_rss_mb()
    function = PHASE_FUNCTIONS[args.phase]
    profiler = None
    if args.phase in args.tracemalloc:
        import tracemalloc

        tracemalloc.start(5)
    if args.phase in args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    result = function(args)
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        for sort in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(sort).print_stats(args.profile_top)
            print(f"--- cProfile of {args.phase}, by {sort} ---\n{text.getvalue()}", flush=True)
    if args.phase in args.tracemalloc:
        import tracemalloc

        snapshot = tracemalloc.take_snapshot()
        _, traced_peak = tracemalloc.get_traced_memory()
        print(f"--- tracemalloc of {args.phase}: traced peak {traced_peak / 2**20:.0f} MB; still held at end ---")
        for stat in snapshot.statistics("lineno")[: args.profile_top]:
            print(f"  {stat.size / 2**20:9.1f} MB  {stat.count:>10} blocks  {stat.traceback}")
        tracemalloc.stop()
    result["peak_rss_mb"] = peak_rss_mb()
    result["baseline_rss_mb"] = baseline
    result["end_rss_mb"] = current_rss_mb()
    print(RESULT_PREFIX + json.dumps(result, default=float), flush=True)
    return 0


def run_phase(args: argparse.Namespace, phase: str, project_id: int, env: dict[str, str]) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--phase",
        phase,
        "--project-id",
        str(project_id),
        "--database-url",
        args.database_url,
        "--bootstrap",
        str(args.bootstrap),
        "--reference-units",
        str(args.reference_units),
        "--seed",
        str(args.seed),
        "--profile-top",
        str(args.profile_top),
    ]
    if args.report_out is not None:
        command += ["--report-out", str(args.report_out.resolve())]
    for name in args.profile:
        command += ["--profile", name]
    for name in args.tracemalloc:
        command += ["--tracemalloc", name]
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=args.phase_timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.phase_timeout:.0f} s", "wall_s": time.perf_counter() - started}
    result: dict[str, Any] = {"error": None}
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result.update(json.loads(line[len(RESULT_PREFIX) :]))
        else:
            print(f"  [{phase}] {line}")
    if completed.returncode != 0 or "seconds" not in result:
        tail = "\n".join(completed.stderr.splitlines()[-25:])
        result["error"] = f"exit {completed.returncode}:\n{tail}"
    result["wall_s"] = time.perf_counter() - started
    return result


# --- report ---------------------------------------------------------------------------------


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT MET")


def print_phase_details(phase: str, result: dict[str, Any]) -> None:
    print(f"\n[{phase}]")
    if result.get("error"):
        print(f"  FAILED: {result['error']}")
        return
    print(
        f"  {result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
        f"(after Django setup {result['baseline_rss_mb']:.0f} MB), subprocess wall {result['wall_s']:.1f} s"
    )
    if phase == "recompute":
        print(f"  counts             {result['counts']}")
        print(
            f"  alpha nominal {result['alpha_nominal']}, ordinal {result['alpha_ordinal']}, "
            f"Fleiss {result['fleiss_kappa']}, Kendall W {result['kendall_w']}"
        )
        print(
            f"  Cohen pairs {result['cohen_pairs']}, annotators flagged {result['annotators_flagged']}, "
            f"report JSON {result['report_bytes'] / 2**20:.1f} MB"
        )
    elif phase == "export":
        print(f"  state {result['state']}, errors {result['errors'] or 'none'}")
        print(f"  groups {result['groups']:,}, pairs {result['pairs']:,} -> {result['throughput']:,.0f} groups/s")
        sizes = result.get("output_bytes", {})
        if sizes:
            print(
                f"  output {result['output_total_bytes'] / 2**20:.1f} MB: "
                + ", ".join(f"{k} {v / 2**20:.1f} MB" for k, v in sizes.items())
            )
        print(f"  counts             {json.dumps(result['counts'])[:400]}")
    elif phase == "alpha":
        print(
            f"  read {result['votes']:,} votes in {result['read_s']:.2f} s; compact matrix "
            f"{result['compact_shape'][0]} x {result['compact_shape'][1]:,} in {result['matrix_s']:.2f} s "
            f"(the dense {result['dense_shape'][0]} raters x {result['dense_shape'][1]:,} units matrix, "
            f"{result['dense_mb']:.0f} MB, is not built)"
        )
        for level, row in result["full"].items():
            print(f"  all votes {level:8} alpha {row['value']:.12f} in {row['seconds']:.2f} s")
        print(
            f"  side by side on {result['subsample_units']:,} units x {result['subsample_raters']} raters "
            "(vectorised = annotation.agreement.krippendorff_alpha, reference = Python loops over units):"
        )
        print(f"    {'level':8} {'vectorised':>16} {'s':>8} {'reference':>16} {'s':>8} {'ratio':>8}  |diff| <= 1e-9")
        for level, row in result["side_by_side"].items():
            ratio = row["reference_s"] / row["vectorised_s"] if row["vectorised_s"] else float("nan")
            print(
                f"    {level:8} {row['vectorised']:16.12f} {row['vectorised_s']:8.3f} {row['reference']:16.12f} "
                f"{row['reference_s']:8.3f} {ratio:7.0f}x  {'yes' if row['agree_1e9'] else 'NO'} "
                f"({row['abs_diff']:.2e})"
            )


def print_summary(load: dict[str, Any] | None, results: dict[str, dict[str, Any]], machine: dict[str, Any]) -> None:
    print()
    print("=" * 100)
    print("Arpad agreement scale benchmark")
    print("=" * 100)
    print(
        f"  machine   {machine['cores']} cores, {machine['memory_gb']:.0f} GB RAM, Python {machine['python']}, "
        f"numpy {machine['numpy']}, PostgreSQL {machine['postgres']}, {machine['platform']}"
    )
    if load:
        print(
            f"  data      {load['tasks']:,} tasks (K={K}, overlap {OVERLAP}), {load['judgements']:,} judgements, "
            f"{load['pair_votes']:,} pair votes, {load['annotators']} annotators ({load['spammers']} spammers), "
            f"ties {load['tie_votes_share']:.1%} of votes"
        )
    print("  code      " + "; ".join(f"{name} {version}" for name, version in machine["code"].items()))
    header = f"  {'phase':22}{'seconds':>9}{'peak MB':>9}  {'throughput':34}{'time/throughput':>16}{'memory':>10}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    if load:
        print(
            f"  {'load (COPY)':22}{load['seconds']:9.1f}{'-':>9}  "
            f"{load['pair_votes'] / load['seconds']:>12,.0f} pair votes/s{'':8}{'-':>16}{'-':>10}"
        )
    for phase, result in results.items():
        if result.get("error"):
            print(f"  {phase:22}{'FAILED':>9}")
            continue
        peak = result["peak_rss_mb"]
        if phase == "recompute":
            target = _met(result["seconds"] < TARGET_RECOMPUTE_S)
        elif phase == "export":
            target = _met(result["throughput"] >= TARGET_EXPORT_GROUPS_PER_S)
        else:
            target = "-"
        print(
            f"  {phase:22}{result['seconds']:9.1f}{peak:9.0f}  "
            f"{result['throughput']:>12,.0f} {result['throughput_unit']:21}{target:>16}{_met(peak < TARGET_PEAK_MB):>10}"
        )
    print(
        f"  targets: recompute < {TARGET_RECOMPUTE_S:.0f} s; export >= {TARGET_EXPORT_GROUPS_PER_S:,.0f} groups/s; "
        f"peak memory < {TARGET_PEAK_MB:.0f} MB per phase (peak RSS of its own subprocess)"
    )
    print("=" * 100)


MEASURED_MODULES = (
    "annotation/agreement.py",
    "annotation/agreement_data.py",
    "annotation/reports/figures.py",
    "annotation/reports/report.py",
    "annotation/aggregate.py",
    "exports/services.py",
    "exports/snapshot.py",
    "exports/formats.py",
)


def code_versions() -> dict[str, str]:
    """sha256 prefix and modification time of each measured module (the tree may change between runs)."""
    import hashlib

    versions = {}
    for name in MEASURED_MODULES:
        path = REPO_ROOT / name
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
            modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
        except OSError:
            versions[name] = "missing"
            continue
        versions[name] = f"{digest} ({modified} UTC)"
    return versions


def machine_info(url: str) -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "memory_gb": memory,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "postgres": server_version(url),
        "platform": platform.platform(terse=True),
        "code": code_versions(),
    }


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase:
        return run_phase_here(args)
    var_dir = Path(tempfile.mkdtemp(prefix="arpad-agreement-bench-"))
    env = django_env(args.database_url, var_dir)
    os.environ.update(env)
    created = False
    load: dict[str, Any] | None = None
    try:
        if args.reuse:
            migrate(env)  # the kept database may predate a migration of the tree measured now
            setup_django()
            from annotation.models import Project

            project_id = (
                Project.objects.filter(name="Agreement scale benchmark").order_by("-id").values_list("pk", flat=True)[0]
            )
            print(f"reusing project {project_id} in {database_name(args.database_url)}", flush=True)
        else:
            print(f"creating database {database_name(args.database_url)} and migrating ...", flush=True)
            recreate_database(args.database_url)
            created = True
            migrate(env)
            setup_django()
            print(
                f"loading {args.judgements:,} judgements ({args.judgements // OVERLAP:,} tasks, "
                f"{args.judgements * PAIRS:,} pair votes) ...",
                flush=True,
            )
            project_id, seconds, counts = load_project(args)
            load = {**counts, "seconds": seconds}
            print(f"loaded in {seconds:.1f} s (numpy generation {counts['generate_s']:.1f} s of it)", flush=True)
            print("  load steps (s): " + ", ".join(f"{k} {v}" for k, v in counts["steps_s"].items()), flush=True)
        from django.db import connections

        connections.close_all()
        results: dict[str, dict[str, Any]] = {}
        for phase in args.phases:
            print(f"running phase {phase} in a subprocess ...", flush=True)
            results[phase] = run_phase(args, phase, project_id, env)
            print_phase_details(phase, results[phase])
        machine = machine_info(args.database_url)
        print_summary(load, results, machine)
        if args.json:
            print(json.dumps({"machine": machine, "load": load, "phases": results}, default=float))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        release_database(args.database_url, created=created, keep=args.keep, note=" (measure it again with --reuse)")
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
