"""annotation.agreement: the statistics alone, on arrays; no database.

Known answers come from the papers (Krippendorff 2011's examples, Cohen's and Fleiss'
textbook tables), from closed forms (two-rater nominal alpha against Scott's pi, Kendall's
W against the mean Spearman correlation), and from slow reference implementations written
here from the definitions, loop by loop.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, kendalltau, spearmanr

from annotation.agreement import (
    LEVELS,
    NO_VARIATION,
    AnnotatorStats,
    PairVotes,
    RankingData,
    annotator_stats,
    bootstrap_ci,
    bootstrap_mean_ci,
    cohen_kappa,
    distinct_index,
    fleiss_kappa,
    item_stats,
    krippendorff_alpha,
    pairwise_cohen_kappa,
    percent_agreement,
    rank_agreement,
    rating_matrix,
)

# Any division by zero or NaN warning is a bug here: undefined statistics are NaN on purpose.
pytestmark = pytest.mark.filterwarnings("error")

NAN = float("nan")
FEW = settings(max_examples=40, deadline=None)


def same(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def test_the_statistics_import_neither_django_nor_celery():
    # A fresh interpreter: in this one pytest-django has imported Django already.
    code = (
        "import sys, annotation.agreement; print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'celery'}))"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert result.stdout.strip() == "[]"


# --- reference implementations, from the definitions ---------------------------------------


def reference_alpha(matrix: np.ndarray, level: str) -> float:
    """Krippendorff (2011) step by step: coincidences by looping over pairs of values in each unit."""
    units = []
    for column in matrix.T:
        values = [float(v) for v in column if not math.isnan(v)]
        if len(values) >= 2:
            units.append(values)
    values = sorted({v for unit in units for v in unit})
    coincidence = {(c, k): 0.0 for c in values for k in values}
    for unit in units:
        m = len(unit)
        for i in range(m):
            for j in range(m):
                if i != j:
                    coincidence[(unit[i], unit[j])] += 1.0 / (m - 1)
    n_c = {c: sum(coincidence[(c, k)] for k in values) for c in values}
    n = sum(n_c.values())

    def delta2(c: float, k: float) -> float:
        if level == "nominal":
            return 0.0 if c == k else 1.0
        if level == "interval":
            return (c - k) ** 2
        if level == "ratio":
            return 0.0 if c + k == 0 else ((c - k) / (c + k)) ** 2
        low, high = sorted((values.index(c), values.index(k)))
        between = sum(n_c[values[g]] for g in range(low, high + 1))
        return (between - (n_c[c] + n_c[k]) / 2.0) ** 2

    observed = sum(coincidence[(c, k)] * delta2(c, k) for c in values for k in values)
    expected = sum(n_c[c] * n_c[k] * delta2(c, k) for c in values for k in values)
    if n == 0 or expected == 0:
        return NAN
    return 1.0 - (n - 1) * observed / expected


def reference_fleiss(matrix: np.ndarray) -> float:
    """Fleiss' kappa with P_i per unit and pooled category shares, by plain loops."""
    columns = [[v for v in column if not math.isnan(v)] for column in matrix.T]
    columns = [c for c in columns if len(c) >= 2]
    categories = sorted({v for c in columns for v in c})
    per_unit = []
    for c in columns:
        m = len(c)
        per_unit.append(sum(c.count(k) * (c.count(k) - 1) for k in categories) / (m * (m - 1)))
    total = sum(len(c) for c in columns)
    expected = sum((sum(c.count(k) for c in columns) / total) ** 2 for k in categories)
    return (sum(per_unit) / len(per_unit) - expected) / (1 - expected)


def reference_cohen(x: np.ndarray, y: np.ndarray) -> float:
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if not (math.isnan(a) or math.isnan(b))]
    n = len(pairs)
    categories = sorted({v for pair in pairs for v in pair})
    observed = sum(a == b for a, b in pairs) / n
    expected = sum((sum(a == k for a, _ in pairs) / n) * (sum(b == k for _, b in pairs) / n) for k in categories)
    return (observed - expected) / (1 - expected)


def random_matrix(rng: np.random.Generator, *, level: str = "nominal", missing: float = 0.3) -> np.ndarray:
    raters, units = int(rng.integers(2, 7)), int(rng.integers(3, 30))
    if level in ("interval", "ratio") and rng.random() < 0.5:
        matrix = np.round(rng.gamma(2.0, 2.0, (raters, units)), 2)  # continuous, non-negative
    else:
        matrix = rng.integers(0, int(rng.integers(2, 6)), (raters, units)).astype(float)
    matrix[rng.random(matrix.shape) < missing] = np.nan
    return matrix


# --- Krippendorff's alpha --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("level", LEVELS)
def test_alpha_matches_the_reference_on_random_data_with_missing_values(seed, level):
    rng = np.random.default_rng(seed)
    matrix = random_matrix(rng, level=level)
    result = krippendorff_alpha(matrix, level)
    expected = reference_alpha(matrix, level)
    assert same(result.value, expected), (result, expected)
    assert result.level == level


