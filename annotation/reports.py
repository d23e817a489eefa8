"""The agreement report: one JSON-serialisable dict per project, and a fixed-width text table.

::

    from annotation.reports import agreement_report, agreement_report_from_file, render_table

    report = agreement_report(project=project, bootstrap=1000, seed=0)
    print(render_table(report))
    json.dumps(report, allow_nan=False)  # always works: no NaN, no numpy types

    # A report on a judgement file, without creating a project (nothing is kept):
    report = agreement_report_from_file(path="testset-v1.json", format="pandalm")

The statistics are those of :mod:`annotation.agreement`, computed on the rows that
:mod:`annotation.agreement_data` reads; this module only chooses, summarises and formats
them. Its parts:

``counts``
    tasks in the project, *items* (tasks with a judgement), judgements, pair votes, *units*
    (judged response pairs: one per item in a pairwise project, C(K,2) per item in a ranking
    project) and annotators.
``pairwise``
    over the pair outcomes (+1 A preferred, 0 tie, -1 B preferred) of every unit: percent
    agreement with ties as a category and without ties (MT-Bench's convention), Fleiss'
    kappa, Krippendorff's alpha nominal and ordinal (B < tie < A), each with a bootstrap
    interval; Cohen's kappa of every pair of annotators sharing at least ``min_overlap``
    units.
``ranking``
    ranking projects only (``null`` for pairwise ones): Kendall's W and the mean Kendall
    tau-b per item, summarised by their mean over the items where they are defined (with a
    bootstrap interval) and median; percent agreement over the C(K,2) sub-pairs.
``annotators``
    per annotator: agreement with the leave-one-out plurality of the others, mean Cohen's
    kappa against peers, position bias (share of first-shown picks, exact binomial p),
    length bias (share of longer picks, p), gold accuracy, median time per judgement,
    judgement count, and ``flags``: ``low_agreement`` (leave-one-out agreement below
    ``low_agreement_below`` over at least ``min_overlap`` votes), ``position_bias``
    (p below ``position_bias_p``) and ``too_fast`` (median time below ``too_fast_ms``).
``contested``
    units whose most-voted outcome has less than ``contested_threshold`` of the votes
    (default: the project's ``agreement_threshold``) or shares the top with another
    outcome, among units with two or more votes; the ``contested_limit`` most contested
    (lowest majority share, then highest entropy) are listed.

Bootstrap. Intervals are percentile intervals from ``bootstrap`` resamples of the *items*
(tasks) with replacement, using one seeded ``numpy.random.Generator`` for every statistic
(the same resamples throughout). Resampling items rather than units keeps the C(K,2)
sub-pairs of one ranking together. Each statistic is a function of per-item sums (pairs
and agreeing pairs, Krippendorff's coincidence matrix, Fleiss' per-unit agreement ...), so
a resample is one weighted sum, not a recomputation; ``bootstrap=0`` leaves intervals out.

Undefined values. Where a statistic is undefined (no variation, no unit with two votes,
no timed judgement ...) the value is ``null`` and a ``reason`` (or ``ci_reason``) says
why. Floats are rounded to 4 decimals, p-values to 3 significant digits, times to 0.1 ms.

Scale. Everything is a fixed number of queries plus numpy work; the cost grows with the
votes, except the per-pair Cohen's kappas (sparse products over annotators x units) and
the rater x unit matrix behind them. The API runs it in the request: keep ``bootstrap``
moderate on very large projects.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotation.agreement import (
    AnnotatorStats,
    PairVotes,
    annotator_stats,
    distinct_index,
    fleiss_kappa,
    item_stats,
    krippendorff_alpha,
    outcome_code,
    percent_agreement,
    rank_agreement,
)
from annotation.agreement_data import (
    ProjectPairVotes,
    map_large_allocations,
    project_pair_votes,
    project_rankings,
    release_free_memory,
)
from annotation.importers import import_file
from annotation.models import MAX_RESPONSES_PER_TASK, Project, ProjectKind, Response, Task

REPORT_VERSION = 1

DEFAULT_BOOTSTRAP = 1000
DEFAULT_MIN_OVERLAP = 10
DEFAULT_CONTESTED_LIMIT = 20
DEFAULT_LOW_AGREEMENT_BELOW = 0.5
DEFAULT_POSITION_BIAS_P = 0.01
DEFAULT_TOO_FAST_MS = 3000.0
CONFIDENCE_LEVEL = 0.95

FLAGS = ("low_agreement", "position_bias", "too_fast")

# Formats whose items are always one pair; the others may hold K-way rankings.
PAIRWISE_FORMATS = frozenset({"pandalm", "mt-bench", "hh-rlhf"})

# At most this many cells in one bootstrap weight matrix (resamples x items).
_BOOTSTRAP_CELLS = 2_000_000

NO_JUDGEMENTS = "the project has no judgements"


# --- number formatting -------------------------------------------------------------------------


def _num(value: Any, digits: int = 4) -> float | None:
    """A finite float rounded to ``digits``, or None."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, digits)


