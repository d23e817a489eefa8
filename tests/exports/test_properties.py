"""Properties of whole exports over random K-way projects (hypothesis, through the database)."""

from __future__ import annotations

from math import comb

import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.exports.helpers import add_task, directory, export, judge, majority_pairs, ranking_project, read_jsonl

pytestmark = pytest.mark.django_db

PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


# A task's judgements: one list of tier levels per annotator (equal levels are a tie).
levels = st.lists(st.integers(0, 3), min_size=5, max_size=5)
task_votes = st.lists(levels, min_size=1, max_size=4)
projects = st.tuples(st.integers(2, 5), st.lists(task_votes, min_size=1, max_size=5))


def tiers_of(ids: list[int], level: list[int]) -> list[list[int]]:
    by_level: dict[int, list[int]] = {}
    for response_id, value in zip(ids, level, strict=False):
        by_level.setdefault(value, []).append(response_id)
    return [sorted(by_level[value]) for value in sorted(by_level)]


def build(k: int, tasks: list[list[list[int]]], prefix: str = "ann"):
    project = ranking_project(k=k, overlap=4)
    rankings = {}
    for judgements in tasks:
        task, ids = add_task(project)
        rankings[task.pk] = []
        for n, level in enumerate(judgements):
            tiers = tiers_of(ids, level)
            judge(task, f"{prefix}{n}", tiers)
            rankings[task.pk].append(tiers)
    return project, rankings


@PROPERTY_SETTINGS
@given(spec=projects)
def test_flat_pairs_are_the_ck2_expansion_of_the_surviving_votes(spec):
    k, tasks = spec
    project, rankings = build(k, tasks)
    snapshot = export(project, validation_fraction=0.5)
    root = directory(snapshot)
    pairs = read_jsonl(root / "pairs.jsonl")
    flat = [(p["group_id"], p["chosen_id"], p["rejected_id"]) for p in pairs]
    assert len(flat) == len(set(flat))
    assert set(flat) == majority_pairs(rankings)

    groups = read_jsonl(root / "groups.jsonl")
    from_groups = [(g["group_id"], p["chosen"], p["rejected"]) for g in groups for p in g["pairs"]]
    assert from_groups == flat  # the same pairs, in the same order
    for group in groups:
        assert len(group["responses"]) == k and 1 <= len(group["pairs"]) <= comb(k, 2)
        assert sorted(group["consensus"]) == sorted(r["id"] for r in group["responses"])
        for pair in group["pairs"]:
            assert pair["weight"] == pytest.approx(1 / comb(k, 2))
            # The consensus never puts a response below one it beat on a surviving pair
            # unless the Copeland scores say so.
            ranks = {r["id"]: r for r in group["responses"]}
            if ranks[pair["chosen"]]["rank"] > ranks[pair["rejected"]]["rank"]:
                assert ranks[pair["chosen"]]["copeland"] <= ranks[pair["rejected"]]["copeland"]

    batched = [
        (r["group_id"], r["chosen_id"], r["rejected_id"])
        for name in sorted(snapshot.manifest["files"])
        if name.startswith("batches/")
        for r in read_jsonl(root / name)
    ]
    assert sorted(batched) == sorted(flat)
    voted = snapshot.counts["pairs_voted"]
    assert voted == sum(comb(k, 2) for _ in tasks)
    assert snapshot.counts["pairs_kept"] + sum(snapshot.counts["pairs_dropped"].values()) == voted


@PROPERTY_SETTINGS
@given(spec=projects, fraction=st.sampled_from([0.2, 0.5, 0.8]))
def test_no_prompt_is_in_both_splits(spec, fraction):
    k, tasks = spec
    project, _ = build(k, tasks)
    # Two tasks per prompt: a prompt's tasks must land in one split together.
    from annotation.models import Task, TaskResponse

    first = Task.objects.filter(project=project).order_by("pk").first()
    twin = Task.objects.create(
        project=project, prompt=first.prompt, num_responses=k, required_annotations=4, metadata={}
    )
    TaskResponse.objects.bulk_create(
        TaskResponse(task=twin, response_id=r, position=i) for i, r in enumerate(first.response_ids())
    )
    for n in range(3):
        judge(twin, f"ann{n}", [[r] for r in first.response_ids()])
    pairs = read_jsonl(directory(export(project, validation_fraction=fraction)) / "pairs.jsonl")
    split_of_prompt: dict[str, set[str]] = {}
    for row in pairs:
        split_of_prompt.setdefault(row["prompt_id"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of_prompt.values())


@PROPERTY_SETTINGS
@given(spec=projects, weighting=st.sampled_from(["none", "reliability"]))
def test_renaming_annotators_changes_nothing(spec, weighting):
    k, tasks = spec
    project, rankings = build(k, tasks)
    before = export(project, weighting=weighting)
    users = get_user_model().objects.filter(judgements__task__project=project).distinct()
    for user in users:
        user.username = f"renamed-{user.pk}-{user.username}"
        user.save()
    after = export(project, weighting=weighting)
    assert after.content_hash == before.content_hash
    assert (directory(after) / "pairs.parquet").read_bytes() == (directory(before) / "pairs.parquet").read_bytes()


@PROPERTY_SETTINGS
@given(spec=projects, more=st.lists(task_votes, min_size=1, max_size=4))
def test_split_is_stable_when_prompts_are_added(spec, more):
    k, tasks = spec
    project, _ = build(k, tasks)
    before = {g["prompt_id"]: g["split"] for g in read_jsonl(directory(export(project)) / "groups.jsonl")}
    for judgements in more:
        task, ids = add_task(project)
        for n, level in enumerate(judgements):
            judge(task, f"ann{n}", tiers_of(ids, level))
    after = {g["prompt_id"]: g["split"] for g in read_jsonl(directory(export(project)) / "groups.jsonl")}
    assert {p: after[p] for p in before} == before
