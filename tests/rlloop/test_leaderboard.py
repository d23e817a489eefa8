"""Leaderboard ratings: Bradley–Terry against known strengths and a reference fit, bootstrap coverage, Elo."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize, stats

from rlloop.leaderboard import (
    DEFAULT_L2,
    Votes,
    bootstrap_thetas,
    bradley_terry,
    bradley_terry_intervals,
    elo_ratings,
    elo_update,
    expected_score,
    leaderboard,
    theta_to_rating,
    win_matrix,
    win_rate_interval,
)


def tournament(theta: np.ndarray, n_votes: int, *, seed: int, per_group: int = 4) -> Votes:
    """Random pairs; each score is the mean of two Bernoulli(sigmoid(diff)) draws, so E[score] is exactly
    the Bradley–Terry probability and about a third of the votes are ties."""
    rng = np.random.default_rng(seed)
    n = len(theta)
    a = rng.integers(0, n, n_votes)
    b = (a + rng.integers(1, n, n_votes)) % n
    p = 1.0 / (1.0 + np.exp(theta[b] - theta[a]))
    score = (rng.random((n_votes, 2)) < p[:, None]).mean(axis=1)
    return Votes(a, b, score, np.arange(n_votes) // per_group)


def reference_fit(votes: list[tuple[int, int, float]], n: int, *, l2: float, anchor: int | None) -> np.ndarray:
    """The penalised negative log-likelihood written out vote by vote, minimised by scipy."""
    free = [i for i in range(n) if i != anchor]

    def full(x: np.ndarray) -> np.ndarray:
        theta = np.zeros(n)
        theta[free] = x
        return theta

    def loss(x: np.ndarray) -> float:
        theta = full(x)
        total = 0.5 * l2 * float(theta @ theta)
        for a, b, s in votes:
            p = 1.0 / (1.0 + math.exp(theta[b] - theta[a]))
            total -= s * math.log(p) + (1.0 - s) * math.log(1.0 - p)
        return total

    def gradient(x: np.ndarray) -> np.ndarray:
        theta = full(x)
        grad = l2 * theta
        for a, b, s in votes:
            p = 1.0 / (1.0 + math.exp(theta[b] - theta[a]))
            grad[a] -= s - p
            grad[b] += s - p
        return grad[free]

    result = optimize.minimize(loss, np.zeros(len(free)), jac=gradient, method="BFGS", options={"gtol": 1e-12})
    theta = full(result.x)
    return theta - theta.mean() if anchor is None else theta


SMALL_TABLE = [(0, 1, 1.0), (0, 1, 1.0), (1, 0, 1.0), (1, 2, 1.0), (1, 2, 1.0), (2, 1, 0.5)]
SMALL_TABLE += [(2, 0, 1.0), (0, 2, 1.0), (0, 2, 0.5), (2, 0, 0.0)]


def as_votes(rows: list[tuple[int, int, float]]) -> Votes:
    a, b, score = zip(*rows, strict=True)
    return Votes(list(a), list(b), list(score))


def test_recovers_known_strengths() -> None:
    theta = np.linspace(-1.5, 1.5, 8)
    votes = tournament(theta, 3000, seed=1)
    fitted = bradley_terry(votes, 8)
    assert stats.spearmanr(fitted, theta).statistic >= 0.95
    assert abs(fitted.mean()) < 1e-9
    # Same scale, not only the same order: the spread of 3 logits comes back within 10%.
    assert np.ptp(fitted) == pytest.approx(3.0, rel=0.1)


def test_intervals_cover_the_true_strengths_at_about_the_nominal_rate() -> None:
    theta = np.linspace(-1.5, 1.5, 8)
    centred = theta - theta.mean()
    covered = []
    for seed in range(50):
        votes = tournament(theta, 1200, seed=100 + seed)
        low, high = bradley_terry_intervals(votes, 8, level=0.95, rounds=200, seed=seed)
        covered.append((low <= centred) & (centred <= high))
    coverage = np.mean(covered)
    assert 0.85 <= coverage <= 0.99, coverage


def test_bootstrap_resamples_prompts_not_votes() -> None:
    theta = np.linspace(-1.0, 1.0, 5)
    votes = tournament(theta, 800, seed=3)
    low, high = bradley_terry_intervals(votes, 5, rounds=300, seed=0)
    # Four annotators agreeing on every prompt add no information about other prompts.
    repeated = Votes(*(np.repeat(x, 4) for x in (votes.a, votes.b, votes.score, votes.group)))
    same_low, same_high = bradley_terry_intervals(repeated, 5, rounds=300, seed=0)
    np.testing.assert_allclose(same_high - same_low, high - low, rtol=0.02)
    # Were every vote its own unit, the copies would halve the widths.
    per_vote = Votes(repeated.a, repeated.b, repeated.score)
    narrow_low, narrow_high = bradley_terry_intervals(per_vote, 5, rounds=300, seed=0)
    assert np.all(narrow_high - narrow_low < 0.7 * (high - low))


def test_bootstrap_is_seeded_and_keeps_the_anchor_at_zero() -> None:
    votes = tournament(np.array([0.0, 0.5, 1.0]), 300, seed=4)
    first = bootstrap_thetas(votes, 3, rounds=50, seed=7, anchor=1)
    np.testing.assert_array_equal(first, bootstrap_thetas(votes, 3, rounds=50, seed=7, anchor=1))
    assert not np.array_equal(first, bootstrap_thetas(votes, 3, rounds=50, seed=8, anchor=1))
    assert np.all(first[:, 1] == 0.0)
    with pytest.raises(ValueError, match="l2 > 0"):
        bootstrap_thetas(votes, 3, rounds=5, l2=0.0)


def test_elo_expected_score_and_update() -> None:
    assert round(expected_score(1400, 1000), 3) == 0.909
    assert expected_score(1000, 1000) == 0.5
    # The underdog wins: E = 1 / (1 + 10) for it, so it gains 32 * 10 / 11.
    assert elo_update(1000.0, 1400.0, 1.0, k=32) == pytest.approx((1029.0909090909, 1370.9090909091), abs=1e-9)
    ratings = elo_ratings(Votes([0, 1, 0], [1, 0, 1], [1.0, 1.0, 0.5]), 2, k=32)
    # 1016 / 984 after the first vote. Then 984 beats 1016: E = 1 / (1 + 10^(32/400)) = 0.45406, so
    # 984 gains 32 * 0.54594 = 17.4695. Then a tie at 998.5305 / 1001.4695: E = 0.49577 for the
    # lower one, which gains 32 * 0.00423 = 0.1353.
    np.testing.assert_allclose(ratings, [998.6658, 1001.3342], atol=1e-4)


def test_elo_k_and_long_run() -> None:
    one = Votes([0], [1], [1.0])
    assert elo_ratings(one, 2, k=32).tolist() == [1016.0, 984.0]
    assert elo_ratings(one, 2, k=16).tolist() == [1008.0, 992.0]
    votes = tournament(np.array([1.0, 0.0]), 500, seed=5)
    ratings = elo_ratings(votes, 2)
    assert ratings[0] > ratings[1] + 100
    assert ratings.sum() == pytest.approx(2000.0)


@pytest.mark.parametrize(("l2", "anchor"), [(DEFAULT_L2, None), (DEFAULT_L2, 1), (0.0, None), (0.0, 2), (0.5, None)])
def test_bradley_terry_matches_a_reference_fit(l2: float, anchor: int | None) -> None:
    fitted = bradley_terry(as_votes(SMALL_TABLE), 3, l2=l2, anchor=anchor)
    np.testing.assert_allclose(fitted, reference_fit(SMALL_TABLE, 3, l2=l2, anchor=anchor), atol=1e-6)


def test_two_players_closed_form() -> None:
    # 3 wins, 1 loss, 2 ties: 4 against 2 with ties as halves.
    votes = as_votes([(0, 1, 1.0)] * 2 + [(1, 0, 0.0), (1, 0, 1.0), (0, 1, 0.5), (1, 0, 0.5)])
    theta = bradley_terry(votes, 2, l2=0.0)
    assert theta[0] - theta[1] == pytest.approx(math.log(2.0), abs=1e-10)
    assert theta.sum() == pytest.approx(0.0, abs=1e-12)
    assert bradley_terry(votes, 2, l2=0.0, anchor=1)[0] == pytest.approx(math.log(2.0), abs=1e-10)
    assert theta_to_rating(math.log(10.0)) == pytest.approx(1400.0)


def test_win_matrix_and_leaderboard_dict() -> None:
    votes = Votes([0, 1, 0, 0], [1, 0, 2, 1], [1.0, 0.5, 0.0, 0.0], ["p", "p", "q", "r"])
    wins, counts = win_matrix(votes, 3)
    np.testing.assert_array_equal(wins, [[0, 1.5, 0], [1.5, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(counts, [[0, 3, 1], [3, 0, 0], [1, 0, 0]])
    board = leaderboard(votes, ["base", "ppo-1", "human"], rounds=50, anchor="base")
    data = json.loads(json.dumps(board.to_dict(), allow_nan=False))
    assert data["names"] == ["base", "ppo-1", "human"]
    assert data["win_rate"][0] == [None, 0.5, 0.0]
    assert data["win_rate"][1][2] is None
    assert data["counts"] == [[0, 3, 1], [3, 0, 0], [1, 0, 0]]
    rows = {row["name"]: row for row in data["rows"]}
    assert (rows["base"]["wins"], rows["base"]["losses"], rows["base"]["ties"], rows["base"]["votes"]) == (1, 2, 1, 4)
    assert (rows["ppo-1"]["wins"], rows["ppo-1"]["losses"], rows["ppo-1"]["ties"]) == (1, 1, 1)
    assert rows["base"]["rating"] == 1000.0 and rows["base"]["ci_low"] == rows["base"]["ci_high"] == 1000.0
    assert [row["name"] for row in data["rows"]][0] == "human"


def test_leaderboard_rows_best_first_with_intervals_around_the_estimate() -> None:
    theta = np.array([0.0, 1.0, -1.0, 0.5])
    board = leaderboard(tournament(theta, 2000, seed=6), ["a", "b", "c", "d"], rounds=200)
    assert [row.name for row in board.rows] == ["b", "d", "a", "c"]
    for row in board.rows:
        assert row.ci_low < row.rating < row.ci_high
        assert row.rating == pytest.approx(theta_to_rating(row.theta))
    assert [row.name for row in leaderboard(Votes([], [], []), ["x"], rounds=100).rows] == ["x"]


def test_win_rate_interval() -> None:
    votes = tournament(np.array([0.0, 1.0, 0.3]), 1500, seed=7)
    result = win_rate_interval(votes, 1, 0, rounds=300)
    between = ((votes.a == 1) & (votes.b == 0)) | ((votes.a == 0) & (votes.b == 1))
    assert result.votes == between.sum()
    assert result.low < result.rate < result.high
    assert result.low < 1 / (1 + math.exp(-1.0)) < result.high
    flipped = win_rate_interval(votes, 0, 1, rounds=300)
    assert flipped.rate == pytest.approx(1 - result.rate)
    assert win_rate_interval(Votes([0], [1], [1.0]), 0, 2).rate is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": [0, 1], "b": [1], "score": [1.0, 0.0]}, "differ in length"),
        ({"a": [0, -1], "b": [1, 0], "score": [1.0, 0.0]}, "row 1: a=-1"),
        ({"a": [0, 1, 2], "b": [1, 2, 2], "score": [1.0, 0.0, 1.0]}, "row 2: a == b == 2"),
        ({"a": [0, 1], "b": [1, 0], "score": [1.0, 0.3]}, "row 1: score 0.3"),
        ({"a": [0.0], "b": [1], "score": [1.0]}, "integer"),
    ],
)
def test_votes_validation_names_the_row(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Votes(**kwargs)


def test_player_out_of_range_names_the_row() -> None:
    votes = Votes([0, 1, 3], [1, 0, 1], [1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="row 2: player 3 is not below n=3"):
        bradley_terry(votes, 3)
    with pytest.raises(ValueError, match="row 2"):
        elo_ratings(votes, 3)


def test_undefeated_player() -> None:
    votes = tournament(np.array([0.0, 0.5, -0.5, 0.2]), 400, seed=8)
    # Player 3 wins every vote it is in.
    score = np.where(votes.a == 3, 1.0, np.where(votes.b == 3, 0.0, votes.score))
    separable = Votes(votes.a, votes.b, score, votes.group)
    with pytest.raises(ValueError, match=r"not finite.*players \[3\]"):
        bradley_terry(separable, 4, l2=0.0)
    theta = bradley_terry(separable, 4)
    assert np.all(np.isfinite(theta))
    assert np.argmax(theta) == 3 and theta[3] > np.sort(theta)[-2] + 3
    board = leaderboard(separable, ["a", "b", "c", "d"], rounds=100)
    assert board.rows[0].name == "d" and math.isfinite(board.rows[0].ci_high)


def test_disconnected_players_stay_finite() -> None:
    votes = Votes([0, 1, 2, 3], [1, 0, 3, 2], [1.0, 1.0, 1.0, 0.5])
    theta = bradley_terry(votes, 5)
    assert np.all(np.isfinite(theta))
    assert theta[0] == pytest.approx(theta[1]) and theta[2] > theta[3]
    with pytest.raises(ValueError, match="not finite"):
        bradley_terry(votes, 5, l2=0.0)
