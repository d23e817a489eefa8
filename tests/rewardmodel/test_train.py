"""Training learns, touches every trained weight, validates its config and resumes exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from rewardmodel.scoring import RewardScorer
from rewardmodel.train import (
    TrainConfig,
    TrainHooks,
    TrainingCancelled,
    apply_lora,
    list_checkpoints,
    load_base,
    train,
)
from tests.rewardmodel.tiny import synthetic_snapshot
from trainio.runtime import seed_everything


def make_config(base: Path, data: Path, out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "base_model": str(base),
        "data_dir": str(data),
        "output_dir": str(out),
        "epochs": 1,
        "learning_rate": 2e-3,
        "groups_per_batch": 8,
        "max_length": 128,
        "eval_batch_groups": 32,
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


class Recorder(TrainHooks):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.evals: list[dict] = []
        self.checkpoints: list[tuple[str, int]] = []
        self.started: dict | None = None

    def on_start(self, total_steps: int, info: dict) -> None:
        self.started = {"total_steps": total_steps, **info}

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        self.steps.append({"step": step, **metrics})

    def on_eval(self, epoch: int, metrics: dict) -> None:
        self.evals.append(metrics)

    def on_checkpoint(self, path: str, step: int) -> None:
        self.checkpoints.append((path, step))


def test_learns_the_known_rule(tiny_gpt2, snapshot_k4, tmp_path) -> None:
    hooks = Recorder()
    result = train(make_config(tiny_gpt2, snapshot_k4, tmp_path, epochs=3), hooks)
    assert result.metrics["accuracy"] >= 0.95, result.history
    # Learning happened, it did not start there: the first epoch's loss is far above the last's,
    # and the training loss fell from ln 2 (an untrained head gives ~0 gaps).
    assert hooks.evals[0]["loss"] > result.metrics["loss"]
    first = sum(s["loss"] for s in hooks.steps[:5]) / 5
    last = sum(s["loss"] for s in hooks.steps[-5:]) / 5
    assert first > 0.5 and last < 0.5 * first
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert hooks.started["groups"]["train"] == 225 and hooks.started["pairs"]["validation"] == 75 * 6
    # Saved: safetensors, tokenizer, metrics, card; metrics.json agrees with the result.
    model_dir = Path(result.model_dir)
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "metrics.json",
        "README.md",
        "reward_model.json",
    ):
        assert (model_dir / name).is_file(), name
    saved = json.loads((model_dir / "metrics.json").read_text())
    assert saved["metrics"]["accuracy"] == result.metrics["accuracy"]
    assert "pairwise accuracy" in (model_dir / "README.md").read_text()


def _initial_trainable(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The trainable weights as train() starts from them (same seed, same order of RNG use)."""
    seed_everything(config.seed)
    _, model = load_base(config.base_model)
    if config.lora is not None:
        model = apply_lora(model, config.lora)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _last_checkpoint_weights(out: Path) -> dict[str, torch.Tensor]:
    (_, path), *_ = list_checkpoints(out / "checkpoints")
    return load_file(path / "model.safetensors")


def test_every_parameter_changes_in_a_full_fine_tune(tiny_gpt2, snapshot_small, tmp_path) -> None:
    config = make_config(tiny_gpt2, snapshot_small, tmp_path, epochs=2, warmup_ratio=0.0)
    before = _initial_trainable(config)
    train(config)
    after = _last_checkpoint_weights(tmp_path)
    assert set(after) == set(before) and len(before) > 20
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged


def test_lora_changes_every_adapter_weight_and_no_base_weight(tiny_gpt2, snapshot_small, tmp_path) -> None:
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn", "c_proj"]}
    config = make_config(tiny_gpt2, snapshot_small, tmp_path, epochs=2, warmup_ratio=0.0, lora=lora)
    before = _initial_trainable(config)
    result = train(config)
    after = _last_checkpoint_weights(tmp_path)
    assert set(after) == set(before)
    adapters = [n for n in before if "lora_" in n]
    # A and B of attn.c_attn, attn.c_proj and mlp.c_proj ("c_proj" names both) in two layers.
    assert len(adapters) == 2 * 3 * 2
    assert any("score" in n for n in before)  # the head is trained in full beside the adapters
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged
    # The merged model is saved as a plain classifier: base weights changed only through the merge.
    seed_everything(0)
    _, base = load_base(str(tiny_gpt2))
    _, merged = load_base(result.model_dir)
    base_w, merged_w = dict(base.named_parameters()), dict(merged.named_parameters())
    assert set(merged_w) == set(base_w)
    assert torch.equal(base_w["transformer.wte.weight"], merged_w["transformer.wte.weight"])
    assert not torch.equal(base_w["transformer.h.0.attn.c_attn.weight"], merged_w["transformer.h.0.attn.c_attn.weight"])
    # Scoring the saved merged model gives the validation accuracy that training reported.
    scorer = RewardScorer.from_pretrained(result.model_dir, device="cpu")
    assert scorer.reward_offset == 0.0
    assert result.metrics["accuracy"] == pytest.approx(_scored_accuracy(scorer, Path(config.data_dir)))


