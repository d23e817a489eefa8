"""Leaderboards of response sources from pairwise votes: Bradley–Terry, bootstrap intervals, Elo. No Django.

A *player* is anything that wrote responses: a policy version, an imported model, a human. A
vote says which of two players' responses an annotator preferred for one prompt. :class:`Votes`
holds them as arrays: ``a`` and ``b`` (player indices in ``0..n-1``), ``score`` (the outcome for
``a``: 1 win, 0 loss, 0.5 tie) and ``group`` (the prompt, the unit of the bootstrap).

- **Bradley–Terry** (:func:`bradley_terry`): ``P(a beats b) = sigmoid(theta_a - theta_b)``. A tie
  counts as half a win and half a loss, so the fit minimises
  ``-sum[s log p + (1 - s) log(1 - p)] + l2 / 2 * |theta|^2``. The small default ``l2``
  (``DEFAULT_L2``) keeps an undefeated player (maximum likelihood +inf) and a disconnected
  comparison graph finite, and moves a player with a few dozen votes by far less than its
  interval; ``l2=0`` is the pure MLE and is refused when it is not finite. ``anchor=None``
  centres theta (mean 0); ``anchor=k`` fixes player ``k`` at 0. Newton's method with step halving,
  batched so that bootstrap resamples are solved together, each warm-started at the estimate.
- **Rating scale** (:func:`theta_to_rating`): ``1000 + 400 / ln(10) * theta``, so a rating gap of
  400 means 10:1 odds, the Elo scale. This is the model and scale of Chatbot Arena's Bradley–Terry
  ratings.
- **Bootstrap** (:func:`bradley_terry_intervals`, :func:`win_rate_interval`): groups (prompts) are
  resampled with replacement; a resample's win table is a weighted sum of per-group tables, and
  the interval is the percentile interval of the refitted theta (same ``l2`` and anchoring).
- **Online Elo** (:func:`elo_ratings`): the classic update, votes in the given order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.special import expit

DEFAULT_L2 = 1e-4
RATING_BASE = 1000.0
RATING_SCALE = 400.0 / math.log(10.0)
_MAX_NEWTON = 100
# At most this many cells in one bootstrap weight matrix (resamples x groups).
_BOOTSTRAP_CELLS = 2_000_000


@dataclass(frozen=True, eq=False)
class Votes:
    """Pairwise votes; array-likes are converted and checked (ValueError names the first bad row).

    ``group`` defaults to one group per vote; any hashable values work (prompt ids, texts).
    """

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    group: np.ndarray | None = None
    group_codes: np.ndarray = field(init=False, repr=False)
    """Groups renumbered 0..G-1 in order of first appearance."""

    def __post_init__(self) -> None:
        a, b = _as_index(self.a, "a"), _as_index(self.b, "b")
        score = np.asarray(self.score, dtype=float).reshape(-1)
        group = np.arange(len(a)) if self.group is None else np.asarray(self.group).reshape(-1)
        lengths = {"a": len(a), "b": len(b), "score": len(score), "group": len(group)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"votes arrays differ in length: {lengths}")
        for name, values in (("a", a), ("b", b)):
            _raise_at(values < 0, lambda r, n=name, v=values: f"{n}={v[r]} is negative")
        _raise_at(a == b, lambda r: f"a == b == {a[r]} (a player cannot face itself)")
        _raise_at(~np.isin(score, (0.0, 0.5, 1.0)), lambda r: f"score {score[r]} is not 0, 0.5 or 1")
        codes: dict[Any, int] = {}
        group_codes = np.array([codes.setdefault(g, len(codes)) for g in group.tolist()], dtype=np.int64)
        for name, value in (("a", a), ("b", b), ("score", score), ("group", group), ("group_codes", group_codes)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.a)

    def check_players(self, n: int) -> None:
        """Raise ValueError if a vote names a player outside 0..n-1."""
        if n < 1:
            raise ValueError(f"need at least one player, got n={n}")
        _raise_at(np.maximum(self.a, self.b) >= n, lambda r: f"player {max(self.a[r], self.b[r])} is not below n={n}")


def _as_index(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size == 0:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer player indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def _raise_at(bad: np.ndarray, message: Any) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        raise ValueError(f"row {rows[0]}: {message(rows[0])}")


def win_matrix(votes: Votes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(wins, counts), each (n, n): wins[i, j] of i over j (a tie adds 0.5 to both), votes between i and j."""
    votes.check_players(n)
    wins = np.zeros((n, n))
    np.add.at(wins, (votes.a, votes.b), votes.score)
    np.add.at(wins, (votes.b, votes.a), 1.0 - votes.score)
    return wins, wins + wins.T