def _p(value: Any) -> float | None:
    """A p-value to 3 significant digits (tiny p-values keep their magnitude), or None."""
    if value is None or not math.isfinite(float(value)):
        return None
    return float(f"{float(value):.3g}")


def _reason(value: Any, reason: str) -> str | None:
    """``reason`` when ``value`` is missing or not finite, else None."""
    if value is None or not math.isfinite(float(value)):
        return reason or "undefined"
    return None


# --- bootstrap over items from per-item sums ---------------------------------------------------


def _bootstrap_sums(per_item: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
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


def _interval(draws: np.ndarray | None, *, level: float) -> tuple[dict[str, Any] | None, str | None]:
    """Percentile interval of the finite draws, as ``({low, high, valid_resamples}, None)`` or ``(None, why)``."""
    if draws is None:
        return None, "bootstrap disabled (bootstrap=0)"
    valid = draws[np.isfinite(draws)]
    if valid.size == 0:
        return None, "undefined on every resample"
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(valid, [tail, 1.0 - tail])
    return {"low": _num(low), "high": _num(high), "valid_resamples": int(valid.size)}, None


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
_COLUMNS = 22
_UNIT_SLICE = 200_000


def _unit_sums(counts: np.ndarray) -> np.ndarray:
    """Per unit: the sufficient statistics of every pooled figure (columns as above, W/tau zero)."""
    counts = counts.astype(float)
    m = counts.sum(axis=1)
    out = np.zeros((counts.shape[0], _COLUMNS))
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


# --- the report ----------------------------------------------------------------------------------


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


def _statistic(value: float, reason: str, draws: np.ndarray | None, level: float, **extra: Any) -> dict[str, Any]:
    ci, ci_reason = _interval(draws, level=level) if _num(value) is not None else (None, "the estimate is undefined")
    return {"value": _num(value), "reason": _reason(value, reason), "ci": ci, "ci_reason": ci_reason, **extra}


def _position_reasons(votes: PairVotes, rater_index: np.ndarray, n_raters: int) -> np.ndarray:
    known = np.bincount(rater_index[votes.a_shown_first >= 0], minlength=n_raters)
    return np.where(
        known > 0,
        "only ties among the votes whose display order is known",
        "display order unknown (imported judgements were never displayed)",
    )


def _annotator_rows(
    data: ProjectPairVotes,
    stats: AnnotatorStats,
    *,
    min_overlap: int,
    low_agreement_below: float,
    position_bias_p: float,
    too_fast_ms: float,
) -> list[dict[str, Any]]:
    votes = data.votes
    _, rater_index = distinct_index(votes.rater)
    n_raters = stats.raters.size
    # Judgements per rater: each judgement once, whatever its number of pair votes.
    _, first_vote = np.unique(votes.judgement, return_index=True)
    judgements = np.bincount(rater_index[first_vote], minlength=n_raters)
    timed = np.bincount(rater_index[first_vote[np.isfinite(votes.time_ms[first_vote])]], minlength=n_raters)
    position_reasons = _position_reasons(votes, rater_index, n_raters)
    peers = (~np.isnan(stats.peer_kappa.kappa)).sum(axis=1)
    rows = []
    for i, rater in enumerate(stats.raters):
        loo, first_p, median = stats.loo_agreement[i], stats.first_shown_p[i], stats.median_time_ms[i]
        flags = []
        if stats.loo_n[i] >= min_overlap and loo < low_agreement_below:
            flags.append("low_agreement")
        if np.isfinite(first_p) and first_p < position_bias_p:
            flags.append("position_bias")
        if np.isfinite(median) and median < too_fast_ms:
            flags.append("too_fast")
        rows.append(
            {
                "id": int(rater),
                "username": data.usernames.get(int(rater), str(rater)),
                "judgements": int(judgements[i]),
                "pair_votes": int(stats.n_votes[i]),
                "loo_agreement": {
                    "value": _num(loo),
                    "n": int(stats.loo_n[i]),
                    "reason": _reason(loo, "no vote on a unit where the other annotators have a unique plurality"),
                },
                "mean_peer_kappa": {
                    "value": _num(stats.mean_peer_kappa[i]),
                    "peers": int(peers[i]),
                    "reason": _reason(
                        stats.mean_peer_kappa[i],
                        f"no peer with at least {min_overlap} shared units and variation in the outcomes",
                    ),
                },
                "position_bias": {
                    "first_shown_share": _num(stats.first_shown_share[i]),
                    "n": int(stats.first_shown_n[i]),
                    "p_value": _p(first_p),
                    "reason": _reason(stats.first_shown_share[i], str(position_reasons[i])),
                },
                "length_bias": {
                    "longer_share": _num(stats.longer_share[i]),
                    "n": int(stats.longer_n[i]),
                    "p_value": _p(stats.longer_p[i]),
                    "reason": _reason(
                        stats.longer_share[i],
                        "no non-tie vote on two responses of known, different lengths",
                    ),
                },
                "gold_accuracy": {
                    "value": _num(stats.gold_accuracy[i]),
                    "n": int(stats.gold_n[i]),
                    "reason": _reason(stats.gold_accuracy[i], "no vote on a gold task"),
                },
                "median_time_ms": {
                    "value": _num(median, 1),
                    "n": int(timed[i]),
                    "reason": _reason(median, "no judgement with a recorded time (imports carry none)"),
                },
                "flags": flags,
            }
        )
    return rows


def _cohen_pairs(data: ProjectPairVotes, stats: AnnotatorStats, *, min_overlap: int) -> dict[str, Any]:
    peer = stats.peer_kappa
    upper = np.triu(np.ones(peer.overlap.shape, dtype=bool), 1)
    enough = upper & (peer.overlap >= max(min_overlap, 1))
    pairs = []
    for i, j in zip(*np.nonzero(enough), strict=True):
        kappa = peer.kappa[i, j]
        pairs.append(
            {
                "annotators": sorted(
                    [
                        data.usernames.get(int(peer.raters[i]), str(peer.raters[i])),
                        data.usernames.get(int(peer.raters[j]), str(peer.raters[j])),
                    ]
                ),
                "kappa": _num(kappa),
                "shared_units": int(peer.overlap[i, j]),
                "reason": _reason(kappa, "no variation: both gave one and the same outcome on every shared unit"),
            }
        )
    pairs.sort(key=lambda pair: pair["annotators"])
    values = np.array([pair["kappa"] for pair in pairs if pair["kappa"] is not None], dtype=float)
    return {
        "min_overlap": min_overlap,
        "pairs": pairs,
        "pairs_below_min_overlap": int((upper & (peer.overlap > 0) & ~enough).sum()),
        "summary": {
            "n": int(values.size),
            "mean": _num(values.mean()) if values.size else None,
            "min": _num(values.min()) if values.size else None,
            "max": _num(values.max()) if values.size else None,
        },
    }


def _contested(data: ProjectPairVotes, *, threshold: float, limit: int) -> dict[str, Any]:
    stats = item_stats(data.votes, threshold=threshold)
    candidates = np.flatnonzero(stats.contested & (stats.n_votes >= 2))
    order = np.lexsort((stats.units[candidates], -stats.entropy_bits[candidates], stats.majority_share[candidates]))
    shown = candidates[order][:limit]
    keys = data.units[stats.units[shown]]
    external = dict(Task.objects.filter(pk__in=[int(k) for k in keys[:, 0]]).values_list("pk", "prompt__external_id"))
    sources = dict(Response.objects.filter(pk__in=[int(k) for k in keys[:, 1:].ravel()]).values_list("pk", "source"))
    items = []
    for row, (task_id, response_a, response_b) in zip(shown, keys, strict=True):
        against, tie, towards = (int(c) for c in stats.counts[row])
        items.append(
            {
                "task_id": int(task_id),
                "external_id": external.get(int(task_id)),
                "response_a": int(response_a),
                "response_b": int(response_b),
                "sources": [sources.get(int(response_a)) or None, sources.get(int(response_b)) or None],
                "votes": {"a": towards, "tie": tie, "b": against},
                "n_votes": int(stats.n_votes[row]),
                "majority_share": _num(stats.majority_share[row]),
                "entropy_bits": _num(stats.entropy_bits[row]),
            }
        )
    return {
        "threshold": threshold,
        "units_with_overlap": int((stats.n_votes >= 2).sum()),
        "total": int(candidates.size),
        "limit": limit,
        "items": items,
    }


def _check_options(
    bootstrap: int,
    min_overlap: int,
    contested_limit: int,
    threshold: float | None,
    low_agreement_below: float,
    position_bias_p: float,
    too_fast_ms: float,
) -> None:
    if not 0.0 <= low_agreement_below <= 1.0:
        raise ValueError("low_agreement_below must be between 0 and 1")
    if not 0.0 < position_bias_p <= 1.0:
        raise ValueError("position_bias_p must be above 0 and at most 1")
    if not too_fast_ms >= 0.0:
        raise ValueError("too_fast_ms must not be negative")
    if bootstrap < 0:
        raise ValueError("bootstrap must be 0 (no intervals) or more")
    if min_overlap < 1:
        raise ValueError("min_overlap must be at least 1")
    if contested_limit < 0:
        raise ValueError("contested_limit must not be negative")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError("contested_threshold must be between 0 and 1")


def agreement_report(
    *,
    project: Project,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    min_overlap: int = DEFAULT_MIN_OVERLAP,
    contested_threshold: float | None = None,
    contested_limit: int = DEFAULT_CONTESTED_LIMIT,
    low_agreement_below: float = DEFAULT_LOW_AGREEMENT_BELOW,
    position_bias_p: float = DEFAULT_POSITION_BIAS_P,
    too_fast_ms: float = DEFAULT_TOO_FAST_MS,
) -> dict[str, Any]:
    """The agreement report of ``project`` as a JSON-serialisable dict (see the module docstring).

    ``contested_threshold`` defaults to the project's ``agreement_threshold``. ``bootstrap``
    is the number of item resamples (0: no intervals); ``seed`` makes them reproducible.
    """
    _check_options(
        bootstrap,
        min_overlap,
        contested_limit,
        contested_threshold,
        low_agreement_below,
        position_bias_p,
        too_fast_ms,
    )
    threshold = float(project.agreement_threshold if contested_threshold is None else contested_threshold)
    level = CONFIDENCE_LEVEL
    is_ranking = project.kind == ProjectKind.RANKING
    # Rankings first, and only their per-item results kept: their temporaries and the
    # votes' arrays are then never in memory at the same time.
    map_large_allocations()
    ranked = rank_agreement(project_rankings(project).data) if is_ranking else None
    release_free_memory()
    # Narrow dtypes (int32 ids, int8 outcomes): every use below counts, compares or indexes.
    data = project_pair_votes(project, compact=True)
    votes = data.votes

    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "generated_at": timezone.now().isoformat(),
        "project": {
            "id": project.pk,
            "name": project.name,
            "kind": project.kind,
            "allow_ties": project.allow_ties,
            "temporary": False,
        },
        "parameters": {
            "bootstrap": bootstrap,
            "seed": seed,
            "confidence_level": level,
            "resampling_unit": "item",
            "min_overlap": min_overlap,
            "contested_threshold": threshold,
            "contested_limit": contested_limit,
            "low_agreement_below": low_agreement_below,
            "position_bias_p": position_bias_p,
            "too_fast_ms": too_fast_ms,
        },
    }

    unit_task = data.units[:, 0] if len(votes) else np.zeros(0, dtype=np.int64)
    items, item_index_of_unit = np.unique(unit_task, return_inverse=True)
    _, first_vote = np.unique(votes.judgement, return_index=True)
    judgement_task = unit_task[votes.unit[first_vote]] if len(votes) else np.zeros(0, dtype=np.int64)
    judgements_per_item = np.bincount(np.searchsorted(items, judgement_task), minlength=items.size)
    unit_counts = np.bincount(
        outcome_code(votes.unit, votes.outcome, len(data.units)), minlength=len(data.units) * 3
    ).reshape(-1, 3)
    report["counts"] = {
        "tasks": Task.objects.filter(project=project).count(),
        "items": int(items.size),
        "items_with_overlap": int((judgements_per_item >= 2).sum()),
        "judgements": int(first_vote.size),
        "pair_votes": len(votes),
        "units": len(data.units),
        "units_with_overlap": int((unit_counts.sum(axis=1) >= 2).sum()),
        "annotators": len(data.usernames),
    }

    if len(votes) == 0:
        empty = {"value": None, "reason": NO_JUDGEMENTS, "ci": None, "ci_reason": "the estimate is undefined"}
        report["pairwise"] = {
            "percent_agreement": {**empty, "agreeing_pairs": 0, "pairs": 0},
            "percent_agreement_no_ties": {**empty, "agreeing_pairs": 0, "pairs": 0},
            "fleiss_kappa": {**empty, "n_units": 0},
            "krippendorff_alpha": {"nominal": {**empty, "n_units": 0}, "ordinal": {**empty, "n_units": 0}},
            "cohen_kappa": {
                "min_overlap": min_overlap,
                "pairs": [],
                "pairs_below_min_overlap": 0,
                "summary": {"n": 0, "mean": None, "min": None, "max": None},
            },
        }
        report["ranking"] = _empty_ranking() if is_ranking else None
        report["annotators"] = []
        report["contested"] = {
            "threshold": threshold,
            "units_with_overlap": 0,
            "total": 0,
            "limit": contested_limit,
            "items": [],
        }
        return report

    # Per-item sufficient statistics, for the bootstrap.
    per_item = np.zeros((items.size, _COLUMNS))
    # In slices of units: the per-unit statistics are 22 floats a unit (260 MB at 1.5M units).
    # Units are sorted by item, and a slice ends at an item's end, so each item is summed
    # in one slice, in unit order: the same floats as one pass.
    n_units, start = unit_counts.shape[0], 0
    while start < n_units:
        stop = min(start + _UNIT_SLICE, n_units)
        if stop < n_units:
            boundary = int(np.searchsorted(item_index_of_unit, item_index_of_unit[stop], side="left"))
            stop = (
                boundary
                if boundary > start
                else int(np.searchsorted(item_index_of_unit, item_index_of_unit[stop], side="right"))
            )
        sums = _unit_sums(unit_counts[start:stop])
        index = item_index_of_unit[start:stop]
        for column in range(_COLUMNS):
            per_item[:, column] += np.bincount(index, sums[:, column], minlength=items.size)
        del sums
        start = stop
    if ranked is not None:
        where = np.searchsorted(items, ranked.items)
        found = (where < items.size) & (items[np.minimum(where, items.size - 1)] == ranked.items)
        for column, values in ((18, ranked.kendall_w), (20, ranked.mean_tau_b)):
            defined = found & np.isfinite(values)
            per_item[where[defined], column] = values[defined]
            per_item[where[defined], column + 1] = 1.0
    draws = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = pooled_statistics(_bootstrap_sums(per_item, bootstrap, rng))

    def draw(name: str) -> np.ndarray | None:
        return None if draws is None else draws[name]

    release_free_memory()  # the per-unit temporaries above, before the next large ones
    compact = compact_ratings(votes)
    with_ties = percent_agreement(compact)
    without_ties = percent_agreement(compact, exclude=0)
    fleiss = fleiss_kappa(compact)
    alphas = {level_name: krippendorff_alpha(compact, level_name) for level_name in ("nominal", "ordinal")}
    del compact
    release_free_memory()
    stats = annotator_stats(votes, min_overlap=min_overlap)
    report["pairwise"] = {
        "percent_agreement": _statistic(
            with_ties.value,
            with_ties.reason,
            draw("percent_agreement"),
            level,
            agreeing_pairs=with_ties.agreeing_pairs,
            pairs=with_ties.pairs,
        ),
        "percent_agreement_no_ties": _statistic(
            without_ties.value,
            without_ties.reason or "no pair of non-tie votes on one unit",
            draw("percent_agreement_no_ties"),
            level,
            agreeing_pairs=without_ties.agreeing_pairs,
            pairs=without_ties.pairs,
        ),
        "fleiss_kappa": _statistic(fleiss.value, fleiss.reason, draw("fleiss_kappa"), level, n_units=fleiss.n_units),
        "krippendorff_alpha": {
            name: _statistic(
                alpha.value,
                alpha.reason,
                draw(f"alpha_{name}"),
                level,
                n_units=alpha.n_units,
                n_values=alpha.n_values,
            )
            for name, alpha in alphas.items()
        },
        "cohen_kappa": _cohen_pairs(data, stats, min_overlap=min_overlap),
    }
    report["ranking"] = _ranking_section(ranked, draw, level) if ranked is not None else None
    report["annotators"] = _annotator_rows(
        data,
        stats,
        min_overlap=min_overlap,
        low_agreement_below=low_agreement_below,
        position_bias_p=position_bias_p,
        too_fast_ms=too_fast_ms,
    )
    report["annotators"].sort(key=lambda row: row["username"])
    report["contested"] = _contested(data, threshold=threshold, limit=contested_limit)
    return report


