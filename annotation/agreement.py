"""Inter-annotator agreement for preference data: pure numpy/scipy, no Django, no Celery.

Inputs
------
* **Reliability data** (Krippendorff's term): a float matrix ``ratings[rater, unit]``, NaN
  where the rater did not rate the unit. Values are category codes (nominal) or numbers
  (ordinal, interval, ratio). For pairwise preferences the code is the PairVote outcome:
  +1 (A preferred), -1 (B preferred), 0 (tie). :func:`rating_matrix` builds one from
  parallel (unit, rater, value) arrays.
* :class:`PairVotes`: one entry per (rater, response pair), parallel arrays, with what the
  per-annotator statistics need besides the outcome (display order, lengths, gold, time).
* :class:`RankingData`: one rank vector per (item, rater) for K-way rankings.

What is computed
----------------
* :func:`percent_agreement`: agreeing pairs of ratings / all pairs of ratings, pooled over
  every pair of raters on the same unit (so a unit with m ratings weighs C(m,2)), and per
  unit. ``exclude=0`` drops every pair that involves a tie: that is the MT-Bench convention
  (FastChat ``llm_judge/compute_agreement.py``: human-vs-human agreement over all pairs of
  expert votes on one (question, model pair); "without tie" skips a pair when either vote
  is a tie). Zheng et al. (2023), Table 2.
* :func:`cohen_kappa` (Cohen 1960) for two raters over the units both rated, and
  :func:`pairwise_cohen_kappa` for every pair of raters at once (sparse products).
* :func:`fleiss_kappa` (Fleiss 1971) with a varying number of raters per unit: per-unit
  agreement P_i = sum_c n_ic (n_ic - 1) / (m_i (m_i - 1)) over units with m_i >= 2, P_bar
  its unweighted mean, p_c the share of category c among all ratings on those units,
  P_e = sum_c p_c^2. With a fixed m this is exactly Fleiss (1971); with varying m it is the
  usual generalisation (not a paired-pooled statistic: each unit counts once).
* :func:`krippendorff_alpha` for nominal, ordinal, interval and ratio data with missing
  values, via the coincidence matrix of Krippendorff (2011), "Computing Krippendorff's
  Alpha-Reliability": o_ck = sum_u n_uck / (m_u - 1) over pairable units (m_u >= 2),
  alpha = 1 - (n - 1) sum o_ck d2_ck / sum n_c n_k d2_ck, with his four difference
  functions (ordinal: (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 on the ranks of the values;
  ratio: ((c - k) / (c + k))^2). It reproduces his worked example (0.743, 0.815, 0.849,
  0.797).
* :func:`rank_agreement` for K-way rankings: Kendall's W per item with the tie correction
  (Kendall & Babington Smith 1939; W = 12 S / (m^2 (n^3 - n) - m sum_t (t^3 - t))), the mean
  Kendall tau-b over the pairs of raters of an item, and percent agreement over the C(K,2)
  response sub-pairs (with and without ties).
* :func:`bootstrap_ci` / :func:`bootstrap_mean_ci`: percentile intervals from resampling
  units (items) with replacement, seeded ``numpy.random.Generator``. This is the plain
  nonparametric bootstrap over units, not Krippendorff's own bootstrap for alpha (which
  resamples pairable values).
* :func:`annotator_stats`: per annotator, agreement with the leave-one-out plurality,
  Cohen's kappa against each peer with enough shared units, position bias (binomial test),
  length bias, gold accuracy and median time. :func:`item_stats`: per unit, majority share,
  vote entropy and a contested flag.

Undefined values
----------------
Nothing here raises or warns on degenerate data; a statistic that is undefined is NaN,
and the scalar results say why in ``reason``. Kappa and alpha are 0/0 when there is no
variation (every rating is the same category: chance agreement is 1, expected
disagreement 0). Some tools report 1 there; we report NaN with the reason "no variation",
because the data cannot tell good raters from raters who always press the same button.
Malformed input (wrong shapes, infinities, outcomes outside {-1, 0, 1}, one rater rating
a unit twice) is a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.stats import binomtest

Level = Literal["nominal", "ordinal", "interval", "ratio"]
LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval", "ratio")
OUTCOMES = np.array([-1, 0, 1])  # pairwise outcome codes: B preferred, tie, A preferred

NO_VARIATION = "no variation: every rating is the same category, chance agreement is 1"


# --- inputs --------------------------------------------------------------------------------


def _int_array(values: object, name: str, n: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must hold integers")
    if array.dtype.kind != "i":
        # Signed integer arrays are kept as they are, not copied: a reader may store ids in
        # int32 and outcomes in int8 (6M votes: 24 MB and 6 MB instead of 48 MB each).
        array = array.astype(np.int64)
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} entries, expected {n}")
    return array


def distinct_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for integers, leaner when few are distinct.

    The inverse (int32 where it fits) comes from a lookup table, or a binary search, in the
    distinct values rather than from the sort's permutation: one array the size of ``values``
    instead of three (raters: a few
    hundred distinct among millions of votes).
    """
    distinct = np.unique(values)
    if distinct.size == 0:
        return distinct, np.zeros(values.shape, dtype=np.int32)
    index_type = np.int32 if distinct.size <= np.iinfo(np.int32).max else np.int64
    low, span = distinct[0], int(distinct[-1]) - int(distinct[0])
    if values.dtype.kind == "i" and span <= values.size:
        # Few distinct values in a narrow range (user ids): a lookup table, no int64 temporary.
        offset_type = np.promote_types(values.dtype, np.int32)  # int8 - int8 could wrap around
        table = np.zeros(span + 1, dtype=index_type)
        table[np.subtract(distinct, low, dtype=offset_type)] = np.arange(distinct.size, dtype=index_type)
        return distinct, table[np.subtract(values, low, dtype=offset_type)]
    return distinct, np.searchsorted(distinct, values).astype(index_type, copy=False)