def test_alpha_krippendorff_2011_binary_example():
    # Example A of the paper: two observers, ten units, binary; alpha = 0.095.
    observers = np.array([[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]], dtype=float)
    result = krippendorff_alpha(observers, "nominal")
    assert result.value == pytest.approx(1 - 19 * 4 / (14 * 6))  # 1 - (n-1) o_01 / (n_0 n_1)
    assert round(result.value, 3) == 0.095
    assert (result.n_units, result.n_values) == (10, 20)


@pytest.mark.realdata
def test_alpha_krippendorff_2011_example_c(shared_data):
    example = json.loads((shared_data / "krippendorff/krippendorff2011_example.json").read_text())
    matrix = np.array([[NAN if v is None else v for v in row] for row in example["reliability_data"]])
    assert matrix.shape == (4, 12)
    alphas = {level: krippendorff_alpha(matrix, level).value for level in LEVELS}
    assert {level: round(value, 3) for level, value in alphas.items()} == example["published_alpha"]
    assert example["published_alpha"] == {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
    # Unit 12 has one value only: it is not pairable and drops out.
    assert krippendorff_alpha(matrix).n_units == 11


def scott_pi(x: np.ndarray, y: np.ndarray) -> float:
    pooled = np.concatenate([x, y])
    expected = sum(np.mean(pooled == c) ** 2 for c in np.unique(pooled))
    return (np.mean(x == y) - expected) / (1 - expected)


def test_alpha_two_raters_hand_checked():
    x = np.array([1, 1, 0, 0], dtype=float)
    y = np.array([1, 1, 0, 1], dtype=float)
    # n_1 = 5, n_0 = 3, one disagreeing unit: alpha = 1 - 7 * 2 / (2 * 5 * 3) = 16/30.
    assert krippendorff_alpha(np.stack([x, y])).value == pytest.approx(16 / 30)
    assert krippendorff_alpha(np.stack([x, y])).value == pytest.approx(1 - 7 / 8 * (1 - scott_pi(x, y)))


@FEW
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=25))
def test_alpha_nominal_two_raters_is_scotts_pi_corrected_for_sample_size(pairs):
    # Krippendorff: for two coders and no missing data, alpha = 1 - (2N - 1) / (2N) * (1 - pi).
    x = np.array([a for a, _ in pairs], dtype=float)
    y = np.array([b for _, b in pairs], dtype=float)
    alpha = krippendorff_alpha(np.stack([x, y])).value
    if np.unique(np.concatenate([x, y])).size == 1:
        assert math.isnan(alpha)
        return
    n = len(pairs)
    assert alpha == pytest.approx(1 - (2 * n - 1) / (2 * n) * (1 - scott_pi(x, y)), abs=1e-12)
    # ... and Fleiss' kappa with two raters per unit is Scott's pi itself.
    assert fleiss_kappa(np.stack([x, y])).value == pytest.approx(scott_pi(x, y), abs=1e-12)


complete = st.integers(2, 5).flatmap(
    lambda raters: st.lists(st.lists(st.integers(0, 3), min_size=raters, max_size=raters), min_size=1, max_size=12).map(
        lambda units: np.array(units, dtype=float).T
    )
)


@FEW
@given(complete)
def test_alpha_and_fleiss_on_complete_data_differ_by_the_sample_size_factor(matrix):
    # Same raters on every unit, none missing: 1 - alpha = (1 - kappa) (n - 1) / n, n = all values.
    alpha, fleiss = krippendorff_alpha(matrix), fleiss_kappa(matrix)
    if fleiss.reason:
        assert math.isnan(alpha.value) and alpha.reason == fleiss.reason == NO_VARIATION
        return
    n = matrix.size
    assert 1 - alpha.value == pytest.approx((1 - fleiss.value) * (n - 1) / n, abs=1e-12)


def test_alpha_interval_is_not_nominal():
    # Near misses count as smaller disagreements on an interval scale.
    matrix = np.array([[1, 2, 3, 4, 5, 1], [2, 3, 4, 5, 5, 1]], dtype=float)
    assert krippendorff_alpha(matrix, "interval").value > 0.7 > krippendorff_alpha(matrix, "nominal").value


def test_alpha_degenerate_cases_are_nan_with_a_reason():
    none_pairable = np.array([[1, NAN, 2], [NAN, 3, NAN]])
    result = krippendorff_alpha(none_pairable)
    assert math.isnan(result.value) and "two or more values" in result.reason
    constant = np.array([[2, 2, NAN], [2, 2, 2]], dtype=float)
    for level in LEVELS:
        result = krippendorff_alpha(constant, level)
        assert math.isnan(result.value) and result.reason == NO_VARIATION
    assert math.isnan(krippendorff_alpha(np.zeros((0, 0))).value)
    with pytest.raises(ValueError, match="negative"):
        krippendorff_alpha(np.array([[-1.0, 1.0]]), "ratio")
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(constant, "cardinal")
    with pytest.raises(ValueError, match="finite"):
        krippendorff_alpha(np.array([[1.0, np.inf]]))


