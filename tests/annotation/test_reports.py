"""The agreement report: service, text table, ``manage.py agreement_report`` and the API.

The published figures are the specification for the real files (../shared/data/README.md):
PandaLM's Cohen's kappas 0.85, 0.88, 0.86 must come out of the report (JSON and table). A
hand-built project, annotated through the work queue, checks the annotator flags; a
synthetic check holds the vectorised bootstrap statistics to ``annotation.agreement``.
"""

from __future__ import annotations

import io
import json
import random
from itertools import combinations

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from annotation import services
from annotation.agreement import (
    PairVotes,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
    rank_agreement,
)
from annotation.agreement_data import project_pair_votes, project_rankings
from annotation.importers import import_file
from annotation.models import (
    Judgement,
    Membership,
    PairVote,
    Project,
    ProjectKind,
    Prompt,
    Response,
    Role,
    Task,
    TaskResponse,
)
from annotation.reports import (
    agreement_report,
    agreement_report_from_file,
    compact_ratings,
    pooled_statistics,
    render_table,
)
from annotation.reports.figures import COLUMNS, unit_sums
from tests.factories import ProjectFactory, UserFactory, make_task

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("error::RuntimeWarning")]

PANDALM = "pandalm/testset-v1.json"
MT_BENCH = "mt_bench_human/human_judgments_turn1.jsonl"
PANDALM_PAIRS = {
    ("pandalm-annotator1", "pandalm-annotator2"): 0.85,
    ("pandalm-annotator1", "pandalm-annotator3"): 0.88,
    ("pandalm-annotator2", "pandalm-annotator3"): 0.86,
}
API = "/api/v1"


def strict_json(report: dict) -> dict:
    """The report survives strict JSON (no NaN, no numpy types) unchanged."""
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    return report


def without_volatile(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in ("generated_at", "project", "source")}


def row_counts() -> dict[str, int]:
    models = (Project, Prompt, Response, Task, TaskResponse, Judgement, PairVote, Membership, get_user_model())
    return {model.__name__: model.objects.count() for model in models}


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.realdata
def test_pandalm_report_gives_the_published_kappas(shared_data):
    project = ProjectFactory(name="PandaLM", allow_ties=True)
    import_file(project=project, path=shared_data / PANDALM, format="pandalm")
    report = strict_json(agreement_report(project=project, bootstrap=200, seed=1))

    assert report["counts"] == {
        "tasks": 999,
        "items": 999,
        "items_with_overlap": 999,
        "judgements": 2997,
        "pair_votes": 2997,
        "units": 999,
        "units_with_overlap": 999,
        "annotators": 3,
    }
    cohen = report["pairwise"]["cohen_kappa"]
    kappas = {tuple(pair["annotators"]): pair for pair in cohen["pairs"]}
    assert {names: round(pair["kappa"], 2) for names, pair in kappas.items()} == PANDALM_PAIRS
    assert all(pair["shared_units"] == 999 and pair["reason"] is None for pair in kappas.values())
    assert cohen["pairs_below_min_overlap"] == 0 and cohen["summary"]["n"] == 3

    # Three raters on every item: 1 - alpha = (1 - Fleiss) * (n - 1) / n, n = 2997 values.
    pairwise = report["pairwise"]
    fleiss, alpha = pairwise["fleiss_kappa"]["value"], pairwise["krippendorff_alpha"]["nominal"]["value"]
    assert 1 - alpha == pytest.approx((1 - fleiss) * 2996 / 2997, abs=2e-4)
    for stat in (
        pairwise["percent_agreement"],
        pairwise["percent_agreement_no_ties"],
        pairwise["fleiss_kappa"],
        pairwise["krippendorff_alpha"]["nominal"],
        pairwise["krippendorff_alpha"]["ordinal"],
    ):
        assert stat["reason"] is None and stat["ci_reason"] is None
        assert stat["ci"]["low"] <= stat["value"] <= stat["ci"]["high"]
        assert stat["ci"]["valid_resamples"] == 200
    assert report["ranking"] is None  # a pairwise project

    by_name = {row["username"]: row for row in report["annotators"]}
    assert sorted(by_name) == ["pandalm-annotator1", "pandalm-annotator2", "pandalm-annotator3"]
    for row in by_name.values():
        assert row["judgements"] == 999 and row["flags"] == []
        # Imported judgements were never displayed and carry no time.
        assert row["position_bias"]["first_shown_share"] is None
        assert row["position_bias"]["reason"].startswith("display order unknown")
        assert row["median_time_ms"]["value"] is None and row["median_time_ms"]["reason"]
        assert row["length_bias"]["n"] > 0 and row["mean_peer_kappa"]["peers"] == 2

    # With three votes, only an item split three ways has no majority share of at least 0.5.
    items = json.loads((shared_data / PANDALM).read_text())
    split = sum(len({item["annotator1"], item["annotator2"], item["annotator3"]}) == 3 for item in items)
    assert report["contested"]["total"] == split
    assert report["contested"]["units_with_overlap"] == 999

    table = render_table(report)
    for (first, second), published in PANDALM_PAIRS.items():
        line = next(line for line in table.splitlines() if first in line and second in line)
        cells = line.split()
        assert cells[:2] == [first, second] and cells[3] == "999"
        assert cells[2] == f"{kappas[(first, second)]['kappa']:.3f}" and round(float(cells[2]), 2) == published
    assert "Fleiss' kappa" in table and "Krippendorff's alpha, ordinal" in table


