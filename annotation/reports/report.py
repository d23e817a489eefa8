"""The agreement report of a project: one JSON-serialisable dict.

::

    from annotation.reports import agreement_report

    report = agreement_report(project=project, bootstrap=1000, seed=0)
    json.dumps(report, allow_nan=False)  # always works: no NaN, no numpy types

The statistics are those of :mod:`annotation.agreement`, computed on the rows that
:mod:`annotation.agreement_data` reads, with their intervals from the per-item sums of
:mod:`annotation.reports.figures`; this module only chooses, summarises and formats
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
``verdicts``
    the "both are bad" answers (``Judgement.both_bad``), reported on their own: whether
    the project allows them, how many judgements say so and their share of all judgements.
    Each one is a full tie, so every figure above already counts it as a tie (A / tie / B);
    each annotator row carries its own ``both_bad`` count and share as well.
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

Figures on too little data. Every pooled figure of ``pairwise`` and ``ranking`` carries
``caution``: ``null``, or, when it is defined but rests on fewer than ``FEW_UNITS_BELOW``
(30) units (``n_units``: the response pairs with two or more votes it uses) or items
(``n_items``, for Kendall's W and tau-b), a sentence such as ``"too few units (n=4)"``.
A kappa of -0.23 on four units says next to nothing; readers (the dashboard, the text
table) show such figures muted, with the caution beside them.

Scale. Everything is a fixed number of queries plus numpy work; the cost grows with the
votes, except the per-pair Cohen's kappas (sparse products over annotators x units) and
the rater x unit matrix behind them. The API runs it in the request: keep ``bootstrap``
moderate on very large projects.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from django.db.models import Count, Q
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
from annotation.models import Judgement, Project, ProjectKind, Response, Task
from annotation.reports.figures import COLUMNS, bootstrap_sums, compact_ratings, pooled_statistics, unit_sums

REPORT_VERSION = 1

DEFAULT_BOOTSTRAP = 1000
DEFAULT_MIN_OVERLAP = 10
DEFAULT_CONTESTED_LIMIT = 20
DEFAULT_LOW_AGREEMENT_BELOW = 0.5
DEFAULT_POSITION_BIAS_P = 0.01
DEFAULT_TOO_FAST_MS = 3000.0
CONFIDENCE_LEVEL = 0.95

FLAGS = ("low_agreement", "position_bias", "too_fast")

FEW_UNITS_BELOW = 30
"""A figure on fewer units (or items) than this gets a ``caution``: its interval is too wide to read it alone."""

NO_JUDGEMENTS = "the project has no judgements"
_EMPTY_STATISTIC = {
    "value": None,
    "reason": NO_JUDGEMENTS,
    "ci": None,
    "ci_reason": "the estimate is undefined",
    "caution": None,
}

# Units per slice of the per-unit statistics (22 floats a unit), to bound their memory.
_UNIT_SLICE = 200_000


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


# --- the report ----------------------------------------------------------------------------------


def _caution(value: Any, n: int, noun: str) -> str | None:
    """``"too few units (n=4)"`` for a defined figure on fewer than FEW_UNITS_BELOW ``noun``, else None."""
    if _num(value) is None or n >= FEW_UNITS_BELOW:
        return None
    return f"too few {noun} (n={n})"


def _statistic(
    value: float, reason: str, draws: np.ndarray | None, level: float, *, basis: tuple[int, str], **extra: Any
) -> dict[str, Any]:
    """One figure; ``basis`` is (how many, of what) it rests on, for its ``caution``."""
    ci, ci_reason = _interval(draws, level=level) if _num(value) is not None else (None, "the estimate is undefined")
    return {
        "value": _num(value),
        "reason": _reason(value, reason),
        "ci": ci,
        "ci_reason": ci_reason,
        "caution": _caution(value, *basis),
        **extra,
    }


def _both_bad_counts(project: Project) -> dict[int, tuple[int, int]]:
    """Per annotator id: (judgements, "both are bad" judgements) in ``project``; one grouped query."""
    rows = (
        Judgement.objects.filter(task__project=project)
        .order_by()
        .values("annotator_id")
        .annotate(n=Count("id"), bad=Count("id", filter=Q(both_bad=True)))
        .values_list("annotator_id", "n", "bad")
    )
    return {annotator: (n, bad) for annotator, n, bad in rows}


def _share(part: int, whole: int) -> float | None:
    return _num(part / whole) if whole else None


def _verdicts(project: Project, counts: dict[int, tuple[int, int]]) -> dict[str, Any]:
    judgements = sum(n for n, _ in counts.values())
    bad = sum(bad for _, bad in counts.values())
    return {
        "allow_both_bad": project.allow_both_bad,
        "both_bad": {
            "judgements": bad,
            "share": _share(bad, judgements),
            "reason": None if judgements else NO_JUDGEMENTS,
        },
    }


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
    both_bad: dict[int, tuple[int, int]],
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
                "both_bad": {
                    "n": both_bad.get(int(rater), (0, 0))[1],
                    "share": _share(both_bad.get(int(rater), (0, 0))[1], int(judgements[i])),
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
            "few_units_below": FEW_UNITS_BELOW,
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
    both_bad = _both_bad_counts(project)
    report["verdicts"] = _verdicts(project, both_bad)

    if len(votes) == 0:
        empty = _EMPTY_STATISTIC
        report["pairwise"] = {
            "percent_agreement": {**empty, "agreeing_pairs": 0, "pairs": 0, "n_units": 0},
            "percent_agreement_no_ties": {**empty, "agreeing_pairs": 0, "pairs": 0, "n_units": 0},
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
    per_item = np.zeros((items.size, COLUMNS))
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
        sums = unit_sums(unit_counts[start:stop])
        index = item_index_of_unit[start:stop]
        for column in range(COLUMNS):
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
        draws = pooled_statistics(bootstrap_sums(per_item, bootstrap, rng))

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
    # Units with at least one pair of ratings: what each percent agreement rests on.
    with_ties_units = int(np.count_nonzero(with_ties.unit_pairs))
    without_ties_units = int(np.count_nonzero(without_ties.unit_pairs))
    report["pairwise"] = {
        "percent_agreement": _statistic(
            with_ties.value,
            with_ties.reason,
            draw("percent_agreement"),
            level,
            basis=(with_ties_units, "units"),
            agreeing_pairs=with_ties.agreeing_pairs,
            pairs=with_ties.pairs,
            n_units=with_ties_units,
        ),
        "percent_agreement_no_ties": _statistic(
            without_ties.value,
            without_ties.reason or "no pair of non-tie votes on one unit",
            draw("percent_agreement_no_ties"),
            level,
            basis=(without_ties_units, "units"),
            agreeing_pairs=without_ties.agreeing_pairs,
            pairs=without_ties.pairs,
            n_units=without_ties_units,
        ),
        "fleiss_kappa": _statistic(
            fleiss.value,
            fleiss.reason,
            draw("fleiss_kappa"),
            level,
            basis=(fleiss.n_units, "units"),
            n_units=fleiss.n_units,
        ),
        "krippendorff_alpha": {
            name: _statistic(
                alpha.value,
                alpha.reason,
                draw(f"alpha_{name}"),
                level,
                basis=(alpha.n_units, "units"),
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
        both_bad=both_bad,
    )
    report["annotators"].sort(key=lambda row: row["username"])
    report["contested"] = _contested(data, threshold=threshold, limit=contested_limit)
    return report


def _empty_ranking() -> dict[str, Any]:
    empty = _EMPTY_STATISTIC
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
            basis=(int(finite.size), "items"),
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