def theta_to_rating(theta: np.ndarray | float) -> np.ndarray | float:
    """Elo-like rating of a Bradley–Terry log-strength: 1000 + 400 / ln(10) * theta."""
    return RATING_BASE + RATING_SCALE * theta


def _objective(wins: np.ndarray, theta: np.ndarray, l2: float) -> np.ndarray:
    """Penalised negative log-likelihood per batch row: wins (R, n, n), theta (R, n)."""
    diff = theta[:, :, None] - theta[:, None, :]
    # sum over ordered pairs of wins[i, j] * log sigmoid(theta_i - theta_j) is the whole likelihood:
    # wins[j, i] = counts - wins[i, j] carries the (1 - s) log(1 - p) terms.
    return (wins * np.logaddexp(0.0, -diff)).sum(axis=(1, 2)) + 0.5 * l2 * (theta**2).sum(axis=1)


def _newton(wins: np.ndarray, theta: np.ndarray, l2: float, anchor: int | None) -> np.ndarray:
    """Minimise :func:`_objective` per batch row from ``theta`` (R, n): mean 0, or ``theta[:, anchor] = 0``."""
    counts = wins + wins.swapaxes(1, 2)
    n = wins.shape[1]
    free = np.ones(n, dtype=bool)
    theta = theta.copy()
    if anchor is None:
        theta -= theta.mean(axis=1, keepdims=True)
    else:
        free[anchor] = False
        theta[:, anchor] = 0.0
    value = _objective(wins, theta, l2)
    for _ in range(_MAX_NEWTON):
        p = expit(theta[:, :, None] - theta[:, None, :])
        gradient = (counts * p - wins).sum(axis=2) + l2 * theta
        curvature = counts * p * (1.0 - p)
        hessian = np.eye(n) * (curvature.sum(axis=2) + l2)[:, :, None] - curvature
        if anchor is None:
            # Newton within mean 0. The likelihood ignores a common shift, so along the all-ones
            # direction the curvature is only l2 and a free step there is rounding noise / l2;
            # adding ones/n makes that eigenvalue 1 + l2 and the projected gradient has no part on it.
            gradient -= gradient.mean(axis=1, keepdims=True)
            hessian += 1.0 / n
        step = np.zeros_like(theta)
        step[:, free] = np.linalg.solve(hessian[:, free][:, :, free], gradient[:, free, None])[..., 0]
        active = np.abs(step).max(axis=1) > 1e-8 * (1.0 + np.abs(theta).max(axis=1))
        if not active.any():
            return theta - step  # one last full step: Newton is quadratic this close
        # Step halving keeps Newton safe far from the optimum (near-separable data, tiny l2). Where
        # the predicted decrease is below what the objective's rounding resolves, comparing values
        # would only measure noise, and the full step is safe: those rows skip the search.
        predicted = 0.5 * (gradient * step).sum(axis=1)
        search = active & (predicted > 1e-10 * (1.0 + np.abs(value)))
        scale = np.ones(len(theta))
        for _ in range(40):
            trial = theta - scale[:, None] * step
            trial_value = _objective(wins, trial, l2)
            worse = search & ~(trial_value <= value)
            if not worse.any():
                break
            scale[worse] *= 0.5
        # A row that no step improves sits at the optimum to rounding: it stays where it is.
        moved = active & ~worse
        theta[moved], value[moved] = trial[moved], trial_value[moved]
        if not moved.any():
            return theta
    raise ValueError(f"Bradley–Terry fit did not converge in {_MAX_NEWTON} Newton steps")


def _check_finite_mle(wins: np.ndarray) -> None:
    """The MLE is finite iff every player reaches every other along wins (ties count both ways)."""
    count, labels = csgraph.connected_components(sparse.csr_matrix(wins > 0), directed=True, connection="strong")
    if count == 1:
        return
    for label in range(count):
        inside = labels == label
        if not (wins[~inside][:, inside] > 0).any():
            players = np.flatnonzero(inside).tolist()
            raise ValueError(
                f"with l2=0 the maximum-likelihood estimate is not finite: no other player ever beat or tied "
                f"players {players}; use l2 > 0"
            )


def _check_settings(n: int, l2: float, anchor: int | None) -> None:
    if anchor is not None and not 0 <= anchor < n:
        raise ValueError(f"anchor {anchor} is not a player index in 0..{n - 1}")
    if l2 < 0:
        raise ValueError(f"l2 must be 0 or more, got {l2}")