@pytest.mark.realdata
def test_mt_bench_file_report_keeps_nothing(shared_data):
    path = shared_data / MT_BENCH
    before = row_counts()
    options = {"duplicates": "last"}
    report = strict_json(agreement_report_from_file(path=path, format="mt-bench", options=options, bootstrap=100))
    assert row_counts() == before  # rolled back: no project, task, judgement or account remains

    assert report["project"] == {
        "id": None,
        "name": path.name,
        "kind": "pairwise",
        "allow_ties": True,
        "temporary": True,
    }
    assert report["source"]["persisted"] is False
    assert report["source"]["imported"]["skipped"] == 1  # line 992/994: the duplicate
    assert report["counts"]["judgements"] == 1688 and report["counts"]["annotators"] == 65
    contested = report["contested"]["items"]
    assert contested and all(item["external_id"].startswith("mt-bench-") for item in contested)
    assert all(None not in item["sources"] for item in contested)  # the two model names

    # The same figures as a report on a project that keeps the import.
    # Kappa and alpha read each pair with its lower response id first; the report on a file
    # keeps the file's order, a project's import shuffles it, so the same figures need the same order.
    project = ProjectFactory(allow_ties=True)
    import_file(project=project, path=path, format="mt-bench", options=options, shuffle=False)
    kept = agreement_report(project=project, bootstrap=100)
    assert kept["pairwise"] == report["pairwise"]
    assert kept["counts"] == report["counts"]
    assert [row["username"] for row in kept["annotators"]] == [row["username"] for row in report["annotators"]]

    table = render_table(report)
    assert "not saved" in table and "1 record(s) skipped" in table


# --- a project annotated through the queue, with predictable flags -----------------------------


@pytest.fixture
def flagged_project(db):
    """Twelve pairwise tasks, four annotators, annotated through the work queue.

    ``first-picker`` always picks the response shown first, answers in 0.8 s and, by
    construction of the truth, always disagrees with the others; ``careful-1..3`` pick the
    truth in 20 s or more, except that ``careful-3`` dissents on the first task, which is
    then split 2 to 2.
    """
    project = ProjectFactory(annotations_per_task=4, agreement_threshold=0.5)
    tasks = [make_task(project) for _ in range(12)]
    names = ["first-picker", "careful-1", "careful-2", "careful-3"]
    users = {name: UserFactory(username=name) for name in names}
    for user in users.values():
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    rng = random.Random(5)
    truth: dict[int, int] = {}
    while claim := services.assignment_claim_next(project=project, annotator=users["first-picker"], rng=rng):
        shown = claim.assignment.display_order
        truth[claim.assignment.task_id] = shown[1]  # the truth is what the first-picker saw second
        services.judgement_submit(assignment=claim.assignment, ranking=[[shown[0]], [shown[1]]], time_taken_ms=800)
    for step, name in enumerate(names[1:]):
        while claim := services.assignment_claim_next(project=project, annotator=users[name], rng=rng):
            task_id = claim.assignment.task_id
            ids = claim.assignment.display_order
            winner = truth[task_id]
            if name == "careful-3" and task_id == tasks[0].pk:
                winner = next(r for r in ids if r != winner)
            loser = next(r for r in ids if r != winner)
            services.judgement_submit(
                assignment=claim.assignment, ranking=[[winner], [loser]], time_taken_ms=20_000 + 1000 * step
            )
    gold = tasks[1]
    gold.is_gold = True
    gold.gold_tiers = [[truth[gold.pk]], [r for r in gold.response_ids() if r != truth[gold.pk]]]
    gold.save(update_fields=["is_gold", "gold_tiers"])
    return project, tasks, truth


