"""Threshold preview: how many response pairs an export would keep, for a grid of settings.

Pure numpy, no Django. Before creating an export snapshot a manager picks a majority
threshold and a minimum vote count; this answers, for every threshold of a grid and every
minimum vote count 1..``max_min_votes`` at once, how many pairs
:func:`annotation.aggregate.majority_vote` would keep::

    preview = survival_curves(votes, base=MajorityConfig(tie_policy="abstain"))
    preview.kept[m - 1, t]   # pairs kept with min_votes=m and threshold=preview.thresholds[t]

One pass. The vote counts and the weighted support of every unit do not depend on the
threshold or on ``min_votes``, so they are computed once, by ``majority_vote`` itself under
the base configuration (tie policy, exclusions, reliability weighting) with the loosest
threshold and ``min_votes=1``. A unit then survives at (threshold t, min_votes m) exactly
when it survives that loosest vote, has at least m counted votes and its winner's share is
at least t. Each unit's largest passing threshold index is one ``searchsorted``; one 2-D
histogram over (counted votes, that index) and two cumulative sums give the whole grid.

Why the loosest vote decides the rest: ``majority_vote``'s drop reasons other than
``too_few_votes`` and ``below_threshold`` (``zero_weight``, ``tie_plurality``, ``tied``)
do not depend on t or m, and a strict majority does not depend on them either. Its
threshold test is ``top >= (t - 1e-9) * total``; here the same test is applied to the
share top / total, with the same tolerance, so 2/3 given as a fraction keeps two of three.
``tests/annotation/test_preview.py`` checks the grid against ``majority_vote`` cell by cell.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from annotation.aggregate import MajorityConfig, MajorityResult, majority_vote
from annotation.agreement import PairVotes

# The same relative tolerance as annotation.aggregate's threshold test.
_RTOL = 1e-9

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.025 * i, 3) for i in range(21))
"""0.5, 0.525, ..., 1.0: the grid the dashboard and the export page draw."""

MAX_GRID = 200
"""Most thresholds in one preview (a curve, not a table)."""


@dataclass(frozen=True)
class SurvivalPreview:
    """Pairs kept for each (min_votes, threshold) of a grid; ``kept[m - 1, t]``."""

    thresholds: np.ndarray
    """The thresholds, ascending, each in [0.5, 1]."""
    min_votes: np.ndarray
    """1 .. max_min_votes."""
    kept: np.ndarray
    """(len(min_votes), len(thresholds)) int: pairs that survive with that min_votes and threshold."""
    units: int
    """Response pairs with at least one vote (what ``majority_vote`` returns a row for)."""
    never: dict[str, int]
    """Pairs that no cell keeps, by the reason that does not depend on the grid."""
    counted_histogram: np.ndarray
    """Pairs by their number of counted votes (index = votes; the last bin holds that many or more)."""
    excluded_raters: np.ndarray
    """Raters left out by the base configuration (listed, or below its min_reliability)."""

    def kept_at(self, threshold: float, min_votes: int) -> int:
        """The cell for one grid threshold and min_votes (KeyError when not on the grid)."""
        matches = np.flatnonzero(np.isclose(self.thresholds, threshold, rtol=0.0, atol=1e-12))
        if matches.size == 0 or not 1 <= min_votes <= self.min_votes.size:
            raise KeyError(f"threshold {threshold} with min_votes {min_votes} is not on the grid")
        return int(self.kept[min_votes - 1, matches[0]])

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: thresholds, one curve per min_votes, and the totals."""
        return {
            "thresholds": [round(float(t), 6) for t in self.thresholds],
            "curves": [
                {"min_votes": int(m), "kept": [int(k) for k in row]}
                for m, row in zip(self.min_votes, self.kept, strict=True)
            ],
            "units": self.units,
            "never": dict(self.never),
            "counted_histogram": [int(c) for c in self.counted_histogram],
            "excluded_raters": [int(r) for r in self.excluded_raters],
        }