def test_alpha_ratio_with_zeros():
    matrix = np.array([[0, 0, 1, 3], [0, 1, 1, 2]], dtype=float)
    assert same(krippendorff_alpha(matrix, "ratio").value, reference_alpha(matrix, "ratio"))


# --- renaming and reordering change nothing; perfect agreement is 1 --------------------------

cells = st.one_of(st.just(NAN), st.integers(0, 3).map(float))
matrices = st.integers(2, 5).flatmap(
    lambda raters: st.integers(1, 10).flatmap(
        lambda units: st.lists(st.lists(cells, min_size=units, max_size=units), min_size=raters, max_size=raters).map(
            lambda rows: np.array(rows, dtype=float)
        )
    )
)


@FEW
@given(matrices, st.randoms(use_true_random=False))
def test_renaming_raters_and_reordering_units_changes_nothing(matrix, random):
    rows = list(range(matrix.shape[0]))
    columns = list(range(matrix.shape[1]))
    random.shuffle(rows)
    random.shuffle(columns)
    shuffled = matrix[rows][:, columns]
    for level in LEVELS:
        assert same(krippendorff_alpha(matrix, level).value, krippendorff_alpha(shuffled, level).value)
    assert same(fleiss_kappa(matrix).value, fleiss_kappa(shuffled).value)
    before, after = percent_agreement(matrix), percent_agreement(shuffled)
    assert (before.agreeing_pairs, before.pairs) == (after.agreeing_pairs, after.pairs)
    np.testing.assert_array_equal(before.unit_share[columns], after.unit_share)


@FEW
@given(matrices)
def test_relabelling_nominal_categories_changes_nothing(matrix):
    relabelled = np.where(np.isnan(matrix), NAN, 10.0 - 3.0 * matrix)
    assert same(krippendorff_alpha(matrix).value, krippendorff_alpha(relabelled).value)
    assert same(fleiss_kappa(matrix).value, fleiss_kappa(relabelled).value)


@FEW
@given(matrices)
def test_perfect_agreement_is_one_where_defined(matrix):
    # Every rater of a unit gives the unit's first rater's value.
    present = ~np.isnan(matrix)
    unit_value = np.arange(matrix.shape[1]) % 3 + 1.0
    agreeing = np.where(present, unit_value[None, :], NAN)
    for level in LEVELS:
        result = krippendorff_alpha(agreeing, level)
        assert result.value == 1.0 or (math.isnan(result.value) and result.reason)
    fleiss = fleiss_kappa(agreeing)
    assert fleiss.value == pytest.approx(1.0) or (math.isnan(fleiss.value) and fleiss.reason)
    percent = percent_agreement(agreeing)
    assert percent.value == 1.0 or (percent.pairs == 0 and math.isnan(percent.value))
    cohen = cohen_kappa(agreeing[0], agreeing[1])
    assert cohen.value == pytest.approx(1.0) or (math.isnan(cohen.value) and cohen.reason)


# --- percent agreement -----------------------------------------------------------------------


def test_percent_agreement_with_and_without_ties_hand_checked():
    # Columns are units; outcome codes +1 / -1 / 0 (tie).
    matrix = np.array(
        [
            [1, 1, 0, 1],
            [1, -1, 0, NAN],
            [0, NAN, NAN, NAN],
        ]
    )
    with_ties = percent_agreement(matrix)
    # Unit 0: pairs (1,1) (1,0) (1,0): 1 of 3; unit 1: 0 of 1; unit 2: 1 of 1; unit 3: none.
    assert (with_ties.agreeing_pairs, with_ties.pairs) == (2, 5)
    np.testing.assert_array_equal(with_ties.unit_share, [1 / 3, 0.0, 1.0, NAN])
    np.testing.assert_array_equal(with_ties.unit_pairs, [3, 1, 1, 0])
    without = percent_agreement(matrix, exclude=0)
    assert (without.agreeing_pairs, without.pairs, without.value) == (1, 2, 0.5)
    np.testing.assert_array_equal(without.unit_share, [1.0, 0.0, NAN, NAN])


def test_percent_agreement_without_pairs():
    result = percent_agreement(np.array([[1.0, NAN], [NAN, 0.0]]))
    assert math.isnan(result.value) and result.pairs == 0 and result.reason


# --- Cohen's and Fleiss' kappa ---------------------------------------------------------------


def test_cohen_kappa_textbook_example():
    # 50 items: 20 both yes, 15 both no, 5 yes/no, 10 no/yes: P_o = 0.7, P_e = 0.5, kappa = 0.4.
    x = np.array([1] * 20 + [0] * 15 + [1] * 5 + [0] * 10, dtype=float)
    y = np.array([1] * 20 + [0] * 15 + [0] * 5 + [1] * 10, dtype=float)
    result = cohen_kappa(x, y)
    assert (result.observed, result.expected, result.n_units) == (pytest.approx(0.7), pytest.approx(0.5), 50)
    assert result.value == pytest.approx(0.4)


