"""Opt-in: one LoRA PPO update of the real SmolLM2-135M demo policy (skipped when it is not converted).

Checks the things a tiny random model cannot: the chat template of a real tokenizer renders
the prompt, the model stops with ``<|im_end|>``, the adapter-disabled base serves as the
reference (KL exactly 0 before the first optimizer step), and the first minibatch's ratio is 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlloop.ppo import PPOConfig, train
from rlloop.prompts import write_records
from tests.rlloop.test_demo_policy import converted_policy

pytestmark = [pytest.mark.slow]


def test_one_lora_ppo_update_of_smollm2(tmp_path: Path) -> None:
    policy = converted_policy()
    prompts = write_records(
        tmp_path / "prompts.jsonl",
        [{"prompt": "What is the capital of France?"}, {"prompt": "Name a primary colour."}],
    )
    result = train(
        PPOConfig(
            policy=str(policy),
            prompts=str(prompts),
            output_dir=str(tmp_path / "run"),
            reward_function="tests.rlloop.rewards:o_share",
            updates=1,
            rollouts_per_update=2,
            minibatch_size=2,
            ppo_epochs=1,
            max_new_tokens=16,
            temperature=0.7,
            lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            value_init="shared",
            device="cpu",
            samples_shown=2,
        )
    )
    metrics = result.history[0]
    assert result.info["reference"] == "adapter-disabled policy (one model)"
    assert result.info["format"] == "chat template"
    # Rollouts are scored before any update: policy and reference are the same function.
    assert metrics["objective/kl"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["val/first_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["losses/first_clipfrac"] == 0.0
    assert metrics["val/eos_share"] > 0  # short answers end with <|im_end|>
    rows = result.samples[0]["rows"]
    assert all(row["response"].strip() for row in rows)
    assert (Path(result.model_dir) / "model.safetensors").is_file()