def _duplicate_pair(first: np.ndarray, second: np.ndarray) -> tuple[int, int] | None:
    """The first (first, second) key that occurs twice, or None."""
    if first.size < 2:
        return None
    order = np.lexsort((second, first))
    a = first[order]
    same = a[1:] == a[:-1]
    del a  # one sorted column at a time (48 MB each at 6M votes)
    b = second[order]
    same &= b[1:] == b[:-1]
    del b
    if not same.any():
        return None
    where = int(order[int(np.argmax(same))])
    return int(first[where]), int(second[where])


@dataclass(frozen=True)
class Ratings:
    """Reliability data with its labels: ``matrix[i, j]`` is rater ``raters[i]`` on unit ``units[j]``."""

    matrix: np.ndarray
    """(n_raters, n_units) float, NaN where missing."""
    raters: np.ndarray
    """Rater id of each row, sorted ascending."""
    units: np.ndarray
    """Unit id of each column, sorted ascending."""

    def rows(self, raters: object) -> np.ndarray:
        """The rows of the given rater ids, in that order (a KeyError names a missing one)."""
        wanted = np.atleast_1d(np.asarray(raters))
        if self.raters.size == 0:
            missing = wanted
            index = np.zeros(0, dtype=np.int64)
        else:
            index = np.minimum(np.searchsorted(self.raters, wanted), self.raters.size - 1)
            missing = wanted[self.raters[index] != wanted]
        if missing.size:
            raise KeyError(f"no rater {missing[0].item()!r} in these ratings")
        return self.matrix[index]


def rating_matrix(unit: object, rater: object, value: object) -> Ratings:
    """Reliability data from parallel arrays; a rater rating one unit twice is a ValueError."""
    unit = _int_array(unit, "unit")
    rater = _int_array(rater, "rater", unit.shape[0])
    value = np.asarray(value, dtype=float)
    if value.shape != unit.shape:
        raise ValueError(f"value has shape {value.shape}, expected {unit.shape}")
    duplicate = _duplicate_pair(rater, unit)
    if duplicate is not None:
        raise ValueError(f"rater {duplicate[0]} rated unit {duplicate[1]} more than once")
    units, unit_index = np.unique(unit, return_inverse=True)
    raters, rater_index = np.unique(rater, return_inverse=True)
    matrix = np.full((raters.size, units.size), np.nan)
    matrix[rater_index, unit_index] = value
    return Ratings(matrix=matrix, raters=raters, units=units)


@dataclass(frozen=True)
class PairVotes:
    """Pairwise preference votes as parallel arrays, one entry per (rater, unit).

    Fields accept any array-like and are stored as numpy arrays (validated, defaults filled).

    A unit is one response pair of one item (a PairVote's (task, response_a, response_b)).
    Only ``unit``, ``rater`` and ``outcome`` are required; the rest default to "unknown".
    """

    unit: np.ndarray
    """int: id of the response pair judged."""
    rater: np.ndarray
    """int: id of the rater."""
    outcome: np.ndarray
    """int in {-1, 0, 1}: +1 A preferred, -1 B preferred, 0 tie."""
    a_shown_first: np.ndarray | None = None
    """int: 1 if A was shown before B, 0 if after, -1 unknown (imported judgements)."""
    len_a: np.ndarray | None = None
    """int: length of response A (characters, say); -1 unknown."""
    len_b: np.ndarray | None = None
    """int: length of response B; -1 unknown."""
    judgement: np.ndarray | None = None
    """int: the judgement a vote belongs to (a K-way judgement gives C(K,2) votes); default: one each."""
    time_ms: np.ndarray | None = None
    """float: time the vote's judgement took; NaN unknown. Repeated on each vote of a judgement."""
    gold: np.ndarray | None = None
    """float: the gold outcome of the vote's unit, NaN where the unit has no gold answer."""

    def __post_init__(self) -> None:
        unit = _int_array(self.unit, "unit")
        n = unit.shape[0]
        outcome = _int_array(self.outcome, "outcome", n)
        if not np.isin(outcome, OUTCOMES).all():
            raise ValueError("outcome must be -1, 0 or 1")
        rater = _int_array(self.rater, "rater", n)

        def optional_int(values: np.ndarray | None, name: str, default: int | np.ndarray) -> np.ndarray:
            if values is None:
                default = np.asarray(default, dtype=np.int64)
                if default.ndim == 0:
                    # "Unknown" everywhere: a read-only view of one value, no memory per vote.
                    return np.broadcast_to(default, (n,))
                return default
            return _int_array(values, name, n)

        def optional_float(values: np.ndarray | None, name: str) -> np.ndarray:
            if values is None:
                return np.broadcast_to(np.float64(np.nan), (n,))
            array = np.asarray(values, dtype=float)
            if array.shape != (n,):
                raise ValueError(f"{name} has shape {array.shape}, expected ({n},)")
            return array

        shown = optional_int(self.a_shown_first, "a_shown_first", -1)
        if not np.isin(shown, (-1, 0, 1)).all():
            raise ValueError("a_shown_first must be 1, 0 or -1 (unknown)")
        gold = optional_float(self.gold, "gold")
        if not np.isin(gold[~np.isnan(gold)], OUTCOMES).all():
            raise ValueError("gold must be -1, 0, 1 or NaN")
        duplicate = _duplicate_pair(rater, unit)
        if duplicate is not None:
            raise ValueError(f"rater {duplicate[0]} voted on unit {duplicate[1]} more than once")
        values = {
            "unit": unit,
            "rater": rater,
            "outcome": outcome,
            "a_shown_first": shown,
            "len_a": optional_int(self.len_a, "len_a", -1),
            "len_b": optional_int(self.len_b, "len_b", -1),
            "judgement": optional_int(self.judgement, "judgement", np.arange(n)),
            "time_ms": optional_float(self.time_ms, "time_ms"),
            "gold": gold,
        }
        for name, array in values.items():
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return int(self.unit.shape[0])

    def ratings(self) -> Ratings:
        """The outcomes as reliability data (raters x units)."""
        return rating_matrix(self.unit, self.rater, self.outcome)