def test_flags_of_a_hand_built_project(flagged_project):
    project, tasks, truth = flagged_project
    # The truth is A (the lower id) on some tasks and B on others, so kappas are defined.
    assert len({truth[t.pk] == min(t.response_ids()) for t in tasks}) == 2
    report = strict_json(agreement_report(project=project, bootstrap=100, min_overlap=5))
    rows = {row["username"]: row for row in report["annotators"]}

    picker = rows["first-picker"]
    assert picker["flags"] == ["low_agreement", "position_bias", "too_fast"]
    assert picker["loo_agreement"] == {"value": 0.0, "n": 12, "reason": None}
    assert picker["position_bias"]["first_shown_share"] == 1.0 and picker["position_bias"]["n"] == 12
    assert picker["position_bias"]["p_value"] == pytest.approx(2 * 0.5**12, rel=1e-3)
    assert picker["median_time_ms"] == {"value": 800.0, "n": 12, "reason": None}
    assert picker["gold_accuracy"] == {"value": 0.0, "n": 1, "reason": None}
    for name in ("careful-1", "careful-2", "careful-3"):
        assert rows[name]["flags"] == [], rows[name]
        assert rows[name]["gold_accuracy"]["value"] == 1.0
        assert rows[name]["judgements"] == 12
    assert rows["careful-3"]["loo_agreement"]["value"] == pytest.approx(11 / 12, abs=1e-4)

    kappas = {tuple(pair["annotators"]): pair["kappa"] for pair in report["pairwise"]["cohen_kappa"]["pairs"]}
    assert kappas[("careful-1", "careful-2")] == 1.0
    assert kappas[("careful-1", "first-picker")] < 0

    contested = report["contested"]
    assert contested["total"] == 1 and contested["units_with_overlap"] == 12
    (item,) = contested["items"]
    assert item["task_id"] == tasks[0].pk and item["n_votes"] == 4
    assert (item["majority_share"], item["entropy_bits"]) == (0.5, 1.0)
    assert item["votes"]["tie"] == 0 and item["votes"]["a"] == item["votes"]["b"] == 2

    # Thresholds are parameters: a lax too_fast threshold and p clear the first-picker's flags.
    lax = agreement_report(project=project, bootstrap=0, too_fast_ms=500, position_bias_p=1e-4, min_overlap=5)
    assert {row["username"]: row["flags"] for row in lax["annotators"]}["first-picker"] == ["low_agreement"]
    assert lax["pairwise"]["percent_agreement"]["ci"] is None
    assert lax["pairwise"]["percent_agreement"]["ci_reason"] == "bootstrap disabled (bootstrap=0)"

    table = render_table(report)
    picker_line = next(line for line in table.splitlines() if line.strip().startswith("first-picker "))
    assert "low_agreement,position_bias,too_fast" in picker_line and "0.8" in picker_line
    assert str(tasks[0].pk) in table.split("Contested")[1]


def test_the_same_seed_gives_the_same_intervals(flagged_project):
    project, _, _ = flagged_project
    first = agreement_report(project=project, bootstrap=50, seed=3)
    again = agreement_report(project=project, bootstrap=50, seed=3)
    other = agreement_report(project=project, bootstrap=50, seed=4)
    assert without_volatile(first) == without_volatile(again)
    intervals = [r["pairwise"]["krippendorff_alpha"]["ordinal"]["ci"] for r in (first, other)]
    assert intervals[0] != intervals[1]


def test_a_project_without_judgements():
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3)
    make_task(project)
    report = strict_json(agreement_report(project=project))
    assert report["counts"]["tasks"] == 1 and report["counts"]["judgements"] == 0
    assert report["pairwise"]["percent_agreement"]["value"] is None
    assert report["pairwise"]["percent_agreement"]["reason"] == "the project has no judgements"
    assert report["ranking"]["kendall_w"]["value"] is None
    assert report["annotators"] == [] and report["contested"]["items"] == []
    assert "Annotators\n  none" in render_table(report)


