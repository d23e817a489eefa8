"""Filter and aggregate preference votes: majority vote per response pair, consensus per task.

Pure numpy, no Django, no Celery. The input is :class:`annotation.agreement.PairVotes`
(one vote per (rater, unit); a unit is one response pair of one task, outcome +1 when
response A, the lower id, was preferred, -1 when B was, 0 for a tie).

Majority vote (:func:`majority_vote`)
-------------------------------------
Every unit gets the *support* of each side: the (weighted) votes for A, for B and for a
tie. How a tie vote counts is the **tie policy**:

* ``"neither"`` (default): a tie is a vote for neither side. It stays in the denominator,
  so it dilutes the winner's share: A, A, tie gives A 2/3.
* ``"abstain"``: a tie is an abstention and leaves the count entirely (MT-Bench's
  "without tie"): A, tie, tie gives A 1/1 from one counted vote.
* ``"half"``: a tie is half a vote for each side: A, tie gives A 3/4.
* ``"drop"``: like ``"neither"``, but a pair whose ties are (joint) plurality, at least
  as many as either side, is dropped with reason ``tie_plurality``.

The winner is the side with more support; its **share** is its support over the counted
support. A pair survives when it has at least ``min_votes`` counted votes, a unique winner,
and a share that is a strict majority (> 0.5) and at least ``threshold``. So
``threshold=0.5`` is a strict majority of the counted votes and ``threshold=2/3`` needs two
of three; give 2/3 as a fraction (or 0.66), not as 0.67, which three votes never reach.

Every unit that does not survive keeps the first reason that applies, in this order:

* ``too_few_votes``: fewer than ``min_votes`` counted votes (ties are not counted under
  ``"abstain"``); also a pair whose every vote came from an excluded annotator.
* ``zero_weight``: every counted vote has weight 0 (reliability weighting gives annotators
  no better than chance weight 0).
* ``tie_plurality``: tie policy ``"drop"`` and ties are at least as many as either side.
* ``tied``: both sides have the same support, no winner (A, B; or tie, tie under "neither").
* ``below_threshold``: a winner, but its share is not a strict majority or is below ``threshold``.

Annotator reliability (:func:`dawid_skene`)
-------------------------------------------
Optional. The one-coin Dawid & Skene (1979) model for binary outcomes: each unit has a
hidden true winner z in {A, B}; annotator r reports it correctly with probability p_r,
whatever z is (A and B are ordered by response id, which carries no information, so the
confusion matrix is symmetric and the class prior is fixed at 1/2). Tie votes carry no
evidence about p_r here and are left out of the estimate. EM, deterministic:

* start from the majority-vote posterior q_u = P(z_u = A) = votes for A / decisive votes;
* M step: p_r = (expected correct votes + prior_correct) / (votes + prior_correct + prior_wrong),
  a Beta prior that keeps p_r inside (0, 1) and starts newcomers at its mean (2/3 by default);
* E step: logit q_u = sum over the unit's votes of +-log(p_r / (1 - p_r));
* stop when no p_r moved more than ``em_tol``, or after ``em_max_iter`` rounds.

With weighting ``"reliability"`` a vote weighs log(p_r / (1 - p_r)), the weight that makes
the weighted majority the Bayes decision under this model (Nitzan & Paroush 1982), clipped
at 0: an annotator no better than chance is ignored rather than inverted. ``min_reliability``
excludes annotators whose p_r is below it (the estimate is made once, before that exclusion).

Consensus (:func:`consensus_order`)
-----------------------------------
A total order of a task's K responses from its surviving pairs: Copeland score (pairs won
minus pairs lost) first; among equals, the net support (support won by minus support lost
by, summed over its surviving pairs: a Borda-like count of the votes behind those wins);
then the lower response id. Dropped pairs count for nobody.

Degenerate input is not an error: no votes gives empty results. Malformed input (bad
config values) is a ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from annotation.agreement import PairVotes

TiePolicy = Literal["neither", "abstain", "half", "drop"]
Weighting = Literal["none", "reliability"]
TIE_POLICIES: tuple[str, ...] = ("neither", "abstain", "half", "drop")
WEIGHTINGS: tuple[str, ...] = ("none", "reliability")
DROP_REASONS: tuple[str, ...] = ("too_few_votes", "zero_weight", "tie_plurality", "tied", "below_threshold")

# Relative tolerance for comparing sums of float weights: the same weights added in a
# different order may differ in the last bits, and that must not decide a winner.
_RTOL = 1e-9


@dataclass(frozen=True)
class MajorityConfig:
    """How pairs are filtered and votes weighed; see the module docstring for the rules."""

    threshold: float = 0.5
    """Share of the counted votes the winner needs (0.5..1); it must also be a strict majority."""
    min_votes: int = 1
    """Counted votes a pair needs (ties are not counted under tie policy "abstain")."""
    tie_policy: TiePolicy = "neither"
    """How a tie vote counts: "neither", "abstain", "half" or "drop"."""
    exclude_raters: tuple[int, ...] = ()
    """Rater ids whose votes are left out altogether."""
    weighting: Weighting = "none"
    """"none": every vote weighs 1; "reliability": the Dawid–Skene log-odds weight of its rater."""
    min_reliability: float = 0.0
    """Exclude raters whose estimated accuracy is below this (0 excludes nobody)."""
    em_max_iter: int = 100
    """Most EM rounds of the reliability estimate."""
    em_tol: float = 1e-6
    """EM stops when no rater's accuracy moved more than this."""
    prior_correct: float = 2.0
    """Beta prior of the reliability estimate: pseudo-votes that agree with the truth."""
    prior_wrong: float = 1.0
    """Beta prior of the reliability estimate: pseudo-votes that disagree with it."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.threshold <= 1.0:
            raise ValueError("threshold must be between 0.5 and 1")
        if isinstance(self.min_votes, bool) or not isinstance(self.min_votes, int | np.integer) or self.min_votes < 1:
            raise ValueError("min_votes must be an integer of at least 1")
        if self.tie_policy not in TIE_POLICIES:
            raise ValueError(f"tie_policy must be one of {', '.join(TIE_POLICIES)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}")
        if not 0.0 <= self.min_reliability <= 1.0:
            raise ValueError("min_reliability must be between 0 and 1")
        if self.em_max_iter < 1:
            raise ValueError("em_max_iter must be at least 1")
        if not self.em_tol > 0:
            raise ValueError("em_tol must be positive")
        if self.prior_correct <= 0 or self.prior_wrong <= 0:
            raise ValueError("prior_correct and prior_wrong must be positive")
        object.__setattr__(self, "exclude_raters", tuple(sorted({int(r) for r in self.exclude_raters})))

    @property
    def needs_reliability(self) -> bool:
        return self.weighting == "reliability" or self.min_reliability > 0


# --- reliability -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reliability:
    """The Dawid–Skene estimate; the per-rater arrays follow ``raters``."""

    raters: np.ndarray
    """Rater ids with at least one vote, sorted."""
    accuracy: np.ndarray
    """Estimated probability that the rater picks the true winner of a pair (ties left out)."""
    weight: np.ndarray
    """log(p / (1 - p)) clipped at 0: the rater's vote weight under weighting "reliability"."""
    n_decisive: np.ndarray
    """Non-tie votes of the rater, the evidence behind its accuracy."""
    units: np.ndarray
    """Unit ids with at least one non-tie vote, sorted."""
    posterior_a: np.ndarray
    """P(A is the true winner) of each of ``units``."""
    iterations: int
    converged: bool

    def weight_of(self, rater: np.ndarray) -> np.ndarray:
        """Weight of each given rater id; raters without a non-tie vote get the prior's weight."""
        rater = np.asarray(rater, dtype=np.int64)
        out = np.full(rater.shape, np.nan)
        if self.raters.size:
            index = np.minimum(np.searchsorted(self.raters, rater), self.raters.size - 1)
            found = self.raters[index] == rater
            out[found] = self.weight[index[found]]
        return out

    def accuracy_of(self, rater: np.ndarray) -> np.ndarray:
        rater = np.asarray(rater, dtype=np.int64)
        out = np.full(rater.shape, np.nan)
        if self.raters.size:
            index = np.minimum(np.searchsorted(self.raters, rater), self.raters.size - 1)
            found = self.raters[index] == rater
            out[found] = self.accuracy[index[found]]
        return out