@FEW
@given(st.lists(st.tuples(cells, cells), min_size=1, max_size=30))
def test_cohen_kappa_is_symmetric_and_matches_the_reference(pairs):
    x = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs])
    forward, backward = cohen_kappa(x, y), cohen_kappa(y, x)
    assert same(forward.value, backward.value, 1e-12)
    assert forward.n_units == backward.n_units
    both = ~(np.isnan(x) | np.isnan(y))
    if both.any() and np.unique(np.concatenate([x[both], y[both]])).size > 1:
        assert forward.value == pytest.approx(reference_cohen(x, y), abs=1e-12)
    else:
        assert math.isnan(forward.value) and forward.reason


def test_cohen_kappa_degenerate_cases():
    no_overlap = cohen_kappa([1, NAN], [NAN, 1])
    assert math.isnan(no_overlap.value) and no_overlap.reason == "no unit rated by both raters"
    same_button = cohen_kappa([1, 1, 1], [1, 1, 1])
    assert math.isnan(same_button.value) and same_button.reason == NO_VARIATION
    assert same_button.observed == 1.0
    # One rater constant, the other not: defined (and 0: no agreement beyond chance).
    assert cohen_kappa([1, 1, 1, 1], [1, 0, 1, 0]).value == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(10))
def test_pairwise_cohen_kappa_matches_the_two_rater_function(seed):
    rng = np.random.default_rng(seed)
    matrix = random_matrix(rng, missing=0.4)
    result = pairwise_cohen_kappa(matrix, min_overlap=3)
    for r, s in itertools.permutations(range(matrix.shape[0]), 2):
        one = cohen_kappa(matrix[r], matrix[s])
        assert result.overlap[r, s] == one.n_units
        expected = one.value if one.n_units >= 3 else NAN
        assert same(result.kappa[r, s], expected, 1e-12)
    assert np.isnan(np.diag(result.kappa)).all()
    np.testing.assert_array_equal(np.isnan(result.kappa), np.isnan(result.kappa.T))


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971)-style table used in many texts: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    matrix = np.array([np.repeat(np.arange(5.0), counts) for counts in table]).T  # 14 raters x 10 subjects
    result = fleiss_kappa(matrix)
    assert round(result.observed, 3) == 0.378 and round(result.expected, 3) == 0.213
    assert round(result.value, 3) == 0.210


@pytest.mark.parametrize("seed", range(10))
def test_fleiss_kappa_with_varying_raters_matches_the_reference(seed):
    matrix = random_matrix(np.random.default_rng(100 + seed), missing=0.35)
    result = fleiss_kappa(matrix)
    if result.reason:
        assert math.isnan(result.value)
    else:
        assert result.value == pytest.approx(reference_fleiss(matrix), abs=1e-12)


def test_fleiss_kappa_degenerate_cases():
    assert fleiss_kappa(np.array([[1.0, NAN], [NAN, 1.0]])).reason == "no unit has two ratings"
    assert fleiss_kappa(np.array([[1.0, 1.0], [1.0, 1.0]])).reason == NO_VARIATION


# --- rankings --------------------------------------------------------------------------------


def test_rank_agreement_hand_checked():
    data = RankingData(
        item=[1, 1, 1, 2, 2, 3, 3],
        rater=[7, 8, 9, 7, 8, 7, 8],
        ranks=[
            [0, 1, 2],
            [0, 1, 2],
            [0, 1, 2],  # item 1: three identical rankings
            [0, 1, 2],
            [2, 1, 0],  # item 2: opposite rankings
            [0, 1, NAN],
            [0, 0, NAN],  # item 3: K = 2, one rater ties
        ],
    )
    result = rank_agreement(data)
    np.testing.assert_array_equal(result.items, [1, 2, 3])
    np.testing.assert_array_equal(result.n_raters, [3, 2, 2])
    np.testing.assert_array_equal(result.n_responses, [3, 3, 2])
    assert result.kendall_w[:2] == pytest.approx([1.0, 0.0])
    # Item 3: rank sums (2.5, 3.5), S = 0.5, W = 12 * 0.5 / (4 * 6 - 2 * 6) = 0.5.
    assert result.kendall_w[2] == pytest.approx(0.5)
    assert result.mean_tau_b[:2] == pytest.approx([1.0, -1.0])
    assert math.isnan(result.mean_tau_b[2])  # tau-b is undefined against a rater who tied all
    # Sub-pairs: item 1 has 3 x 3 agreeing pairs, item 2 3 disagreeing, item 3 one (+1 vs tie).
    assert (result.subpairs.agreeing_pairs, result.subpairs.pairs) == (9, 13)
    assert (result.subpairs_no_ties.agreeing_pairs, result.subpairs_no_ties.pairs) == (9, 12)


