"""Majority vote, drop reasons, tie policies, reliability (Dawid–Skene) and consensus order.

Pure numpy: no database. Every case states its votes; the expected outcome is worked out
by hand in the comment beside it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotation.aggregate import (
    DROP_REASONS,
    MajorityConfig,
    consensus_order,
    consensus_orders,
    dawid_skene,
    majority_vote,
)
from annotation.agreement import PairVotes

A, B, T = 1, -1, 0


def votes_of(*units: list[int]) -> PairVotes:
    """One unit per argument, its votes by raters 1, 2, 3 ... in order."""
    unit, rater, outcome = [], [], []
    for index, outcomes in enumerate(units):
        for position, value in enumerate(outcomes):
            unit.append(index)
            rater.append(position + 1)
            outcome.append(value)
    return PairVotes(unit=unit, rater=rater, outcome=outcome)


def vote(*units: list[int], **config) -> list[tuple[int, str]]:
    result = majority_vote(votes_of(*units), MajorityConfig(**config))
    return list(zip(result.winner.tolist(), result.reason.tolist(), strict=True))


class TestMajority:
    def test_unanimous_and_two_of_three_survive_with_their_share(self):
        result = majority_vote(votes_of([A, A, A], [B, B, A]))
        assert result.kept.tolist() == [True, True]
        assert result.winner.tolist() == [A, B]
        assert result.share.tolist() == pytest.approx([1.0, 2 / 3])
        assert result.share_a.tolist() == pytest.approx([1.0, 1 / 3])
        assert result.votes_a.tolist() == [3, 1] and result.votes_b.tolist() == [0, 2]

    def test_too_few_votes(self):
        assert vote([A], [A, A], min_votes=2) == [(A, "too_few_votes"), (A, "")]

    def test_tied(self):
        # One each way: no winner, whatever the threshold.
        assert vote([A, B], [A, B, T, T]) == [(0, "tied"), (0, "tied")]

    def test_below_threshold(self):
        # 2 of 3 is a strict majority, but not the 3/4 asked for.
        assert vote([A, A, B], [A, A, A, B], threshold=0.75) == [(A, "below_threshold"), (A, "")]

    def test_two_of_three_passes_at_two_thirds(self):
        # The share is 2/3 in floating point; the threshold 2/3 must admit it.
        assert vote([A, A, B], threshold=2 / 3) == [(A, "")]

    def test_threshold_one_needs_unanimity(self):
        assert vote([A, A, A], [A, A, B], threshold=1.0) == [(A, ""), (A, "below_threshold")]

    def test_reasons_are_reported_in_order_and_counted(self):
        result = majority_vote(votes_of([A], [A, B], [A, A, B], [A, A]), MajorityConfig(min_votes=2, threshold=0.7))
        assert result.reason.tolist() == ["too_few_votes", "tied", "below_threshold", ""]
        assert result.reason_counts() == {
            "too_few_votes": 1,
            "zero_weight": 0,
            "tie_plurality": 0,
            "tied": 1,
            "below_threshold": 1,
        }
        assert set(result.reason_counts()) == set(DROP_REASONS)

    def test_excluded_annotators_votes_do_not_count(self):
        # Rater 3 alone voted B on unit 0; without rater 2, unit 1 is A 1 : B 0.
        result = majority_vote(votes_of([A, A, B], [A, B]), MajorityConfig(exclude_raters=(2,)))
        assert result.votes_a.tolist() == [1, 1] and result.votes_b.tolist() == [1, 0]
        assert result.reason.tolist() == ["tied", ""]
        assert result.excluded_raters.tolist() == [2]

    def test_a_pair_voted_only_by_excluded_annotators_has_too_few_votes(self):
        assert vote([A, A], [A, A, A], exclude_raters=(1, 2)) == [(0, "too_few_votes"), (A, "")]

    def test_no_votes_at_all(self):
        result = majority_vote(PairVotes(unit=[], rater=[], outcome=[]))
        assert len(result) == 0 and result.reason_counts() == dict.fromkeys(DROP_REASONS, 0)


class TestTiePolicies:
    # Votes: A, A, tie | A, tie, tie | tie, tie, tie | A, B, tie
    UNITS = ([A, A, T], [A, T, T], [T, T, T], [A, B, T])

    def test_neither_ties_dilute_the_winner(self):
        result = majority_vote(votes_of(*self.UNITS), MajorityConfig(tie_policy="neither"))
        # A 2/3 survives; A 1/3 is no strict majority; no support either way; one each.
        assert result.reason.tolist() == ["", "below_threshold", "tied", "tied"]
        assert result.share[:2].tolist() == pytest.approx([2 / 3, 1 / 3])
        assert result.counted.tolist() == [3, 3, 3, 3]

    def test_abstain_ties_leave_the_count(self):
        result = majority_vote(votes_of(*self.UNITS), MajorityConfig(tie_policy="abstain"))
        # A 2/2 and A 1/1 survive; no decisive vote is too few; 1 : 1 is tied.
        assert result.reason.tolist() == ["", "", "too_few_votes", "tied"]
        assert result.share[:2].tolist() == pytest.approx([1.0, 1.0])
        assert result.counted.tolist() == [2, 1, 0, 2]

    def test_abstain_with_min_votes_drops_a_lone_decisive_vote(self):
        assert vote([A, T, T], tie_policy="abstain", min_votes=2) == [(A, "too_few_votes")]

    def test_half_a_tie_is_half_a_vote_each(self):
        result = majority_vote(votes_of(*self.UNITS), MajorityConfig(tie_policy="half"))
        # (2 + 0.5) / 3 and (1 + 1) / 3 survive; 1.5 : 1.5 tied; 1.5 : 1.5 tied.
        assert result.reason.tolist() == ["", "", "tied", "tied"]
        assert result.share[:2].tolist() == pytest.approx([2.5 / 3, 2 / 3])
        assert result.support_a[:2].tolist() == pytest.approx([2.5, 2.0])

    def test_drop_removes_pairs_whose_plurality_is_tie(self):
        result = majority_vote(votes_of(*self.UNITS, [A, A, T, T]), MajorityConfig(tie_policy="drop"))
        # Ties at least as many as either side: units 1, 2, 3 (1 tie vs 1 A, 1 B) and 4 (2 vs 2).
        assert result.reason.tolist() == ["", "tie_plurality", "tie_plurality", "tie_plurality", "tie_plurality"]

    def test_policies_agree_without_ties(self):
        units = ([A, A, B], [B, B, B], [A, B])
        results = {p: vote(*units, tie_policy=p) for p in ("neither", "abstain", "half", "drop")}
        assert len(set(map(tuple, results.values()))) == 1

    def test_unknown_policy_and_bad_config_are_errors(self):
        with pytest.raises(ValueError, match="tie_policy"):
            MajorityConfig(tie_policy="coin")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="threshold"):
            MajorityConfig(threshold=0.4)
        with pytest.raises(ValueError, match="min_votes"):
            MajorityConfig(min_votes=0)


def synthetic_crowd(seed: int, accuracies: list[float], n_units: int = 300) -> tuple[PairVotes, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.choice([A, B], size=n_units)
    unit, rater, outcome = [], [], []
    for u in range(n_units):
        for r, p in enumerate(accuracies):
            unit.append(u)
            rater.append(100 + r)
            outcome.append(truth[u] if rng.random() < p else -truth[u])
    return PairVotes(unit=unit, rater=rater, outcome=outcome), truth


class TestReliability:
    def test_dawid_skene_recovers_the_accuracies(self):
        accuracies = [0.95, 0.9, 0.85, 0.6, 0.3]
        votes, _ = synthetic_crowd(0, accuracies, n_units=600)
        est = dawid_skene(votes.unit, votes.rater, votes.outcome)
        assert est.converged and est.iterations < 100
        assert est.raters.tolist() == [100, 101, 102, 103, 104]
        assert est.accuracy == pytest.approx(accuracies, abs=0.05)
        # Worse than chance: weight 0, not a negative (inverted) vote.
        assert est.weight[-1] == 0.0 and (est.weight[:-1] > 0).all()

    def test_reliability_weighting_beats_the_plain_majority(self):
        # Two good annotators outvoted by three poor ones: counting heads loses.
        accuracies = [0.95, 0.95, 0.55, 0.55, 0.55]
        votes, truth = synthetic_crowd(1, accuracies, n_units=400)
        plain = majority_vote(votes, MajorityConfig())
        weighted = majority_vote(votes, MajorityConfig(weighting="reliability"))
        plain_correct = np.mean(plain.winner == truth)
        weighted_correct = np.mean(weighted.winner == truth)
        assert weighted_correct > plain_correct + 0.05
        assert weighted_correct > 0.95

    def test_min_reliability_excludes_the_unreliable(self):
        votes, _ = synthetic_crowd(2, [0.9, 0.9, 0.9, 0.4], n_units=300)
        result = majority_vote(votes, MajorityConfig(min_reliability=0.6))
        assert result.excluded_raters.tolist() == [103]
        assert result.reliability is not None
        assert result.votes_a.sum() + result.votes_b.sum() + result.votes_tie.sum() == 3 * 300

    def test_ties_only_annotator_keeps_the_prior(self):
        est = dawid_skene([0, 0, 1, 1], [1, 2, 1, 2], [A, T, B, T], prior_correct=2.0, prior_wrong=1.0)
        assert est.accuracy_of(np.array([2]))[0] == pytest.approx(2 / 3)
        assert est.n_decisive.tolist() == [2, 0]

    def test_em_stops_at_max_iter(self):
        votes, _ = synthetic_crowd(3, [0.9, 0.7, 0.6])
        est = dawid_skene(votes.unit, votes.rater, votes.outcome, max_iter=1)
        assert est.iterations == 1 and not est.converged

    def test_deterministic(self):
        votes, _ = synthetic_crowd(4, [0.9, 0.8, 0.7, 0.6])
        first = majority_vote(votes, MajorityConfig(weighting="reliability"))
        second = majority_vote(votes, MajorityConfig(weighting="reliability"))
        assert first.share.tobytes() == second.share.tobytes()
        assert first.reliability.accuracy.tobytes() == second.reliability.accuracy.tobytes()


class TestConsensus:
    def test_copeland_order_of_a_transitive_ranking(self):
        # 30 > 10 > 20: pairs (10, 20) A wins, (10, 30) B wins, (20, 30) B wins.
        c = consensus_order([10, 20, 30], [10, 10, 20], [20, 30, 30], [A, B, B])
        assert c.order == [30, 10, 20]
        assert c.copeland.tolist() == [0, -2, 2]

    def test_dropped_pairs_count_for_nobody_and_net_support_breaks_ties(self):
        # 1 beat 2 by a wide margin, 3 beat 4 narrowly; (1, 3) etc. dropped.
        c = consensus_order([4, 3, 2, 1], [1, 3, 1], [2, 4, 3], [A, A, 0], [3.0, 1.0, 5.0])
        assert c.order == [1, 3, 4, 2]

    def test_a_cycle_falls_back_to_the_lower_id(self):
        c = consensus_order([5, 3, 9], [3, 3, 5], [5, 9, 9], [A, B, A])
        assert c.copeland.tolist() == [0, 0, 0] and c.order == [3, 5, 9]

    def test_unknown_response_is_an_error(self):
        with pytest.raises(ValueError, match="not in responses"):
            consensus_order([1, 2], [1], [3], [A])


# --- properties ------------------------------------------------------------------------------

vote_lists = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 5), st.sampled_from([A, B, T])), min_size=0, max_size=60
).map(lambda rows: list({(u, r): o for u, r, o in rows}.items()))  # one vote per (unit, rater)

configs = st.builds(
    MajorityConfig,
    threshold=st.sampled_from([0.5, 0.6, 2 / 3, 0.75, 1.0]),
    min_votes=st.integers(1, 3),
    tie_policy=st.sampled_from(["neither", "abstain", "half", "drop"]),
    weighting=st.sampled_from(["none", "reliability"]),
)


def _votes(rows, rename=lambda r: r) -> PairVotes:
    return PairVotes(
        unit=[u for (u, _), _ in rows], rater=[rename(r) for (_, r), _ in rows], outcome=[o for _, o in rows]
    )


@settings(max_examples=80, deadline=None)
@given(rows=vote_lists, config=configs, permutation=st.permutations(range(6)))
def test_renaming_annotators_changes_nothing(rows, config, permutation):
    renamed = {r: 1000 + 17 * p for r, p in enumerate(permutation)}
    before = majority_vote(_votes(rows), config)
    after = majority_vote(_votes(rows, renamed.get), config)
    assert before.reason.tolist() == after.reason.tolist()
    assert before.winner.tolist() == after.winner.tolist()
    np.testing.assert_allclose(before.share, after.share, rtol=1e-12, equal_nan=True)


@settings(max_examples=80, deadline=None)
@given(rows=vote_lists, config=configs)
def test_every_pair_is_kept_or_has_a_reason_and_kept_pairs_are_strict_majorities(rows, config):
    result = majority_vote(_votes(rows), config)
    assert set(result.reason.tolist()) <= {"", *DROP_REASONS}
    kept = result.kept
    assert (result.winner[kept] != 0).all()
    assert (result.share[kept] > 0.5).all()
    assert (result.share[kept] >= config.threshold - 1e-9).all()
    assert (result.counted[kept] >= config.min_votes).all()


@settings(max_examples=60, deadline=None)
@given(
    tasks=st.lists(
        st.tuples(
            st.integers(2, 6),  # K
            st.lists(
                st.tuples(st.integers(-1, 1), st.sampled_from([0.5, 1.0, 2.0, 1 / 3, 0.1])), min_size=15, max_size=15
            ),
            st.randoms(use_true_random=False),
        ),
        min_size=0,
        max_size=6,
    )
)
def test_consensus_orders_equals_consensus_order_per_task(tasks):
    """The batched consensus of an export gives, task by task, exactly what consensus_order gives."""
    group, responses, pair_group, first, second, winner, margin = [], [], [], [], [], [], []
    expected = []
    next_id = 100
    for g, (k, outcomes, rng) in enumerate(tasks):
        ids = list(range(next_id, next_id + k))
        next_id += k + rng.randint(0, 3)
        rng.shuffle(ids)  # position order is not id order
        pairs = [(a, b) for i, a in enumerate(sorted(ids)) for b in sorted(ids)[i + 1 :]]
        f = [a for a, _ in pairs]
        s = [b for _, b in pairs]
        w = [outcomes[i][0] for i in range(len(pairs))]
        m = [outcomes[i][1] for i in range(len(pairs))]
        expected.append(consensus_order(ids, f, s, w, m))
        group += [g] * k
        responses += ids
        pair_group += [g] * len(pairs)
        first += f
        second += s
        winner += w
        margin += m
    batched = consensus_orders(group, responses, pair_group, first, second, winner, margin)
    offset = 0
    for one in expected:
        k = one.responses.size
        assert batched.rank[offset : offset + k].tolist() == one.rank.tolist()
        assert batched.copeland[offset : offset + k].tolist() == one.copeland.tolist()
        assert batched.net_support[offset : offset + k].tolist() == one.net_support.tolist()
        offset += k


def test_consensus_orders_refuses_unknown_responses_and_duplicates():
    with pytest.raises(ValueError, match="not in responses"):
        consensus_orders([0, 0], [1, 2], [0], [1], [3], [1])
    with pytest.raises(ValueError, match="not in responses"):
        consensus_orders([0, 0, 1, 1], [1, 2, 3, 4], [0], [1], [3], [1])  # 3 is in task 1, not 0
    with pytest.raises(ValueError, match="distinct"):
        consensus_orders([0, 0], [1, 1], [], [], [], [])
    with pytest.raises(ValueError, match="must not decrease"):
        consensus_orders([1, 0], [1, 2], [], [], [], [])
    empty = consensus_orders([], [], [], [], [], [])
    assert empty.rank.size == 0