def _empty_ranking() -> dict[str, Any]:
    empty = {"value": None, "reason": NO_JUDGEMENTS, "ci": None, "ci_reason": "the estimate is undefined"}
    return {
        "items": 0,
        "items_with_overlap": 0,
        "kendall_w": {**empty, "median": None, "n_items": 0},
        "mean_tau_b": {**empty, "median": None, "n_items": 0},
        "subpair_agreement": {"value": None, "reason": NO_JUDGEMENTS, "agreeing_pairs": 0, "pairs": 0},
        "subpair_agreement_no_ties": {"value": None, "reason": NO_JUDGEMENTS, "agreeing_pairs": 0, "pairs": 0},
    }


def _ranking_section(ranked: Any, draw: Any, level: float) -> dict[str, Any]:
    def summary(values: np.ndarray, name: str, reason: str) -> dict[str, Any]:
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else float("nan")
        return _statistic(
            mean,
            reason,
            draw(name),
            level,
            median=_num(np.median(finite)) if finite.size else None,
            n_items=int(finite.size),
        )

    def subpairs(agreement: Any, reason: str) -> dict[str, Any]:
        return {
            "value": _num(agreement.value),
            "reason": _reason(agreement.value, agreement.reason or reason),
            "agreeing_pairs": agreement.agreeing_pairs,
            "pairs": agreement.pairs,
        }

    return {
        "items": int(ranked.items.size),
        "items_with_overlap": int((ranked.n_raters >= 2).sum()),
        "kendall_w": summary(ranked.kendall_w, "kendall_w", "no item with two rankings that do not tie everything"),
        "mean_tau_b": summary(ranked.mean_tau_b, "mean_tau_b", "no pair of rankings of one item with a defined tau-b"),
        "subpair_agreement": subpairs(ranked.subpairs, "no sub-pair with two votes"),
        "subpair_agreement_no_ties": subpairs(ranked.subpairs_no_ties, "no sub-pair with two non-tie votes"),
    }


