"""Pooled agreement figures from per-item sufficient statistics, and their bootstrap.

Pure numpy, no Django. Every pooled figure of the report's ``pairwise`` and ``ranking``
sections is a function of sums over units: agreeing and total pairs of votes (with and
without ties), Fleiss' per-unit agreement and category counts, Krippendorff's coincidence
matrix, and the per-item Kendall's W and tau-b with their counts. :func:`unit_sums` writes
those sums per unit in ``COLUMNS`` columns; summed per item they are what the bootstrap
resamples (:func:`bootstrap_sums`), and :func:`pooled_statistics` turns any column sums
(the whole project, or one row per resample) into the figures. A resample is therefore
one weighted sum, not a recomputation.

The point estimates themselves come from :mod:`annotation.agreement` on the
(slot x unit) matrix of :func:`compact_ratings`; ``tests/annotation/test_reports.py``
checks that both routes give the same values.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from annotation.agreement import PairVotes

# At most this many cells in one bootstrap weight matrix (resamples x items).
_BOOTSTRAP_CELLS = 2_000_000


def bootstrap_sums(per_item: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, columns): the column sums of ``per_item`` over resamples of its rows.

    Equivalent to summing ``per_item[rng.integers(0, n, n)]`` per resample, written as
    (resample weights) @ per_item in chunks so that memory stays bounded.
    """
    n_items = per_item.shape[0]
    out = np.empty((n_boot, per_item.shape[1]))
    chunk = max(1, _BOOTSTRAP_CELLS // max(n_items, 1))
    # The products are thin (a few rows by 22 columns): BLAS threads gain nothing there, and
    # on a busy machine their spinning made one report take 20 s instead of 0.5 s.
    with _one_blas_thread():
        for start in range(0, n_boot, chunk):
            rows = min(chunk, n_boot - start)
            index = rng.integers(0, n_items, (rows, n_items))
            flat = (index + (np.arange(rows) * n_items)[:, None]).ravel()
            weights = np.bincount(flat, minlength=rows * n_items).reshape(rows, n_items).astype(float)
            out[start : start + rows] = weights @ per_item
    return out


def _one_blas_thread() -> Any:
    """Limit BLAS to one thread for a block (threadpoolctl, when installed; else no change)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - an optional helper
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _fleiss_from_sums(sums: np.ndarray) -> np.ndarray:
    """Fleiss' kappa from summed [sum of per-unit P_i, units, category counts (3)]."""
    p_sum, units, categories = sums[..., 0], sums[..., 1], sums[..., 2:5]
    observed = _safe_divide(p_sum, units)
    shares = _safe_divide(categories, categories.sum(axis=-1, keepdims=True))
    expected = (shares**2).sum(axis=-1)
    kappa = _safe_divide(observed - expected, 1.0 - expected)
    kappa[(units == 0) | (np.count_nonzero(categories, axis=-1) < 2)] = np.nan
    return kappa


_LOW, _HIGH = np.minimum.outer(np.arange(3), np.arange(3)), np.maximum.outer(np.arange(3), np.arange(3))


def _alpha_from_coincidences(flat: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's alpha from summed coincidence matrices (..., 9) over the outcomes -1, 0, +1.

    The same formulas as :func:`annotation.agreement.krippendorff_alpha`; a category absent
    from a resample has zero marginal and zero coincidences and so changes nothing.
    """
    coincidence = flat.reshape(*flat.shape[:-1], 3, 3)
    marginals = coincidence.sum(axis=-1)
    n = marginals.sum(axis=-1)
    if level == "nominal":
        d2 = np.broadcast_to(1.0 - np.eye(3), coincidence.shape)
    else:
        cumulative = np.cumsum(marginals, axis=-1)
        between = cumulative[..., _HIGH] - cumulative[..., _LOW] + marginals[..., _LOW]
        d2 = (between - (marginals[..., _LOW] + marginals[..., _HIGH]) / 2.0) ** 2
    observed = _safe_divide((coincidence * d2).sum(axis=(-1, -2)), n)
    outer = marginals[..., :, None] * marginals[..., None, :]
    expected = _safe_divide((outer * d2).sum(axis=(-1, -2)), n * (n - 1))
    alpha = 1.0 - _safe_divide(observed, expected)
    alpha[~(expected > 0)] = np.nan
    return alpha


# Columns of the per-item sufficient statistics.
_PA, _PA_NT, _FLEISS, _ALPHA, _W, _TAU = (
    slice(0, 2),
    slice(2, 4),
    slice(4, 9),
    slice(9, 18),
    slice(18, 20),
    slice(20, 22),
)
COLUMNS = 22


def unit_sums(counts: np.ndarray) -> np.ndarray:
    """Per unit: the sufficient statistics of every pooled figure (columns as above, W/tau zero)."""
    counts = counts.astype(float)
    m = counts.sum(axis=1)
    out = np.zeros((counts.shape[0], COLUMNS))
    out[:, 0] = (counts * (counts - 1) / 2).sum(axis=1)
    out[:, 1] = m * (m - 1) / 2
    decided = counts[:, [0, 2]]
    m_decided = decided.sum(axis=1)
    out[:, 2] = (decided * (decided - 1) / 2).sum(axis=1)
    out[:, 3] = m_decided * (m_decided - 1) / 2
    pairable = m >= 2
    out[pairable, 4] = (counts[pairable] * (counts[pairable] - 1)).sum(axis=1) / (m[pairable] * (m[pairable] - 1))
    out[pairable, 5] = 1.0
    out[pairable, 6:9] = counts[pairable]
    coincidence = counts[:, :, None] * counts[:, None, :]
    coincidence[:, [0, 1, 2], [0, 1, 2]] -= counts
    coincidence = _safe_divide(coincidence, (m - 1)[:, None, None])
    coincidence[~pairable] = 0.0
    out[:, 9:18] = coincidence.reshape(-1, 9)
    return out


def pooled_statistics(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Every pooled statistic from column sums (one row, or one row per resample)."""
    sums = np.atleast_2d(sums)
    return {
        "percent_agreement": _safe_divide(sums[:, 0], sums[:, 1]),
        "percent_agreement_no_ties": _safe_divide(sums[:, 2], sums[:, 3]),
        "fleiss_kappa": _fleiss_from_sums(sums[:, _FLEISS]),
        "alpha_nominal": _alpha_from_coincidences(sums[:, _ALPHA], "nominal"),
        "alpha_ordinal": _alpha_from_coincidences(sums[:, _ALPHA], "ordinal"),
        "kendall_w": _safe_divide(sums[:, 18], sums[:, 19]),
        "mean_tau_b": _safe_divide(sums[:, 20], sums[:, 21]),
    }


def compact_ratings(votes: PairVotes) -> np.ndarray:
    """The outcomes as a (slot x unit) matrix: column u holds unit u's votes in slots 0..m_u - 1.

    Percent agreement, Fleiss' kappa and Krippendorff's alpha depend only on the votes per
    unit, not on who cast them, so this matrix gives the same values as the (rater x unit)
    one, at the size of (most votes on one unit) x units.
    """
    unit = votes.unit
    per_unit = np.bincount(unit) if unit.size and unit.min() >= 0 else None
    if per_unit is None or per_unit.size > 2 * unit.size or not per_unit.all():
        # Not already the dense indexes 0..n-1 that the project reader makes: number them.
        _, unit = np.unique(unit, return_inverse=True)
        unit = unit.reshape(-1)
        per_unit = np.bincount(unit)
    n_units = per_unit.size
    order = np.argsort(unit, kind="stable")
    sorted_unit = unit[order]
    slot = np.arange(sorted_unit.size) - (np.cumsum(per_unit) - per_unit)[sorted_unit]
    del sorted_unit
    depth = int(per_unit.max()) if per_unit.size else 0
    matrix = np.full((depth, n_units), np.nan)
    matrix[slot, unit[order]] = votes.outcome[order]
    return matrix