def _check_thresholds(thresholds: object) -> np.ndarray:
    grid = np.asarray(thresholds, dtype=float).reshape(-1)
    if grid.size == 0:
        raise ValueError("thresholds must not be empty")
    if grid.size > MAX_GRID:
        raise ValueError(f"at most {MAX_GRID} thresholds")
    if not np.all(np.isfinite(grid)) or grid.min() < 0.5 or grid.max() > 1.0:
        raise ValueError("every threshold must be between 0.5 and 1")
    if np.any(np.diff(grid) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    return grid


def survival_curves(
    votes: PairVotes,
    *,
    base: MajorityConfig | None = None,
    thresholds: object = DEFAULT_THRESHOLDS,
    max_min_votes: int | None = None,
) -> SurvivalPreview:
    """Pairs :func:`majority_vote` keeps at every threshold of ``thresholds`` and min_votes 1..max_min_votes.

    ``base`` supplies everything else (tie policy, excluded raters, reliability weighting);
    its own ``threshold`` and ``min_votes`` are ignored. ``max_min_votes`` defaults to the
    most counted votes any pair has (at least 1).
    """
    grid = _check_thresholds(thresholds)
    if max_min_votes is not None and (
        isinstance(max_min_votes, bool) or not isinstance(max_min_votes, int | np.integer) or max_min_votes < 1
    ):
        raise ValueError("max_min_votes must be an integer of at least 1")
    loosest = replace(base or MajorityConfig(), threshold=0.5, min_votes=1)
    result = majority_vote(votes, loosest)
    return _grid(result, grid, max_min_votes)


def _grid(result: MajorityResult, grid: np.ndarray, max_min_votes: int | None) -> SurvivalPreview:
    counted = result.counted.astype(np.int64)
    top_votes = int(counted.max()) if counted.size else 0
    depth = max_min_votes if max_min_votes is not None else max(top_votes, 1)

    # ``below_threshold`` at 0.5 means no strict majority: no threshold of the grid keeps it.
    never = {reason: int(np.count_nonzero(result.reason == reason)) for reason in ("zero_weight", "tie_plurality")}
    never["tied"] = int(np.count_nonzero(result.reason == "tied"))
    never["no_strict_majority"] = int(np.count_nonzero(result.reason == "below_threshold"))
    # too_few_votes at min_votes=1: no counted vote at all (every vote a tie under "abstain", or excluded).
    never["no_counted_vote"] = int(np.count_nonzero(result.reason == "too_few_votes"))

    eligible = result.kept
    share = result.share[eligible]
    # The largest grid index whose threshold the share reaches, with aggregate's tolerance:
    # share >= t - rtol  <=>  t <= share + rtol.
    reach = np.searchsorted(grid, share + _RTOL, side="right")  # thresholds 0..reach-1 pass
    votes_bin = np.minimum(counted[eligible], depth)
    # hist[v, r]: eligible pairs with min(counted, depth) == v whose first failing index is r.
    hist = np.zeros((depth + 1, grid.size + 1), dtype=np.int64)
    np.add.at(hist, (votes_bin, reach), 1)
    # Survives (t, m) iff counted >= m and reach > t: sum over v >= m and r > t.
    over_votes = np.cumsum(hist[::-1], axis=0)[::-1]  # [m]: pairs with counted >= m
    over_reach = np.cumsum(over_votes[:, ::-1], axis=1)[:, ::-1]  # [m, t]: ... and reach >= t
    kept = over_reach[1 : depth + 1, 1 : grid.size + 1]

    histogram = np.bincount(np.minimum(counted, depth), minlength=depth + 1)
    return SurvivalPreview(
        thresholds=grid,
        min_votes=np.arange(1, depth + 1),
        kept=kept.copy(),
        units=len(result),
        never=never,
        counted_histogram=histogram,
        excluded_raters=result.excluded_raters,
    )
