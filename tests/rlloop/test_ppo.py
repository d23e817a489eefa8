"""rlloop.ppo with tiny models built in code: the arithmetic against loop references, and training behaviour."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from rewardmodel.hooks import TrainHooks, TrainingCancelled
from rlloop.ppo import (
    AdaptiveKL,
    PPOConfig,
    batch_indices,
    gae,
    kl_estimates,
    length_adjusted,
    masked_whiten,
    ppo_losses,
    token_rewards,
    train,
)


def config(policy: Path, prompts: Path, out: Path, **overrides: Any) -> PPOConfig:
    options: dict[str, Any] = {
        "policy": str(policy),
        "prompts": str(prompts),
        "output_dir": str(out),
        "reward_function": "tests.rlloop.rewards:o_share",
        "updates": 30,
        "rollouts_per_update": 16,
        "minibatch_size": 8,
        "ppo_epochs": 4,
        "learning_rate": 1e-2,
        "max_new_tokens": 8,
        "temperature": 1.0,
        "kl_coef": 0.01,
        "missing_eos_penalty": None,
        "device": "cpu",
        "checkpoint_every": 1000,
        "seed": 0,
    }
    options.update(overrides)
    return PPOConfig.from_dict(options)


def mean(history: list[dict], key: str, rows: slice) -> float:
    values = [h[key] for h in history[rows]]
    return sum(values) / len(values)


# --------------------------------------------------------------------------------------
# Arithmetic


def _batch(seed: int = 0, b: int = 5, t: int = 7) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 1, 4, 6, 3][:b])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    logp = -torch.rand(b, t, generator=g) * 5
    ref = -torch.rand(b, t, generator=g) * 5
    values = torch.randn(b, t, generator=g)
    scores = torch.randn(b, generator=g)
    return mask, logp, ref, values, scores


def loop_reference(mask, logp, ref, values, scores, beta, gamma, lam, estimator):
    """Per-sequence Python loops over floats: rewards, GAE and returns as the papers write them."""
    b, t = mask.shape
    advantages = torch.zeros(b, t, dtype=torch.float64)
    returns = torch.zeros(b, t, dtype=torch.float64)
    rewards_out = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        n = int(mask[i].sum())
        rewards = []
        for j in range(n):
            lp, rp = float(logp[i, j]), float(ref[i, j])
            kl = lp - rp if estimator == "k1" else math.exp(rp - lp) - 1 - (rp - lp)
            rewards.append(-beta * kl + (float(scores[i]) if j == n - 1 else 0.0))
        running = 0.0
        for j in reversed(range(n)):
            next_value = float(values[i, j + 1]) if j + 1 < n else 0.0
            delta = rewards[j] + gamma * next_value - float(values[i, j])
            running = delta + gamma * lam * running
            advantages[i, j] = running
            returns[i, j] = running + float(values[i, j])
            rewards_out[i, j] = rewards[j]
    return rewards_out, advantages, returns


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)])
def test_grouped_kl_rewards_and_gae_equal_a_loop_reference(estimator, gamma, lam) -> None:
    mask, logp, ref, values, scores = _batch()
    k1, k3 = kl_estimates(logp, ref)
    rewards, non_score = token_rewards(scores, k1 if estimator == "k1" else k3, mask, 0.1)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    want_rewards, want_adv, want_ret = loop_reference(mask, logp, ref, values, scores, 0.1, gamma, lam, estimator)
    torch.testing.assert_close(rewards.double() * mask, want_rewards, atol=1e-6, rtol=0)
    torch.testing.assert_close(advantages.double(), want_adv, atol=1e-6, rtol=0)
    torch.testing.assert_close(returns.double(), want_ret, atol=1e-6, rtol=0)
    assert torch.all(non_score[mask == 0] == 0)


def test_kl_estimators() -> None:
    logp = torch.log(torch.tensor([0.5, 0.1, 0.3]))
    ref = torch.log(torch.tensor([0.25, 0.1, 0.6]))
    k1, k3 = kl_estimates(logp, ref)
    torch.testing.assert_close(k1, torch.tensor([math.log(2), 0.0, math.log(0.5)]))
    r = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(k3, r - 1 - torch.log(r))
    assert torch.all(k3 >= 0)  # k3 is never negative, k1 can be
    # Both are unbiased for KL(p || p_ref) under samples of p: check on a small distribution.
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = float((p * (p / q).log()).sum())
    k1_all, k3_all = kl_estimates(p.log(), q.log())
    assert float((p * k1_all).sum()) == pytest.approx(exact, abs=1e-6)
    assert float((p * k3_all).sum()) == pytest.approx(exact, abs=1e-6)


def test_whitening_uses_valid_tokens_only() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 7.0]])
    w = masked_whiten(x, mask)
    valid = torch.tensor([1.0, 2.0, 3.0])
    want = (valid - valid.mean()) / valid.std()
    torch.testing.assert_close(w[mask == 1], want, atol=1e-4, rtol=0)
    assert torch.all(w[mask == 0] == 0)


def test_identical_policies_give_ratio_one_and_nothing_clipped() -> None:
    mask, logp, _, values, _ = _batch()
    advantages = torch.randn_like(logp)
    _, _, stats = ppo_losses(
        new_logp=logp.clone(), old_logp=logp, advantages=advantages, vpred=values.clone(), old_values=values,
        returns=values + 1, mask=mask, cliprange=0.2, cliprange_value=0.2,
    )  # fmt: skip
    assert float(stats["ratio"]) == 1.0
    assert float(stats["clipfrac"]) == 0.0
    assert float(stats["approx_kl"]) == 0.0


def test_clipping_stops_the_gradient_beyond_the_range() -> None:
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]])).requires_grad_()
    mask = torch.ones(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    pg, _, stats = ppo_losses(
        new_logp=new, old_logp=old, advantages=adv, vpred=torch.zeros(1, 2), old_values=torch.zeros(1, 2),
        returns=torch.zeros(1, 2), mask=mask, cliprange=0.2, cliprange_value=0.2,
    )  # fmt: skip
    pg.backward()
    # Positive advantage past 1 + eps and negative advantage below 1 - eps: both clipped, no gradient.
    assert float(stats["clipfrac"]) == 1.0
    assert torch.all(new.grad == 0)


def test_adaptive_controller_moves_beta_toward_the_target() -> None:
    too_much = AdaptiveKL(0.1, target=6.0, horizon=10_000)
    for _ in range(50):
        too_much.update(kl=12.0, n_steps=256)
    assert too_much.beta == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000) ** 50)  # error clipped at +0.2
    too_little = AdaptiveKL(0.1, target=6.0, horizon=10_000)
    too_little.update(kl=3.0, n_steps=256)
    assert too_little.beta == pytest.approx(0.1 * (1 - 0.2 * 256 / 10_000))  # error clipped at -0.2


def test_length_normalisation_removes_the_linear_length_trend() -> None:
    lengths = torch.tensor([2.0, 4.0, 6.0, 8.0])
    scores = 0.5 * lengths + torch.tensor([0.1, -0.1, 0.05, -0.05])
    cfg = PPOConfig(policy="p", prompts="q", output_dir="o", reward_function="m:f", length_normalize=True)
    adjusted = length_adjusted(scores, lengths, cfg)
    centred = lengths - lengths.mean()
    assert abs(float((centred * (adjusted - adjusted.mean())).sum())) < 1e-5
    cfg = PPOConfig(policy="p", prompts="q", output_dir="o", reward_function="m:f", length_penalty=0.1)
    torch.testing.assert_close(length_adjusted(scores, lengths, cfg), scores - 0.1 * lengths)


def test_prompt_batches_cover_every_prompt_once_per_pass_and_split_across_processes() -> None:
    one = [i for u in range(4) for i in batch_indices(16, 3, u, 4, 1, 0)]
    assert sorted(one) == list(range(16))
    two = [i for u in range(2) for r in range(2) for i in batch_indices(16, 3, u, 4, 2, r)]
    assert two == one  # two processes read the same sequence, each its own slice


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError) as info:
        PPOConfig.from_dict(
            {"policy": "p", "prompts": "q", "output_dir": "o", "reward_function": "m:f", "kl_estimator": "k2",
             "cliprange": -1, "minibatch_size": 64, "rollouts_per_update": 8, "wat": 1}
        )  # fmt: skip
    assert "unknown PPO option(s): wat" in str(info.value)
    with pytest.raises(ValueError) as info:
        PPOConfig.from_dict(
            {"policy": "p", "prompts": "q", "output_dir": "o", "kl_estimator": "k2", "cliprange": -1,
             "minibatch_size": 64, "rollouts_per_update": 8}
        )  # fmt: skip
    message = str(info.value)
    for part in ("exactly one of reward_model and reward_function", "kl_estimator", "cliprange", "minibatch_size"):
        assert part in message


# --------------------------------------------------------------------------------------
# Training with a rule-based reward (the share of "o" in the response: optimum 1.0)


@pytest.fixture(scope="module")
def rising_run(tiny_policy, prompt_file, tmp_path_factory):
    return train(config(tiny_policy, prompt_file, tmp_path_factory.mktemp("rise")))


def test_a_rule_based_reward_rises_within_30_updates_with_bounded_kl(rising_run) -> None:
    history = rising_run.history
    assert len(history) == 30
    start, end = mean(history, "objective/scores", slice(0, 5)), mean(history, "objective/scores", slice(-5, None))
    kl_end = mean(history, "objective/kl", slice(-5, None))
    print(
        f"\nrule reward (share of 'o'), mean of updates 1-5 {start:.3f} -> 26-30 {end:.3f}; KL at the end {kl_end:.1f}"
    )
    assert start < 0.15
    assert end > 0.5 and end > 4 * start, (start, end)
    # 8 tokens of a 400-token vocabulary: KL per response tends to 8 * ln(400) = 48 nats as
    # the policy becomes deterministic; beta = 0.01 keeps it below that.
    assert mean(history, "objective/kl", slice(-5, None)) < 45
    for h in history:
        assert h["objective/rlhf_reward"] == pytest.approx(h["objective/scores"] + h["objective/non_score_reward"])
        assert 0 <= h["losses/clipfrac"] <= 1 and 0 <= h["val/eos_share"] <= 1


def test_the_first_minibatch_of_each_update_has_ratio_one_and_nothing_clipped(rising_run) -> None:
    for h in rising_run.history:
        assert h["val/first_ratio"] == pytest.approx(1.0, abs=1e-5)
        assert h["losses/first_clipfrac"] == 0.0


def test_the_result_is_a_policy_checkpoint_with_its_sidecar(rising_run) -> None:
    from rlloop.policy import load_causal_lm, read_sidecar

    model_dir = Path(rising_run.model_dir)
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    sidecar = read_sidecar(model_dir)
    assert sidecar["format"] == "arpad-policy/1" and sidecar["chat_template"] is True
    assert load_causal_lm(model_dir) is not None
    assert rising_run.samples and {"prompt", "response", "score", "kl"} <= set(rising_run.samples[0]["rows"][0])


def test_a_large_beta_keeps_the_policy_near_the_reference(tiny_policy, prompt_file, rising_run, tmp_path) -> None:
    leashed = train(config(tiny_policy, prompt_file, tmp_path, kl_coef=5.0)).history
    free_kl = mean(rising_run.history, "objective/kl", slice(-5, None))
    print(
        f"\nbeta 5: KL {mean(leashed, 'objective/kl', slice(-5, None)):.3f} (beta 0.01: {free_kl:.1f}), score "
        f"{mean(leashed, 'objective/scores', slice(0, 5)):.3f} -> {mean(leashed, 'objective/scores', slice(-5, None)):.3f}"
    )
    assert mean(leashed, "objective/kl", slice(-5, None)) < 1.0
    assert mean(leashed, "objective/kl", slice(-5, None)) < free_kl / 10
    assert mean(leashed, "objective/scores", slice(-5, None)) < 0.15  # the score did not move


def test_adaptive_beta_rises_when_kl_exceeds_its_target(tiny_policy, prompt_file, tmp_path) -> None:
    history = train(
        config(tiny_policy, prompt_file, tmp_path, updates=15, adaptive_kl=True, target_kl=1.0, kl_horizon=200)
    ).history
    betas = [h["objective/beta"] for h in history]
    assert betas[0] == 0.01
    over = [h["objective/kl"] > 1.0 for h in history[:-1]]
    for i, above in enumerate(over):
        assert (betas[i + 1] > betas[i]) == above  # each step goes the way the KL says
    assert betas[-1] > betas[0]


def _trainable(model_dir: Path) -> dict[str, torch.Tensor]:
    found = sorted((model_dir / "checkpoints").glob("step-*"))
    return load_file(found[-1] / "model.safetensors")


def test_every_trainable_parameter_changes_lora_adapters_critic_and_value_head(
    tiny_policy, prompt_file, tmp_path
) -> None:
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    initial_dir, trained_dir = tmp_path / "zero", tmp_path / "five"
    # The initial weights: the same config stopped before its first update.
    with pytest.raises(TrainingCancelled):
        train(config(tiny_policy, prompt_file, initial_dir, updates=5, lora=lora), _StopAt(0))
    train(config(tiny_policy, prompt_file, trained_dir, updates=5, lora=lora))
    before, after = _trainable(initial_dir), _trainable(trained_dir)
    assert set(before) == set(after)
    names = set(before)
    assert any(".lora_A." in n for n in names) and any(n.startswith("critic.") for n in names)
    assert {"value_head.weight", "value_head.bias"} <= names
    assert not any(".lora_" not in n and n.startswith("policy.") for n in names)  # the base is frozen
    unchanged = [n for n in names if torch.equal(before[n], after[n])]
    assert unchanged == []


class _StopAt(TrainHooks):
    def __init__(self, update: int) -> None:
        self.update, self.seen = update, 0

    def on_step(self, step: int, total_steps: int, metrics: dict) -> None:
        self.seen = step

    def should_stop(self) -> bool:
        return self.seen >= self.update


def test_a_stopped_round_resumes_to_the_uninterrupted_weights(tiny_policy, prompt_file, tmp_path) -> None:
    lora = {"r": 4, "alpha": 8}
    full = train(config(tiny_policy, prompt_file, tmp_path / "full", updates=6, lora=lora, adaptive_kl=True))
    out = tmp_path / "stopped"
    with pytest.raises(TrainingCancelled) as info:
        train(config(tiny_policy, prompt_file, out, updates=6, lora=lora, adaptive_kl=True), _StopAt(3))
    assert info.value.step == 3
    resumed = train(config(tiny_policy, prompt_file, out, updates=6, lora=lora, adaptive_kl=True))
    assert resumed.resumed_from_update == 3
    want, got = (
        load_file(Path(full.model_dir) / "model.safetensors"),
        load_file(Path(resumed.model_dir) / "model.safetensors"),
    )
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert [h["objective/scores"] for h in resumed.history] == [h["objective/scores"] for h in full.history]
    assert resumed.history[-1]["objective/beta"] == full.history[-1]["objective/beta"]


def test_a_changed_config_is_not_resumed(tiny_policy, prompt_file, tmp_path) -> None:
    with pytest.raises(TrainingCancelled):
        train(config(tiny_policy, prompt_file, tmp_path, updates=3), _StopAt(1))
    with pytest.raises(ValueError, match="different config"):
        train(config(tiny_policy, prompt_file, tmp_path, updates=3, kl_coef=0.5))


def test_value_init_from_a_reward_model_copies_its_head(tiny_policy, prompt_file, tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification

    # The tiny policy's directory read as a one-output classifier is a decoder reward model
    # with the policy's tokenizer (its head is random, which is all this test needs).
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_policy), num_labels=1)
    rm_dir = tmp_path / "rm"
    rm.save_pretrained(rm_dir)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tiny_policy)).save_pretrained(rm_dir)
    out = tmp_path / "run"
    with pytest.raises(TrainingCancelled):
        train(
            config(tiny_policy, prompt_file, out, updates=2, reward_function=None, reward_model=str(rm_dir),
                   value_init="reward_model"),
            _StopAt(0),
        )  # fmt: skip
    weights = _trainable(out)
    torch.testing.assert_close(weights["value_head.weight"], rm.score.weight.detach())


# --------------------------------------------------------------------------------------
# A gold reward model that only watches (Gao et al. 2022)


def test_a_gold_reward_model_is_recorded_and_never_changes_the_training(
    tiny_policy, prompt_file, gold_model, tmp_path
) -> None:
    from rewardmodel.scoring import RewardScorer

    # Every rollout of an update in its sample table, so the table's mean is the update's.
    options = {"updates": 4, "rollouts_per_update": 8, "minibatch_size": 4, "samples_shown": 8, "sample_every": 2}
    plain = train(config(tiny_policy, prompt_file, tmp_path / "plain", **options))
    watched = train(config(tiny_policy, prompt_file, tmp_path / "gold", gold_reward_model=str(gold_model), **options))

    want = load_file(Path(plain.model_dir) / "model.safetensors")
    got = load_file(Path(watched.model_dir) / "model.safetensors")
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert [h["objective/scores"] for h in watched.history] == [h["objective/scores"] for h in plain.history]
    assert not any("objective/gold_scores" in h for h in plain.history)
    assert not any("gold" in row for table in plain.samples for row in table["rows"])

    scorer = RewardScorer.from_pretrained(str(gold_model), device="cpu")
    assert [t["step"] for t in watched.samples] == [1, 2, 4]
    for table in watched.samples:
        rows = table["rows"]
        assert len(rows) == 8
        direct = scorer.score([(row["prompt"], row["response"]) for row in rows])
        assert [row["gold"] for row in rows] == pytest.approx(direct, abs=1e-5)
        gold_mean = watched.history[table["step"] - 1]["objective/gold_scores"]
        assert gold_mean == pytest.approx(sum(direct) / len(direct), abs=1e-5)
        # The gold is another model than the proxy (the share of "o"): its own numbers.
        assert [row["gold"] for row in rows] != pytest.approx([row["score"] for row in rows], abs=1e-3)
    assert len({round(h["objective/gold_scores"], 6) for h in watched.history}) > 1
    assert watched.metrics["objective/gold_scores"] == watched.history[-1]["objective/gold_scores"]


def test_a_resumed_round_keeps_its_gold_history(tiny_policy, prompt_file, gold_model, tmp_path) -> None:
    options = {"updates": 4, "rollouts_per_update": 4, "minibatch_size": 4, "gold_reward_model": str(gold_model)}
    full = train(config(tiny_policy, prompt_file, tmp_path / "full", **options))
    out = tmp_path / "stopped"
    with pytest.raises(TrainingCancelled):
        train(config(tiny_policy, prompt_file, out, **options), _StopAt(2))
    resumed = train(config(tiny_policy, prompt_file, out, **options))
    assert resumed.resumed_from_update == 2
    golds = [h["objective/gold_scores"] for h in resumed.history]
    assert golds == [h["objective/gold_scores"] for h in full.history] and len(golds) == 4