def test_options_out_of_range_are_refused():
    project = ProjectFactory()
    for options in ({"bootstrap": -1}, {"min_overlap": 0}, {"contested_threshold": 1.5}, {"position_bias_p": 0}):
        with pytest.raises(ValueError):
            agreement_report(project=project, **options)


# --- rankings ------------------------------------------------------------------------------------


@pytest.fixture
def ranking_project(db):
    """Five 3-way tasks ranked by three annotators; all follow one hidden order but r3 reverses task 0."""
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3, annotations_per_task=3)
    tasks = [make_task(project) for _ in range(5)]
    rng = random.Random(11)
    order = {task.pk: rng.sample(task.response_ids(), 3) for task in tasks}
    users = [UserFactory(username=f"ranker-{n}") for n in (1, 2, 3)]
    for user in users:
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
        while claim := services.assignment_claim_next(project=project, annotator=user, rng=rng):
            ranking = order[claim.assignment.task_id]
            if user.username == "ranker-3" and claim.assignment.task_id == tasks[0].pk:
                ranking = ranking[::-1]
            services.judgement_submit(assignment=claim.assignment, ranking=[[r] for r in ranking], time_taken_ms=30_000)
    return project, tasks


def test_ranking_section(ranking_project):
    project, tasks = ranking_project
    report = strict_json(agreement_report(project=project, bootstrap=100, min_overlap=3))
    counts = report["counts"]
    assert (counts["items"], counts["judgements"], counts["units"], counts["pair_votes"]) == (5, 15, 15, 45)

    ranked = rank_agreement(project_rankings(project).data)
    section = report["ranking"]
    assert section["items"] == 5 and section["items_with_overlap"] == 5
    assert section["kendall_w"]["value"] == round(float(np.mean(ranked.kendall_w)), 4)
    assert section["kendall_w"]["median"] == 1.0 and section["kendall_w"]["n_items"] == 5
    assert section["mean_tau_b"]["value"] == round(float(np.mean(ranked.mean_tau_b)), 4)
    assert section["kendall_w"]["ci"]["high"] == 1.0
    # The sub-pairs are the PairVotes: the same counts both ways.
    pooled = report["pairwise"]["percent_agreement"]
    assert (section["subpair_agreement"]["agreeing_pairs"], section["subpair_agreement"]["pairs"]) == (
        pooled["agreeing_pairs"],
        pooled["pairs"],
    )
    # Task 0's three sub-pairs are split 2 to 1: not contested at a 0.5 threshold, contested at 0.7.
    assert report["contested"]["total"] == 0
    strict = agreement_report(project=project, bootstrap=0, contested_threshold=0.7)
    assert {item["task_id"] for item in strict["contested"]["items"]} == {tasks[0].pk}
    assert strict["contested"]["total"] == 3
    table = render_table(report)
    assert "Kendall's W, mean over items" in table and "sub-pair agreement" in table


def test_figures_on_few_units_carry_a_caution(ranking_project):
    project, _ = ranking_project
    report = strict_json(agreement_report(project=project, bootstrap=0))
    assert report["parameters"]["few_units_below"] == 30
    pairwise = report["pairwise"]
    # Five items of three responses: 15 response pairs, each with three votes.
    assert pairwise["percent_agreement"]["n_units"] == 15
    for stat in (
        pairwise["percent_agreement"],
        pairwise["fleiss_kappa"],
        pairwise["krippendorff_alpha"]["nominal"],
        pairwise["krippendorff_alpha"]["ordinal"],
    ):
        assert stat["value"] is not None and stat["caution"] == "too few units (n=15)"
    assert report["ranking"]["kendall_w"]["caution"] == "too few items (n=5)"
    assert report["ranking"]["mean_tau_b"]["caution"] == "too few items (n=5)"
    table = render_table(report)
    assert "Fleiss' kappa: too few units (n=15), read it with its interval" in table
    assert "Kendall's W, mean over items: too few items (n=5)" in table


