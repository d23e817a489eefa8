"""Agreement through the platform: import the real files, read the rows back, compute.

The published figures are the specification (../shared/data/README.md):

* PandaLM test set, Cohen's kappa over the 3 labels: annotator1-2 0.85, 1-3 0.88, 2-3 0.86.
* MT-Bench turn 1, expert vs expert (FastChat ``compute_agreement.py``, Zheng et al. 2023
  Table 2): with ties 454/721 = 0.63, without ties 388/479 = 0.81.

Every figure is computed from the database rows through ``annotation.agreement_data``,
not from the file; the file is read only to check that the round trip lost nothing. The
last test drives the work queue itself, so that display order, time and gold, which
imports never carry, reach the statistics too.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from itertools import combinations

import numpy as np
import pytest
from scipy.stats import spearmanr

from annotation import services
from annotation.agreement import (
    RankingData,
    annotator_stats,
    cohen_kappa,
    fleiss_kappa,
    item_stats,
    krippendorff_alpha,
    percent_agreement,
    rank_agreement,
    rating_matrix,
)
from annotation.agreement_data import project_pair_votes, project_rankings
from annotation.importers import import_file
from annotation.models import Membership, ProjectKind, Response, Role, Task, TaskResponse
from tests.factories import ProjectFactory, UserFactory, make_task

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("error::RuntimeWarning")]

PANDALM = "pandalm/testset-v1.json"
MT_BENCH = "mt_bench_human/human_judgments_turn1.jsonl"
PANDALM_NAMES = ["pandalm-annotator1", "pandalm-annotator2", "pandalm-annotator3"]


@pytest.mark.realdata
def test_pandalm_cohen_kappas_from_the_database(shared_data):
    path = shared_data / PANDALM
    project = ProjectFactory(allow_ties=True)
    import_file(project=project, path=path, format="pandalm")

    rankings = project_rankings(project)
    sub = rankings.data.subpairs()
    # K = 2: one sub-pair per task, position 0 against position 1. Which of response1 and
    # response2 is at position 0 is the import's shuffle: the labels below are by position.
    assert set(sub.unit_first) == {0} and set(sub.unit_second) == {1} and sub.unit_item.size == 999
    # Outcome +1: position 0 better, -1: position 1 better, 0: tie; as PandaLM's labels 1, 2, 0.
    label = np.select([sub.votes.outcome == 1, sub.votes.outcome == -1], [1, 2], 0)
    labels = rating_matrix(sub.unit_item[sub.votes.unit], sub.votes.rater, label)
    rows = labels.rows(rankings.rater_ids(PANDALM_NAMES))

    # Kappa depends on the orientation of each item only through the label marginals; the
    # published figures hold at two decimals whatever the shuffle (2,000 random orientations
    # of the file's labels all round to them).
    kappas = {(i + 1, j + 1): cohen_kappa(rows[i], rows[j]) for i, j in combinations(range(3), 2)}
    assert {pair: round(k.value, 2) for pair, k in kappas.items()} == {(1, 2): 0.85, (1, 3): 0.88, (2, 3): 0.86}
    assert all(k.n_units == 999 for k in kappas.values())

    # The round trip lost nothing: the labels read back are the file's, item by item, once
    # each item's orientation is read from the response at position 0.
    items = {f"pandalm-{item['idx']}": item for item in json.loads(path.read_text())}
    external = dict(Task.objects.filter(project=project).values_list("pk", "prompt__external_id"))
    swapped = set(
        TaskResponse.objects.filter(
            task__project=project, position=0, response__metadata__pandalm_field="response2"
        ).values_list("task_id", flat=True)
    )
    assert 0.4 < len(swapped) / 999 < 0.6  # shuffled: response1 is not always first

    def by_position(task_id: int, label: int) -> int:
        return {1: 2, 2: 1}.get(label, label) if task_id in swapped else label

    from_file = np.array(
        [[by_position(int(t), items[external[int(t)]][f"annotator{n}"]) for t in labels.units] for n in (1, 2, 3)]
    )
    np.testing.assert_array_equal(rows, from_file)

    # The PairVote adapter gives the same kappas: position 0 holds the lower id, response_a.
    votes = project_pair_votes(project)
    pair_rows = votes.votes.ratings().rows(votes.rater_ids(PANDALM_NAMES))
    for (i, j), k in kappas.items():
        assert cohen_kappa(pair_rows[i - 1], pair_rows[j - 1]).value == pytest.approx(k.value, abs=1e-12)

    # Three raters on every item: 1 - alpha = (1 - Fleiss) (n - 1) / n exactly, n = 2997 values.
    fleiss, alpha = fleiss_kappa(rows), krippendorff_alpha(rows)
    assert 1 - alpha.value == pytest.approx((1 - fleiss.value) * 2996 / 2997, abs=1e-12)
    assert min(k.value for k in kappas.values()) < fleiss.value < max(k.value for k in kappas.values())


@pytest.mark.realdata
def test_pandalm_annotator_stats_match_the_file(shared_data):
    path = shared_data / PANDALM
    project = ProjectFactory(allow_ties=True)
    import_file(project=project, path=path, format="pandalm")
    data = project_pair_votes(project)
    stats = annotator_stats(data.votes, min_overlap=50)
    items = json.loads(path.read_text())

    def text(value: object) -> str:
        # The importer keeps 6 boolean responses as their JSON text ("true").
        return value if isinstance(value, str) else json.dumps(value)

    for name in PANDALM_NAMES:
        row = list(stats.raters).index(data.rater_ids([name])[0])
        key = name.removeprefix("pandalm-")
        longer = decided = loo_hits = loo_n = 0
        for item in items:
            label = item[key]
            first, second = len(text(item["response1"])), len(text(item["response2"]))
            if label != 0 and first != second:
                decided += 1
                longer += (label == 1) == (first > second)
            others = [item[other] for other in ("annotator1", "annotator2", "annotator3") if other != key]
            if others[0] == others[1]:  # two others: a plurality only when they agree
                loo_n += 1
                loo_hits += label == others[0]
        assert (stats.longer_n[row], stats.longer_share[row]) == (decided, pytest.approx(longer / decided))
        assert (stats.loo_n[row], stats.loo_agreement[row]) == (loo_n, pytest.approx(loo_hits / loo_n))
        assert stats.first_shown_n[row] == 0 and np.isnan(stats.first_shown_share[row])  # imports: order unknown
        assert stats.gold_n[row] == 0 and np.isnan(stats.median_time_ms[row])
    assert np.isfinite(stats.peer_kappa.kappa[~np.eye(3, dtype=bool)]).all()

    per_item = item_stats(data.votes, threshold=2 / 3)
    assert per_item.units.size == 999 and (per_item.n_votes == 3).all()
    split_three_ways = sum(len({item["annotator1"], item["annotator2"], item["annotator3"]}) == 3 for item in items)
    assert per_item.contested.sum() == split_three_ways  # 2 of 3 is exactly 2/3: not below the threshold
    assert np.isclose(per_item.entropy_bits, np.log2(3)).sum() == split_three_ways


def fastchat_expert_agreement(path) -> dict[str, tuple[int, int]]:
    """FastChat's human-vs-human count straight from the file: pairs of expert votes per item."""
    votes: dict[tuple, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        vote = json.loads(line)
        if not vote["judge"].startswith("expert"):
            continue
        winner = vote["winner"]
        if vote["model_a"] > vote["model_b"]:
            winner = {"model_a": "model_b", "model_b": "model_a"}.get(winner, winner)
        votes[(vote["question_id"], *sorted((vote["model_a"], vote["model_b"])))].append(winner)
    counts = {}
    for name, banned in (("with_ties", ()), ("without_ties", ("tie",))):
        agree = total = 0
        for item in votes.values():
            for first, second in combinations(item, 2):
                if first in banned or second in banned:
                    continue
                total += 1
                agree += first == second
        counts[name] = (agree, total)
    return counts


@pytest.mark.realdata
def test_mt_bench_expert_agreement_from_the_database(shared_data):
    path = shared_data / MT_BENCH
    project = ProjectFactory(allow_ties=True)
    # Line 992/994 is a duplicate by author_0, not an expert: the choice does not touch these figures.
    import_file(project=project, path=path, format="mt-bench", options={"duplicates": "last"})

    data = project_pair_votes(project)
    experts = sorted(pk for pk, name in data.usernames.items() if name.startswith("mt-bench-expert_"))
    rows = data.votes.ratings().rows(experts)
    with_ties = percent_agreement(rows)
    without_ties = percent_agreement(rows, exclude=0)
    assert (with_ties.agreeing_pairs, with_ties.pairs) == (454, 721)
    assert (without_ties.agreeing_pairs, without_ties.pairs) == (388, 479)
    assert (round(with_ties.value, 2), round(without_ties.value, 2)) == (0.63, 0.81)
    assert fastchat_expert_agreement(path) == {"with_ties": (454, 721), "without_ties": (388, 479)}

    # The ranking adapter agrees: for K = 2 the sub-pair agreement is the same count.
    rankings = project_rankings(project)
    expert_rows = np.isin(rankings.data.rater, experts)
    expert_only = RankingData(
        item=rankings.data.item[expert_rows],
        rater=rankings.data.rater[expert_rows],
        ranks=rankings.data.ranks[expert_rows],
    )
    ranked = rank_agreement(expert_only)
    assert (ranked.subpairs.agreeing_pairs, ranked.subpairs.pairs) == (454, 721)
    assert (ranked.subpairs_no_ties.agreeing_pairs, ranked.subpairs_no_ties.pairs) == (388, 479)
    # Placeholder responses (no answer texts imported) have no length to be biased by.
    assert annotator_stats(data.votes).longer_n.sum() == 0


def test_queue_display_order_time_and_gold_reach_the_statistics():
    """Annotate through the queue: position bias, gold accuracy and time come from the real rows."""
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3, annotations_per_task=3)
    tasks = [make_task(project) for _ in range(6)]
    for task in tasks:
        # Response lengths grow with position: position 0 is always the shortest.
        for position, response_id in enumerate(task.response_ids()):
            Response.objects.filter(pk=response_id).update(text="x" * (10 * (position + 1)))
    gold = tasks[0]
    gold.is_gold, gold.gold_tiers = True, [[r] for r in gold.response_ids()]
    gold.save(update_fields=["is_gold", "gold_tiers"])

    names = ["follows-screen", "careful-1", "careful-2"]
    users = [UserFactory(username=name) for name in names]
    for user in users:
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    rng = random.Random(7)
    times: dict[str, list[int]] = defaultdict(list)
    for step, user in enumerate(users * len(tasks)):
        claim = services.assignment_claim_next(project=project, annotator=user, rng=rng)
        assignment = claim.assignment
        if user.username == "follows-screen":
            ranking = [[r] for r in assignment.display_order]  # whatever was shown first wins
        else:
            ranking = [[r] for r in assignment.task.response_ids()]  # by position, as gold says
        time_ms = 1000 * (step + 1)
        times[user.username].append(time_ms)
        services.judgement_submit(assignment=assignment, ranking=ranking, time_taken_ms=time_ms)

    data = project_pair_votes(project)
    stats = annotator_stats(data.votes, min_overlap=3)
    row = {name: list(stats.raters).index(pk) for name, pk in zip(names, data.rater_ids(names), strict=True)}
    screen, careful = row["follows-screen"], row["careful-1"]
    assert (stats.first_shown_n[screen], stats.first_shown_share[screen]) == (18, 1.0)  # 6 tasks x 3 pairs
    assert stats.first_shown_p[screen] < 1e-4
    assert stats.longer_share[careful] == 0.0 and stats.longer_n[careful] == 18
    assert (stats.gold_n[careful], stats.gold_accuracy[careful]) == (3, 1.0)
    for name in names:
        assert stats.median_time_ms[row[name]] == np.median(times[name])  # per judgement, not per pair
    # The careful pair agrees on every pair, but always with the same outcome (A = the lower id
    # = position 0 wins): no variation, so their kappa is undefined, not 1.
    careful_pair = data.votes.ratings().rows(data.rater_ids(["careful-1", "careful-2"]))
    assert percent_agreement(careful_pair).value == 1.0
    assert np.isnan(stats.peer_kappa.kappa[row["careful-1"], row["careful-2"]])
    assert stats.peer_kappa.overlap[row["careful-1"], row["careful-2"]] == 18

    ranked = rank_agreement(project_rankings(project).data)
    np.testing.assert_array_equal(ranked.items, sorted(task.pk for task in tasks))
    assert (ranked.n_raters == 3).all() and (ranked.n_responses == 3).all()
    # The careful pair always agrees; on each sub-pair the follower agrees or not by chance.
    careful_rows = project_rankings(project)
    careful_ids = careful_rows.rater_ids(["careful-1", "careful-2"])
    keep = np.isin(careful_rows.data.rater, careful_ids)
    careful_only = RankingData(
        item=careful_rows.data.item[keep], rater=careful_rows.data.rater[keep], ranks=careful_rows.data.ranks[keep]
    )
    assert (careful_only.ranks == [0, 1, 2]).all()
    assert (rank_agreement(careful_only).kendall_w == 1.0).all()
    # Without ties, W of three raters is (1 + 2 * mean Spearman rho) / 3 on every item.
    everyone = project_rankings(project).data
    for index, item in enumerate(ranked.items):
        item_ranks = everyone.ranks[everyone.item == item]
        rhos = [spearmanr(a, b).statistic for a, b in combinations(item_ranks, 2)]
        assert ranked.kendall_w[index] == pytest.approx((1 + 2 * np.mean(rhos)) / 3)