rankings = st.integers(2, 5).flatmap(
    lambda k: st.lists(st.lists(st.integers(0, k - 1), min_size=k, max_size=k), min_size=2, max_size=6)
)


@FEW
@given(rankings)
def test_kendall_w_and_tau_match_scipy(rows):
    ranks = np.array(rows, dtype=float)
    data = RankingData(item=np.zeros(len(rows), dtype=int), rater=np.arange(len(rows)), ranks=ranks)
    result = rank_agreement(data)
    taus = [kendalltau(a, b).statistic for a, b in itertools.combinations(ranks, 2)]
    taus = [t for t in taus if not math.isnan(t)]
    assert same(result.mean_tau_b[0], float(np.mean(taus)) if taus else NAN, 1e-12)
    no_ties = all(len(set(row)) == len(row) for row in rows)
    if no_ties:
        # Without ties, mean Spearman rho over rater pairs = (m W - 1) / (m - 1).
        m = len(rows)
        rhos = [spearmanr(a, b).statistic for a, b in itertools.combinations(ranks, 2)]
        assert (m * result.kendall_w[0] - 1) / (m - 1) == pytest.approx(np.mean(rhos), abs=1e-12)
    assert math.isnan(result.kendall_w[0]) or 0.0 <= result.kendall_w[0] <= 1.0 + 1e-12