def test_figures_on_thirty_units_carry_no_caution(db):
    from tests.annotation.test_trends import annotate

    project = ProjectFactory(annotations_per_task=2, allow_ties=True)
    for _ in range(30):
        make_task(project)
    annotate(project, {"one": ["a"] * 25 + ["b"] * 5, "two": ["a"] * 22 + ["b"] * 8})
    report = strict_json(agreement_report(project=project, bootstrap=0))
    pairwise = report["pairwise"]
    assert pairwise["fleiss_kappa"]["n_units"] == 30 and pairwise["fleiss_kappa"]["value"] is not None
    assert pairwise["percent_agreement"]["caution"] is None and pairwise["fleiss_kappa"]["caution"] is None
    assert pairwise["krippendorff_alpha"]["nominal"]["caution"] is None
    # An undefined figure has its reason, not a caution.
    empty = agreement_report(project=ProjectFactory(), bootstrap=0)
    assert empty["pairwise"]["fleiss_kappa"]["caution"] is None
    assert "too few" not in render_table(report)


# --- the vectorised bootstrap statistics against annotation.agreement -------------------------


def test_pooled_statistics_match_the_agreement_module():
    """On the full data and on resamples of items, the per-item sums give agreement.py's values."""
    rng = np.random.default_rng(0)
    unit, rater, outcome, item_of_unit = [], [], [], []
    n_items = 40
    for item in range(n_items):
        for _ in range(rng.integers(1, 4)):  # 1..3 response pairs per item
            u = len(item_of_unit)
            item_of_unit.append(item)
            for r in rng.choice(8, size=rng.integers(1, 6), replace=False):
                unit.append(u)
                rater.append(int(r))
                outcome.append(int(rng.choice([-1, 0, 1], p=[0.45, 0.15, 0.4])))
    votes = PairVotes(unit=unit, rater=rater, outcome=outcome)
    item_of_unit = np.array(item_of_unit)
    counts = np.zeros((item_of_unit.size, 3), dtype=np.int64)
    np.add.at(counts, (votes.unit, votes.outcome + 1), 1)
    per_unit = unit_sums(counts)
    assert per_unit.shape[1] == COLUMNS
    per_item = np.zeros((n_items, COLUMNS))
    np.add.at(per_item, item_of_unit, per_unit)

    full = votes.ratings().matrix
    compact = compact_ratings(votes)
    assert compact.shape[0] == 5  # the most votes on one unit, not the 8 raters

    def reference(matrix):
        return {
            "percent_agreement": percent_agreement(matrix).value,
            "percent_agreement_no_ties": percent_agreement(matrix, exclude=0).value,
            "fleiss_kappa": fleiss_kappa(matrix).value,
            "alpha_nominal": krippendorff_alpha(matrix, "nominal").value,
            "alpha_ordinal": krippendorff_alpha(matrix, "ordinal").value,
        }

    ours = pooled_statistics(per_item.sum(axis=0))
    for name, value in reference(full).items():
        assert ours[name][0] == pytest.approx(value, abs=1e-12), name
        assert reference(compact)[name] == pytest.approx(value, abs=1e-12), name
    for _ in range(20):
        chosen = rng.integers(0, n_items, n_items)
        columns = np.concatenate([np.flatnonzero(item_of_unit == item) for item in chosen])
        resampled = pooled_statistics(per_item[chosen].sum(axis=0))
        for name, value in reference(full[:, columns]).items():
            if np.isnan(value):
                assert np.isnan(resampled[name][0]), name
            else:
                assert resampled[name][0] == pytest.approx(value, abs=1e-12), name


