"""Agreement over time: the pooled figures recomputed as the judgements came in.

::

    from annotation.trends import agreement_trend

    trend = agreement_trend(project=project, by="count", points=20)
    trend["points"][-1]["percent_agreement"]  # equals the report's value on all judgements

Each point of the trend is **cumulative**: the statistics of every judgement submitted up
to that point, so the last point is the agreement report's figure on the whole project and
the curve shows whether agreement settles, drifts or drops as annotators (and guidelines)
change. Judgements are ordered by their submission time (``Judgement.created_at``, ties by
id). The checkpoints are either

* ``by="count"``: after each of ``points`` evenly spaced judgement counts (ceil(k * J / N)
  for k = 1..N, duplicates dropped); it works for imported data too, whose judgements all
  carry the import's time. Agreement needs a response pair with two votes: when the first
  of those counts comes before the judgement that gave one its second vote
  (``first_overlap``), the counts are spaced over the judgements from there on instead
  (s + ceil(k * (J - s) / N), s = first_overlap - 1, given as ``counts_from``; 0
  otherwise), so that a project whose overlap began late (211 imported single rankings,
  then four judgements by two people) still gets a curve rather than one point at the end;
* ``by="day"`` / ``by="week"``: at the end of each calendar day / ISO week (in the
  server's time zone) in which a judgement was submitted; when there are more than
  ``points`` such periods, ``points`` of them are kept, evenly spaced, always the last one.

Each point also counts its ``units_with_overlap`` (response pairs with two or more votes,
what the figures rest on); ``few_units_below`` is the report's threshold under which a
figure is marked as resting on too little data.

The figures are :mod:`annotation.agreement`'s: percent agreement with ties as a category
and without ties (MT-Bench), Fleiss' kappa, Krippendorff's alpha nominal and ordinal over the
pair outcomes (+1 / 0 / -1) and, for ranking projects, the mean of Kendall's W and of the
mean tau-b over the items where they are defined. Undefined values are ``None``.

The split of the work: :func:`cumulative_agreement` is pure numpy (votes, an order, the
cut-offs); :func:`agreement_trend` reads the rows with :mod:`annotation.agreement_data`
plus one query for the submission times. The cost is one pass of the pooled statistics
per point (a few numpy reductions over the votes of that point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from django.utils import timezone

from annotation.agreement import (
    PairVotes,
    RankingData,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
    rank_agreement,
)
from annotation.agreement_data import ProjectPairVotes, project_pair_votes, project_rankings
from annotation.models import Judgement, Project, ProjectKind
from annotation.reports.report import FEW_UNITS_BELOW

TrendBy = Literal["count", "day", "week"]
TREND_BY: tuple[str, ...] = ("count", "day", "week")
DEFAULT_POINTS = 20
MAX_POINTS = 200

STATISTICS: tuple[str, ...] = (
    "percent_agreement",
    "percent_agreement_no_ties",
    "fleiss_kappa",
    "alpha_nominal",
    "alpha_ordinal",
)
RANKING_STATISTICS: tuple[str, ...] = ("kendall_w", "mean_tau_b")

LABELS: dict[str, str] = {
    "percent_agreement": "Percent agreement (ties count)",
    "percent_agreement_no_ties": "Percent agreement (without ties)",
    "fleiss_kappa": "Fleiss' kappa",
    "alpha_nominal": "Krippendorff's alpha (nominal)",
    "alpha_ordinal": "Krippendorff's alpha (ordinal)",
    "kendall_w": "Kendall's W (mean over items)",
    "mean_tau_b": "Kendall's tau-b (mean over items)",
}


def _value(value: float) -> float | None:
    return round(float(value), 4) if value is not None and math.isfinite(float(value)) else None


def compact_counts(counts: np.ndarray) -> np.ndarray:
    """A (slot x unit) ratings matrix from per-unit outcome counts (columns: -1, 0, +1).

    Percent agreement, Fleiss' kappa and Krippendorff's alpha depend only on how many
    votes of each outcome a unit has, not on who cast them, so this small matrix gives
    the same values as the (rater x unit) one.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    total = counts.sum(axis=1)
    depth = int(total.max()) if total.size else 0
    slot = np.arange(depth)[:, None]
    below, tie = counts[:, 0][None, :], (counts[:, 0] + counts[:, 1])[None, :]
    matrix = np.where(slot < below, -1.0, np.where(slot < tie, 0.0, 1.0))
    matrix[slot >= total[None, :]] = np.nan
    return matrix