def bradley_terry(votes: Votes, n: int, *, l2: float = DEFAULT_L2, anchor: int | None = None) -> np.ndarray:
    """Log-strengths theta (n,) maximising the tie-as-half-win likelihood minus ``l2 / 2 * |theta|^2``.

    ``anchor=None``: mean 0 (with ``l2 > 0`` the penalised optimum is centred by itself, since the
    likelihood's gradient sums to zero). ``anchor=k``: ``theta[k] = 0``. ``l2=0`` raises ValueError when
    the maximum-likelihood estimate is not finite (a player or set of players never beaten or tied).
    """
    wins, _ = win_matrix(votes, n)
    _check_settings(n, l2, anchor)
    if l2 == 0:
        _check_finite_mle(wins)
    return _newton(wins[None], np.zeros((1, n)), l2, anchor)[0]


def _resample_weights(n_groups: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, n_groups): how often each group is drawn in each resample of n_groups draws with replacement."""
    index = rng.integers(0, n_groups, (rows, n_groups))
    flat = (index + (np.arange(rows) * n_groups)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n_groups).reshape(rows, n_groups).astype(float)


def _percentiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high


def bootstrap_thetas(
    votes: Votes,
    n: int,
    *,
    rounds: int = 1000,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    anchor: int | None = None,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """(rounds, n): :func:`bradley_terry` refitted on resamples of the vote groups, seeded.

    ``l2 > 0`` is required: a resample can be separable where the whole data is not. ``start`` (the
    point estimate, fitted when not given) warm-starts every resample.
    """
    if l2 <= 0:
        raise ValueError("the bootstrap needs l2 > 0: a resample can have no finite maximum-likelihood estimate")
    if rounds < 1:
        raise ValueError(f"rounds must be 1 or more, got {rounds}")
    if len(votes) == 0:
        raise ValueError("no votes to resample")
    _check_settings(n, l2, anchor)
    start = bradley_terry(votes, n, l2=l2, anchor=anchor) if start is None else np.asarray(start, dtype=float)
    n_groups = int(votes.group_codes.max()) + 1
    # Per group, the flattened (n, n) win table: a resample's table is a weighted sum of these rows.
    rows = np.concatenate([votes.group_codes, votes.group_codes])
    cells = np.concatenate([votes.a * n + votes.b, votes.b * n + votes.a])
    per_group = sparse.csr_matrix(
        (np.concatenate([votes.score, 1.0 - votes.score]), (rows, cells)), shape=(n_groups, n * n)
    )
    rng = np.random.default_rng(seed)
    out = np.empty((rounds, n))
    chunk = max(1, _BOOTSTRAP_CELLS // n_groups)
    for first in range(0, rounds, chunk):
        size = min(chunk, rounds - first)
        weights = _resample_weights(n_groups, size, rng)
        wins = np.asarray(per_group.T @ weights.T).T.reshape(size, n, n)
        out[first : first + size] = _newton(wins, np.tile(start, (size, 1)), l2, anchor)
    return out


def bradley_terry_intervals(
    votes: Votes,
    n: int,
    *,
    level: float = 0.95,
    rounds: int = 1000,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    anchor: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (n,): percentile bootstrap intervals of theta over resampled groups (prompts)."""
    return _percentiles(bootstrap_thetas(votes, n, rounds=rounds, seed=seed, l2=l2, anchor=anchor), level)


@dataclass(frozen=True)
class WinRate:
    """Win rate of one player against another (ties as half), with a bootstrap interval; None without votes."""

    wins: float
    votes: int
    rate: float | None
    low: float | None
    high: float | None


def win_rate_interval(
    votes: Votes, i: int, j: int, *, level: float = 0.95, rounds: int = 1000, seed: int = 0
) -> WinRate:
    """Win rate of i against j over their direct votes; the interval resamples the groups holding such votes."""
    if rounds < 1:
        raise ValueError(f"rounds must be 1 or more, got {rounds}")
    mine = (votes.a == i) & (votes.b == j)
    theirs = (votes.a == j) & (votes.b == i)
    between = mine | theirs
    score = np.where(mine, votes.score, 1.0 - votes.score)[between]
    total = float(score.sum())
    if not len(score):
        return WinRate(wins=0.0, votes=0, rate=None, low=None, high=None)
    _, codes = np.unique(votes.group_codes[between], return_inverse=True)
    per_group = np.stack([np.bincount(codes, weights=score), np.bincount(codes).astype(float)], axis=1)
    weights = _resample_weights(len(per_group), rounds, np.random.default_rng(seed))
    sums = weights @ per_group
    low, high = _percentiles(sums[:, 0] / sums[:, 1], level)
    return WinRate(wins=total, votes=len(score), rate=total / len(score), low=float(low), high=float(high))