@dataclass(frozen=True)
class RankingData:
    """K-way rankings: one rank vector per (item, rater).

    ``ranks[r, j]`` is the rank the rater gave response position ``j`` of the item, lower is
    better, equal values are ties (tier indexes 0, 1, 2 ... do). NaN marks a position the
    item does not have (items with fewer than K responses are padded); every row of one
    item must have the same positions.
    """

    item: np.ndarray
    """int: id of the item (task)."""
    rater: np.ndarray
    """int: id of the rater."""
    ranks: np.ndarray
    """(n, K) float: ranks of the K response positions, NaN = no such response."""

    def __post_init__(self) -> None:
        item = _int_array(self.item, "item")
        rater = _int_array(self.rater, "rater", item.shape[0])
        ranks = np.asarray(self.ranks, dtype=float)
        if ranks.ndim != 2 or ranks.shape[0] != item.shape[0]:
            raise ValueError(f"ranks must have shape ({item.shape[0]}, K)")
        if np.isinf(ranks).any():
            raise ValueError("ranks must be finite or NaN")
        duplicate = _duplicate_pair(rater, item)
        if duplicate is not None:
            raise ValueError(f"rater {duplicate[0]} ranked item {duplicate[1]} more than once")
        present = ~np.isnan(ranks)
        _, first_row, item_index = np.unique(item, return_index=True, return_inverse=True)
        differs = (present != present[first_row[item_index]]).any(axis=1)
        if differs.any():
            raise ValueError(f"item {item[np.argmax(differs)]} has rows with different response positions")
        if (present.sum(axis=1) < 2).any():
            raise ValueError("every ranking needs at least two responses")
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "rater", rater)
        object.__setattr__(self, "ranks", ranks)

    def subpairs(self) -> SubPairs:
        """The C(K,2) pairwise outcomes of every row: position j (first) against k > j."""
        first, second = np.triu_indices(self.ranks.shape[1], 1)
        outcome = _pair_signs(self.ranks, first, second)  # (n, P): +1 first better, NaN missing
        items, item_index = np.unique(self.item, return_inverse=True)
        pair_count = max(first.size, 1)
        row, pair = np.nonzero(~np.isnan(outcome))
        code = item_index[row] * pair_count + pair
        used, unit = np.unique(code, return_inverse=True)
        votes = PairVotes(unit=unit, rater=self.rater[row], outcome=outcome[row, pair].astype(np.int64))
        return SubPairs(
            votes=votes,
            unit_item=items[used // pair_count],
            unit_first=first[used % pair_count],
            unit_second=second[used % pair_count],
        )


@dataclass(frozen=True)
class SubPairs:
    """The sub-pair votes of rankings; ``votes.unit`` indexes the ``unit_*`` arrays."""

    votes: PairVotes
    unit_item: np.ndarray
    """Item id of each sub-pair unit."""
    unit_first: np.ndarray
    """Response position of A (the lower position) of each unit."""
    unit_second: np.ndarray
    """Response position of B."""


def _pair_signs(ranks: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """+1 where position ``first`` is ranked better than ``second``, -1 worse, 0 tied, NaN missing."""
    a, b = ranks[:, first], ranks[:, second]
    missing = np.isnan(a) | np.isnan(b)
    signs = np.sign(np.where(missing, 0.0, b - a))
    signs[missing] = np.nan
    return signs


# --- shared pieces ---------------------------------------------------------------------------


def _as_ratings(ratings: object) -> np.ndarray:
    matrix = np.asarray(ratings, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"ratings must be a (raters, units) matrix, not {matrix.ndim}-dimensional")
    if np.isinf(matrix).any():
        raise ValueError("ratings must be finite or NaN")
    return matrix


def _unit_counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``counts[u, c]``: how many raters gave unit u the c-th category; and the categories."""
    present = ~np.isnan(matrix)
    categories = np.unique(matrix[present])
    n_units, n_categories = matrix.shape[1], categories.size
    if n_categories <= _FEW_CATEGORIES:
        # A pass per category over the matrix: no (rater, unit) index arrays, which at
        # 6M ratings are ~350 MB of temporaries; the same integer counts.
        counts = np.empty((n_units, n_categories), dtype=np.int64)
        for column, category in enumerate(categories):
            counts[:, column] = np.count_nonzero(matrix == category, axis=0)
        return counts, categories
    rater_index, unit_index = np.nonzero(present)
    code = np.searchsorted(categories, matrix[rater_index, unit_index])
    flat = np.bincount(unit_index * n_categories + code, minlength=n_units * n_categories)
    return flat.reshape(n_units, n_categories), categories


_FEW_CATEGORIES = 16


def _divide(numerator: np.ndarray, denominator: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 or ``valid`` is False; no warnings."""
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    where = denominator != 0
    if valid is not None:
        where = where & valid
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=where)
    return out


def _within_group_pairs(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j), i != j unordered, of row indexes with the same group id."""
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    position = np.arange(sorted_group.size)
    after = np.searchsorted(sorted_group, sorted_group, side="right") - position - 1
    left = np.repeat(position, after)
    offset = np.arange(after.sum()) - np.repeat(np.cumsum(after) - after, after) + 1
    return order[left], order[left + offset]


# --- percent agreement -----------------------------------------------------------------------


@dataclass(frozen=True)
class PercentAgreement:
    """Pairs of ratings on the same unit that agree, pooled and per unit."""

    value: float
    """agreeing_pairs / pairs; NaN when there are no pairs."""
    agreeing_pairs: int
    pairs: int
    unit_share: np.ndarray
    """Per unit (column): its agreeing pairs / its pairs; NaN with fewer than two ratings."""
    unit_pairs: np.ndarray
    """Per unit: how many pairs of ratings it has (after ``exclude``)."""
    reason: str = ""


def _percent_from_counts(counts: np.ndarray) -> PercentAgreement:
    m = counts.sum(axis=1)
    agreeing = (counts * (counts - 1) // 2).sum(axis=1)
    pairs = m * (m - 1) // 2
    total, agree = int(pairs.sum()), int(agreeing.sum())
    return PercentAgreement(
        value=agree / total if total else float("nan"),
        agreeing_pairs=agree,
        pairs=total,
        unit_share=_divide(agreeing, pairs),
        unit_pairs=pairs,
        reason="" if total else "no unit has two ratings",
    )


def percent_agreement(ratings: object, *, exclude: float | None = None) -> PercentAgreement:
    """Share of agreeing pairs among all pairs of raters on the same unit, pooled over units.

    ``exclude``: a category whose ratings are left out, together with every pair they are
    in. With pairwise outcome codes, ``exclude=None`` counts ties as a category and
    ``exclude=0`` is MT-Bench's "without tie".
    """
    matrix = _as_ratings(ratings)
    if exclude is not None:
        matrix = np.where(matrix == exclude, np.nan, matrix)
    counts, _ = _unit_counts(matrix)
    return _percent_from_counts(counts)


# --- kappas ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kappa:
    """A chance-corrected agreement: (observed - expected) / (1 - expected)."""

    value: float
    observed: float
    """Observed agreement P_o (Fleiss: P_bar)."""
    expected: float
    """Agreement expected by chance P_e."""
    n_units: int
    """Units that entered the statistic."""
    reason: str = ""
    """Why ``value`` is NaN; empty when it is defined."""


def cohen_kappa(first: object, second: object) -> Kappa:
    """Cohen's kappa of two raters over the units both rated (NaN = not rated).

    Each rater's category shares are taken over those shared units only.
    """
    x = np.asarray(first, dtype=float)
    y = np.asarray(second, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("the two raters' ratings must be 1-d arrays of the same length")
    matrix = _as_ratings(np.stack([x, y]))
    both = ~np.isnan(matrix).any(axis=0)
    n = int(both.sum())
    if n == 0:
        return Kappa(float("nan"), float("nan"), float("nan"), 0, "no unit rated by both raters")
    x, y = matrix[0, both], matrix[1, both]
    categories, code = np.unique(np.concatenate([x, y]), return_inverse=True)
    share_x = np.bincount(code[:n], minlength=categories.size) / n
    share_y = np.bincount(code[n:], minlength=categories.size) / n
    observed = float(np.mean(x == y))
    expected = float(share_x @ share_y)
    if categories.size == 1:
        return Kappa(float("nan"), observed, expected, n, NO_VARIATION)
    return Kappa((observed - expected) / (1.0 - expected), observed, expected, n)


@dataclass(frozen=True)
class PairwiseKappa:
    """Cohen's kappa of every pair of raters, over the units each pair shares."""

    raters: np.ndarray
    """Rater id of each row and column."""
    kappa: np.ndarray
    """(R, R) symmetric; NaN on the diagonal, below ``min_overlap`` shared units, or without variation."""
    overlap: np.ndarray
    """(R, R) int: units both raters rated."""
    min_overlap: int


def pairwise_cohen_kappa(ratings: object, *, raters: object = None, min_overlap: int = 1) -> PairwiseKappa:
    """Cohen's kappa for all pairs of rows of ``ratings`` at once.

    Sparse products over (rater x unit) indicator matrices: the cost grows with the pairs of
    ratings that share a unit, not with units x raters^2. Entry (r, s) equals
    ``cohen_kappa(ratings[r], ratings[s])`` (checked in the tests).
    """
    matrix = _as_ratings(ratings)
    n_raters = matrix.shape[0]
    raters = np.arange(n_raters) if raters is None else np.asarray(raters)
    if raters.shape != (n_raters,):
        raise ValueError(f"raters must name the {n_raters} rows")
    rater_index, unit_index = np.nonzero(~np.isnan(matrix))
    _, code = np.unique(matrix[rater_index, unit_index], return_inverse=True)
    return _pairwise_kappa_sparse(rater_index, unit_index, code, matrix.shape, raters, min_overlap)


def _pairwise_kappa_sparse(
    rater_index: np.ndarray,
    unit_index: np.ndarray,
    code: np.ndarray,
    shape: tuple[int, int],
    raters: np.ndarray,
    min_overlap: int,
) -> PairwiseKappa:
    """Pairwise Cohen's kappa from (rater, unit, category code) triplets, one per (rater, unit).

    The (raters x units) matrix is never built densely: only the sparse indicator matrices of
    the ratings present, so memory follows the number of ratings.
    """
    n_raters = shape[0]

    # Integer indicator matrices (int32 data and indexes where they fit): every product is
    # a count, exact in any integer type, at half the memory of float64 and int64.
    index_type = np.int32 if max(shape) < np.iinfo(np.int32).max else np.int64
    rater_index = rater_index.astype(index_type, copy=False)
    unit_index = unit_index.astype(index_type, copy=False)

    def indicator(mask: np.ndarray | None) -> sp.csr_matrix:
        rows, columns = (rater_index, unit_index) if mask is None else (rater_index[mask], unit_index[mask])
        return sp.csr_matrix((np.ones(rows.size, dtype=np.int32), (rows, columns)), shape=shape)

    present = indicator(None)
    overlap = (present @ present.T).toarray().astype(float)
    agree = np.zeros(overlap.shape)
    chance = np.zeros(overlap.shape)  # sum_c n_rc n_sc, counts over shared units
    for category in range(int(code.max()) + 1 if code.size else 0):
        given = indicator(code == category)
        agree += (given @ given.T).toarray()
        # [r, s]: how often r gave this category on units that s rated too.
        on_shared = (given @ present.T).toarray().astype(float)
        chance += on_shared * on_shared.T
    squared = overlap.astype(float) ** 2
    valid = (overlap >= max(min_overlap, 1)) & ~np.eye(n_raters, dtype=bool)
    # No variation: both raters used one and the same category on every shared unit,
    # exactly when the integer chance count equals overlap^2.
    valid &= chance != squared
    observed = _divide(agree, overlap, valid)
    expected = _divide(chance, squared, valid)
    kappa = _divide(observed - expected, 1.0 - expected, valid)
    return PairwiseKappa(raters=raters, kappa=kappa, overlap=overlap.astype(np.int64), min_overlap=min_overlap)


def fleiss_kappa(ratings: object) -> Kappa:
    """Fleiss' kappa over units with two or more ratings; the number of raters may vary per unit."""
    counts, _ = _unit_counts(_as_ratings(ratings))
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    n_units = int(m.size)
    if n_units == 0:
        return Kappa(float("nan"), float("nan"), float("nan"), 0, "no unit has two ratings")
    per_unit = (counts * (counts - 1)).sum(axis=1) / (m * (m - 1))
    observed = float(per_unit.mean())
    shares = counts.sum(axis=0) / m.sum()
    expected = float(shares @ shares)
    if np.count_nonzero(shares) < 2:
        return Kappa(float("nan"), observed, expected, n_units, NO_VARIATION)
    return Kappa((observed - expected) / (1.0 - expected), observed, expected, n_units)


# --- Krippendorff's alpha ----------------------------------------------------------------------


@dataclass(frozen=True)
class Alpha:
    """Krippendorff's alpha = 1 - D_o / D_e."""

    value: float
    level: str
    observed_disagreement: float
    """D_o = sum o_ck d2_ck / n."""
    expected_disagreement: float
    """D_e = sum n_c n_k d2_ck / (n (n - 1))."""
    n_units: int
    """Pairable units: those with two or more values."""
    n_values: int
    """n: the pairable values."""
    reason: str = ""


def _difference(values: np.ndarray, marginals: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's squared difference d2[c, k] between the sorted distinct values."""
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    if level == "ratio":
        # ((c - k) / (c + k))^2, and 0 where c = k = 0.
        ratio = _divide(np.subtract.outer(values, values), np.add.outer(values, values))
        return np.nan_to_num(ratio, nan=0.0) ** 2
    # ordinal: values enter only through their order; n_g are the pairable-value marginals.
    index = np.arange(values.size)
    low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
    cumulative = np.cumsum(marginals)
    between = cumulative[high] - cumulative[low] + marginals[low]  # sum_{g=low..high} n_g
    return (between - (marginals[low] + marginals[high]) / 2.0) ** 2


def krippendorff_alpha(ratings: object, level: Level = "nominal") -> Alpha:
    """Krippendorff's alpha of reliability data ``ratings[rater, unit]`` (NaN = missing)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    matrix = _as_ratings(ratings)
    if level == "ratio" and (matrix < 0).any():
        raise ValueError("ratio data must not be negative")
    counts, values = _unit_counts(matrix)
    m = counts.sum(axis=1)
    pairable = m >= 2
    counts, m = counts[pairable].astype(float), m[pairable]
    n = float(m.sum())
    if n == 0:
        return Alpha(float("nan"), level, float("nan"), float("nan"), 0, 0, "no unit has two or more values")
    weighted = counts / (m - 1)[:, None]
    coincidence = weighted.T @ counts
    coincidence[np.diag_indices_from(coincidence)] -= weighted.sum(axis=0)
    marginals = coincidence.sum(axis=1)
    d2 = _difference(values, marginals, level)
    observed = float((coincidence * d2).sum() / n)
    expected = float((np.outer(marginals, marginals) * d2).sum() / (n * (n - 1)))
    if expected == 0:
        return Alpha(float("nan"), level, observed, expected, int(m.size), int(n), NO_VARIATION)
    return Alpha(1.0 - observed / expected, level, observed, expected, int(m.size), int(n))


# --- rankings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankAgreement:
    """Agreement among the rankings of each item, and over all response sub-pairs."""

    items: np.ndarray
    """Item ids, sorted; the per-item arrays follow this order."""
    n_raters: np.ndarray
    n_responses: np.ndarray
    kendall_w: np.ndarray
    """Kendall's W with tie correction; NaN with fewer than 2 raters or when every rater tied everything."""
    mean_tau_b: np.ndarray
    """Mean Kendall tau-b over the pairs of raters whose tau-b is defined; NaN when none is."""
    subpairs: PercentAgreement
    """Percent agreement over the C(K,2) sub-pairs of all items, ties as a category."""
    subpairs_no_ties: PercentAgreement
    """The same with every pair of votes involving a tie left out."""


_RANK_ROWS = 200_000
"""Rankings processed at once by :func:`rank_agreement` (whole items per slice): bounds its memory."""


def rank_agreement(data: RankingData) -> RankAgreement:
    """Kendall's W, mean pairwise tau-b per item, and sub-pair percent agreement.

    Every figure is per item (or a sum over items), so large data is taken in slices of
    whole items, in item order: the same numbers as one pass, with memory bounded by the
    slice (a 1M-ranking project needs ~800 MB of temporaries in one pass).
    """
    n_rows = data.ranks.shape[0]
    if n_rows <= _RANK_ROWS:
        return _rank_agreement_rows(data.item, data.ranks, finish=True)
    order = np.argsort(data.item, kind="stable")
    sorted_item = data.item[order]
    parts = []
    start = 0
    while start < n_rows:
        stop = min(start + _RANK_ROWS, n_rows)
        if stop < n_rows:  # end the slice where an item ends
            stop = int(np.searchsorted(sorted_item, sorted_item[stop - 1], side="right"))
        rows = order[start:stop]
        parts.append(_rank_agreement_rows(data.item[rows], data.ranks[rows], finish=False))
        start = stop
    counts = np.concatenate([part[5] for part in parts])
    return RankAgreement(
        items=np.concatenate([part[0] for part in parts]),
        n_raters=np.concatenate([part[1] for part in parts]),
        n_responses=np.concatenate([part[2] for part in parts]),
        kendall_w=np.concatenate([part[3] for part in parts]),
        mean_tau_b=np.concatenate([part[4] for part in parts]),
        subpairs=_percent_from_counts(counts),
        subpairs_no_ties=_percent_from_counts(counts[:, [0, 2]]),
    )


def _rank_agreement_rows(item: np.ndarray, ranks: np.ndarray, *, finish: bool) -> Any:
    """:func:`rank_agreement` of some rows that hold whole items; ``finish=False`` returns the parts."""
    present = ~np.isnan(ranks)
    items, item_index = np.unique(item, return_inverse=True)
    n_items = items.size
    # Average ranks 1..n within a row (ties share the mean), and the tie term sum (t^3 - t),
    # written per member as sum_j (t_j^2 - 1) where t_j is the size of j's tie group.
    both = present[:, :, None] & present[:, None, :]
    filled = np.where(present, ranks, 0.0)
    equal = (filled[:, :, None] == filled[:, None, :]) & both
    better = (filled[:, None, :] < filled[:, :, None]) & both
    ties_with = equal.sum(axis=2)  # t_j, counting j itself
    average = np.where(present, 1.0 + better.sum(axis=2) + (ties_with - 1) / 2.0, 0.0)
    tie_term = np.where(present, ties_with**2 - 1, 0).sum(axis=1)

    m = np.bincount(item_index, minlength=n_items).astype(float)
    n_responses = np.zeros(n_items, dtype=np.int64)
    n_responses[item_index] = present.sum(axis=1)
    rank_sums = np.zeros((n_items, ranks.shape[1]))
    np.add.at(rank_sums, item_index, average)
    item_present = np.zeros((n_items, ranks.shape[1]), dtype=bool)
    item_present[item_index] = present
    centre = (m * (n_responses + 1) / 2.0)[:, None]
    spread = np.where(item_present, (rank_sums - centre) ** 2, 0.0).sum(axis=1)
    ties = np.bincount(item_index, weights=tie_term, minlength=n_items)
    k = n_responses.astype(float)
    denominator = m**2 * (k**3 - k) - m * ties
    kendall_w = _divide(12.0 * spread, denominator, (m >= 2) & (denominator > 0))

    # tau-b for every pair of rows of the same item, from the sub-pair signs.
    first, second = np.triu_indices(ranks.shape[1], 1)
    signs = _pair_signs(ranks, first, second)
    known = ~np.isnan(signs)
    signs0 = np.nan_to_num(signs)
    left, right = _within_group_pairs(item_index)
    pairs_known = known[left].sum(axis=1)
    untied_left = pairs_known - ((signs0[left] == 0) & known[left]).sum(axis=1)
    untied_right = pairs_known - ((signs0[right] == 0) & known[right]).sum(axis=1)
    product = (signs0[left] * signs0[right]).sum(axis=1)
    norm = np.sqrt(untied_left.astype(float) * untied_right)
    tau = _divide(product, norm)
    defined = ~np.isnan(tau)
    tau_sum = np.bincount(item_index[left], weights=np.where(defined, tau, 0.0), minlength=n_items)
    tau_count = np.bincount(item_index[left], weights=defined, minlength=n_items)
    mean_tau = _divide(tau_sum, tau_count)

    counts = _subpair_counts(item_index, first.size, signs)
    if not finish:
        return items, m.astype(np.int64), n_responses, kendall_w, mean_tau, counts
    return RankAgreement(
        items=items,
        n_raters=m.astype(np.int64),
        n_responses=n_responses,
        kendall_w=kendall_w,
        mean_tau_b=mean_tau,
        subpairs=_percent_from_counts(counts),
        subpairs_no_ties=_percent_from_counts(counts[:, [0, 2]]),
    )


def _subpair_counts(item_index: np.ndarray, pair_count: int, signs: np.ndarray) -> np.ndarray:
    """Outcome counts (B, tie, A) of every sub-pair unit, the units of :meth:`RankingData.subpairs` in order.

    The same counts as ``_outcome_counts`` over ``subpairs().votes``, without building the
    votes (one per ranking and sub-pair) as a PairVotes.
    """
    row, pair = np.nonzero(~np.isnan(signs))
    code = item_index[row] * max(pair_count, 1) + pair
    _, unit = np.unique(code, return_inverse=True)
    return _outcome_counts(unit.reshape(-1), signs[row, pair].astype(np.int64))


def _outcome_counts(unit_index: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """(n_units, 3) votes for -1, 0, +1 per dense unit index."""
    n_units = int(unit_index.max()) + 1 if unit_index.size else 0
    flat = np.bincount(outcome_code(unit_index, outcome, n_units), minlength=n_units * 3)
    return flat.reshape(n_units, 3)


def outcome_code(unit_index: np.ndarray, outcome: np.ndarray, n_units: int) -> np.ndarray:
    """``unit_index * 3 + outcome + 1`` in int32 where the codes fit, else int64 (never narrower).

    The inputs may be narrow (int8 outcomes, int16 indexes): the product is taken in a type
    that holds every code of ``n_units`` units, so it cannot wrap around.
    """
    code_type = np.int32 if 3 * n_units <= np.iinfo(np.int32).max else np.int64
    code = np.multiply(unit_index, 3, dtype=code_type)
    code += outcome
    code += 1
    return code


# --- bootstrap -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval over units (items)."""

    estimate: float
    """The statistic on the data as given."""
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int
    """Resamples on which the statistic was defined (finite); the interval uses only those."""


def _percentile_interval(estimate: float, draws: np.ndarray, *, level: float, n_boot: int) -> BootstrapCI:
    valid = draws[np.isfinite(draws)]
    if valid.size == 0:
        return BootstrapCI(estimate, float("nan"), float("nan"), level, n_boot, 0)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(valid, [tail, 1.0 - tail])
    return BootstrapCI(estimate, float(low), float(high), level, n_boot, int(valid.size))


def _check_bootstrap(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be between 0 and 1")


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_units: int,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> BootstrapCI:
    """Percentile interval of ``statistic(index)`` over resamples of the units.

    ``statistic`` gets an int array of unit (column) indexes, with repeats, and returns a
    float; e.g. ``lambda idx: krippendorff_alpha(matrix[:, idx]).value``. NaN draws are
    left out and counted in ``n_valid``.
    """
    _check_bootstrap(n_boot, level)
    rng = np.random.default_rng(seed)
    estimate = float(statistic(np.arange(n_units)))
    if n_units == 0:
        return BootstrapCI(estimate, float("nan"), float("nan"), level, n_boot, 0)
    draws = np.array([statistic(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], dtype=float)
    return _percentile_interval(estimate, draws, level=level, n_boot=n_boot)


def bootstrap_mean_ci(
    values: object,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> BootstrapCI:
    """Percentile interval of the mean of per-unit values (NaN ignored), fully vectorised."""
    _check_bootstrap(n_boot, level)
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    estimate = float(values[finite].mean()) if finite.any() else float("nan")
    if values.size == 0:
        return BootstrapCI(estimate, float("nan"), float("nan"), level, n_boot, 0)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, values.size, (n_boot, values.size))
    sums = np.where(finite, values, 0.0)[index].sum(axis=1)
    counts = finite[index].sum(axis=1)
    return _percentile_interval(estimate, _divide(sums, counts), level=level, n_boot=n_boot)


# --- per annotator and per item --------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorStats:
    """Per-annotator quality signals; every array follows ``raters``."""

    raters: np.ndarray
    """Rater ids, sorted."""
    n_votes: np.ndarray
    loo_agreement: np.ndarray
    """Share of votes equal to the plurality of the other raters of the unit (ties a category)."""
    loo_n: np.ndarray
    """Votes whose unit has a unique leave-one-out plurality (at least one other vote, no tie for first)."""
    peer_kappa: PairwiseKappa
    """Cohen's kappa against each peer with at least ``min_overlap`` shared units."""
    mean_peer_kappa: np.ndarray
    """Mean of the defined entries of the rater's row of ``peer_kappa``; NaN when none is."""
    first_shown_share: np.ndarray
    """Share of first-shown picks among non-tie votes whose display order is known."""
    first_shown_n: np.ndarray
    first_shown_p: np.ndarray
    """Two-sided exact binomial test of ``first_shown_share`` against 0.5."""
    longer_share: np.ndarray
    """Share of picks of the longer response among non-tie votes on responses of unequal length."""
    longer_n: np.ndarray
    longer_p: np.ndarray
    """Two-sided exact binomial test of ``longer_share`` against 0.5."""
    gold_accuracy: np.ndarray
    """Share of votes on gold units that match the gold outcome (ties count as an outcome)."""
    gold_n: np.ndarray
    median_time_ms: np.ndarray
    """Median over the rater's judgements with a known time."""


def _per_rater_share(
    rater_index: np.ndarray, n_raters: int, mask: np.ndarray, hit: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of ``hit`` among ``mask`` per rater, its count, and a two-sided binomial p against 0.5."""
    n = np.bincount(rater_index[mask], minlength=n_raters)
    k = np.bincount(rater_index[mask & hit], minlength=n_raters)
    p_values = np.full(n_raters, np.nan)
    for rater in np.flatnonzero(n):
        p_values[rater] = binomtest(int(k[rater]), int(n[rater]), 0.5).pvalue
    return _divide(k, n), n, p_values


def _group_median(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per group index, NaN for empty groups, without a Python loop."""
    order = np.lexsort((values, group))
    group, values = group[order], values[order]
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    medians = np.full(n_groups, np.nan)
    has = counts > 0
    low = starts[has] + (counts[has] - 1) // 2
    high = starts[has] + counts[has] // 2
    medians[has] = (values[low] + values[high]) / 2.0
    return medians


def annotator_stats(votes: PairVotes, *, min_overlap: int = 10) -> AnnotatorStats:
    """Per-annotator agreement, biases, gold accuracy and speed from pairwise votes."""
    raters, rater_index = distinct_index(votes.rater)
    unit = votes.unit
    if unit.size and unit.min() >= 0 and unit.max() < 2 * unit.size:
        # Already (nearly) dense indexes, as the project reader makes them: a unit without
        # votes is an empty row or column below and changes no statistic.
        unit_index = unit
    else:
        _, unit_index = np.unique(unit, return_inverse=True)
    n_raters = raters.size
    outcome = votes.outcome

    # Leave-one-out plurality: the unit's vote counts minus the rater's own vote, one
    # outcome column at a time in the narrowest integer type that holds the counts (6M
    # votes: 6 MB a column in int8, instead of a 6M x 3 matrix).
    counts = _outcome_counts(unit_index, outcome)
    count_type = np.min_scalar_type(-int(counts.max()) - 1) if counts.size else np.int8
    others = []
    for column, value in enumerate(OUTCOMES):
        count = counts[:, column].astype(count_type)[unit_index]
        count -= outcome == value
        others.append(count)
    del counts
    top = np.maximum(np.maximum(others[0], others[1]), others[2])
    n_top = (others[0] == top).astype(np.int8)
    n_top += others[1] == top
    n_top += others[2] == top
    has_plurality = (top > 0) & (n_top == 1)
    del n_top
    # With a unique plurality, the vote agrees with it exactly when its own outcome's column is the top.
    own = np.where(outcome == -1, others[0], np.where(outcome == 0, others[1], others[2]))
    del others
    agrees = has_plurality & (own == top)
    del own, top
    loo_n = np.bincount(rater_index[has_plurality], minlength=n_raters)
    loo_hits = np.bincount(rater_index[agrees], minlength=n_raters)
    del has_plurality, agrees  # one entry per vote each: free before the kappas

    # Cohen's kappa against each peer from the votes as sparse triplets: the dense
    # (raters x units) matrix would be raters x units x 8 bytes (2.3 GB at 6M votes).
    # PairVotes holds one vote per (rater, unit): it refuses duplicates when it is built.
    n_units = int(unit_index.max()) + 1 if unit_index.size else 0
    # The outcomes' codes among the values present (np.unique's inverse), without a sort.
    used = np.flatnonzero(np.bincount(outcome + 1, minlength=3))
    recode = np.full(3, -1, dtype=np.int8)
    recode[used] = np.arange(used.size)
    code = recode[outcome + 1]
    peer = _pairwise_kappa_sparse(rater_index, unit_index, code.reshape(-1), (n_raters, n_units), raters, min_overlap)
    defined = ~np.isnan(peer.kappa)
    mean_peer = _divide(np.where(defined, peer.kappa, 0.0).sum(axis=1), defined.sum(axis=1))

    decided = outcome != 0
    shown_known = decided & (votes.a_shown_first >= 0)
    picked_first = (outcome == 1) == (votes.a_shown_first == 1)
    first_share, first_n, first_p = _per_rater_share(rater_index, n_raters, shown_known, picked_first)

    length_known = decided & (votes.len_a >= 0) & (votes.len_b >= 0) & (votes.len_a != votes.len_b)
    picked_longer = (outcome == 1) == (votes.len_a > votes.len_b)
    longer_share, longer_n, longer_p = _per_rater_share(rater_index, n_raters, length_known, picked_longer)

    has_gold = ~np.isnan(votes.gold)
    gold_n = np.bincount(rater_index[has_gold], minlength=n_raters)
    gold_hits = np.bincount(rater_index[has_gold & (outcome == votes.gold)], minlength=n_raters)

    # Time is per judgement: count each judgement once, not once per sub-pair.
    _, first_vote = np.unique(votes.judgement, return_index=True)
    timed = first_vote[~np.isnan(votes.time_ms[first_vote])]
    median_time = _group_median(rater_index[timed], votes.time_ms[timed], n_raters)

    return AnnotatorStats(
        raters=raters,
        n_votes=np.bincount(rater_index, minlength=n_raters),
        loo_agreement=_divide(loo_hits, loo_n),
        loo_n=loo_n,
        peer_kappa=peer,
        mean_peer_kappa=mean_peer,
        first_shown_share=first_share,
        first_shown_n=first_n,
        first_shown_p=first_p,
        longer_share=longer_share,
        longer_n=longer_n,
        longer_p=longer_p,
        gold_accuracy=_divide(gold_hits, gold_n),
        gold_n=gold_n,
        median_time_ms=median_time,
    )


@dataclass(frozen=True)
class ItemStats:
    """Per-unit vote distribution; every array follows ``units``."""

    units: np.ndarray
    """Unit ids, sorted."""
    counts: np.ndarray
    """(n_units, 3): votes for -1 (B), 0 (tie), +1 (A)."""
    n_votes: np.ndarray
    majority: np.ndarray
    """The outcome with the most votes; NaN when two outcomes share the most."""
    majority_share: np.ndarray
    """Votes for the most-voted outcome / all votes."""
    entropy_bits: np.ndarray
    """Shannon entropy of the vote distribution in bits: 0 unanimous, log2(3) at most."""
    contested: np.ndarray
    """Majority share below ``threshold``, or no unique most-voted outcome."""
    threshold: float = 0.5


def item_stats(votes: PairVotes, *, threshold: float = 0.5) -> ItemStats:
    """Majority share, entropy and the contested flag of every unit."""
    unit = votes.unit
    per_unit = np.bincount(unit) if unit.size and unit.min() >= 0 else None
    if per_unit is not None and per_unit.all():
        # Already the dense indexes 0..n-1 that the project reader makes: np.unique would
        # give these units and this inverse, through a sort and three int64 arrays.
        units, unit_index = np.arange(per_unit.size, dtype=unit.dtype), unit
    else:
        units, unit_index = np.unique(unit, return_inverse=True)
    del per_unit
    counts = _outcome_counts(unit_index, votes.outcome)
    n = counts.sum(axis=1)
    top = counts.max(axis=1)
    unique_top = (counts == top[:, None]).sum(axis=1) == 1
    share = _divide(top, n)
    p = counts / n[:, None]  # every unit listed has at least one vote
    # sum p log2(1/p), with 0 log 0 = 0; written so that a unanimous unit gives +0.0.
    entropy = (p * np.log2(1.0 / np.where(counts > 0, p, 1.0))).sum(axis=1)
    majority = np.where(unique_top, OUTCOMES[counts.argmax(axis=1)], np.nan)
    return ItemStats(
        units=units,
        counts=counts,
        n_votes=n,
        majority=majority.astype(float),
        majority_share=share,
        entropy_bits=entropy,
        contested=(share < threshold) | ~unique_top,
        threshold=threshold,
    )