def pooled_from_counts(counts: np.ndarray) -> dict[str, float | None]:
    """The pooled statistics from per-unit outcome counts (columns -1, 0, +1; empty rows allowed)."""
    counts = counts[counts.sum(axis=1) > 0]
    if counts.shape[0] == 0:
        return dict.fromkeys(STATISTICS)
    matrix = compact_counts(counts)
    return {
        "percent_agreement": _value(percent_agreement(matrix).value),
        "percent_agreement_no_ties": _value(percent_agreement(matrix, exclude=0).value),
        "fleiss_kappa": _value(fleiss_kappa(matrix).value),
        "alpha_nominal": _value(krippendorff_alpha(matrix, "nominal").value),
        "alpha_ordinal": _value(krippendorff_alpha(matrix, "ordinal").value),
    }


def pooled_point(votes: PairVotes, mask: np.ndarray) -> dict[str, float | None]:
    """The pooled statistics of the votes selected by ``mask``."""
    unit, outcome = votes.unit[mask], votes.outcome[mask]
    if unit.size == 0:
        return dict.fromkeys(STATISTICS)
    _, index = np.unique(unit, return_inverse=True)
    counts = np.bincount(index * 3 + outcome + 1, minlength=(int(index.max()) + 1) * 3).reshape(-1, 3)
    return pooled_from_counts(counts)


def ranking_point(rankings: RankingData, mask: np.ndarray) -> dict[str, float | None]:
    """Mean Kendall's W and mean tau-b over the items (where defined) of the selected rankings."""
    if not mask.any():
        return dict.fromkeys(RANKING_STATISTICS)
    ranked = rank_agreement(
        RankingData(item=rankings.item[mask], rater=rankings.rater[mask], ranks=rankings.ranks[mask])
    )
    out: dict[str, float | None] = {}
    for name, values in (("kendall_w", ranked.kendall_w), ("mean_tau_b", ranked.mean_tau_b)):
        finite = values[np.isfinite(values)]
        out[name] = _value(finite.mean()) if finite.size else None
    return out


@dataclass(frozen=True)
class TrendInput:
    """Everything :func:`cumulative_agreement` needs; ``*_rank`` are submission ranks (0 = first judgement)."""

    votes: PairVotes
    vote_rank: np.ndarray
    """Submission rank of each vote's judgement."""
    rankings: RankingData | None = None
    ranking_rank: np.ndarray | None = None
    """Submission rank of each ranking row's judgement."""


def cumulative_agreement(data: TrendInput, cutoffs: list[int]) -> list[dict[str, Any]]:
    """One point per cut-off c: the statistics of the judgements of rank < c, their counts.

    The votes are sorted by submission rank once, so each checkpoint is a prefix of them:
    one ``bincount`` of (unit, outcome) codes per point, no sort.
    """
    votes = data.votes
    units, unit_index = np.unique(votes.unit, return_inverse=True)
    order = np.argsort(data.vote_rank, kind="stable")
    sorted_rank = data.vote_rank[order]
    code = (unit_index.reshape(-1) * 3 + votes.outcome + 1)[order]
    points = []
    for cutoff in cutoffs:
        end = int(np.searchsorted(sorted_rank, cutoff, side="left"))  # votes of rank < cutoff
        counts = np.bincount(code[:end], minlength=units.size * 3).reshape(-1, 3)
        votes_per_unit = counts.sum(axis=1)
        point: dict[str, Any] = {
            "judgements": int(cutoff),
            "pair_votes": end,
            "units": int(np.count_nonzero(votes_per_unit)),  # response pairs with a vote
            "units_with_overlap": int(np.count_nonzero(votes_per_unit >= 2)),
            **pooled_from_counts(counts),
        }
        if data.rankings is not None and data.ranking_rank is not None:
            point.update(ranking_point(data.rankings, data.ranking_rank < cutoff))
        points.append(point)
    return points


def count_cutoffs(n_judgements: int, points: int, start: int = 0) -> list[int]:
    """start + ceil(k * (J - start) / N) for k = 1..N, without duplicates: evenly spaced counts after ``start``, ending at J."""
    if n_judgements <= start:
        return []
    span = n_judgements - start
    return sorted({start + math.ceil(k * span / points) for k in range(1, points + 1)})


def first_overlap(data: TrendInput) -> int | None:
    """The judgement count at which a response pair first has two votes (1-based), or None if none has."""
    votes = data.votes
    if len(votes.unit) < 2:
        return None
    order = np.lexsort((data.vote_rank, votes.unit))
    unit, rank = votes.unit[order], data.vote_rank[order]
    # Every vote after the first of its unit is a second (or later) vote; the earliest of them is the answer.
    later = unit[1:] == unit[:-1]
    if not later.any():
        return None
    return int(rank[1:][later].min()) + 1