def _scored_accuracy(scorer: RewardScorer, data: Path) -> float:
    right = total = 0
    for line in (data / "groups.jsonl").read_text().splitlines():
        group = json.loads(line)
        if group["split"] != "validation":
            continue
        texts = {r["id"]: r["text"] for r in group["responses"]}
        ids = list(texts)
        scores = dict(zip(ids, scorer.score([(group["prompt"], texts[i]) for i in ids]), strict=True))
        for pair in group["pairs"]:
            right += scores[pair["chosen"]] > scores[pair["rejected"]]
            total += 1
    return right / total


def test_config_round_trip_and_errors(tmp_path) -> None:
    config = make_config(tmp_path, tmp_path, tmp_path, lora={"r": 2})
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training option.*bogus.*lr"):
        TrainConfig.from_dict({**config.to_dict(), "bogus": 1, "lr": 3})
    with pytest.raises(ValueError, match="missing training option.*base_model"):
        TrainConfig.from_dict({"data_dir": "x", "output_dir": "y"})
    with pytest.raises(ValueError, match="epochs.*learning_rate|learning_rate"):
        TrainConfig.from_dict({**config.to_dict(), "epochs": 0, "learning_rate": -1})
    with pytest.raises(ValueError, match="unknown lora option.*rank"):
        TrainConfig.from_dict({**config.to_dict(), "lora": {"rank": 2}})
    with pytest.raises(ValueError, match="precision"):
        TrainConfig.from_dict({**config.to_dict(), "precision": "fp8"})


def test_bad_data_is_refused_and_nothing_is_written(tiny_gpt2, tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="groups.jsonl does not exist"):
        train(make_config(tiny_gpt2, tmp_path / "nowhere", out))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "groups.jsonl").write_text(
        '{"split":"train","prompt":"p","responses":[{"id":1,"text":"a"}],"pairs":[{"chosen":1,"rejected":2}]}\n'
    )
    with pytest.raises(ValueError, match="groups.jsonl:1: a pair names a response the group does not hold"):
        train(make_config(tiny_gpt2, bad, out))
    assert not out.exists()
    with pytest.raises(ValueError, match="cannot load a tokenizer from"):
        train(make_config(bad, bad, out))  # a directory, but no checkpoint in it
    assert not out.exists()


# --- resumption -------------------------------------------------------------------------


def _weights(model_dir: str) -> dict[str, torch.Tensor]:
    return load_file(Path(model_dir) / "model.safetensors")


class StopAt(Recorder):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.stop_at = step

    def should_stop(self) -> bool:
        return len(self.steps) >= self.stop_at


class CrashAt(Recorder):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.crash_at = step

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        super().on_step(step, total_steps, metrics)
        if step == self.crash_at:
            raise RuntimeError("worker died")


@pytest.fixture(scope="module")
def uninterrupted(tiny_gpt2_dropout, snapshot_small, tmp_path_factory):
    """A reference run with dropout on (the RNG state matters) and gradient accumulation."""
    out = tmp_path_factory.mktemp("reference")
    config = _resume_config(tiny_gpt2_dropout, snapshot_small, out)
    hooks = Recorder()
    return train(config, hooks), hooks


def _resume_config(base: Path, data: Path, out: Path) -> TrainConfig:
    return make_config(
        base, data, out, epochs=3, groups_per_batch=4, gradient_accumulation=2, checkpoint_every_steps=3,
        disable_dropout=False, weight_decay=0.01,
    )  # fmt: skip