def test_ranking_data_validation():
    with pytest.raises(ValueError, match="different response positions"):
        RankingData(item=[1, 1], rater=[1, 2], ranks=[[0, 1, 2], [0, 1, NAN]])
    with pytest.raises(ValueError, match="more than once"):
        RankingData(item=[1, 1], rater=[1, 1], ranks=[[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="at least two"):
        RankingData(item=[1], rater=[1], ranks=[[0, NAN]])


def test_subpairs_name_their_item_and_positions():
    data = RankingData(item=[5, 5], rater=[1, 2], ranks=[[0, 1, 2], [2, 1, 1]])
    sub = data.subpairs()
    assert list(zip(sub.unit_item, sub.unit_first, sub.unit_second, strict=True)) == [(5, 0, 1), (5, 0, 2), (5, 1, 2)]
    ratings = sub.votes.ratings()
    np.testing.assert_array_equal(ratings.rows([1, 2]), [[1, 1, 1], [-1, -1, 0]])


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 60)
    noisy = np.where(rng.random((4, 60)) < 0.8, truth, rng.integers(0, 3, (4, 60))).astype(float)

    def alpha(index: np.ndarray) -> float:
        return krippendorff_alpha(noisy[:, index]).value

    first = bootstrap_ci(alpha, 60, n_boot=200, seed=11)
    again = bootstrap_ci(alpha, 60, n_boot=200, seed=11)
    other = bootstrap_ci(alpha, 60, n_boot=200, seed=12)
    assert first == again and first != other
    assert first.low < first.estimate < first.high and first.n_valid == 200
    assert first.estimate == krippendorff_alpha(noisy).value
    assert 0.0 < first.high - first.low < 0.5


def test_bootstrap_mean_is_the_vectorised_percentile_interval():
    values = np.array([0.2, 0.9, NAN, 0.5, 0.7, 0.1, 1.0])
    fast = bootstrap_mean_ci(values, n_boot=300, level=0.9, seed=5)
    rng = np.random.default_rng(5)
    index = rng.integers(0, values.size, (300, values.size))
    means = []
    for row in index:
        drawn = values[row][~np.isnan(values[row])]
        means.append(drawn.mean() if drawn.size else NAN)
    means = np.array(means)
    valid = means[~np.isnan(means)]
    assert fast.estimate == pytest.approx(np.nanmean(values))
    assert (fast.low, fast.high) == pytest.approx(tuple(np.quantile(valid, [0.05, 0.95])))
    assert fast.n_valid == valid.size and fast.level == 0.9


def test_bootstrap_of_an_undefined_statistic_is_nan_not_an_error():
    constant = np.ones((3, 8))
    result = bootstrap_ci(lambda index: fleiss_kappa(constant[:, index]).value, 8, n_boot=20)
    assert math.isnan(result.estimate) and math.isnan(result.low) and result.n_valid == 0
    empty = bootstrap_mean_ci([], n_boot=10)
    assert math.isnan(empty.estimate) and empty.n_valid == 0
    with pytest.raises(ValueError):
        bootstrap_mean_ci([1.0], n_boot=0)


# --- per annotator and per item --------------------------------------------------------------


def biased_votes() -> PairVotes:
    """Three raters on 20 units: 1 and 2 agree, 3 always disagrees; 1 always picks what was shown first."""
    units = np.arange(20)
    truth = np.where(units % 2 == 0, 1, -1)
    shown = (units % 3 != 0).astype(int)  # A shown first on most units
    picked_first = np.where(shown == 1, 1, -1)  # rater 1 picks the first-shown response
    longer_is_a = units % 4 != 0
    return PairVotes(
        unit=np.tile(units, 3),
        rater=np.repeat([1, 2, 3], 20),
        outcome=np.concatenate([picked_first, truth, -truth]),
        a_shown_first=np.concatenate([shown, np.full(20, -1), shown]),
        len_a=np.tile(np.where(longer_is_a, 200, 50), 3),
        len_b=np.tile(np.where(longer_is_a, 50, 200), 3),
        gold=np.tile(np.where(units < 10, truth, NAN), 3),
    )


def test_annotator_position_and_length_bias():
    votes = biased_votes()
    stats = annotator_stats(votes, min_overlap=5)
    np.testing.assert_array_equal(stats.raters, [1, 2, 3])
    np.testing.assert_array_equal(stats.n_votes, [20, 20, 20])
    assert stats.first_shown_share[0] == 1.0 and stats.first_shown_n[0] == 20
    assert stats.first_shown_p[0] == pytest.approx(binomtest(20, 20).pvalue)
    assert stats.first_shown_p[0] < 1e-5
    assert stats.first_shown_n[1] == 0 and math.isnan(stats.first_shown_share[1])  # position unknown
    # Rater 2 picks A on even units; A is the longer response unless unit % 4 == 0.
    units = np.arange(20)
    picks_longer = (units % 2 == 0) == (units % 4 != 0)
    assert stats.longer_share[1] == pytest.approx(picks_longer.mean())
    assert stats.longer_share[2] == pytest.approx(1 - picks_longer.mean())
    assert stats.longer_p[1] == pytest.approx(binomtest(int(picks_longer.sum()), 20).pvalue)


def test_annotator_agreement_gold_and_peers():
    stats = annotator_stats(biased_votes(), min_overlap=5)
    # Gold is the truth on units 0..9: rater 2 always right, rater 3 always wrong.
    np.testing.assert_array_equal(stats.gold_n, [10, 10, 10])
    assert stats.gold_accuracy[1] == 1.0 and stats.gold_accuracy[2] == 0.0
    # Rater 3 is never with the plurality of the others where there is one.
    assert stats.loo_agreement[2] == 0.0 and stats.loo_n[2] > 0
    kappa = stats.peer_kappa.kappa
    assert kappa[1, 2] == pytest.approx(-1.0) and kappa[2, 1] == pytest.approx(-1.0)
    assert stats.mean_peer_kappa[1] == pytest.approx(np.mean([kappa[1, 0], kappa[1, 2]]))
    # With a higher bar than the 20 shared units, no pair qualifies.
    strict = annotator_stats(biased_votes(), min_overlap=21)
    assert np.isnan(strict.peer_kappa.kappa).all() and np.isnan(strict.mean_peer_kappa).all()


def test_leave_one_out_plurality_hand_checked():
    votes = PairVotes(
        unit=[0, 0, 0, 1, 1, 2, 2, 2, 2],
        rater=[1, 2, 3, 1, 2, 1, 2, 3, 4],
        outcome=[1, 1, -1, 0, 1, 1, -1, 0, 1],
    )
    stats = annotator_stats(votes)
    # What each rater's peers voted, and whether that has a unique plurality:
    # Rater 1: unit 0 sees {+1, -1} none, unit 1 sees {+1} -> miss, unit 2 sees {-1, 0, +1} none -> 0 / 1.
    # Rater 2: unit 0 none, unit 1 sees {0} -> miss, unit 2 sees {+1, 0, +1} -> +1 miss -> 0 / 2.
    # Rater 3: unit 0 sees {+1, +1} -> miss; unit 2 sees {+1, -1, +1} -> +1 miss -> 0 / 2.
    # Rater 4: unit 2 sees {+1, -1, 0}: none -> no votes counted.
    np.testing.assert_array_equal(stats.loo_n, [1, 2, 2, 0])
    np.testing.assert_array_equal(stats.loo_agreement[:3], [0.0, 0.0, 0.0])
    assert math.isnan(stats.loo_agreement[3])
    agreeing = PairVotes(unit=[0, 0, 0], rater=[1, 2, 3], outcome=[1, 1, 1])
    np.testing.assert_array_equal(annotator_stats(agreeing).loo_agreement, [1.0, 1.0, 1.0])


def test_median_time_counts_each_judgement_once():
    # Rater 1: a 3-pair judgement of 100 ms and two 1-pair judgements of 200 and 1000 ms.
    votes = PairVotes(
        unit=[0, 1, 2, 3, 4, 0],
        rater=[1, 1, 1, 1, 1, 2],
        outcome=[1, 1, 1, -1, 0, 1],
        judgement=[10, 10, 10, 11, 12, 13],
        time_ms=[100, 100, 100, 200, 1000, NAN],
    )
    stats = annotator_stats(votes)
    assert stats.median_time_ms[0] == 200.0
    assert math.isnan(stats.median_time_ms[1])


def test_item_stats():
    votes = PairVotes(
        unit=[5, 5, 5, 6, 6, 7, 7, 7],
        rater=[1, 2, 3, 1, 2, 1, 2, 3],
        outcome=[1, 1, 0, 1, -1, -1, -1, -1],
    )
    stats = item_stats(votes, threshold=0.7)
    np.testing.assert_array_equal(stats.units, [5, 6, 7])
    np.testing.assert_array_equal(stats.counts, [[0, 1, 2], [1, 0, 1], [3, 0, 0]])
    np.testing.assert_array_equal(stats.majority, [1.0, NAN, -1.0])
    assert stats.majority_share == pytest.approx([2 / 3, 0.5, 1.0])
    assert stats.entropy_bits == pytest.approx([-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3), 1.0, 0.0])
    assert stats.entropy_bits[2] == 0.0 and math.copysign(1, stats.entropy_bits[2]) == 1
    np.testing.assert_array_equal(stats.contested, [True, True, False])
    np.testing.assert_array_equal(item_stats(votes, threshold=0.5).contested, [False, True, False])