def _period_start(moment: datetime, by: str) -> datetime:
    local = timezone.localtime(moment)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if by == "week":
        day -= timedelta(days=day.weekday())  # ISO weeks start on Monday
    return day


def _thin(indexes: list[int], points: int) -> list[int]:
    """``points`` of ``indexes``, evenly spaced, always the last."""
    if len(indexes) <= points:
        return indexes
    chosen = np.unique(np.ceil(np.arange(1, points + 1) * len(indexes) / points).astype(int) - 1)
    return [indexes[i] for i in chosen]


def _check(by: str, points: int) -> None:
    if by not in TREND_BY:
        raise ValueError(f"by must be one of {', '.join(TREND_BY)}")
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= MAX_POINTS:
        raise ValueError(f"points must be an integer between 2 and {MAX_POINTS}")


def agreement_trend(
    *, project: Project, by: TrendBy = "count", points: int = DEFAULT_POINTS, data: ProjectPairVotes | None = None
) -> dict[str, Any]:
    """The cumulative agreement of ``project`` at up to ``points`` checkpoints (see the module docstring).

    ``data``: the project's pair votes when the caller has read them already (the dashboard
    shares one read between the trend and the threshold preview).
    """
    _check(by, points)
    if data is None:
        data = project_pair_votes(project)
    is_ranking = project.kind == ProjectKind.RANKING
    submitted = list(
        Judgement.objects.filter(task__project=project).order_by("created_at", "pk").values_list("pk", "created_at")
    )
    ids = np.array([pk for pk, _ in submitted], dtype=np.int64)
    # ids are in submission order, so the j-th smallest id was submitted order[j]-th.
    order = np.argsort(ids)
    sorted_ids, rank_of = ids[order], order

    def ranks(judgement_ids: np.ndarray) -> np.ndarray:
        if sorted_ids.size == 0:
            return np.zeros(judgement_ids.shape, dtype=np.int64)
        where = np.minimum(np.searchsorted(sorted_ids, judgement_ids), sorted_ids.size - 1)
        # A judgement created after the list was read sorts last: it is in no checkpoint.
        return np.where(sorted_ids[where] == judgement_ids, rank_of[where], ids.size)

    rankings = ranking_rank = None
    if is_ranking:
        read = project_rankings(project)
        rankings, ranking_rank = read.data, ranks(read.judgement_ids)
    trend_input = TrendInput(
        votes=data.votes, vote_rank=ranks(data.votes.judgement), rankings=rankings, ranking_rank=ranking_rank
    )

    times = [moment for _, moment in submitted]
    overlap_at = first_overlap(trend_input)
    if overlap_at is not None and overlap_at > len(submitted):
        overlap_at = None  # its judgement came after the list was read
    counts_from = 0
    if by == "count":
        cutoffs = count_cutoffs(len(submitted), points)
        if overlap_at is not None and cutoffs and cutoffs[0] < overlap_at:
            counts_from = overlap_at - 1
            cutoffs = count_cutoffs(len(submitted), points, start=counts_from)
        ends = [times[c - 1] for c in cutoffs]
        thinned = False
    else:
        # The last judgement of each period (the list is in submission order).
        last_of_period: dict[datetime, int] = {}
        for index, moment in enumerate(times):
            last_of_period[_period_start(moment, by)] = index
        starts = sorted(last_of_period)
        chosen = _thin(list(range(len(starts))), points)
        thinned = len(chosen) < len(starts)
        cutoffs = [last_of_period[starts[i]] + 1 for i in chosen]
        ends = [starts[i] for i in chosen]

    computed = cumulative_agreement(trend_input, cutoffs)
    for point, moment in zip(computed, ends, strict=True):
        if by == "count":
            point["at"] = timezone.localtime(moment).isoformat()
        else:
            point["period"] = moment.date().isoformat()
            point["period_start"] = moment.isoformat()
    statistics = list(STATISTICS) + (list(RANKING_STATISTICS) if is_ranking else [])
    return {
        "project": project.pk,
        "by": by,
        "cumulative": True,
        "points_requested": points,
        "thinned": thinned,
        "judgements": len(submitted),
        "first_overlap": overlap_at,
        "counts_from": counts_from,
        "few_units_below": FEW_UNITS_BELOW,
        "statistics": statistics,
        "labels": {name: LABELS[name] for name in statistics},
        "points": computed,
    }
