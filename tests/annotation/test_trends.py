"""Agreement over time: checkpoints, cumulative figures, and the report's value at the end."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from annotation import services
from annotation.agreement import PairVotes, fleiss_kappa, krippendorff_alpha, percent_agreement
from annotation.importers import import_file
from annotation.models import Judgement, Membership, ProjectKind, Role
from annotation.reports import agreement_report
from annotation.trends import agreement_trend, compact_counts, count_cutoffs, pooled_point
from tests.factories import ProjectFactory, UserFactory, make_task

pytestmark = [pytest.mark.filterwarnings("error::RuntimeWarning")]

PANDALM = "pandalm/testset-v1.json"
POOLED = {
    "percent_agreement": ("percent_agreement",),
    "percent_agreement_no_ties": ("percent_agreement_no_ties",),
    "fleiss_kappa": ("fleiss_kappa",),
    "alpha_nominal": ("krippendorff_alpha", "nominal"),
    "alpha_ordinal": ("krippendorff_alpha", "ordinal"),
}


def report_value(report: dict, path: tuple[str, ...]) -> float | None:
    node = report["pairwise"]
    for key in path:
        node = node[key]
    return node["value"]


def annotate(project, plan: dict[str, list[str]], *, seed: int = 0) -> dict[int, int]:
    """Every annotator in ``plan`` judges every task: "a" prefers the lower response id, "b" the higher, "t" ties.

    ``plan[name][i]`` is the answer on the i-th task (in task id order). Returns task id -> index.
    """
    tasks = sorted(project.tasks.values_list("pk", flat=True))
    index = {pk: i for i, pk in enumerate(tasks)}
    rng = random.Random(seed)
    for name, answers in plan.items():
        user = UserFactory(username=name)
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
        while claim := services.assignment_claim_next(project=project, annotator=user, rng=rng):
            low, high = sorted(claim.assignment.display_order)
            answer = answers[index[claim.assignment.task_id]]
            tiers = {"a": [[low], [high]], "b": [[high], [low]], "t": [[low, high]]}[answer]
            services.judgement_submit(assignment=claim.assignment, ranking=tiers, time_taken_ms=5000)
    return index


def set_days(project, day_of_task: dict[int, int], start: datetime) -> None:
    """Move every judgement of the i-th task to ``start + day_of_task[i]`` days (+ its id in seconds)."""
    tasks = sorted(project.tasks.values_list("pk", flat=True))
    for judgement in Judgement.objects.filter(task__project=project):
        day = day_of_task[tasks.index(judgement.task_id)]
        Judgement.objects.filter(pk=judgement.pk).update(
            created_at=start + timedelta(days=day, seconds=judgement.pk % 3600)
        )


# --- pure parts ----------------------------------------------------------------------------------


def test_count_cutoffs_are_evenly_spaced_and_end_at_the_total():
    assert count_cutoffs(10, 5) == [2, 4, 6, 8, 10]
    assert count_cutoffs(7, 3) == [3, 5, 7]
    assert count_cutoffs(3, 20) == [1, 2, 3]  # never more points than judgements
    assert count_cutoffs(0, 20) == []
    # Spaced over the judgements after ``start`` (those before it had no overlap).
    assert count_cutoffs(215, 20, start=211) == [212, 213, 214, 215]
    assert count_cutoffs(110, 5, start=10) == [30, 50, 70, 90, 110]
    assert count_cutoffs(10, 5, start=10) == []


def test_compact_counts_gives_the_same_statistics_as_the_rater_matrix():
    rng = np.random.default_rng(0)
    matrix = rng.choice([-1.0, 0.0, 1.0, np.nan], size=(6, 40), p=[0.35, 0.15, 0.3, 0.2])
    counts = np.stack([(matrix == v).sum(axis=0) for v in (-1, 0, 1)], axis=1)
    compact = compact_counts(counts)
    assert compact.shape == (int(counts.sum(axis=1).max()), 40)
    assert percent_agreement(compact).value == pytest.approx(percent_agreement(matrix).value)
    assert percent_agreement(compact, exclude=0).value == pytest.approx(percent_agreement(matrix, exclude=0).value)
    assert fleiss_kappa(compact).value == pytest.approx(fleiss_kappa(matrix).value)
    for level in ("nominal", "ordinal"):
        assert krippendorff_alpha(compact, level).value == pytest.approx(krippendorff_alpha(matrix, level).value)


def test_pooled_point_of_no_votes_is_all_undefined():
    votes = PairVotes(unit=np.array([0, 0]), rater=np.array([1, 2]), outcome=np.array([1, 1]))
    assert set(pooled_point(votes, np.array([False, False])).values()) == {None}
    # All votes equal: agreement 1, kappa and alpha undefined (no variation), not an error.
    point = pooled_point(votes, np.array([True, True]))
    assert point["percent_agreement"] == 1.0 and point["fleiss_kappa"] is None


# --- through the platform ------------------------------------------------------------------------


@pytest.fixture
def three_day_project(db):
    """Six pairwise tasks, three annotators: unanimous on days 0-1, split on day 2."""
    project = ProjectFactory(annotations_per_task=3, allow_ties=True, name="Trend")
    for _ in range(6):
        make_task(project)
    annotate(
        project,
        {
            "ann-1": ["a", "b", "a", "b", "a", "a"],
            "ann-2": ["a", "b", "a", "b", "b", "t"],
            "ann-3": ["a", "b", "a", "b", "t", "b"],
        },
    )
    set_days(project, {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}, datetime(2026, 3, 2, 9, tzinfo=UTC))
    return project


@pytest.mark.django_db
def test_daily_trend_is_cumulative_and_ends_at_the_report(three_day_project, settings):
    settings.TIME_ZONE = "UTC"
    trend = agreement_trend(project=three_day_project, by="day", points=20)
    assert trend["by"] == "day" and trend["judgements"] == 18 and not trend["thinned"]
    points = trend["points"]
    assert [p["period"] for p in points] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert [p["judgements"] for p in points] == [6, 12, 18]
    assert [p["pair_votes"] for p in points] == [6, 12, 18]
    assert [p["units"] for p in points] == [2, 4, 6]  # response pairs with a vote
    # Unanimous so far: full agreement on days 0 and 1.
    assert points[0]["percent_agreement"] == points[1]["percent_agreement"] == 1.0
    # Day 2 adds two items whose three votes all differ: 12 agreeing of 18 pairs.
    assert points[2]["percent_agreement"] == pytest.approx(12 / 18, abs=1e-4)
    report = agreement_report(project=three_day_project, bootstrap=0)
    for name, path in POOLED.items():
        assert points[-1][name] == report_value(report, path), name


@pytest.mark.django_db
def test_weekly_periods_and_thinning(three_day_project, settings):
    settings.TIME_ZONE = "UTC"
    weekly = agreement_trend(project=three_day_project, by="week")
    # 2026-03-02 is a Monday: the three days are one ISO week.
    assert [p["period"] for p in weekly["points"]] == ["2026-03-02"]
    assert weekly["points"][0]["judgements"] == 18
    thinned = agreement_trend(project=three_day_project, by="day", points=2)
    assert thinned["thinned"] and [p["period"] for p in thinned["points"]] == ["2026-03-03", "2026-03-04"]


@pytest.mark.django_db
def test_count_trend_orders_by_submission_time_not_id(three_day_project):
    # Move the split items' judgements to the start: agreement must start low, then rise.
    first = datetime(2026, 1, 1, tzinfo=UTC)
    tasks = sorted(three_day_project.tasks.values_list("pk", flat=True))
    Judgement.objects.filter(task_id__in=tasks[4:]).update(created_at=first)
    trend = agreement_trend(project=three_day_project, by="count", points=3)
    points = trend["points"]
    assert [p["judgements"] for p in points] == [6, 12, 18]
    assert points[0]["percent_agreement"] == 0.0
    assert points[0]["percent_agreement"] < points[1]["percent_agreement"] < points[2]["percent_agreement"]
    assert points[0]["at"].startswith("2026-01-01")


@pytest.mark.django_db
def test_ranking_project_has_kendall_statistics(db):
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3, annotations_per_task=2, allow_ties=True)
    for _ in range(4):
        make_task(project)
    rng = random.Random(1)
    for name, flip in (("r1", False), ("r2", True)):
        user = UserFactory(username=name)
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
        while claim := services.assignment_claim_next(project=project, annotator=user, rng=rng):
            ids = sorted(claim.assignment.display_order)
            if flip and claim.assignment.task_id % 2:
                ids = ids[::-1]  # r2 reverses the order on odd tasks
            services.judgement_submit(assignment=claim.assignment, ranking=[[r] for r in ids], time_taken_ms=4000)
    trend = agreement_trend(project=project, by="count", points=4)
    assert trend["statistics"][-2:] == ["kendall_w", "mean_tau_b"]
    last = trend["points"][-1]
    report = agreement_report(project=project, bootstrap=0)
    assert last["kendall_w"] == report["ranking"]["kendall_w"]["value"]
    assert last["mean_tau_b"] == report["ranking"]["mean_tau_b"]["value"]
    # r1 ranked every task before r2's first ranking: W is undefined until judgement 5, so the
    # checkpoints are spaced from there on instead of starting with four undefined ones.
    assert trend["first_overlap"] == 5 and trend["counts_from"] == 4
    assert [p["judgements"] for p in trend["points"]] == [5, 6, 7, 8]
    assert trend["points"][0]["kendall_w"] is not None
    assert [p["units_with_overlap"] for p in trend["points"]] == [3, 6, 9, 12]


@pytest.mark.django_db
def test_a_late_overlap_gets_a_curve_not_one_point_at_the_end(db):
    """Twenty single votes (an import, say), then two annotators meet on two items: the demo's ranking project."""
    project = ProjectFactory(annotations_per_task=3, allow_ties=True, name="Late overlap")
    shared = [make_task(project, priority=5).pk for _ in range(2)]  # served first to the late pair
    for _ in range(18):
        make_task(project)
    annotate(project, {"solo": ["a"] * 20})
    # Two more annotators on the two shared tasks: the overlap begins at judgement 21.
    rng = random.Random(0)
    for name, answer in (("late-1", "a"), ("late-2", "b")):
        user = UserFactory(username=name)
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
        for _ in shared:
            claim = services.assignment_claim_next(project=project, annotator=user, rng=rng)
            assert claim is not None and claim.assignment.task_id in shared
            low, high = sorted(claim.assignment.display_order)
            tiers = [[low], [high]] if answer == "a" else [[high], [low]]
            services.judgement_submit(assignment=claim.assignment, ranking=tiers, time_taken_ms=4000)
    trend = agreement_trend(project=project, by="count", points=20)
    points = trend["points"]
    assert trend["judgements"] == 24 and trend["first_overlap"] == 21 and trend["counts_from"] == 20
    # Before: ceil(k * 24 / 20) put 19 of 20 checkpoints before the overlap, all undefined.
    assert [p["judgements"] for p in points] == [21, 22, 23, 24]
    assert all(p["percent_agreement"] is not None for p in points)
    assert [p["units_with_overlap"] for p in points] == [1, 2, 2, 2]
    assert trend["few_units_below"] == 30
    report = agreement_report(project=project, bootstrap=0)
    for name, path in POOLED.items():
        assert points[-1][name] == report_value(report, path), name