def _log_odds(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow warnings for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def dawid_skene(
    unit: object,
    rater: object,
    outcome: object,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    prior_correct: float = 2.0,
    prior_wrong: float = 1.0,
) -> Reliability:
    """One-coin Dawid–Skene EM over binary pair outcomes (ties ignored); see the module docstring."""
    unit = np.asarray(unit, dtype=np.int64)
    rater = np.asarray(rater, dtype=np.int64)
    outcome = np.asarray(outcome, dtype=np.int64)
    all_raters = np.unique(rater)
    decisive = outcome != 0
    units, unit_index = np.unique(unit[decisive], return_inverse=True)
    raters, rater_index = np.unique(rater[decisive], return_inverse=True)
    sign = outcome[decisive].astype(float)  # +1 vote for A, -1 vote for B
    n_units, n_raters = units.size, raters.size
    n_votes = np.bincount(rater_index, minlength=n_raters).astype(float)

    votes_a = np.bincount(unit_index, weights=sign > 0, minlength=n_units)
    votes_all = np.bincount(unit_index, minlength=n_units)
    posterior = votes_a / np.maximum(votes_all, 1)  # majority-vote start
    accuracy = np.full(n_raters, prior_correct / (prior_correct + prior_wrong))
    iterations, converged = 0, n_raters == 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        correct = np.where(sign > 0, posterior[unit_index], 1.0 - posterior[unit_index])
        new_accuracy = (np.bincount(rater_index, weights=correct, minlength=n_raters) + prior_correct) / (
            n_votes + prior_correct + prior_wrong
        )
        logit = np.bincount(unit_index, weights=sign * _log_odds(new_accuracy)[rater_index], minlength=n_units)
        posterior = _sigmoid(logit)
        moved = float(np.max(np.abs(new_accuracy - accuracy))) if n_raters else 0.0
        accuracy = new_accuracy
        if moved < tol:
            converged = True
            break

    # Raters whose every vote was a tie have no evidence: they keep the prior.
    prior_mean = prior_correct / (prior_correct + prior_wrong)
    full_accuracy = np.full(all_raters.size, prior_mean)
    full_accuracy[np.searchsorted(all_raters, raters)] = accuracy
    full_decisive = np.zeros(all_raters.size, dtype=np.int64)
    full_decisive[np.searchsorted(all_raters, raters)] = n_votes.astype(np.int64)
    return Reliability(
        raters=all_raters,
        accuracy=full_accuracy,
        weight=np.maximum(_log_odds(full_accuracy), 0.0),
        n_decisive=full_decisive,
        units=units,
        posterior_a=posterior,
        iterations=iterations,
        converged=converged,
    )


# --- majority vote ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MajorityResult:
    """The vote of every unit; every per-unit array follows ``units``."""

    units: np.ndarray
    """Unit ids, sorted (every unit with a vote before any exclusion)."""
    votes_a: np.ndarray
    """Votes for A that count (excluded raters left out)."""
    votes_b: np.ndarray
    votes_tie: np.ndarray
    counted: np.ndarray
    """Votes counted against ``min_votes``: all three kinds, or A and B under "abstain"."""
    support_a: np.ndarray
    """Weighted support for A under the tie policy ("half" adds half the ties)."""
    support_b: np.ndarray
    total: np.ndarray
    """The denominator of the shares: support_a + support_b, plus the ties under "neither"/"drop"."""
    winner: np.ndarray
    """+1 A won, -1 B won, 0 no winner (tied or no support); set for dropped pairs too."""
    share: np.ndarray
    """The larger side's support / total: the winner's vote share; NaN without support."""
    share_a: np.ndarray
    """A's support / total: a soft label for the pair; NaN without support."""
    kept: np.ndarray
    """True where the pair survives."""
    reason: np.ndarray
    """Why a pair was dropped (one of DROP_REASONS), "" where it survives."""
    excluded_raters: np.ndarray
    """Raters whose votes were left out: listed in the config or below ``min_reliability``."""
    reliability: Reliability | None = None
    """The Dawid–Skene estimate when the config asked for it."""
    config: MajorityConfig = field(default_factory=MajorityConfig)

    def __len__(self) -> int:
        return int(self.units.size)

    @property
    def margin(self) -> np.ndarray:
        """Winner's support minus loser's (0 without a winner)."""
        return np.abs(self.support_a - self.support_b) * (self.winner != 0)

    def reason_counts(self) -> dict[str, int]:
        """Dropped pairs per reason, every reason listed (0 when none)."""
        return {reason: int(np.count_nonzero(self.reason == reason)) for reason in DROP_REASONS}


def majority_vote(votes: PairVotes, config: MajorityConfig | None = None) -> MajorityResult:
    """Majority vote per unit under ``config``: who won, by what share, or why the pair is dropped."""
    config = config or MajorityConfig()
    units, unit_index = np.unique(votes.unit, return_inverse=True)
    unit_index = unit_index.reshape(-1)
    n_units = units.size
    excluded = np.isin(votes.rater, np.asarray(config.exclude_raters, dtype=np.int64))

    reliability: Reliability | None = None
    weight = np.ones(len(votes))
    if config.needs_reliability:
        kept = ~excluded
        reliability = dawid_skene(
            unit_index[kept],
            votes.rater[kept],
            votes.outcome[kept],
            max_iter=config.em_max_iter,
            tol=config.em_tol,
            prior_correct=config.prior_correct,
            prior_wrong=config.prior_wrong,
        )
        if config.min_reliability > 0:
            unreliable = reliability.raters[reliability.accuracy < config.min_reliability]
            excluded |= np.isin(votes.rater, unreliable)
        if config.weighting == "reliability":
            weight = np.nan_to_num(reliability.weight_of(votes.rater), nan=0.0)

    use = ~excluded
    code = unit_index[use] * 3 + (votes.outcome[use] + 1)  # columns: B, tie, A
    counts = np.bincount(code, minlength=n_units * 3).reshape(n_units, 3)
    support = np.bincount(code, weights=weight[use], minlength=n_units * 3).reshape(n_units, 3)
    votes_b, votes_tie, votes_a = counts[:, 0], counts[:, 1], counts[:, 2]
    raw_b, raw_tie, raw_a = support[:, 0], support[:, 1], support[:, 2]

    policy = config.tie_policy
    if policy == "abstain":
        support_a, support_b, total = raw_a, raw_b, raw_a + raw_b
        counted = votes_a + votes_b
    elif policy == "half":
        support_a, support_b = raw_a + raw_tie / 2, raw_b + raw_tie / 2
        total = raw_a + raw_b + raw_tie
        counted = votes_a + votes_b + votes_tie
    else:  # "neither", "drop"
        support_a, support_b, total = raw_a, raw_b, raw_a + raw_b + raw_tie
        counted = votes_a + votes_b + votes_tie

    scale = np.maximum(total, np.finfo(float).tiny)
    difference = support_a - support_b
    equal = np.abs(difference) <= _RTOL * scale
    winner = np.where(equal, 0, np.sign(difference)).astype(np.int64)
    top = np.maximum(support_a, support_b)
    has_total = total > 0
    share = np.full(n_units, np.nan)
    share_a = np.full(n_units, np.nan)
    np.divide(top, total, out=share, where=has_total)
    np.divide(support_a, total, out=share_a, where=has_total)
    # Strict majority: the winner's support exceeds everything else counted.
    strict = (top - (total - top)) > _RTOL * scale
    reaches = top >= (config.threshold - _RTOL) * total

    tie_plurality = np.zeros(n_units, dtype=bool)
    if policy == "drop":
        tie_plurality = (raw_tie > 0) & (raw_tie >= (1 - _RTOL) * np.maximum(raw_a, raw_b))
    reason = np.full(n_units, "", dtype=object)
    checks = [
        ("too_few_votes", counted < config.min_votes),
        ("zero_weight", ~has_total),
        ("tie_plurality", tie_plurality),
        ("tied", winner == 0),
        ("below_threshold", ~(strict & reaches)),
    ]
    for name, failed in checks:
        reason[(reason == "") & failed] = name
    kept = reason == ""

    return MajorityResult(
        units=units,
        votes_a=votes_a,
        votes_b=votes_b,
        votes_tie=votes_tie,
        counted=counted,
        support_a=support_a,
        support_b=support_b,
        total=total,
        winner=winner,
        share=share,
        share_a=share_a,
        kept=kept,
        reason=reason,
        excluded_raters=np.unique(votes.rater[excluded]),
        reliability=reliability,
        config=config,
    )


# --- consensus -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Consensus:
    """The consensus order of one task's responses; per-response arrays follow ``responses``."""

    responses: np.ndarray
    """Response ids as given."""
    copeland: np.ndarray
    """Surviving pairs won minus surviving pairs lost."""
    net_support: np.ndarray
    """Support won by minus support lost by, over the surviving pairs (the first tie-break)."""
    rank: np.ndarray
    """0 = best; a total order (the last tie-break is the lower response id)."""

    @property
    def order(self) -> list[int]:
        """Response ids, best first."""
        return [int(r) for r in self.responses[np.argsort(self.rank, kind="stable")]]


def consensus_order(
    responses: object,
    first: object,
    second: object,
    winner: object,
    margin: object | None = None,
) -> Consensus:
    """Copeland order of ``responses`` from pairs (first, second) with winner +1 (first), -1, 0 (none).

    ``margin`` is the winner's support minus the loser's per pair (default 1 per decided
    pair). Pairs with winner 0 (dropped) count for nobody. Ties in Copeland score are
    broken by net support, then by the lower response id.
    """
    # One task has at most C(9, 2) = 36 pairs: plain Python over lists beats numpy's
    # per-call overhead here by an order of magnitude, and an export calls this per task.
    ids = [int(r) for r in np.asarray(responses, dtype=np.int64).reshape(-1)]
    index = {response: i for i, response in enumerate(ids)}
    if len(index) != len(ids):
        raise ValueError("responses must be distinct")
    firsts = np.asarray(first, dtype=np.int64).reshape(-1).tolist()
    seconds = np.asarray(second, dtype=np.int64).reshape(-1).tolist()
    winners = np.asarray(winner, dtype=np.int64).reshape(-1).tolist()
    margins = [1.0] * len(firsts) if margin is None else np.asarray(margin, dtype=float).reshape(-1).tolist()
    if not (len(firsts) == len(seconds) == len(winners) == len(margins)):
        raise ValueError("first, second, winner and margin must have the same length")
    copeland = [0] * len(ids)
    net = [0.0] * len(ids)
    for a, b, w, m in zip(firsts, seconds, winners, margins, strict=True):
        if a not in index or b not in index:
            raise ValueError("a pair names a response that is not in responses")
        if w == 0:
            continue
        won, lost = (index[a], index[b]) if w > 0 else (index[b], index[a])
        copeland[won] += 1
        copeland[lost] -= 1
        net[won] += m
        net[lost] -= m
    # Round the float tie-break so that sums in a different order cannot reorder equals.
    ranking = sorted(range(len(ids)), key=lambda i: (-copeland[i], -round(net[i], 9), ids[i]))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[ranking] = np.arange(len(ids))
    return Consensus(
        responses=np.asarray(ids, dtype=np.int64),
        copeland=np.asarray(copeland, dtype=np.int64),
        net_support=np.asarray(net, dtype=float),
        rank=rank,
    )


@dataclass(frozen=True)
class Consensuses:
    """The consensus of many tasks at once; per-response arrays follow the ``group`` / ``responses`` given."""

    copeland: np.ndarray
    net_support: np.ndarray
    rank: np.ndarray
    """0 = best within the response's group."""


def consensus_orders(
    group: object,
    responses: object,
    pair_group: object,
    first: object,
    second: object,
    winner: object,
    margin: object | None = None,
) -> Consensuses:
    """:func:`consensus_order` of many tasks in one pass, with the same result for each.

    ``group`` / ``responses`` list every task's responses (group index, response id), grouped
    by nondecreasing ``group``; ``pair_group`` / ``first`` / ``second`` / ``winner`` / ``margin``
    list every task's pairs in the order :func:`consensus_order` would get them. The net
    support is accumulated in that pair order, and rounded as there, so equal inputs give
    the same ranks bit for bit.
    """
    group = np.asarray(group, dtype=np.int64).reshape(-1)
    ids = np.asarray(responses, dtype=np.int64).reshape(-1)
    pair_group = np.asarray(pair_group, dtype=np.int64).reshape(-1)
    firsts = np.asarray(first, dtype=np.int64).reshape(-1)
    seconds = np.asarray(second, dtype=np.int64).reshape(-1)
    winners = np.asarray(winner, dtype=np.int64).reshape(-1)
    margins = np.ones(firsts.size) if margin is None else np.asarray(margin, dtype=float).reshape(-1)
    if group.size != ids.size:
        raise ValueError("group and responses must have the same length")
    if not (pair_group.size == firsts.size == seconds.size == winners.size == margins.size):
        raise ValueError("pair_group, first, second, winner and margin must have the same length")
    if group.size and np.any(np.diff(group) < 0):
        raise ValueError("responses must be grouped: group must not decrease")
    n = ids.size
    # Look responses up by (group, id): sort the slots by that key once.
    by_key = np.lexsort((ids, group))
    sorted_group, sorted_ids = group[by_key], ids[by_key]
    if n > 1 and np.any((sorted_group[1:] == sorted_group[:-1]) & (sorted_ids[1:] == sorted_ids[:-1])):
        raise ValueError("responses must be distinct within a group")

    # A dense code per distinct id, then one integer key per (group, id): a single
    # searchsorted finds every pair's response, with no loop over tasks.
    distinct = np.unique(ids)
    width = max(int(distinct.size), 1)
    keys = group[by_key] * width + np.searchsorted(distinct, sorted_ids)

    def slot_of(response: np.ndarray) -> np.ndarray:
        code = np.searchsorted(distinct, response)
        known = (code < distinct.size) & (distinct[np.minimum(code, max(distinct.size - 1, 0))] == response)
        if response.size and (n == 0 or not known.all()):
            raise ValueError("a pair names a response that is not in responses")
        wanted = pair_group * width + code
        where = np.minimum(np.searchsorted(keys, wanted), max(n - 1, 0))
        if response.size and not np.array_equal(keys[where], wanted):
            raise ValueError("a pair names a response that is not in responses")
        return by_key[where] if n else np.zeros(0, dtype=np.int64)

    first_slot, second_slot = slot_of(firsts), slot_of(seconds)
    decided = winners != 0
    won = np.where(winners > 0, first_slot, second_slot)[decided]
    lost = np.where(winners > 0, second_slot, first_slot)[decided]
    m = margins[decided]
    copeland = np.bincount(won, minlength=n) - np.bincount(lost, minlength=n)
    # Interleave (+m to the winner, -m to the loser) per pair: bincount adds in array order,
    # exactly the running sums of consensus_order.
    slots = np.empty(2 * won.size, dtype=np.int64)
    slots[0::2], slots[1::2] = won, lost
    amounts = np.empty(2 * won.size)
    amounts[0::2], amounts[1::2] = m, -m
    net = np.bincount(slots, weights=amounts, minlength=n).astype(float)
    rounded = np.array([round(value, 9) for value in net.tolist()], dtype=float)
    order = np.lexsort((ids, -rounded, -copeland, group))
    starts = np.searchsorted(group[order], group[order], side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts
    return Consensuses(copeland=copeland.astype(np.int64), net_support=net, rank=rank)
