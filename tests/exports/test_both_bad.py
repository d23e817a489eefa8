"""Exports flag "both are bad" answers: votes_both_bad on every pair row, both_bad on every group."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from annotation.models import Judgement
from tests.exports.helpers import add_task, directory, export, judge, ranking_project, read_jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


def both_bad(task, username: str) -> Judgement:
    """A "both are bad" answer: the full tie, flagged."""
    judgement = judge(task, username, [sorted(task.response_ids())])
    Judgement.objects.filter(pk=judgement.pk).update(both_bad=True)
    return judgement


def test_pairs_groups_and_dropped_rows_count_the_both_bad_votes():
    project = ranking_project(k=3, overlap=4, allow_both_bad=True)
    flagged, (a, b, c) = add_task(project)
    for name in ("r0", "r1", "r2"):
        judge(flagged, name, [[a], [b], [c]])
    both_bad(flagged, "r3")
    clean, (d, e, f) = add_task(project)
    for name in ("r0", "r1"):
        judge(clean, name, [[d], [e], [f]])
    contested, (g, h, i) = add_task(project)
    judge(contested, "r0", [[g], [h], [i]])
    judge(contested, "r1", [[i], [h], [g]])
    both_bad(contested, "r2")

    snapshot = export(project, validation_fraction=0.0)
    root = directory(snapshot)
    pairs = read_jsonl(root / "pairs.jsonl")
    by_group = {}
    for row in pairs:
        by_group.setdefault(row["group_id"], []).append(row)
    # A both-bad answer is a tie vote on every pair of its task, and is counted as such.
    assert {(r["votes_chosen"], r["votes_tie"], r["votes_both_bad"]) for r in by_group[flagged.pk]} == {(3, 1, 1)}
    assert {r["votes_both_bad"] for r in by_group[clean.pk]} == {0}
    groups = {g["group_id"]: g for g in read_jsonl(root / "groups.jsonl")}
    assert groups[flagged.pk]["both_bad"] == 1 and groups[clean.pk]["both_bad"] == 0
    assert {p["votes_both_bad"] for p in groups[flagged.pk]["pairs"]} == {1}
    assert list(groups[flagged.pk]).index("both_bad") < list(groups[flagged.pk]).index("pairs")
    # The contested task keeps no pair; its dropped rows carry the count too.
    dropped = [d for d in read_jsonl(root / "dropped.jsonl") if d["group_id"] == contested.pk]
    assert len(dropped) == 3 and {d["votes_both_bad"] for d in dropped} == {1}
    # Parquet holds the same rows, the column included; the manifest names it and counts the answers.
    assert pq.read_table(root / "pairs.parquet").to_pylist() == pairs
    assert snapshot.manifest["columns"]["pairs"][-1] == "votes_both_bad"
    assert snapshot.counts["both_bad_judgements"] == 2


def test_answers_of_excluded_annotators_are_not_counted():
    project = ranking_project(k=2, overlap=4, allow_both_bad=True)
    task, (a, b) = add_task(project)
    for name in ("r0", "r1"):
        judge(task, name, [[a], [b]])
    bad = both_bad(task, "r2")
    rows = read_jsonl(directory(export(project, exclude_annotators=["r2"])) / "pairs.jsonl")
    assert [(r["votes_tie"], r["votes_both_bad"]) for r in rows] == [(0, 0)]
    rows = read_jsonl(directory(export(project)) / "pairs.jsonl")
    assert [(r["votes_tie"], r["votes_both_bad"]) for r in rows] == [(1, 1)]
    assert bad.annotator.username == "r2"