def test_cancel_saves_a_checkpoint_and_a_rerun_ends_bit_identical(
    uninterrupted, tiny_gpt2_dropout, snapshot_small, tmp_path
) -> None:
    reference, ref_hooks = uninterrupted
    total = ref_hooks.started["total_steps"]
    assert total == 15  # 36 train groups / 4 per batch / 2 accumulated = 5 steps x 3 epochs
    config = _resume_config(tiny_gpt2_dropout, snapshot_small, tmp_path)
    with pytest.raises(TrainingCancelled) as cancelled:
        train(config, StopAt(7))
    assert cancelled.value.step == 7
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [7, 6]
    # The layout earlier versions wrote, so their checkpoints still resume: one RNG file, no rank in its name.
    newest = list_checkpoints(tmp_path / "checkpoints")[0][1]
    files = ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    assert sorted(p.name for p in newest.iterdir()) == files
    hooks = Recorder()
    resumed = train(config, hooks)
    assert resumed.resumed_from_step == 7 and hooks.started["resumed_from_step"] == 7
    assert [s["step"] for s in hooks.steps] == list(range(8, total + 1))
    # The steps after the resume saw exactly what the reference saw.
    assert [s["loss"] for s in hooks.steps] == [s["loss"] for s in ref_hooks.steps[7:]]
    ref_w, got_w = _weights(reference.model_dir), _weights(resumed.model_dir)
    assert all(torch.equal(ref_w[n], got_w[n]) for n in ref_w)
    assert resumed.metrics == reference.metrics
    assert resumed.history == reference.history


def test_a_crash_resumes_from_the_last_checkpoint(uninterrupted, tiny_gpt2_dropout, snapshot_small, tmp_path) -> None:
    reference, _ = uninterrupted
    config = _resume_config(tiny_gpt2_dropout, snapshot_small, tmp_path)
    with pytest.raises(RuntimeError, match="worker died"):
        train(config, CrashAt(8))
    # Checkpoints at step 3 and 6 (every 3) and 5 (the first epoch's end); the newest two are kept.
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [6, 5]
    # A half-written checkpoint (no state.json: the process died while writing it) is ignored.
    partial = tmp_path / "checkpoints" / "step-00000008"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    (tmp_path / "checkpoints" / ".tmp-step-00000009-1").mkdir()
    resumed = train(config)
    assert resumed.resumed_from_step == 6
    ref_w, got_w = _weights(reference.model_dir), _weights(resumed.model_dir)
    assert all(torch.equal(ref_w[n], got_w[n]) for n in ref_w)
    assert resumed.metrics == reference.metrics


def test_a_checkpoint_of_another_config_is_not_resumed(tiny_gpt2, snapshot_small, tmp_path) -> None:
    config = make_config(tiny_gpt2, snapshot_small, tmp_path, checkpoint_every_steps=2)
    with pytest.raises(TrainingCancelled):
        train(config, StopAt(2))
    other = make_config(tiny_gpt2, snapshot_small, tmp_path, checkpoint_every_steps=2, learning_rate=1e-4)
    with pytest.raises(ValueError, match="different config \\(learning_rate\\)"):
        train(other)


@pytest.mark.parametrize(
    "options",
    [
        {"margin": True, "margin_scale": 0.5},
        {"soft_labels": True},
        {"center_coefficient": 0.1},
        {"precision": "bf16", "gradient_accumulation": 2},
    ],
    ids=["margin", "soft-labels", "centering", "bf16-accumulation"],
)
def test_loss_options_train_on_split_votes(options, tiny_gpt2, tmp_path) -> None:
    data = synthetic_snapshot(tmp_path / "data", n_groups=160, k=3, votes=3, split_votes=0.3, seed=6)
    hooks = Recorder()
    result = train(make_config(tiny_gpt2, data, tmp_path / "run", epochs=3, **options), hooks)
    assert result.history[0]["pairs_split"] > 0 and result.history[0]["pairs_unanimous"] > 0
    assert result.metrics["accuracy"] >= 0.8, result.history
    assert result.metrics["agreement_split"] < 1.0 == result.metrics["agreement_unanimous"]
    assert all(math.isfinite(s["loss"]) for s in hooks.steps)
    saved = json.loads((Path(result.model_dir) / "metrics.json").read_text())
    assert all(saved["config"][k] == v for k, v in options.items())


def test_centering_pulls_the_raw_rewards_toward_zero(tiny_gpt2, snapshot_small, tmp_path) -> None:
    plain = train(make_config(tiny_gpt2, snapshot_small, tmp_path / "plain", epochs=3))
    centered = train(make_config(tiny_gpt2, snapshot_small, tmp_path / "centered", epochs=3, center_coefficient=1.0))
    assert abs(centered.metrics["reward_mean_before"]) < abs(plain.metrics["reward_mean_before"])
