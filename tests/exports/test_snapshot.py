"""Export snapshots end to end in one process: files, hashes, immutability, the job row, the CLI."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from io import StringIO
from math import comb

import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotation.models import Response
from exports import jobs as export_jobs
from exports import snapshot as snapshot_module
from exports.models import ExportSnapshot, ExportState
from exports.params import InvalidParams
from exports.services import export_snapshot_cancel, export_snapshot_create, export_snapshot_run
from jobs.conf import heartbeat_stale_seconds
from jobs.lifecycle import jobs_reap
from jobs.registry import get_kind
from tests.exports.helpers import add_task, directory, export, judge, majority_pairs, ranking_project, read_jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0  # every chunk writes (and polls cancel)
    return settings.ARTIFACT_ROOT


def stale_after() -> timedelta:
    return timedelta(seconds=heartbeat_stale_seconds())


def reap() -> list[tuple[int, str]]:
    return [(r.job_id, r.outcome) for r in jobs_reap(kinds=[get_kind("export")])]


@pytest.fixture
def three_way():
    """A 3-way project: two tasks every pair of which is decided, one contested, one unjudged."""
    project = ranking_project(k=3)
    rankings = {}
    clear, (a, b, c) = add_task(project)
    rankings[clear.pk] = [[[a], [b], [c]], [[a], [b], [c]], [[a], [c], [b]]]
    mixed, (d, e, f) = add_task(project)
    # d > e > f twice, then a tie of all three: every pair 2 : 0 : 1 tie.
    rankings[mixed.pk] = [[[d], [e], [f]], [[d], [e], [f]], [[d, e, f]]]
    contested, (g, h, i) = add_task(project)
    # Opposite orders and a tie of all three: every pair 1 : 1 : 1 tie, no winner.
    rankings[contested.pk] = [[[g], [h], [i]], [[i], [h], [g]], [[g, h, i]]]
    add_task(project)
    for task_id, tiers_list in rankings.items():
        task = clear if task_id == clear.pk else mixed if task_id == mixed.pk else contested
        for n, tiers in enumerate(tiers_list):
            judge(task, f"rater{n}", tiers)
    return project, rankings


def test_files_and_counts(three_way):
    project, rankings = three_way
    snapshot = export(project, validation_fraction=0.0)
    root = directory(snapshot)
    assert snapshot.path == f"exports/{snapshot.content_hash}"
    names = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert names == {
        "manifest.json",
        "groups.jsonl",
        "pairs.jsonl",
        "pairs.parquet",
        "dropped.jsonl",
        "batches/train-00000.jsonl",
    }

    pairs = read_jsonl(root / "pairs.jsonl")
    assert {(p["group_id"], p["chosen_id"], p["rejected_id"]) for p in pairs} == majority_pairs(rankings)
    assert len(pairs) == 6
    counts = snapshot.counts
    assert counts["tasks_with_votes"] == 3 and counts["pairs_voted"] == 9

    groups = read_jsonl(root / "groups.jsonl")
    assert [g["group_id"] for g in groups] == sorted(rankings)[:2]
    first = groups[0]
    assert first["consensus"] == [r["id"] for r in sorted(first["responses"], key=lambda r: r["rank"])]
    assert [p["weight"] for p in first["pairs"]] == [pytest.approx(1 / comb(3, 2))] * 3
    assert {len(g["responses"]) for g in groups} == {3}

    dropped = read_jsonl(root / "dropped.jsonl")
    assert {d["group_id"] for d in dropped} == {sorted(rankings)[2]}
    assert counts["pairs_dropped"]["tied"] == 3 and sum(counts["pairs_dropped"].values()) == 3


def test_tie_votes_are_counted_and_dilute_the_share(three_way):
    project, rankings = three_way
    root = directory(export(project))
    groups = {g["group_id"]: g for g in read_jsonl(root / "groups.jsonl")}
    mixed = groups[sorted(rankings)[1]]
    # Two votes each way and one tie of all three: shares are 2/3, ties recorded.
    assert {(p["votes_chosen"], p["votes_rejected"], p["votes_tie"]) for p in mixed["pairs"]} == {(2, 0, 1)}
    assert [p["vote_share"] for p in mixed["pairs"]] == [pytest.approx(2 / 3)] * 3
    assert sorted(rankings)[2] not in groups
    # 2/3 is below a threshold of 0.7: the mixed task's pairs go, the unanimous-ish first stays.
    strict = directory(export(project, threshold=0.7))
    assert [g["group_id"] for g in read_jsonl(strict / "groups.jsonl")] == [sorted(rankings)[0]]
    reasons = [d["reason"] for d in read_jsonl(strict / "dropped.jsonl")]
    assert reasons.count("below_threshold") == 4 and reasons.count("tied") == 3


def test_a_condorcet_cycle_keeps_its_pairs_and_orders_by_id():
    project = ranking_project(k=3)
    task, (g, h, i) = add_task(project)
    for n, tiers in enumerate([[[g], [h], [i]], [[h], [i], [g]], [[i], [g], [h]]]):
        judge(task, f"r{n}", tiers)
    (group,) = read_jsonl(directory(export(project)) / "groups.jsonl")
    assert len(group["pairs"]) == 3 and {r["copeland"] for r in group["responses"]} == {0}
    assert group["consensus"] == [g, h, i]


def test_same_state_same_bytes_same_hash_and_directory(three_way, artifacts):
    project, _ = three_way
    first = export(project)
    second = export(project, threshold=0.5, tie_policy="neither")  # the defaults, spelled out
    assert first.pk != second.pk
    assert first.content_hash == second.content_hash and first.path == second.path
    assert first.params == second.params
    assert len(list((artifacts / "exports").iterdir())) == 1  # no temporary directory left behind
    manifest = json.loads((directory(first) / "manifest.json").read_text())
    assert manifest["content_hash"] == first.content_hash
    for name, info in manifest["files"].items():
        assert info["bytes"] == (directory(first) / name).stat().st_size
    # Immutable: the files are read-only.
    assert not os.access(directory(first) / "pairs.jsonl", os.W_OK) or os.geteuid() == 0
    assert (os.stat(directory(first) / "pairs.jsonl").st_mode & 0o222) == 0


def test_a_new_judgement_or_other_parameters_give_another_hash(three_way):
    project, rankings = three_way
    before = export(project)
    assert export(project, threshold=0.7).content_hash != before.content_hash
    task_id = sorted(rankings)[2]
    from annotation.models import Task

    task = Task.objects.get(pk=task_id)
    task.required_annotations = 5
    task.save()
    g, h, i = task.response_ids()
    judge(task, "late", [[g], [h], [i]])
    after = export(project)
    assert after.content_hash != before.content_hash
    assert after.source_judgements == before.source_judgements + 1
    assert after.source_max_judgement_id > before.source_max_judgement_id


def test_parquet_and_jsonl_hold_the_same_rows(three_way):
    project, _ = three_way
    root = directory(export(project))
    jsonl = read_jsonl(root / "pairs.jsonl")
    table = pq.read_table(root / "pairs.parquet").to_pylist()
    assert table == jsonl
    assert list(jsonl[0]) == [
        "prompt",
        "chosen",
        "rejected",
        "group_id",
        "prompt_id",
        "chosen_id",
        "rejected_id",
        "split",
        "weight",
        "vote_share",
        "votes_chosen",
        "votes_rejected",
        "votes_tie",
        "votes_both_bad",
    ]
    row = jsonl[0]
    assert row["prompt"][0]["role"] == "user" and [m["role"] for m in row["chosen"]] == ["assistant"]
    assert row["chosen"][0]["content"] == Response.objects.get(pk=row["chosen_id"]).text


def test_batches_keep_groups_whole(three_way):
    project, _ = three_way
    for _ in range(6):
        task, ids = add_task(project)
        for n in range(3):
            judge(task, f"rater{n}", [[ids[0]], [ids[1]], [ids[2]]])
    snapshot = export(project, batch_pairs=7, validation_fraction=0.0)
    root = directory(snapshot)
    seen: set[int] = set()
    total = 0
    for name in sorted(n for n in snapshot.manifest["files"] if n.startswith("batches/")):
        rows = read_jsonl(root / name)
        assert len(rows) <= 7
        groups = {r["group_id"] for r in rows}
        assert not groups & seen
        seen |= groups
        total += len(rows)
    assert total == snapshot.counts["pairs_kept"] == 3 * 8


def test_batch_pairs_must_hold_the_largest_group(three_way):
    project, _ = three_way
    with pytest.raises(InvalidParams, match="at least 3"):
        export_snapshot_create(project=project, params={"batch_pairs": 2}, user=None)


def test_excluded_annotators_by_name(three_way):
    project, rankings = three_way
    snapshot = export(project, exclude_annotators=["rater2"], min_votes=2)
    assert snapshot.params["exclude_annotators"] != []
    excluded = [a for a in snapshot.manifest["annotators"] if a["excluded"]]
    assert len(excluded) == 1 and excluded[0]["votes"] == 9
    assert snapshot.counts["votes_excluded"] == 9
    with pytest.raises(InvalidParams, match="nobody named"):
        export_snapshot_create(project=project, params={"exclude_annotators": ["ghost"]}, user=None)


def test_placeholder_responses_are_dropped_with_their_own_reason():
    project = ranking_project(k=2)
    task, (a, b) = add_task(project)
    Response.objects.filter(pk=b).update(metadata={"text_available": False})
    for n in range(3):
        judge(task, f"r{n}", [[a], [b]])
    snapshot = export(project)
    assert snapshot.counts["pairs_kept"] == 0
    assert snapshot.counts["pairs_dropped"]["text_unavailable"] == 1
    assert read_jsonl(directory(snapshot) / "dropped.jsonl")[0]["reason"] == "text_unavailable"


def test_an_empty_project_exports_empty_files():
    snapshot = export(ranking_project(k=2))
    assert snapshot.counts["pairs_kept"] == 0 and snapshot.source_judgements == 0
    assert (directory(snapshot) / "pairs.jsonl").read_bytes() == b""
    assert pq.read_table(directory(snapshot) / "pairs.parquet").num_rows == 0


class TestJobRow:
    def test_a_finished_snapshot_is_not_run_again(self, three_way):
        project, _ = three_way
        snapshot = export(project)
        again = export_snapshot_run(snapshot_id=snapshot.pk)
        assert again.attempts == 1 and again.finished_at == snapshot.finished_at

    def test_a_crash_fails_the_snapshot_with_one_line_and_leaves_no_files(self, three_way, monkeypatch, artifacts):
        project, _ = three_way

        def boom(**kwargs):
            raise RuntimeError("disk on fire\nsecond line")

        monkeypatch.setattr(export_jobs, "write_snapshot", boom)
        snapshot = export_snapshot_create(project=project, params={}, user=None)
        snapshot = export_snapshot_run(snapshot_id=snapshot.pk)
        assert snapshot.state == ExportState.FAILED
        assert snapshot.errors == [{"message": "RuntimeError: disk on fire"}]
        assert list((artifacts / "exports").iterdir()) == []

    def test_an_abandoned_run_is_retried_a_bounded_number_of_times(self, three_way):
        project, _ = three_way
        snapshot = export_snapshot_create(project=project, params={}, user=None)
        # A worker died mid-run: still "running", one attempt used.
        long_ago = timezone.now() - stale_after() - timedelta(seconds=1)
        ExportSnapshot.objects.filter(pk=snapshot.pk).update(
            state=ExportState.RUNNING, attempts=1, heartbeat_at=long_ago, worker="dead", owner_token="dead"
        )
        assert export_snapshot_run(snapshot_id=snapshot.pk).state == ExportState.SUCCEEDED
        stuck = export_snapshot_create(project=project, params={}, user=None)
        ExportSnapshot.objects.filter(pk=stuck.pk).update(
            state=ExportState.RUNNING, attempts=stuck.max_attempts, heartbeat_at=long_ago, worker="w", owner_token="x"
        )
        stuck = export_snapshot_run(snapshot_id=stuck.pk)
        assert stuck.state == ExportState.FAILED and "gave up" in stuck.errors[0]["message"]


class TestCancelReapRedeliver:
    """The job's robustness: cancel at the next chunk, the reaper of dead workers, redelivery."""

    def test_a_cancelled_queued_snapshot_never_runs(self, three_way, artifacts):
        project, _ = three_way
        snapshot = export_snapshot_create(project=project, params={}, user=None)
        assert export_snapshot_cancel(snapshot_id=snapshot.pk) is True
        after = export_snapshot_run(snapshot_id=snapshot.pk)  # the message arrives anyway
        assert after.state == ExportState.CANCELLED and after.attempts == 0 and after.is_finished
        assert "cancelled before it started" in after.log_tail[-1] and not after.path
        assert not (artifacts / "exports").exists() or list((artifacts / "exports").iterdir()) == []

    def test_a_running_snapshot_stops_at_the_next_chunk_and_publishes_nothing(self, three_way, monkeypatch, artifacts):
        project, _ = three_way
        monkeypatch.setattr(snapshot_module, "TASK_CHUNK", 1)  # one group per chunk: two chunks here
        real = snapshot_module._write_chunk
        chunks = []

        def write_then_cancel(chunk, *args, **kwargs):
            real(chunk, *args, **kwargs)
            chunks.append(chunk.task_ids.tolist())
            if len(chunks) == 1:  # the manager presses cancel while the first chunk is written
                export_snapshot_cancel(snapshot_id=snapshot.pk)

        monkeypatch.setattr(snapshot_module, "_write_chunk", write_then_cancel)
        snapshot = export_snapshot_create(project=project, params={}, user=None)
        after = export_snapshot_run(snapshot_id=snapshot.pk)
        assert len(chunks) == 1, "the run went on past the chunk after the cancel"
        assert after.state == ExportState.CANCELLED and after.content_hash == "" and after.path == ""
        assert list((artifacts / "exports").iterdir()) == []  # temporary files removed, nothing published

    def test_cancel_of_a_finished_snapshot_changes_nothing(self, three_way):
        project, _ = three_way
        snapshot = export(project)
        assert export_snapshot_cancel(snapshot_id=snapshot.pk) is False
        snapshot.refresh_from_db()
        assert snapshot.state == ExportState.SUCCEEDED and snapshot.errors == [] and not snapshot.cancel_requested

    def test_the_reaper_requeues_a_dead_run_then_fails_it_with_the_reason(self, three_way, job_messages):
        project, _ = three_way
        snapshot = export_snapshot_create(project=project, params={}, user=None)
        fresh = export_snapshot_create(project=project, params={"threshold": 0.6}, user=None)
        now = timezone.now()
        dead = now - stale_after() - timedelta(seconds=5)
        ExportSnapshot.objects.filter(pk=snapshot.pk).update(
            state=ExportState.RUNNING, attempts=1, heartbeat_at=dead, worker="w1", owner_token="gone"
        )
        ExportSnapshot.objects.filter(pk=fresh.pk).update(
            state=ExportState.RUNNING, attempts=1, heartbeat_at=now, worker="w2", owner_token="alive"
        )
        with self.on_commit():
            result = reap()
        assert result == [(snapshot.pk, "requeued")] and job_messages.ids("export") == [snapshot.pk]
        requeued = ExportSnapshot.objects.get(pk=snapshot.pk)
        assert requeued.state == ExportState.QUEUED and "no heartbeat since" in requeued.log_tail[-1]
        assert ExportSnapshot.objects.get(pk=fresh.pk).state == ExportState.RUNNING  # alive: left alone
        # The message the reaper sent runs it: second attempt, success.
        finished = job_messages.run()
        assert finished.state == ExportState.SUCCEEDED and finished.attempts == 2 and finished.errors == []

        # Out of attempts: failed, with why.
        ExportSnapshot.objects.filter(pk=fresh.pk).update(attempts=fresh.max_attempts, heartbeat_at=dead)
        job_messages.clear()
        with self.on_commit():
            result = reap()
        assert result == [(fresh.pk, "failed")] and job_messages == []
        failed = ExportSnapshot.objects.get(pk=fresh.pk)
        assert failed.state == ExportState.FAILED and failed.finished_at is not None
        assert "no heartbeat since" in failed.error and "lost" in failed.errors[0]["message"]
        assert f"gave up after {fresh.max_attempts} of {fresh.max_attempts} attempts" in failed.error

    def test_a_redelivered_message_leaves_a_live_run_alone(self, three_way):
        project, _ = three_way
        snapshot = export_snapshot_create(project=project, params={}, user=None)
        ExportSnapshot.objects.filter(pk=snapshot.pk).update(
            state=ExportState.RUNNING, attempts=1, heartbeat_at=timezone.now(), worker="w", owner_token="theirs"
        )
        again = export_snapshot_run(snapshot_id=snapshot.pk)
        assert again.state == ExportState.RUNNING and again.attempts == 1 and again.owner_token == "theirs"

    def test_a_slow_run_that_was_reaped_stops_and_never_finishes_the_snapshot(
        self, three_way, monkeypatch, job_messages
    ):
        """The reaper took the row from a run that was only slow; that run finds its token gone."""
        project, _ = three_way
        snapshot = export_snapshot_create(project=project, params={}, user=None)
        real = snapshot_module.aggregate_project

        def slow_aggregate(*args, **kwargs):
            # While this run reads the votes, the reaper declares it dead and a new run starts.
            ExportSnapshot.objects.filter(pk=snapshot.pk).update(
                heartbeat_at=timezone.now() - stale_after() - timedelta(seconds=1)
            )
            reap()
            ExportSnapshot.objects.filter(pk=snapshot.pk).update(
                state=ExportState.RUNNING, attempts=2, owner_token="newer", worker="w2", heartbeat_at=timezone.now()
            )
            return real(*args, **kwargs)

        monkeypatch.setattr(snapshot_module, "aggregate_project", slow_aggregate)
        after = export_snapshot_run(snapshot_id=snapshot.pk)
        assert after.state == ExportState.RUNNING and after.owner_token == "newer" and after.content_hash == ""

    @staticmethod
    def on_commit():
        from django.test import TestCase

        return TestCase.captureOnCommitCallbacks(execute=True)