# --- a report on a file, without keeping anything ---------------------------------------------


class _Discard(Exception):
    """Raised to leave the temporary project's transaction; never escapes."""


def agreement_report_from_file(
    *,
    path: Path | str,
    format: str,
    options: dict[str, Any] | None = None,
    kind: str | None = None,
    **report_options: Any,
) -> dict[str, Any]:
    """The agreement report of a judgement file (``pandalm``, ``mt-bench``, ``jsonl`` ...), keeping nothing.

    The file is imported with :func:`annotation.importers.import_file` into a temporary
    project created inside ``transaction.atomic()``; the report is computed from those
    rows, exactly as for a real project, and the transaction is then rolled back: no
    project, task, judgement or annotator account remains. (On PostgreSQL the id
    sequences are not rolled back, so some ids are used up.) The ids in the report
    (``project.id`` is null; task, response and user ids) name rows that no longer exist:
    use ``contested.items[].external_id`` (the prompt's id in the file) and the usernames.

    The temporary project allows ties, and is pairwise for the formats that only hold
    pairs (``pandalm``, ``mt-bench``, ``hh-rlhf``) and a ranking project taking up to
    ``MAX_RESPONSES_PER_TASK`` responses otherwise; ``kind`` overrides that. A refused
    import raises :class:`annotation.importers.ImportFailed`. Path options (``mt-bench``'s
    ``questions``, ``answers``) are read from this machine's file system, which is why this
    is offered on the command line and not over the API.
    """
    path = Path(path)
    if kind is None:
        kind = ProjectKind.PAIRWISE if format in PAIRWISE_FORMATS else ProjectKind.RANKING
    if kind not in ProjectKind.values:
        raise ValueError(f"kind must be one of {', '.join(ProjectKind.values)}")
    result: dict[str, Any] = {}
    try:
        with transaction.atomic():
            project = Project.objects.create(
                name=f"agreement report: {path.name}"[:200],
                kind=kind,
                responses_per_task=2 if kind == ProjectKind.PAIRWISE else MAX_RESPONSES_PER_TASK,
                annotations_per_task=1,
                allow_ties=True,
            )
            summary = import_file(project=project, path=path, format=format, options=options)
            result = agreement_report(project=project, **report_options)
            # Leaving the block by an exception rolls back everything the import wrote.
            raise _Discard
    except _Discard:
        pass
    result["project"] = {
        "id": None,
        "name": path.name,
        "kind": kind,
        "allow_ties": True,
        "temporary": True,
    }
    result["source"] = {
        "file": path.name,
        "format": format,
        "options": dict(options or {}),
        "imported": {
            "prompts": summary.prompts,
            "tasks": summary.tasks,
            "judgements": summary.judgements,
            "skipped": len(summary.skipped),
        },
        "skipped": summary.skipped[:20],
        "notes": list(summary.notes),
        "persisted": False,
    }
    return result


