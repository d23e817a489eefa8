"""Bradley–Terry losses over prompt groups, and the evaluation metrics of a reward model.

No Django here. A batch holds the rewards of every response of some prompt groups, each
computed once, and the groups' kept pairs as (chosen, rejected) indices into them. The
loss of a pair with reward difference ``d = r_chosen - r_rejected`` is

* ``-log sigmoid(d - m)``: Bradley–Terry, with an optional margin ``m`` (Llama 2's margin
  loss; here ``m = margin_scale * (2 * vote_share - 1)``: a unanimous pair asks for a wider
  gap than a bare majority);
* with soft labels, the binary cross-entropy of ``sigmoid(d - m)`` against the target
  ``vote_share`` (the winner's share of the votes) instead of 1;
* plus ``center_coefficient * (r_chosen + r_rejected) ** 2`` (the reward-centering term of
  Eisenstein et al. 2023, which pins the free offset of the rewards near 0).

The batch loss is the weighted mean of the pair losses, weights from the export's ``weight``
column (1/C(K,2) by default: InstructGPT's weighting, every prompt's comparisons weigh one
together). Deviation from InstructGPT, on purpose: the mean divides by the total weight of
the batch, not by the number of groups. For complete groups the two are identical; with
pairs dropped by the majority vote, a group keeps its share of the gradient in proportion to
the pairs it kept, and the loss scale does not depend on the weighting scheme chosen at export.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional


@dataclass
class PairLoss:
    loss: torch.Tensor  # scalar, weighted mean
    per_pair: torch.Tensor  # unweighted loss of each pair
    delta: torch.Tensor  # r_chosen - r_rejected


def pairwise_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    weight: torch.Tensor,
    *,
    vote_share: torch.Tensor | None = None,
    margin: bool = False,
    margin_scale: float = 1.0,
    soft_labels: bool = False,
    center_coefficient: float = 0.0,
) -> PairLoss:
    """The loss of pairs given both rewards of each pair (see the module docstring)."""
    r_chosen = r_chosen.float()
    r_rejected = r_rejected.float()
    weight = weight.float()
    if (margin or soft_labels) and vote_share is None:
        raise ValueError("margin and soft labels need the pairs' vote_share")
    delta = r_chosen - r_rejected
    logits = delta
    if margin:
        logits = logits - margin_scale * (2.0 * vote_share.float() - 1.0)
    if soft_labels:
        per_pair = functional.binary_cross_entropy_with_logits(logits, vote_share.float(), reduction="none")
    else:
        per_pair = -functional.logsigmoid(logits)
    if center_coefficient:
        per_pair = per_pair + center_coefficient * (r_chosen + r_rejected) ** 2
    total = weight.sum()
    if total <= 0:
        raise ValueError("the pairs of a batch must have a positive total weight")
    return PairLoss(loss=(per_pair * weight).sum() / total, per_pair=per_pair, delta=delta)


def grouped_loss(
    rewards: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    weight: torch.Tensor,
    **options: object,
) -> PairLoss:
    """The same loss from one reward per response: pairs index into ``rewards``."""
    return pairwise_loss(rewards[chosen], rewards[rejected], weight, **options)  # type: ignore[arg-type]


def expected_calibration_error(prob_chosen: torch.Tensor, *, bins: int = 10) -> float:
    """ECE of P(chosen wins) = sigmoid(r_c - r_r) as a classifier of the consensus label.

    Confidence is max(p, 1 - p), correctness is p > 1/2; equal-width confidence bins over
    [1/2, 1], the gap |accuracy - confidence| weighted by each bin's share of the pairs.
    """
    if prob_chosen.numel() == 0:
        return float("nan")
    p = prob_chosen.double()
    confidence = torch.maximum(p, 1 - p)
    correct = (p > 0.5).double()
    edges = torch.linspace(0.5, 1.0, bins + 1, dtype=torch.float64)
    index = torch.clamp(torch.bucketize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        mask = index == b
        if mask.any():
            ece += mask.double().mean() * (correct[mask].mean() - confidence[mask].mean()).abs()
    return float(ece)


def pair_metrics(
    delta: torch.Tensor,
    per_pair: torch.Tensor,
    weight: torch.Tensor,
    votes_chosen: torch.Tensor,
    votes_rejected: torch.Tensor,
    votes_tie: torch.Tensor,
) -> dict[str, float | None]:
    """Accuracy, loss, mean margin, calibration and accuracy per agreement bucket.

    Buckets: ``unanimous`` (at least two votes, none against the consensus), ``split`` (some
    votes against, or ties) and ``single`` (one vote). Beside each bucket's model accuracy,
    ``agreement_<bucket>`` is the annotators' own agreement with the consensus: the mean
    share of a pair's votes that went to the winner (ties count half), the ceiling a model
    trained on these labels can be expected to reach on a fresh annotator's vote. A figure
    that is undefined (an empty bucket) is None.
    """
    delta = delta.double().cpu()
    per_pair = per_pair.double().cpu()
    weight = weight.double().cpu()
    right = (delta > 0).double() + 0.5 * (delta == 0).double()
    n = delta.numel()
    metrics: dict[str, float] = {
        "pairs": float(n),
        "accuracy": float(right.mean()) if n else float("nan"),
        "accuracy_weighted": float((right * weight).sum() / weight.sum()) if n else float("nan"),
        "loss": float((per_pair * weight).sum() / weight.sum()) if n else float("nan"),
        "margin": float(delta.mean()) if n else float("nan"),
        "ece": expected_calibration_error(torch.sigmoid(delta)),
    }
    vc, vr, vt = votes_chosen.cpu(), votes_rejected.cpu(), votes_tie.cpu()
    total = (vc + vr + vt).double()
    agreement = (vc.double() + 0.5 * vt.double()) / total.clamp(min=1)
    buckets = {
        "unanimous": (total >= 2) & (vr == 0) & (vt == 0),
        "split": (total >= 2) & ((vr > 0) | (vt > 0)),
        "single": total < 2,
    }
    for name, mask in buckets.items():
        count = int(mask.sum())
        metrics[f"pairs_{name}"] = float(count)
        metrics[f"accuracy_{name}"] = float(right[mask].mean()) if count else float("nan")
        metrics[f"agreement_{name}"] = float(agreement[mask].mean()) if count else float("nan")
    # Undefined figures (an empty bucket) are None, not NaN: JSON and jsonb columns take them.
    return {key: None if value != value else value for key, value in metrics.items()}