class TestCommand:
    def test_sync_export_prints_counts_and_the_directory(self, three_way, artifacts):
        project, _ = three_way
        out = StringIO()
        call_command("export_snapshot", "--project", str(project.pk), "--threshold", "0.5", "--sync", stdout=out)
        snapshot = ExportSnapshot.objects.get()
        assert snapshot.state == ExportState.SUCCEEDED
        text = out.getvalue()
        assert "6 pairs" in text and "3 tied" in text and snapshot.content_hash in text

    def test_queued_export_is_sent_after_commit(self, three_way, job_messages, django_capture_on_commit_callbacks):
        project, _ = three_way
        with django_capture_on_commit_callbacks(execute=True):
            call_command("export_snapshot", "--project", str(project.pk), stdout=StringIO())
        snapshot = ExportSnapshot.objects.get()
        assert job_messages == [("export", snapshot.pk, "default")] and snapshot.state == ExportState.QUEUED

    def test_bad_parameters_name_the_option(self, three_way):
        project, _ = three_way
        with pytest.raises(CommandError, match="--batch-pairs"):
            call_command("export_snapshot", "--project", str(project.pk), "--batch-pairs", "1", "--sync")
        with pytest.raises(CommandError, match="does not exist"):
            call_command("export_snapshot", "--project", "999999")