# --- the command --------------------------------------------------------------------------------


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("agreement_report", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_prints_the_table_and_the_json(flagged_project):
    project, _, _ = flagged_project
    table, _ = run_command("--project", str(project.pk), "--bootstrap", "50", "--min-overlap", "5")
    assert table.startswith(f"Agreement report: {project.name} (project {project.pk})")
    assert "low_agreement,position_bias,too_fast" in table
    text, _ = run_command("--project", str(project.pk), "--json", "--bootstrap", "50", "--seed", "2")
    report = json.loads(text)
    assert report["parameters"]["bootstrap"] == 50 and report["parameters"]["seed"] == 2
    assert without_volatile(report) == without_volatile(agreement_report(project=project, bootstrap=50, seed=2))
    text, _ = run_command("--project", str(project.pk), "--json", "--too-fast-ms", "100", "--bootstrap", "0")
    flags = {row["username"]: row["flags"] for row in json.loads(text)["annotators"]}
    assert "too_fast" not in flags["first-picker"]


def _judgement_file(tmp_path) -> str:
    lines = []
    for n in range(4):
        ranking = [[0], [1], [2]] if n % 2 else [[2], [0], [1]]
        lines.append(
            {
                "id": f"q{n}",
                "prompt": f"Question {n}?",
                "responses": [f"short {n}", f"a longer answer {n}", f"the longest answer of all {n}"],
                "judgements": [
                    {"annotator": "rater-a", "ranking": ranking},
                    {"annotator": "rater-b", "ranking": ranking},
                    {"annotator": "rater-c", "ranking": ranking[::-1] if n == 0 else ranking},
                ],
            }
        )
    path = tmp_path / "judgements.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_command_reports_on_a_file_and_keeps_nothing(db, tmp_path):
    path = _judgement_file(tmp_path)
    before = row_counts()
    table, _ = run_command("--file", path, "--format", "jsonl", "--bootstrap", "20", "--min-overlap", "3")
    assert row_counts() == before
    assert "judgements.jsonl (file, format jsonl, not saved)" in table
    assert "Kendall's W" in table  # jsonl may hold K-way rankings: a ranking project
    text, _ = run_command("--file", path, "--format", "jsonl", "--json", "--option", "annotator_prefix=x-")
    report = json.loads(text)
    assert row_counts() == before
    assert report["project"]["kind"] == "ranking" and report["project"]["temporary"] is True
    assert report["source"]["options"] == {"annotator_prefix": "x-"}
    assert [row["username"] for row in report["annotators"]] == ["x-rater-a", "x-rater-b", "x-rater-c"]
    assert report["counts"]["judgements"] == 12 and report["ranking"]["items"] == 4
    text, _ = run_command("--file", path, "--format", "jsonl", "--json", "--kind", "ranking", "--bootstrap", "0")
    assert json.loads(text)["ranking"]["kendall_w"]["ci"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --project ID, or --file PATH with --format"),
        (("--project", "999999"), "project 999999 does not exist"),
        (("--file", "x.jsonl"), "--file needs --format"),
        (("--file", "/nonexistent/x.jsonl", "--format", "jsonl"), "no such file"),
        (("--project", "1", "--format", "jsonl"), "--format goes with --file"),
        (("--project", "1", "--option", "a=b"), "--option goes with --file"),
        (("--project", "1", "--file", "x"), "not allowed with argument"),
    ],
)
def test_command_errors(db, args, message):
    with pytest.raises(CommandError, match=message):
        run_command(*args)


def test_command_errors_on_options_and_files(db, tmp_path):
    project = ProjectFactory()
    with pytest.raises(CommandError, match="bootstrap must be 0"):
        run_command("--project", str(project.pk), "--bootstrap", "-1")
    path = _judgement_file(tmp_path)
    with pytest.raises(CommandError, match="write KEY=VALUE"):
        run_command("--file", path, "--format", "jsonl", "--option", "oops")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "Why?", "responses": ["a"], "judgements": []}\n{"nope": 1}\n')
    before = row_counts()
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"could not read broken.jsonl: \d+ error\(s\); nothing was written"):
        call_command("agreement_report", "--file", str(broken), "--format", "jsonl", stdout=io.StringIO(), stderr=err)
    assert "broken.jsonl:2" in err.getvalue()
    assert row_counts() == before


# --- the API ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def judged_project(project, manager, annotator, outsider):
    """The persona project with two tasks judged by the annotator and two more members."""
    others = [UserFactory(username=f"peer-{n}") for n in (1, 2)]
    for user in others:
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    for _ in range(2):
        make_task(project)
    for user in (annotator, *others):
        while claim := services.assignment_claim_next(project=project, annotator=user):
            ids = claim.assignment.display_order
            services.judgement_submit(assignment=claim.assignment, ranking=[[min(ids)], [max(ids)]])
    return project


def url(project) -> str:
    return f"{API}/projects/{project.pk}/agreement/"


