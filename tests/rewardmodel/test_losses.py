"""The grouped Bradley–Terry loss against a naive per-pair computation, and the metrics."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch

from rewardmodel.data import Formatter, collate, encode_group, flatten_pairs, read_groups
from rewardmodel.losses import expected_calibration_error, grouped_loss, pair_metrics
from rewardmodel.train import forward_rewards, load_base
from trainio.runtime import seed_everything


def naive_instructgpt(groups: list[torch.Tensor]) -> float:
    """InstructGPT's loss: per prompt, the mean over its C(K,2) pairs; then the mean over prompts.

    ``groups[g]`` holds the rewards of group g in consensus order (best first), so every pair
    (i < j) has i chosen. Computed in float64 with Python's own math, pair by pair.
    """
    per_group = []
    for rewards in groups:
        r = rewards.double().tolist()
        pairs = list(combinations(range(len(r)), 2))
        per_group.append(sum(math.log1p(math.exp(-(r[i] - r[j]))) for i, j in pairs) / len(pairs))
    return sum(per_group) / len(per_group)


def flatten(groups: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rewards, chosen, rejected, weight = [], [], [], []
    offset = 0
    for r in groups:
        k = r.numel()
        for i, j in combinations(range(k), 2):
            chosen.append(offset + i)
            rejected.append(offset + j)
            weight.append(1.0 / (k * (k - 1) // 2))
        rewards.append(r)
        offset += k
    return torch.cat(rewards), torch.tensor(chosen), torch.tensor(rejected), torch.tensor(weight)


@pytest.mark.parametrize("seed", range(5))
def test_grouped_loss_equals_the_mean_pairwise_loss(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 10, (7,), generator=gen).tolist()
    groups = [torch.randn(k, generator=gen, dtype=torch.float64) * 3 for k in sizes]
    rewards, chosen, rejected, weight = flatten(groups)
    out = grouped_loss(rewards, chosen, rejected, weight)
    assert float(out.loss) == pytest.approx(naive_instructgpt(groups), abs=1e-6)
    # Every pair's own loss too, and the gaps.
    for p in range(chosen.numel()):
        d = float(rewards[chosen[p]] - rewards[rejected[p]])
        assert float(out.delta[p]) == pytest.approx(d, abs=1e-6)
        assert float(out.per_pair[p]) == pytest.approx(math.log1p(math.exp(-d)), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_weights_margins_soft_labels_and_centering_match_the_pair_formula(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    n = 40
    r_all = torch.randn(25, generator=gen)
    chosen = torch.randint(0, 25, (n,), generator=gen)
    rejected = (chosen + torch.randint(1, 25, (n,), generator=gen)) % 25
    weight = torch.rand(n, generator=gen) + 0.05
    share = 0.5 + 0.5 * torch.rand(n, generator=gen)
    out = grouped_loss(
        r_all, chosen, rejected, weight, vote_share=share, margin=True, margin_scale=0.7, soft_labels=True,
        center_coefficient=0.01,
    )  # fmt: skip
    total, wsum = 0.0, 0.0
    for p in range(n):
        rc, rr, s, w = float(r_all[chosen[p]]), float(r_all[rejected[p]]), float(share[p]), float(weight[p])
        z = rc - rr - 0.7 * (2 * s - 1)
        sig = 1 / (1 + math.exp(-z))
        loss = -(s * math.log(sig) + (1 - s) * math.log(1 - sig)) + 0.01 * (rc + rr) ** 2
        total += w * loss
        wsum += w
    assert float(out.loss) == pytest.approx(total / wsum, abs=1e-6)


def test_the_margin_asks_for_a_wider_gap() -> None:
    r = torch.tensor([1.0, 0.0])
    plain = grouped_loss(r, torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]), vote_share=torch.tensor([1.0]))
    wide = grouped_loss(
        r, torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]), vote_share=torch.tensor([1.0]), margin=True
    )
    assert float(wide.loss) == pytest.approx(math.log1p(math.exp(0.0)))  # gap 1 minus margin 1
    assert float(wide.loss) > float(plain.loss)


def test_grouped_forward_equals_flat_pairwise_forward(tiny_gpt2, snapshot_small) -> None:
    """The same loss whether each response is forwarded once (grouped) or once per pair (flat)."""
    seed_everything(0)
    tokenizer, model = load_base(str(tiny_gpt2))
    model.eval()
    formatter = Formatter(tokenizer, 128)
    groups = [encode_group(g, formatter) for g in read_groups(snapshot_small)[:12]]
    pad = tokenizer.pad_token_id
    batch = collate(groups, pad_token_id=pad)
    flat = collate(flatten_pairs(groups), pad_token_id=pad)
    assert flat.n_responses == 2 * batch.chosen.numel() > batch.n_responses
    with torch.no_grad():
        grouped = grouped_loss(forward_rewards(model, batch.inputs, None), batch.chosen, batch.rejected, batch.weight)
        pairwise = grouped_loss(forward_rewards(model, flat.inputs, None), flat.chosen, flat.rejected, flat.weight)
    assert float(grouped.loss) == pytest.approx(float(pairwise.loss), abs=1e-6)
    assert torch.allclose(grouped.delta, pairwise.delta, atol=1e-5)


def test_calibration_error() -> None:
    # Confidence 0.9, 90% right: calibrated.
    p = torch.tensor([0.9] * 9 + [0.1])
    assert expected_calibration_error(p) == pytest.approx(0.0, abs=1e-6)
    # Confidence 0.9, all right: off by 0.1.
    assert expected_calibration_error(torch.full((10,), 0.9)) == pytest.approx(0.1)
    # Half at 0.6 (right), half at 0.3 (wrong, confidence 0.7): 0.5 * 0.4 + 0.5 * 0.7.
    p = torch.tensor([0.6, 0.6, 0.3, 0.3])
    assert expected_calibration_error(p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.7)


def test_pair_metrics_per_agreement_bucket() -> None:
    delta = torch.tensor([1.0, -1.0, 2.0, 0.5, -0.5])
    per_pair = torch.zeros(5)
    weight = torch.ones(5)
    votes_chosen = torch.tensor([3, 3, 2, 1, 1])
    votes_rejected = torch.tensor([0, 0, 1, 0, 0])
    votes_tie = torch.tensor([0, 0, 0, 0, 0])
    m = pair_metrics(delta, per_pair, weight, votes_chosen, votes_rejected, votes_tie)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["pairs_unanimous"] == 2 and m["accuracy_unanimous"] == pytest.approx(0.5)
    assert m["agreement_unanimous"] == pytest.approx(1.0)
    assert m["pairs_split"] == 1 and m["accuracy_split"] == 1.0 and m["agreement_split"] == pytest.approx(2 / 3)
    assert m["pairs_single"] == 2 and m["accuracy_single"] == pytest.approx(0.5)
    assert m["margin"] == pytest.approx(0.4)
    empty = pair_metrics(delta[:2], per_pair[:2], weight[:2], votes_chosen[:2], votes_rejected[:2], votes_tie[:2])
    assert empty["accuracy_split"] is None and empty["pairs_split"] == 0