# --- the text table ------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _ci(stat: dict[str, Any]) -> str:
    ci = stat.get("ci")
    if ci is None:
        return "-"
    return f"[{_fmt(ci['low'])}, {_fmt(ci['high'])}]"


def _table(header: list[str], rows: Iterable[list[str]], *, right: Iterable[int] = ()) -> list[str]:
    rows = [header, *rows]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    right = set(right)
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.rjust(widths[c]) if c in right else cell.ljust(widths[c]) for c, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
        if number == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def render_table(report: dict[str, Any], *, max_pairs: int = 30) -> str:
    """A fixed-width plain-text rendering of :func:`agreement_report`'s result."""
    project, counts, parameters = report["project"], report["counts"], report["parameters"]
    source = report.get("source")
    title = f"Agreement report: {project['name']}"
    if source is not None:
        title += f" (file, format {source['format']}, not saved)"
    else:
        title += f" (project {project['id']})"
    lines = [title, "=" * len(title)]
    lines.append(
        f"kind {project['kind']}; items {counts['items']} ({counts['items_with_overlap']} with 2+ judgements) "
        f"of {counts['tasks']} tasks; judgements {counts['judgements']}; annotators {counts['annotators']}; "
        f"pair votes {counts['pair_votes']} on {counts['units']} response pairs"
    )
    if source is not None and (source["imported"]["skipped"] or source["notes"]):
        lines.append(f"import: {source['imported']['skipped']} record(s) skipped; " + "; ".join(source["notes"]))
    if parameters["bootstrap"]:
        lines.append(
            f"intervals: {int(parameters['confidence_level'] * 100)}% percentile bootstrap over items, "
            f"{parameters['bootstrap']} resamples, seed {parameters['seed']}"
        )
    else:
        lines.append("intervals: none (bootstrap=0)")

    pairwise = report["pairwise"]
    lines += ["", "Pairwise outcomes (A / tie / B per response pair)"]
    rows = []
    notes = []
    for label, stat, n in (
        ("percent agreement, ties count", pairwise["percent_agreement"], "pairs"),
        ("percent agreement, without ties", pairwise["percent_agreement_no_ties"], "pairs"),
        ("Fleiss' kappa", pairwise["fleiss_kappa"], "n_units"),
        ("Krippendorff's alpha, nominal", pairwise["krippendorff_alpha"]["nominal"], "n_units"),
        ("Krippendorff's alpha, ordinal", pairwise["krippendorff_alpha"]["ordinal"], "n_units"),
    ):
        unit = "pairs of votes" if n == "pairs" else "units"
        rows.append([label, _fmt(stat["value"]), _ci(stat), f"{stat[n]} {unit}"])
        if stat["reason"]:
            notes.append(f"  {label}: {stat['reason']}")
    lines += _table(["statistic", "value", "95% CI", "over"], rows, right=[1])
    lines += notes

    cohen = pairwise["cohen_kappa"]
    lines += ["", f"Cohen's kappa per annotator pair (at least {cohen['min_overlap']} shared response pairs)"]
    if cohen["pairs"]:
        shown = sorted(cohen["pairs"], key=lambda pair: -pair["shared_units"])[:max_pairs]
        shown.sort(key=lambda pair: pair["annotators"])
        lines += _table(
            ["annotator", "annotator", "kappa", "shared"],
            ([*pair["annotators"], _fmt(pair["kappa"]), str(pair["shared_units"])] for pair in shown),
            right=[2, 3],
        )
        if len(cohen["pairs"]) > len(shown):
            lines.append(f"  ... {len(cohen['pairs']) - len(shown)} more pairs (see the JSON)")
        summary = cohen["summary"]
        lines.append(
            f"  {summary['n']} defined: mean {_fmt(summary['mean'])}, "
            f"min {_fmt(summary['min'])}, max {_fmt(summary['max'])}"
        )
    else:
        lines.append("  none")
    if cohen["pairs_below_min_overlap"]:
        lines.append(f"  {cohen['pairs_below_min_overlap']} pair(s) left out: fewer shared response pairs")

    ranking = report.get("ranking")
    if ranking is not None:
        lines += ["", f"Rankings ({ranking['items']} items, {ranking['items_with_overlap']} with 2+ rankings)"]
        rows = []
        for label, key in (("Kendall's W, mean over items", "kendall_w"), ("Kendall's tau-b, mean", "mean_tau_b")):
            stat = ranking[key]
            rows.append(
                [label, _fmt(stat["value"]), _ci(stat), f"median {_fmt(stat['median'])}", f"{stat['n_items']} items"]
            )
        for label, key in (
            ("sub-pair agreement, ties count", "subpair_agreement"),
            ("sub-pair agreement, without ties", "subpair_agreement_no_ties"),
        ):
            stat = ranking[key]
            rows.append([label, _fmt(stat["value"]), "", "", f"{stat['pairs']} pairs of votes"])
        lines += _table(["statistic", "value", "95% CI", "", "over"], rows, right=[1])

    lines += ["", "Annotators"]
    if report["annotators"]:
        rows = []
        for row in report["annotators"]:
            time = row["median_time_ms"]["value"]
            rows.append(
                [
                    row["username"],
                    str(row["judgements"]),
                    _fmt(row["loo_agreement"]["value"]),
                    _fmt(row["mean_peer_kappa"]["value"]),
                    _fmt(row["position_bias"]["first_shown_share"], 2),
                    _fmt_p(row["position_bias"]["p_value"]),
                    _fmt(row["length_bias"]["longer_share"], 2),
                    _fmt(row["gold_accuracy"]["value"], 2),
                    "-" if time is None else f"{time / 1000:.1f}",
                    ",".join(row["flags"]),
                ]
            )
        lines += _table(
            ["annotator", "judg.", "LOO agr", "peer k", "first", "p", "longer", "gold", "median s", "flags"],
            rows,
            right=range(1, 9),
        )
        lines.append("  LOO agr: agreement with the other annotators' plurality; peer k: mean Cohen's kappa vs peers;")
        lines.append("  first/longer: share of picks of the first-shown / longer response (p: binomial test vs 0.5);")
        lines.append(
            f"  flags: low_agreement (LOO agr < {parameters['low_agreement_below']}), "
            f"position_bias (p < {parameters['position_bias_p']}), too_fast (median < {parameters['too_fast_ms'] / 1000:g} s)"
        )
    else:
        lines.append("  none")

    contested = report["contested"]
    lines += [
        "",
        f"Contested response pairs (majority share < {contested['threshold']:g} or no unique majority): "
        f"{contested['total']} of {contested['units_with_overlap']} with 2+ votes",
    ]
    if contested["items"]:
        lines += _table(
            ["task", "external id", "A vs B", "A/tie/B", "majority", "entropy"],
            (
                [
                    str(item["task_id"]) if source is None else "-",
                    item["external_id"] or "-",
                    " vs ".join(name or "?" for name in item["sources"]) if any(item["sources"]) else "-",
                    f"{item['votes']['a']}/{item['votes']['tie']}/{item['votes']['b']}",
                    _fmt(item["majority_share"], 2),
                    _fmt(item["entropy_bits"], 2),
                ]
                for item in contested["items"]
            ),
            right=[0, 4, 5],
        )
        if contested["total"] > len(contested["items"]):
            lines.append(f"  ... {contested['total'] - len(contested['items'])} more (raise contested_limit)")
    return "\n".join(lines) + "\n"
