"""Building judged K-way projects for export tests, and reading exports back."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import F

from annotation.models import Judgement, JudgementSource, PairVote, Project, ProjectKind, Task
from annotation.services import pair_votes_for
from exports.models import ExportSnapshot, ExportState
from exports.services import export_snapshot_create, export_snapshot_run
from tests.factories import ProjectFactory, UserFactory, make_task


def ranking_project(k: int = 3, overlap: int = 3, **kwargs: Any) -> Project:
    kind = ProjectKind.PAIRWISE if k == 2 else ProjectKind.RANKING
    return ProjectFactory(kind=kind, responses_per_task=k, annotations_per_task=overlap, allow_ties=True, **kwargs)


def add_task(project: Project, k: int | None = None) -> tuple[Task, list[int]]:
    task = make_task(project, k=k)
    return task, task.response_ids()


def judge(task: Task, username: str, tiers: list[list[int]]) -> Judgement:
    """An imported judgement with its PairVotes, as the importers write them."""
    user = UserFactory(username=username)
    judgement = Judgement.objects.create(task=task, annotator=user, tiers=tiers, source=JudgementSource.IMPORT)
    PairVote.objects.bulk_create(
        PairVote(judgement=judgement, task=task, annotator=user, response_a_id=a, response_b_id=b, winner=w)
        for a, b, w, _ in pair_votes_for(tiers)
    )
    Task.objects.filter(pk=task.pk).update(judgement_count=F("judgement_count") + 1)
    return judgement


def export(project: Project, **params: Any) -> ExportSnapshot:
    snapshot = export_snapshot_create(project=project, params=params, user=None)
    snapshot = export_snapshot_run(snapshot_id=snapshot.pk)
    assert snapshot.state == ExportState.SUCCEEDED, snapshot.errors
    return snapshot


def directory(snapshot: ExportSnapshot) -> Path:
    return Path(settings.ARTIFACT_ROOT) / snapshot.path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def majority_pairs(judgements: dict[int, list[list[list[int]]]], threshold: float = 0.5) -> set[tuple[int, int, int]]:
    """(task, chosen, rejected) of every pair a strict majority prefers: ties count for neither.

    Written from the definition, apart from the code under test: expand each judgement's
    tiers into its C(K,2) pairs, count, keep the pairs whose winner has more than half of
    all votes (ties included) and at least ``threshold`` of them.
    """
    kept = set()
    for task_id, rankings in judgements.items():
        tally: dict[tuple[int, int], Counter] = {}
        for tiers in rankings:
            rank = {r: level for level, tier in enumerate(tiers) for r in tier}
            for a, b in combinations(sorted(rank), 2):
                side = "a" if rank[a] < rank[b] else "b" if rank[a] > rank[b] else "tie"
                tally.setdefault((a, b), Counter())[side] += 1
        for (a, b), counts in tally.items():
            n = sum(counts.values())
            for winner, loser, side in ((a, b, "a"), (b, a, "b")):
                if counts[side] * 2 > n and counts[side] >= threshold * n - 1e-9:
                    kept.add((task_id, winner, loser))
    return kept