def expected_score(r_a: np.ndarray | float, r_b: np.ndarray | float) -> np.ndarray | float:
    """Elo expected score of a against b: 1 / (1 + 10^((r_b - r_a) / 400))."""
    return 1.0 / (1.0 + 10.0 ** ((np.asarray(r_b) - np.asarray(r_a)) / 400.0))


def elo_update(r_a: float, r_b: float, score: float, *, k: float = 32.0) -> tuple[float, float]:
    """One classic Elo update: R_a += K (S_a - E_a), R_b += K ((1 - S_a) - (1 - E_a))."""
    change = k * (score - float(expected_score(r_a, r_b)))
    return r_a + change, r_b - change


def elo_ratings(votes: Votes, n: int, *, k: float = 32.0, initial: float | Sequence[float] = 1000.0) -> np.ndarray:
    """Online Elo ratings (n,) after the votes in their given order, every player starting at ``initial``."""
    votes.check_players(n)
    ratings = np.broadcast_to(np.asarray(initial, dtype=float), (n,)).tolist()
    for a, b, score in zip(votes.a.tolist(), votes.b.tolist(), votes.score.tolist(), strict=True):
        ratings[a], ratings[b] = elo_update(ratings[a], ratings[b], score, k=k)
    return np.array(ratings)


@dataclass(frozen=True)
class LeaderboardRow:
    """One player's line; ratings on the 1000 + 400 / ln(10) * theta scale, ci_* None without an interval."""

    name: str
    theta: float
    rating: float
    ci_low: float | None
    ci_high: float | None
    elo: float
    wins: int
    losses: int
    ties: int
    votes: int


@dataclass(frozen=True, eq=False)
class Leaderboard:
    """Rows best first; ``win_rate`` (nan without votes) and ``counts`` in the order of ``names``."""

    rows: list[LeaderboardRow]
    names: list[str]
    win_rate: np.ndarray
    counts: np.ndarray
    anchor: str | None
    level: float
    rounds: int
    l2: float
    k: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able python: lists, floats and ints, None for a missing value."""
        return {
            "rows": [dataclasses.asdict(row) for row in self.rows],
            "names": list(self.names),
            "win_rate": [[None if math.isnan(x) else x for x in line] for line in self.win_rate.tolist()],
            "counts": [[int(x) for x in line] for line in self.counts.tolist()],
            "anchor": self.anchor,
            "level": self.level,
            "rounds": self.rounds,
            "l2": self.l2,
            "k": self.k,
        }


def leaderboard(
    votes: Votes,
    names: Sequence[str],
    *,
    anchor: str | None = None,
    k: float = 32.0,
    rounds: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> Leaderboard:
    """Bradley–Terry ratings with bootstrap intervals (``rounds=0``: none), online Elo and the win table."""
    names = [str(name) for name in names]
    n = len(names)
    if len(set(names)) != n:
        raise ValueError(f"player names repeat: {names}")
    if anchor is not None and anchor not in names:
        raise ValueError(f"anchor {anchor!r} is not one of the players {names}")
    anchor_index = None if anchor is None else names.index(anchor)
    theta = bradley_terry(votes, n, l2=l2, anchor=anchor_index)
    low = high = None
    if rounds > 0 and len(votes):
        samples = bootstrap_thetas(votes, n, rounds=rounds, seed=seed, l2=l2, anchor=anchor_index, start=theta)
        low, high = _percentiles(samples, level)
    elo = elo_ratings(votes, n, k=k)
    wins, counts = win_matrix(votes, n)
    with np.errstate(invalid="ignore"):
        win_rate = wins / counts
    ties = np.bincount(np.concatenate([votes.a, votes.b])[np.tile(votes.score == 0.5, 2)], minlength=n)
    won = np.bincount(np.where(votes.score == 1.0, votes.a, votes.b)[votes.score != 0.5], minlength=n)
    played = counts.sum(axis=1).astype(int)
    rows = [
        LeaderboardRow(
            name=names[i],
            theta=float(theta[i]),
            rating=float(theta_to_rating(theta[i])),
            ci_low=None if low is None else float(theta_to_rating(low[i])),
            ci_high=None if high is None else float(theta_to_rating(high[i])),
            elo=float(elo[i]),
            wins=int(won[i]),
            losses=int(played[i] - won[i] - ties[i]),
            ties=int(ties[i]),
            votes=int(played[i]),
        )
        for i in np.argsort(-theta, kind="stable")
    ]
    return Leaderboard(rows, names, win_rate, counts, anchor=anchor, level=level, rounds=rounds, l2=l2, k=k)