def test_api_manager_gets_the_report(judged_project, manager):
    response = client_for(manager).get(url(judged_project), {"bootstrap": 30, "seed": 5, "min_overlap": 1})
    assert response.status_code == 200
    report = strict_json(response.json())
    assert report["project"]["id"] == judged_project.pk
    assert report["parameters"]["bootstrap"] == 30 and report["parameters"]["seed"] == 5
    assert report["counts"]["judgements"] == 6 and report["counts"]["annotators"] == 3
    # Everyone picked A: perfect agreement, but no variation, so kappa and alpha are null with a reason.
    assert report["pairwise"]["percent_agreement"]["value"] == 1.0
    assert report["pairwise"]["fleiss_kappa"]["value"] is None
    assert report["pairwise"]["fleiss_kappa"]["reason"].startswith("no variation")
    assert all(pair["kappa"] is None and pair["reason"] for pair in report["pairwise"]["cohen_kappa"]["pairs"])
    assert report == {
        **agreement_report(project=judged_project, bootstrap=30, seed=5, min_overlap=1),
        "generated_at": report["generated_at"],
    }


def test_api_personas(judged_project, annotator, outsider):
    assert client_for(None).get(url(judged_project)).status_code == 401
    assert client_for(outsider).get(url(judged_project)).status_code == 404
    assert client_for(annotator).get(url(judged_project)).status_code == 403
    assert client_for(annotator).get(f"{API}/projects/999999/agreement/").status_code == 404


@pytest.mark.parametrize(
    "params", [{"bootstrap": -1}, {"bootstrap": 10_001}, {"seed": "x"}, {"contested_threshold": 2}, {"min_overlap": 0}]
)
def test_api_refuses_parameters_out_of_range(judged_project, manager, params):
    response = client_for(manager).get(url(judged_project), params)
    assert response.status_code == 400
    assert set(response.json()) == set(params)


def test_api_schema_documents_the_report(manager):
    response = client_for(manager).get(f"{API}/schema/", {"format": "json"})
    operation = json.loads(response.content)["paths"]["/api/v1/projects/{project_id}/agreement/"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"project_id", "bootstrap", "seed"}
    assert set(operation["responses"]) >= {"200", "400", "403", "404"}


def test_pairs_listed_once_each(flagged_project):
    project, _, _ = flagged_project
    report = agreement_report(project=project, bootstrap=0, min_overlap=1)
    pairs = [tuple(pair["annotators"]) for pair in report["pairwise"]["cohen_kappa"]["pairs"]]
    names = sorted(row["username"] for row in report["annotators"])
    assert sorted(pairs) == list(combinations(names, 2))
    data = project_pair_votes(project)
    assert report["counts"]["pair_votes"] == len(data.votes)


@pytest.mark.parametrize("with_gold", [True, False])
def test_compact_read_holds_the_same_votes_in_narrow_types(flagged_project, ranking_project, with_gold):
    """The report's compact read: the same values as the default read, in int32 and int8."""
    for project in (flagged_project[0], ranking_project[0]):
        if not with_gold:
            Task.objects.filter(project=project).update(is_gold=False, gold_tiers=None)
        wide, narrow = project_pair_votes(project), project_pair_votes(project, compact=True)
        np.testing.assert_array_equal(wide.units, narrow.units)
        assert wide.units.dtype == narrow.units.dtype == np.int64
        assert wide.usernames == narrow.usernames
        expected_types = {
            "unit": np.int32,
            "rater": np.int32,
            "outcome": np.int8,
            "a_shown_first": np.int8,
            "len_a": np.int32,
            "len_b": np.int32,
            "judgement": np.int32,
        }
        for name, narrow_type in expected_types.items():
            assert getattr(wide.votes, name).dtype == np.int64, name  # the default read is unchanged
            assert getattr(narrow.votes, name).dtype == narrow_type, name
            np.testing.assert_array_equal(getattr(wide.votes, name), getattr(narrow.votes, name), err_msg=name)
        for name in ("time_ms", "gold"):
            np.testing.assert_array_equal(getattr(wide.votes, name), getattr(narrow.votes, name), err_msg=name)
        # Without gold answers the compact read stores no gold array per vote (a view of one NaN).
        has_gold = bool(np.isfinite(wide.votes.gold).any())
        assert has_gold == (with_gold and project == flagged_project[0])
        assert (narrow.votes.gold.strides == (0,)) == (not has_gold)