@pytest.mark.django_db
def test_no_overlap_keeps_the_plain_checkpoints(db):
    project = ProjectFactory(annotations_per_task=1, name="Single votes")
    for _ in range(6):
        make_task(project)
    annotate(project, {"solo": ["a"] * 6})
    trend = agreement_trend(project=project, by="count", points=3)
    assert trend["first_overlap"] is None and trend["counts_from"] == 0
    assert [p["judgements"] for p in trend["points"]] == [2, 4, 6]
    assert all(p["percent_agreement"] is None and p["units_with_overlap"] == 0 for p in trend["points"])


@pytest.mark.django_db
def test_empty_project_and_bad_arguments(project):
    trend = agreement_trend(project=project)
    assert trend["points"] == [] and trend["judgements"] == 0
    with pytest.raises(ValueError, match="by must be one of"):
        agreement_trend(project=project, by="month")
    with pytest.raises(ValueError, match="points must be"):
        agreement_trend(project=project, points=1)
    with pytest.raises(ValueError, match="points must be"):
        agreement_trend(project=project, points=10_000)


@pytest.mark.realdata
@pytest.mark.django_db
def test_pandalm_trend_ends_at_the_published_report(shared_data):
    project = ProjectFactory(allow_ties=True)
    import_file(project=project, path=shared_data / PANDALM, format="pandalm")
    trend = agreement_trend(project=project, by="count", points=10)
    points = trend["points"]
    assert [p["judgements"] for p in points] == [300, 600, 900, 1199, 1499, 1799, 2098, 2398, 2698, 2997]
    # PandaLM's items are imported with their three votes together: votes grow with judgements.
    assert np.all(np.diff([p["pair_votes"] for p in points]) > 0)
    report = agreement_report(project=project, bootstrap=0)
    for name, path in POOLED.items():
        assert points[-1][name] == report_value(report, path), name
    # Imported judgements share one import time: one day holds them all.
    daily = agreement_trend(project=project, by="day")
    assert len(daily["points"]) == 1 and daily["points"][0]["judgements"] == 2997
