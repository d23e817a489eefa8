"""The threshold preview must count exactly the pairs ``majority_vote`` keeps, cell by cell."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotation.aggregate import MajorityConfig, majority_vote
from annotation.agreement import PairVotes
from annotation.agreement_data import project_pair_votes
from annotation.importers import import_file
from annotation.preview import DEFAULT_THRESHOLDS, survival_curves
from tests.factories import ProjectFactory

PANDALM = "pandalm/testset-v1.json"
GRID = (0.5, 0.6, 2 / 3, 0.7, 0.75, 0.8, 0.9, 1.0)


def votes_of(*units: list[int]) -> PairVotes:
    """One unit per argument, one rater per position: ``votes_of([1, 1, -1], [0, 1])``."""
    unit, rater, outcome = [], [], []
    for u, outcomes in enumerate(units):
        for r, o in enumerate(outcomes):
            unit.append(u)
            rater.append(r)
            outcome.append(o)
    return PairVotes(unit=np.array(unit), rater=np.array(rater), outcome=np.array(outcome))


def assert_matches_aggregate(votes: PairVotes, base: MajorityConfig, thresholds=GRID) -> None:
    preview = survival_curves(votes, base=base, thresholds=thresholds)
    for m in preview.min_votes:
        for t_index, threshold in enumerate(preview.thresholds):
            expected = majority_vote(votes, replace(base, threshold=float(threshold), min_votes=int(m)))
            assert preview.kept[m - 1, t_index] == int(expected.kept.sum()), (m, threshold)


def test_a_hand_counted_grid():
    # Unit votes: unanimous 3, two of three, 2-1 with a tie, a split, one lone vote.
    votes = votes_of([1, 1, 1], [1, 1, -1], [1, 1, 0], [1, -1], [-1])
    preview = survival_curves(votes, thresholds=[0.5, 2 / 3, 0.7, 1.0])
    assert preview.min_votes.tolist() == [1, 2, 3]
    assert preview.units == 5
    # min_votes 1: four pairs with a strict majority (not the split); 2/3 keeps the 2-of-3s;
    # 0.7 drops them; 1.0 keeps the unanimous three and the lone vote.
    assert preview.kept.tolist() == [[4, 4, 2, 2], [3, 3, 1, 1], [3, 3, 1, 1]]
    assert preview.never["tied"] == 1
    assert preview.kept_at(2 / 3, 2) == 3
    with pytest.raises(KeyError):
        preview.kept_at(0.55, 1)


@pytest.mark.parametrize("policy", ["neither", "abstain", "half", "drop"])
def test_every_tie_policy_matches_aggregate(policy):
    votes = votes_of([1, 1, 0], [1, 0, 0], [0, 0, 0], [-1, -1, 0, 0], [1, 0], [-1, 1, 1, 1], [0], [1, -1, 0])
    assert_matches_aggregate(votes, MajorityConfig(tie_policy=policy))


def test_exclusion_and_reliability_weighting_match_aggregate():
    rng = np.random.default_rng(3)
    n_units, accuracy = 120, np.array([0.95, 0.9, 0.8, 0.55, 0.5])
    truth = rng.choice([-1, 1], n_units)
    unit, rater, outcome = [], [], []
    for u in range(n_units):
        for r in rng.choice(5, 3, replace=False):
            unit.append(u)
            rater.append(int(r) + 10)
            right = rng.random() < accuracy[r]
            outcome.append(0 if rng.random() < 0.1 else (truth[u] if right else -truth[u]))
    votes = PairVotes(unit=np.array(unit), rater=np.array(rater), outcome=np.array(outcome))
    assert_matches_aggregate(votes, MajorityConfig(exclude_raters=(13,)))
    assert_matches_aggregate(votes, MajorityConfig(weighting="reliability"))
    assert_matches_aggregate(votes, MajorityConfig(min_reliability=0.7, tie_policy="half"))


def test_max_min_votes_extends_the_grid_with_zero_survivors():
    votes = votes_of([1, 1], [1])
    preview = survival_curves(votes, thresholds=[0.5, 1.0], max_min_votes=4)
    assert preview.kept.tolist() == [[2, 2], [1, 1], [0, 0], [0, 0]]
    assert preview.counted_histogram.tolist() == [0, 1, 1, 0, 0]


def test_no_votes_gives_an_empty_curve():
    votes = PairVotes(unit=np.zeros(0, dtype=int), rater=np.zeros(0, dtype=int), outcome=np.zeros(0, dtype=int))
    preview = survival_curves(votes)
    assert preview.units == 0 and preview.kept.tolist() == [[0] * len(DEFAULT_THRESHOLDS)]


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [([], "empty"), ([0.4, 0.6], "between 0.5 and 1"), ([0.7, 0.6], "increasing"), ([0.5, float("nan")], "between")],
)
def test_bad_grids_are_refused(thresholds, message):
    with pytest.raises(ValueError, match=message):
        survival_curves(votes_of([1]), thresholds=thresholds)


def test_bad_max_min_votes_is_refused():
    with pytest.raises(ValueError, match="max_min_votes"):
        survival_curves(votes_of([1]), max_min_votes=0)


outcomes = st.lists(st.lists(st.sampled_from([-1, 0, 1]), min_size=1, max_size=6), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(units=outcomes, policy=st.sampled_from(["neither", "abstain", "half", "drop"]))
def test_preview_equals_aggregate_on_random_votes(units, policy):
    assert_matches_aggregate(votes_of(*units), MajorityConfig(tie_policy=policy), thresholds=DEFAULT_THRESHOLDS)


@settings(max_examples=40, deadline=None)
@given(units=outcomes)
def test_curves_fall_with_threshold_and_min_votes(units):
    kept = survival_curves(votes_of(*units)).kept
    assert np.all(np.diff(kept, axis=0) <= 0) and np.all(np.diff(kept, axis=1) <= 0)


@pytest.mark.realdata
@pytest.mark.django_db
@pytest.mark.parametrize("policy", ["neither", "abstain"])
def test_pandalm_imported_through_the_platform(shared_data, policy):
    project = ProjectFactory(allow_ties=True)
    import_file(project=project, path=shared_data / PANDALM, format="pandalm")
    votes = project_pair_votes(project).votes
    assert len(votes) == 2997
    base = MajorityConfig(tie_policy=policy)
    assert_matches_aggregate(votes, base)
    preview = survival_curves(votes, base=base)
    # Counted from the file itself: labels 1 / 2 are a side, 0 a tie.
    items = json.loads((shared_data / PANDALM).read_text())
    strict = 0
    for item in items:
        labels = [item[f"annotator{n}"] for n in (1, 2, 3)]
        ones, twos = labels.count(1), labels.count(2)
        counted = 3 if policy == "neither" else ones + twos
        strict += max(ones, twos) * 2 > counted and ones != twos
    assert preview.kept[0, 0] == strict
    assert preview.units == 999