def test_empty_votes_give_empty_results():
    votes = PairVotes(unit=[], rater=[], outcome=[])
    assert annotator_stats(votes).raters.size == 0
    assert item_stats(votes).units.size == 0


def test_pair_votes_validation():
    with pytest.raises(ValueError, match="outcome"):
        PairVotes(unit=[1], rater=[1], outcome=[2])
    with pytest.raises(ValueError, match="more than once"):
        PairVotes(unit=[1, 1], rater=[1, 1], outcome=[1, -1])
    with pytest.raises(ValueError, match="a_shown_first"):
        PairVotes(unit=[1], rater=[1], outcome=[1], a_shown_first=[2])
    with pytest.raises(ValueError, match="entries"):
        PairVotes(unit=[1, 2], rater=[1], outcome=[1, 1])
    with pytest.raises(ValueError, match="more than once"):
        rating_matrix([1, 1], [2, 2], [0.0, 1.0])


def test_rating_matrix_labels_rows_and_columns():
    ratings = rating_matrix(unit=[30, 10, 30], rater=[7, 7, 5], value=[1.0, 0.0, -1.0])
    np.testing.assert_array_equal(ratings.raters, [5, 7])
    np.testing.assert_array_equal(ratings.units, [10, 30])
    np.testing.assert_array_equal(ratings.matrix, [[NAN, -1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(ratings.rows([7]), [[0.0, 1.0]])
    with pytest.raises(KeyError, match="no rater 6"):
        ratings.rows([6])


def test_rank_agreement_in_slices_equals_one_pass(monkeypatch):
    """Large rankings are taken in slices of whole items: the figures must not change at all."""
    import annotation.agreement as agreement

    rng = np.random.default_rng(7)
    n_items, k = 60, 4
    item = np.repeat(np.arange(100, 100 + n_items), 5)[rng.permutation(n_items * 5)]  # items interleaved
    rater = np.zeros(item.size, dtype=np.int64)
    for value in np.unique(item):
        rows = np.flatnonzero(item == value)
        rater[rows] = rng.permutation(20)[: rows.size]
    ranks = rng.integers(0, 3, (item.size, k)).astype(float)
    ranks[item % 7 == 0, 3] = np.nan  # some 3-way items
    data = RankingData(item=item, rater=rater, ranks=ranks)
    whole = rank_agreement(data)
    monkeypatch.setattr(agreement, "_RANK_ROWS", 13)  # slices of 13 rows, cut at item ends
    sliced = rank_agreement(data)
    for name in ("items", "n_raters", "n_responses", "kendall_w", "mean_tau_b"):
        assert np.array_equal(getattr(whole, name), getattr(sliced, name), equal_nan=True), name
    for name in ("subpairs", "subpairs_no_ties"):
        a, b = getattr(whole, name), getattr(sliced, name)
        assert (a.value, a.agreeing_pairs, a.pairs) == (b.value, b.agreeing_pairs, b.pairs)
        assert np.array_equal(a.unit_share, b.unit_share, equal_nan=True)
    # And the sub-pair counts are those of RankingData.subpairs().
    sub = data.subpairs().votes
    counts = agreement._outcome_counts(sub.unit, sub.outcome)
    assert whole.subpairs.pairs == int((counts.sum(axis=1) * (counts.sum(axis=1) - 1) // 2).sum())


def _loo_reference(votes: PairVotes) -> dict[int, tuple[int, int]]:
    """Leave-one-out plurality (hits, n) per rater by plain Python loops over the votes."""
    by_unit: dict[int, list[int]] = {}
    for unit, outcome in zip(votes.unit.tolist(), votes.outcome.tolist(), strict=True):
        by_unit.setdefault(unit, []).append(outcome)
    out: dict[int, tuple[int, int]] = {}
    for unit, rater, outcome in zip(votes.unit.tolist(), votes.rater.tolist(), votes.outcome.tolist(), strict=True):
        others = list(by_unit[unit])
        others.remove(outcome)
        tally = {value: others.count(value) for value in (-1, 0, 1)}
        top = max(tally.values())
        hits, n = out.get(rater, (0, 0))
        if top > 0 and list(tally.values()).count(top) == 1:
            n += 1
            hits += int(tally[outcome] == top)
        out[rater] = (hits, n)
    return out


@pytest.mark.parametrize("raters_per_unit", [3, 150])
@pytest.mark.parametrize("dense_units", [True, False])
def test_narrow_vote_arrays_give_the_same_statistics(raters_per_unit, dense_units):
    """int32 ids and int8 outcomes (the report's compact read) change no statistic.

    150 raters on a unit puts counts above int8's range in the leave-one-out plurality.
    """
    rng = np.random.default_rng(raters_per_unit)
    n_units = 40
    rater_pool = 100_000 + rng.choice(400, 200 if raters_per_unit > 100 else 12, replace=False) * 997
    unit = np.repeat(np.arange(n_units), raters_per_unit)
    rater = np.concatenate([rng.choice(rater_pool, raters_per_unit, replace=False) for _ in range(n_units)])
    if not dense_units:
        unit = unit * 7 + 3
    n = unit.size
    wide = PairVotes(
        unit=unit.astype(np.int64),
        rater=rater.astype(np.int64),
        outcome=rng.choice([-1, 0, 1], n, p=[0.45, 0.1, 0.45]).astype(np.int64),
        a_shown_first=rng.integers(-1, 2, n).astype(np.int64),
        len_a=rng.integers(-1, 50, n).astype(np.int64),
        len_b=rng.integers(-1, 50, n).astype(np.int64),
        judgement=np.arange(n, dtype=np.int64) // 3 + 2_000_000,
        time_ms=rng.integers(100, 5000, n).astype(float),
        gold=np.where(unit % 5 == 0, rng.choice([-1.0, 0.0, 1.0], n), np.nan),
    )
    narrow = PairVotes(
        unit=wide.unit.astype(np.int32),
        rater=wide.rater.astype(np.int32),
        outcome=wide.outcome.astype(np.int8),
        a_shown_first=wide.a_shown_first.astype(np.int8),
        len_a=wide.len_a.astype(np.int32),
        len_b=wide.len_b.astype(np.int32),
        judgement=wide.judgement.astype(np.int32),
        time_ms=wide.time_ms,
        gold=wide.gold,
    )
    assert narrow.outcome.dtype == np.int8 and narrow.unit.dtype == np.int32  # kept, not widened

    a, b = annotator_stats(wide, min_overlap=2), annotator_stats(narrow, min_overlap=2)
    for name in AnnotatorStats.__dataclass_fields__:
        if name == "peer_kappa":
            for field in ("raters", "kappa", "overlap"):
                np.testing.assert_array_equal(getattr(a.peer_kappa, field), getattr(b.peer_kappa, field))
        else:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    reference = _loo_reference(wide)
    for index, rater_id in enumerate(a.raters.tolist()):
        hits, count = reference[rater_id]
        assert int(a.loo_n[index]) == count
        assert same(float(a.loo_agreement[index]), hits / count if count else NAN)

    wide_items, narrow_items = item_stats(wide), item_stats(narrow)
    for name in ("units", "counts", "n_votes", "majority", "majority_share", "entropy_bits", "contested"):
        np.testing.assert_array_equal(getattr(wide_items, name), getattr(narrow_items, name), err_msg=name)


def test_distinct_index_matches_np_unique():
    rng = np.random.default_rng(3)
    cases = [
        rng.integers(-100, 101, 500).astype(np.int8),  # int8 offsets from the minimum wrap around in int8
        rng.integers(0, 10, 1000).astype(np.int32) * 1000 + 5,  # narrow range: lookup table
        rng.integers(-(2**40), 2**40, 300),  # wide range: binary search
        np.zeros(0, dtype=np.int64),
    ]
    for values in cases:
        distinct, index = distinct_index(values)
        expected, inverse = np.unique(values, return_inverse=True)
        np.testing.assert_array_equal(distinct, expected)
        np.testing.assert_array_equal(index, inverse.reshape(-1))
        assert index.dtype == np.int32


def test_outcome_codes_of_narrow_arrays_do_not_wrap_around():
    """int16 unit indexes times 3 leave int16's range: the codes are taken in a wider type."""
    from annotation.agreement import outcome_code

    unit = np.array([0, 12_000, 20_000, 32_767], dtype=np.int16)
    outcome = np.array([-1, 0, 1, 1], dtype=np.int8)
    code = outcome_code(unit, outcome, 32_768)
    np.testing.assert_array_equal(code, unit.astype(np.int64) * 3 + outcome + 1)
    assert code.dtype == np.int32
    assert outcome_code(unit, outcome, 2**31).dtype == np.int64
    votes = PairVotes(unit=unit, rater=np.arange(4, dtype=np.int16), outcome=outcome)
    stats = item_stats(votes)
    np.testing.assert_array_equal(stats.units, [0, 12_000, 20_000, 32_767])
    np.testing.assert_array_equal(stats.counts, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
