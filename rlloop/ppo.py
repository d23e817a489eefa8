"""PPO against a reward model, under a per-token KL leash to a frozen reference. No Django here.

``python -m rlloop.ppo --policy DIR --prompts FILE --reward-model DIR --out RUN`` runs it on
any machine; ``accelerate launch [--config_file F] -m rlloop.ppo ...`` runs it on several
processes, GPUs or nodes (DDP through an accelerate config; FSDP and DeepSpeed are refused
until checkpoints gather sharded weights, see the README); the platform's
round job wraps :func:`train`. One update, top to bottom:

1. **Rollouts.** Each process takes ``rollouts_per_update`` prompts (a permutation per pass
   over the prompt file, a function of the seed: exact resumption), renders them through the
   policy's chat template (:mod:`rlloop.policy`) and samples one response each through the
   :class:`~rlloop.policy.Generator` interface (``temperature``, ``top_p``; HF ``generate``
   today). A response is cut after its first eos.
2. **Scores.** The response is decoded and scored by the reward model through the reward
   model's own formatter and tokenizer (:class:`rewardmodel.scoring.RewardScorer`), so the
   two models may tokenize differently. A response that ran into the token limit without
   eos loses ``missing_eos_penalty``; optional ``length_penalty`` per token, or
   ``length_normalize`` (the part of the score that length explains linearly within the
   batch is removed).
3. **Log-probabilities and values** of the sampled tokens are recomputed by a forward pass of
   the policy (logits divided by the sampling temperature) and of the frozen reference: the
   adapter-disabled base when the policy trains LoRA adapters on its reference (one model in
   memory), a separate frozen copy otherwise.
4. **Rewards per token**: ``-beta * KL_t`` at every response token, plus the score at the
   last one. ``KL_t`` is the k1 estimator ``log p - log p_ref`` or k3
   ``(r - 1) - log r`` with ``r = p_ref / p`` (``kl_estimator``); both are reported.
   ``beta`` is fixed, or adapted after each update by the Ziegler et al. (2019)
   proportional controller toward ``target_kl``:
   ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon``.
5. **GAE** (``gamma``, ``lam``) over response tokens, advantages whitened over the batch's
   valid tokens, returns = advantages + values.
6. **``ppo_epochs`` passes** over shuffled minibatches: the clipped surrogate
   ``max(-A r, -A clip(r, 1 - eps, 1 + eps))``, the clipped value loss
   ``0.5 max((V - R)^2, (V_clip - R)^2)``, ``loss = pg + vf_coef * vf``; AdamW, gradient
   clipping, learning rate annealed linearly to 0 (or constant).

The critic is a separate trunk with a scalar head per token, copied from the policy (a zero
head, ``value_init="policy"``) or from a decoder reward model that shares the policy's
tokenizer (its own head, ``value_init="reward_model"``, as InstructGPT and the N+ details
do); ``value_init="shared"`` puts the head on the policy's own trunk instead (one model less
in memory, but the value loss then moves the policy too).

Metrics, under cleanrl/TRL names: ``objective/scores``, ``objective/kl`` (k1, summed over
a response, mean over the batch), ``objective/kl_k3``, ``objective/entropy`` (summed -log p
of the sampled tokens), ``objective/non_score_reward``, ``objective/rlhf_reward``,
``objective/beta``, ``losses/policy_loss``, ``losses/value_loss``, ``losses/approx_kl``,
``losses/clipfrac``, ``losses/value_clipfrac``, ``val/ratio``, ``val/ratio_var``,
``val/response_length``, ``val/eos_share``, ``policy/entropy`` (mean per-token entropy),
``val/first_ratio`` and ``losses/first_clipfrac`` (first minibatch of the first epoch: 1 and 0
when rollouts and training compute the same function, the check the N+ details recommend),
and timings. Every ``sample_every`` updates a table of samples (prompt, response, score, KL).

**A gold reward model that only watches** (``gold_reward_model``, the set-up of Gao et al.
2022, "Scaling laws for reward model overoptimization"): every update, the texts the reward
model scored are scored by a second reward model too, through the same
:class:`~rewardmodel.scoring.RewardScorer` path, and its mean is recorded as
``objective/gold_scores`` (a ``gold`` column in the sample tables). It never enters the loss
and draws no random numbers: a run with a gold model trains to the same weights as one
without. A proxy score that keeps rising while the gold score falls is over-optimisation.

Where this deviates from InstructGPT and the N+ implementation details (Huang et al. 2024):

- one response per prompt per update and no pretraining-mix (PPO-ptx) term;
- the critic is copied from the policy by default, since the platform's reward models often
  use another tokenizer (MiniLM); ``value_init="reward_model"`` is InstructGPT's choice;
- rewards are not normalised by a running mean and std before training (the platform's
  reward models are centred on their validation set at training time instead);
- top-p sampling is allowed, though log-probabilities are those of the temperature-scaled
  policy: with ``top_p < 1`` the samples come from a truncated distribution (TRL does the same);
- no early stopping on approx-KL.

Checkpoints (:mod:`trainio.trainstate`): every ``checkpoint_every`` updates and at the end,
the trainable weights (LoRA adapters and value head, or every weight), optimizer, every
process's RNG state, beta and the history; a rerun with the same config resumes exactly.
The result is ``output_dir/model``: the policy with adapters merged, its tokenizer,
``arpad_policy.json`` and ``metrics.json``. With several processes, its ``info`` also says whether
every process ended with the same trainable weights (``weights_identical_across_processes``, from
per-process float64 checksums in ``weights_checksums``; null under FSDP or ZeRO-3, which shard them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewardmodel.hooks import TrainHooks, TrainingCancelled
from rlloop.policy import (
    POLICY_SIDECAR,
    Completion,
    Generator,
    HFGenerator,
    Sampling,
    encode_prompt,
    load_causal_lm,
    load_tokenizer,
    read_sidecar,
)
from rlloop.prompts import read_prompts
from trainio import trainstate
from trainio.config import (
    TrainerConfig,
    check_bounds,
    check_device,
    check_flags,
    check_lora,
    check_paths,
    check_precision,
    refuse,
)
from trainio.runtime import seed_everything

CHECKPOINT_FORMAT = "arpad-ppo-checkpoint/1"
POLICY_FORMAT = "arpad-policy/1"
RESUMABLE_DIFFERENCES = frozenset({"checkpoint_every", "output_dir", "device", "sample_every", "reward_batch_size"})
LORA_RANK_BOUNDS = (1, 256)

# name: (low, high); ints where both bounds are ints.
BOUNDS: dict[str, tuple[float, float]] = {
    "updates": (1, 100_000),
    "rollouts_per_update": (1, 4096),
    "minibatch_size": (1, 4096),
    "ppo_epochs": (1, 64),
    "learning_rate": (1e-9, 1.0),
    "max_new_tokens": (1, 4096),
    "temperature": (0.01, 5.0),
    "top_p": (0.01, 1.0),
    "max_prompt_length": (8, 32_768),
    "kl_coef": (0.0, 100.0),
    "target_kl": (1e-4, 1000.0),
    "kl_horizon": (1, 10_000_000),
    "gamma": (0.0, 1.0),
    "lam": (0.0, 1.0),
    "cliprange": (0.01, 10.0),
    "cliprange_value": (0.01, 1000.0),
    "vf_coef": (0.0, 100.0),
    "missing_eos_penalty": (0.0, 1000.0),
    "length_penalty": (0.0, 100.0),
    "max_grad_norm": (0.0, 1000.0),
    "seed": (0, 2**31 - 1),
    "checkpoint_every": (1, 100_000),
    "sample_every": (1, 100_000),
    "samples_shown": (0, 64),
    "reward_batch_size": (1, 1024),
}


@dataclass
class PPOConfig(TrainerConfig):
    policy: str
    """Checkpoint directory of the policy to train (a causal LM with a fast tokenizer)."""
    prompts: str
    """JSONL file, one ``{"prompt": text or [messages]}`` per line (:mod:`rlloop.prompts`)."""
    output_dir: str
    """The round's directory: ``checkpoints/`` while training, ``model/`` at the end."""
    reward_model: str | None = None
    """Directory of a reward model (``rewardmodel.train`` output, or any one-output classifier)."""
    reward_function: str | None = None
    """Instead of a reward model: ``module:function`` called as f(prompts, responses) -> scores."""
    gold_reward_model: str | None = None
    """A second reward model's directory that scores the same responses for ``objective/gold_scores``; never trained on."""
    reference: str | None = None
    """The frozen reference's directory; None: the policy's own starting weights."""
    updates: int = 20
    """PPO updates (each: rollouts, then ``ppo_epochs`` passes over them)."""
    rollouts_per_update: int = 8
    """Prompts sampled per update and process."""
    minibatch_size: int = 4
    """Rollouts per optimizer step."""
    ppo_epochs: int = 4
    learning_rate: float = 1e-5
    lr_schedule: str = "linear"
    """"linear" (annealed to 0 over the updates) or "constant"."""
    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    """Strings that end a response like eos does."""
    max_prompt_length: int = 256
    """Prompt tokens kept (cut from the left)."""
    kl_coef: float = 0.05
    """beta: weight of the per-token KL penalty (the starting value when adaptive)."""
    kl_estimator: str = "k1"
    """"k1" (log p - log p_ref) or "k3" ((r - 1) - log r, r = p_ref / p) in the penalty."""
    adaptive_kl: bool = False
    target_kl: float = 6.0
    """Target of the adaptive controller: KL per response (summed over tokens), in nats."""
    kl_horizon: int = 10_000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    missing_eos_penalty: float | None = 1.0
    """Subtracted from the score of a response that hit the token limit; None disables."""
    length_penalty: float = 0.0
    """Subtracted from the score per response token."""
    length_normalize: bool = False
    """Remove the part of the score that response length explains linearly within the batch."""
    value_init: str = "policy"
    """The critic: "policy" or "reward_model" (a separate trunk copied from it, N+ style), or "shared"
    (a head on the policy's own trunk: less memory, but value-loss gradients move the policy)."""
    lora: dict | None = None
    """LoRA through peft: {"r", "alpha", "dropout", "target_modules"}; None trains every weight."""
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"."""
    device: str = "auto"
    """"auto", "cpu" or "cuda" (several GPUs: ``accelerate launch``)."""
    checkpoint_every: int = 10
    sample_every: int = 5
    samples_shown: int = 4
    reward_batch_size: int = 16

    OPTIONS = "PPO"

    def sampling(self) -> Sampling:
        return Sampling(self.max_new_tokens, self.temperature, self.top_p, tuple(self.stop))

    def validate(self) -> None:
        """Raise ValueError naming every bad field."""
        problems = check_bounds(self, BOUNDS, optional={"missing_eos_penalty"})
        problems += check_paths(self, ("policy", "prompts", "output_dir"))
        if (self.reward_model is None) == (self.reward_function is None):
            problems.append("give exactly one of reward_model and reward_function")
        if self.gold_reward_model is not None:
            problems += check_paths(self, ("gold_reward_model",))
        if self.lr_schedule not in ("linear", "constant"):
            problems.append("lr_schedule must be linear or constant")
        if self.kl_estimator not in ("k1", "k3"):
            problems.append("kl_estimator must be k1 or k3")
        if self.value_init not in ("policy", "reward_model", "shared"):
            problems.append("value_init must be policy, reward_model or shared")
        if self.value_init == "reward_model" and self.reward_model is None:
            problems.append("value_init reward_model needs a reward_model")
        problems += check_flags(self, ("adaptive_kl", "length_normalize"))
        if isinstance(self.minibatch_size, int) and isinstance(self.rollouts_per_update, int):
            if self.minibatch_size > self.rollouts_per_update:
                problems.append("minibatch_size must not exceed rollouts_per_update")
        if not (
            isinstance(self.stop, list) and len(self.stop) <= 8 and all(isinstance(s, str) and s for s in self.stop)
        ):
            problems.append("stop must be a list of at most 8 non-empty strings")
        problems += check_precision(self.precision)
        problems += check_device(self.device)
        problems += check_lora(self.lora, rank_bounds=LORA_RANK_BOUNDS)
        refuse(problems)


# --------------------------------------------------------------------------------------
# The arithmetic of one update (vectorised over the batch; tests compare with loops)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the valid entries (unbiased variance); the mean is kept if not ``shift_mean``."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature); logits (B, T, V), tokens (B, T)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_of(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_estimates(logp: torch.Tensor, ref_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token k1 = log p - log p_ref and k3 = (r - 1) - log r with r = p_ref / p (Schulman's estimators)."""
    log_r = ref_logp - logp
    return -log_r, torch.expm1(log_r) - log_r


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``-beta * kl`` at every valid token plus the score at each response's last one; and the non-score part."""
    non_score = -beta * kl * mask
    rewards = non_score.clone()
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards, non_score


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (B, T) response tokens; (advantages, returns), zero past the end."""
    values = values * mask
    rewards = rewards * mask
    steps = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    reversed_adv = []
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        reversed_adv.append(last)
    advantages = torch.stack(reversed_adv[::-1], dim=1) * mask
    return advantages, (advantages + values) * mask


def ppo_losses(
    *,
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    vpred: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate and clipped value losses (masked means), and their statistics."""
    log_ratio = (new_logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg1, pg2), mask)
    vclipped = old_values + torch.clamp(vpred - old_values, -cliprange_value, cliprange_value)
    vf1 = (vpred - returns) ** 2
    vf2 = (vclipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf1, vf2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg2 > pg1).float(), mask),
            "value_clipfrac": masked_mean((vf2 > vf1).float(), mask),
            "approx_kl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
            "ratio_var": masked_mean((ratio - masked_mean(ratio, mask)) ** 2, mask),
        }
    return pg_loss, vf_loss, stats


class AdaptiveKL:
    """Ziegler et al. (2019): beta follows the KL toward ``target`` with a proportional, clipped step."""

    def __init__(self, beta: float, target: float, horizon: int) -> None:
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = max(-0.2, min(0.2, kl / self.target - 1.0))
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


def length_adjusted(scores: torch.Tensor, lengths: torch.Tensor, config: PPOConfig) -> torch.Tensor:
    """Scores after the length penalty, or with their linear dependence on length removed."""
    lengths = lengths.float()
    if config.length_penalty:
        scores = scores - config.length_penalty * lengths
    if config.length_normalize and scores.numel() > 1:
        centred = lengths - lengths.mean()
        spread = (centred**2).sum()
        if spread > 0:
            slope = (centred * (scores - scores.mean())).sum() / spread
            scores = scores - slope * centred
    return scores


# --------------------------------------------------------------------------------------
# Models


class PolicyWithValue(nn.Module):
    """The trained module: the policy and its value function, one forward for both (DDP wraps this)."""

    def __init__(self, policy: nn.Module, value_head: nn.Linear, critic: nn.Module | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = value_head
        self.critic = critic

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.critic is None
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=shared,
            use_cache=False,
        )
        if shared:
            hidden = out.hidden_states[-1]
        else:
            hidden = self.critic(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values


def apply_lora(model: nn.Module, options: dict[str, Any], task: str = "CAUSAL_LM") -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type=task,
        r=int(options.get("r", 8)),
        lora_alpha=options.get("alpha", 16),
        lora_dropout=float(options.get("dropout", 0.0)),
        target_modules=options.get("target_modules"),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ValueError(f"LoRA cannot wrap this model: {exc}") from None


def build_critic(
    source: str, tokenizer: Any, lora: dict | None, *, from_reward_model: bool
) -> tuple[nn.Module, nn.Linear]:
    """A separate per-token critic: the trunk of the policy or of a decoder reward model, and a value head.

    From the policy the head starts at zero (every value 0); from a reward model it is a copy
    of the model's scalar head, so the first values are the reward model's own per-token
    readings. The reward model must share the policy's tokenizer: values are per policy token.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from rlloop.policy import disable_dropout

    if from_reward_model:
        rm_tokenizer = AutoTokenizer.from_pretrained(source)
        if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                "value_init reward_model needs a reward model with the policy's tokenizer; this one differs "
                "(use value_init policy)"
            )
        rm = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
        head = getattr(rm, "score", None)
        if not isinstance(head, nn.Linear):
            raise ValueError("value_init reward_model needs a decoder reward model (a `score` head per token)")
        trunk = getattr(rm, rm.base_model_prefix)
        value_head = nn.Linear(head.in_features, 1, bias=True)
        with torch.no_grad():
            value_head.weight.copy_(head.weight)
            value_head.bias.copy_(head.bias if head.bias is not None else torch.zeros(1))
    else:
        try:
            trunk = AutoModel.from_pretrained(source, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot load the trunk of {source} for the critic: {exc}") from None
        value_head = nn.Linear(trunk.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(value_head.weight)
        nn.init.zeros_(value_head.bias)
    disable_dropout(trunk)
    if lora is not None:
        trunk = apply_lora(trunk, lora, task="FEATURE_EXTRACTION")
    return trunk, value_head


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (left padding does not shift them)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


ScoreFn = Callable[[list[Any], list[str]], list[float]]


def load_reward(config: PPOConfig, device: torch.device) -> ScoreFn:
    """The score function: a reward model through its own formatter, or ``module:function``."""
    if config.reward_function is not None:
        module_name, _, attr = config.reward_function.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"reward_function {config.reward_function!r} cannot be imported: {exc}") from None
        return lambda prompts, responses: [float(s) for s in fn(prompts, responses)]
    return reward_model_scorer(config.reward_model, config, device)


def reward_model_scorer(directory: str, config: PPOConfig, device: torch.device) -> ScoreFn:
    """A frozen reward model read through its own tokenizer and formatter (the proxy's and the gold's path)."""
    from rewardmodel.scoring import RewardScorer

    scorer = RewardScorer.from_pretrained(directory, device=device.type, precision=config.precision)
    for p in scorer.model.parameters():
        p.requires_grad_(False)
    return lambda prompts, responses: scorer.score(
        list(zip(prompts, responses, strict=True)), batch_size=config.reward_batch_size
    )


# --------------------------------------------------------------------------------------
# Rollouts


@dataclass
class Rollout:
    """One process's batch of an update, padded: prompt left, response right."""

    input_ids: torch.Tensor  # (B, Lq + Lr)
    attention_mask: torch.Tensor
    context: int  # Lq
    responses: torch.Tensor  # (B, Lr)
    mask: torch.Tensor  # (B, Lr) float: 1 on response tokens (eos included)
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    raw_scores: torch.Tensor
    finished: torch.Tensor
    prompts: list[Any]
    texts: list[str]


def pad_rollout(
    queries: list[list[int]], completions: list[Completion], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor]:
    context = max(len(q) for q in queries)
    width = max(len(c.tokens) for c in completions)
    n = len(queries)
    ids = torch.full((n, context + width), pad, dtype=torch.long)
    attention = torch.zeros((n, context + width), dtype=torch.long)
    responses = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.float32)
    for row, (q, c) in enumerate(zip(queries, completions, strict=True)):
        ids[row, context - len(q) : context] = torch.tensor(q, dtype=torch.long)
        ids[row, context : context + len(c.tokens)] = torch.tensor(c.tokens, dtype=torch.long)
        attention[row, context - len(q) : context + len(c.tokens)] = 1
        responses[row, : len(c.tokens)] = torch.tensor(c.tokens, dtype=torch.long)
        mask[row, : len(c.tokens)] = 1.0
    return ids.to(device), attention.to(device), context, responses.to(device), mask.to(device)


def forward_response(
    model: nn.Module,
    ids: torch.Tensor,
    attention: torch.Tensor,
    context: int,
    responses: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities, values and logits of the response tokens."""
    logits, values = model(ids, attention, positions_of(attention))
    logits = logits[:, context - 1 : -1]
    return logprobs_of(logits, responses, temperature), values[:, context - 1 : -1].float(), logits


def batch_indices(n: int, seed: int, update: int, per_process: int, world: int, rank: int) -> list[int]:
    """The prompts of ``rank`` at ``update``: consecutive slices of per-pass permutations (seeded)."""
    start = (update * world + rank) * per_process
    indices = []
    for i in range(start, start + per_process):
        epoch, position = divmod(i, n)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        indices.append(int(torch.randperm(n, generator=generator)[position]))
    return indices


# --------------------------------------------------------------------------------------
# Training


@dataclass
class PPOResult:
    model_dir: str
    metrics: dict
    history: list[dict]
    samples: list[dict]
    resumed_from_update: int | None
    info: dict = field(default_factory=dict)


class _Reference:
    """The frozen reference: the adapter-disabled policy (LoRA on the reference), or its own model."""

    def __init__(self, model: nn.Module | None) -> None:
        self.model = model

    @torch.no_grad()
    def logprobs(
        self, trained: PolicyWithValue, ids: torch.Tensor, attention: torch.Tensor, context: int, responses, temperature
    ) -> torch.Tensor:
        kwargs = {"input_ids": ids, "attention_mask": attention, "position_ids": positions_of(attention)}
        if self.model is None:
            with trained.policy.disable_adapter():
                logits = trained.policy(**kwargs, use_cache=False).logits
        else:
            logits = self.model(**kwargs, use_cache=False).logits
        return logprobs_of(logits[:, context - 1 : -1], responses, temperature)


def _same_dir(a: str | None, b: str) -> bool:
    return a is None or Path(a).resolve() == Path(b).resolve()


def train(config: PPOConfig, hooks: TrainHooks | None = None, generator: Generator | None = None) -> PPOResult:
    """Run (or resume) a PPO round as ``config`` says; see the module docstring."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config.validate()
    hooks = hooks or TrainHooks()
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    prompts = read_prompts(config.prompts)
    data_sha256 = trainstate.file_sha256(config.prompts)

    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but CUDA is not available")
    bf16 = config.precision == "bf16" or (config.precision == "auto" and not cpu)
    accelerator = Accelerator(cpu=cpu, mixed_precision="bf16" if bf16 else "no")
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # Checkpoints and the final model are written from the main process's own copy of the
        # weights and optimizer state; a sharded engine holds only a part of them there.
        raise ValueError(
            f"{accelerator.distributed_type.value} is not supported yet: PPO rounds scale with DDP "
            "(accelerate launch --multi_gpu); see the README"
        )
    try:
        return _train(config, hooks, generator, accelerator, prompts, data_sha256, checkpoints, out, set_seed)
    finally:
        accelerator.free_memory()
        from accelerate.state import AcceleratorState

        # The next run in this process (a worker) starts from a clean accelerate state.
        AcceleratorState._reset_state(reset_partial_state=True)


def _train(config, hooks, generator, accelerator, prompts, data_sha256, checkpoints, out, set_seed) -> PPOResult:
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    main = accelerator.is_main_process
    set_seed(config.seed)  # the same fresh weights (LoRA, value head) in every process

    tokenizer = load_tokenizer(config.policy)
    policy = load_causal_lm(config.policy)
    shared_reference = config.lora is not None and _same_dir(config.reference, config.policy)
    reference_model = None
    if not shared_reference:
        reference_model = load_causal_lm(config.reference or config.policy).to(device).eval()
        for p in reference_model.parameters():
            p.requires_grad_(False)
    if config.lora is not None:
        policy = apply_lora(policy, config.lora)
    if config.value_init == "shared":
        critic = None
        value_head = nn.Linear(policy.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(value_head.weight)
        nn.init.zeros_(value_head.bias)
    else:
        from_rm = config.value_init == "reward_model"
        source = config.reward_model if from_rm else config.policy
        critic, value_head = build_critic(source, tokenizer, config.lora, from_reward_model=from_rm)
    # Loaded before the seeding below: whatever random numbers loading it draws, the run
    # draws the same ones after, so watching a gold model never changes what is trained.
    gold_reward = reward_model_scorer(config.gold_reward_model, config, device) if config.gold_reward_model else None
    set_seed(config.seed + rank)  # python, numpy, torch: each process samples its own rollouts
    seed_everything(config.seed + rank)
    model = PolicyWithValue(policy, value_head, critic)
    model.to(device)
    model.train()
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [g for g in ({"params": decay}, {"params": no_decay}) if g["params"]],
        lr=config.learning_rate,
        weight_decay=0.0,
        eps=1e-5,
        foreach=False if device.type == "cpu" else None,
    )
    reward = load_reward(config, device)
    sampling = config.sampling()

    # Resume before prepare(): the weights and optimizer state are those of the bare model.
    update, history, samples, beta = 0, [], [], float(config.kl_coef)
    resumed_from = None
    found = trainstate.list_checkpoints(checkpoints, CHECKPOINT_FORMAT)
    if found:
        state = trainstate.load(
            found[0][1],
            params=params,
            optimizer=optimizer,
            rank=rank,
            config=config.to_dict(),
            resumable_differences=RESUMABLE_DIFFERENCES,
            data_sha256=data_sha256,
        )
        update, history, samples, beta = state["step"], state["history"], state["samples"], state["beta"]
        resumed_from = update
        hooks.log(f"resumed from checkpoint {found[0][1].name} at update {update}")
    controller = AdaptiveKL(beta, config.target_kl, config.kl_horizon) if config.adaptive_kl else None

    wrapped, optimizer = accelerator.prepare(model, optimizer)
    trained: PolicyWithValue = accelerator.unwrap_model(wrapped)
    generator = generator or HFGenerator(trained.policy, tokenizer)
    reference = _Reference(reference_model)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]

    info = {
        "device": str(device),
        "processes": world,
        "precision": "bf16 autocast" if accelerator.mixed_precision == "bf16" else "fp32",
        "parameters": sum(p.numel() for p in trained.parameters()),
        "trainable_parameters": sum(p.numel() for p in params.values()),
        "prompts": len(prompts),
        "reference": "adapter-disabled policy (one model)" if shared_reference else "separate frozen model",
        "value": {"shared": "head on the policy's trunk", "policy": "critic copied from the policy"}.get(
            config.value_init, "critic copied from the reward model"
        ),
        "format": "chat template" if getattr(tokenizer, "chat_template", None) else "plain (HH-RLHF style)",
        "episodes_per_update": config.rollouts_per_update * world,
        "resumed_from_step": resumed_from,
    }
    hooks.on_start(config.updates, info)
    hooks.log(
        f"PPO: {config.updates} updates of {config.rollouts_per_update * world} rollouts over {len(prompts)} prompts, "
        f"{info['trainable_parameters']:,} trainable parameters, {info['reference']}"
    )

    def save(step: int) -> Path:
        tmp = trainstate.begin(checkpoints, step) if main else None
        accelerator.wait_for_everyone()
        trainstate.write_rng(trainstate.temporary_dir(checkpoints, step), rank)
        accelerator.wait_for_everyone()
        path = checkpoints / f"step-{step:08d}"
        if main:
            trainstate.write_main(
                tmp,
                fmt=CHECKPOINT_FORMAT,
                step=step,
                params={name: p for name, p in trained.named_parameters() if p.requires_grad},
                optimizer=optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                state={
                    "config": config.to_dict(),
                    "data_sha256": data_sha256,
                    "history": history,
                    "samples": samples,
                    "beta": controller.beta if controller else beta,
                    "processes": world,
                },
            )
            path = trainstate.commit(checkpoints, step)
        accelerator.wait_for_everyone()
        hooks.on_checkpoint(str(path), step)
        return path

    last_saved = update if resumed_from is not None else None
    while update < config.updates:
        if _stop_requested(hooks, accelerator):
            path = checkpoints / f"step-{update:08d}" if last_saved == update else save(update)
            raise TrainingCancelled(update, str(path))
        started = time.perf_counter()
        frac = 1.0 - update / config.updates if config.lr_schedule == "linear" else 1.0
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * frac
        current_beta = controller.beta if controller else beta

        # 1-3: rollouts, scores, log-probabilities, values.
        picked = batch_indices(len(prompts), config.seed, update, config.rollouts_per_update, world, rank)
        batch_prompts = [prompts[i] for i in picked]
        queries = [encode_prompt(tokenizer, p, config.max_prompt_length)[0] for p in batch_prompts]
        t0 = time.perf_counter()
        completions = generator.generate(queries, sampling)
        t_generate = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids, attention, context, responses, mask = pad_rollout(queries, completions, tokenizer.pad_token_id, device)
        texts = [tokenizer.decode(c.tokens, skip_special_tokens=True) for c in completions]
        raw = torch.tensor(reward(batch_prompts, texts), dtype=torch.float32, device=device)
        finished = torch.tensor([c.finished for c in completions], device=device)
        lengths = mask.sum(1)
        scores = raw.clone()
        if config.missing_eos_penalty is not None:
            scores = scores - config.missing_eos_penalty * (~finished).float()
        scores = length_adjusted(scores, lengths, config)
        with torch.no_grad(), accelerator.autocast():
            logprobs, values, _ = forward_response(trained, ids, attention, context, responses, config.temperature)
            ref_logprobs = reference.logprobs(trained, ids, attention, context, responses, config.temperature)
        t_score = time.perf_counter() - t0
        gold, t_gold = None, 0.0
        if gold_reward is not None:
            t0 = time.perf_counter()
            gold = torch.tensor(gold_reward(batch_prompts, texts), dtype=torch.float32, device=device)
            t_gold = time.perf_counter() - t0

        # 4-5: rewards per token, GAE.
        k1, k3 = kl_estimates(logprobs, ref_logprobs)
        kl = k1 if config.kl_estimator == "k1" else k3
        rewards, non_score = token_rewards(scores, kl, mask, current_beta)
        advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
        advantages = masked_whiten(advantages, mask)

        # 6: PPO epochs over minibatches.
        t0 = time.perf_counter()
        stats: list[dict[str, float]] = []
        n = ids.shape[0]
        for _epoch in range(config.ppo_epochs):
            order = torch.randperm(n).tolist()
            for start in range(0, n, config.minibatch_size):
                mb = order[start : start + config.minibatch_size]
                with accelerator.autocast():
                    new_logp, vpred, logits = forward_response(
                        wrapped, ids[mb], attention[mb], context, responses[mb], config.temperature
                    )
                pg_loss, vf_loss, mb_stats = ppo_losses(
                    new_logp=new_logp,
                    old_logp=logprobs[mb],
                    advantages=advantages[mb],
                    vpred=vpred,
                    old_values=values[mb],
                    returns=returns[mb],
                    mask=mask[mb],
                    cliprange=config.cliprange,
                    cliprange_value=config.cliprange_value,
                )
                loss = pg_loss + config.vf_coef * vf_loss
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                grad_norm = (
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm) if config.max_grad_norm > 0 else None
                )
                optimizer.step()
                with torch.no_grad():
                    entropy = masked_mean(entropy_of(logits.detach(), config.temperature), mask[mb])
                stats.append(
                    {
                        "policy_loss": float(pg_loss.detach()),
                        "value_loss": float(vf_loss.detach()),
                        "entropy": float(entropy),
                        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                        **{k: float(v) for k, v in mb_stats.items()},
                    }
                )
                if not math.isfinite(stats[-1]["policy_loss"] + stats[-1]["value_loss"]):
                    raise FloatingPointError(f"the loss is not finite at update {update + 1}; lower the learning rate")
        t_train = time.perf_counter() - t0

        # Statistics: means over this process's batch, then over processes.
        local = {
            "objective/scores": scores.mean(),
            "objective/raw_scores": raw.mean(),
            "objective/kl": (k1 * mask).sum(1).mean(),
            "objective/kl_k3": (k3 * mask).sum(1).mean(),
            "objective/entropy": (-logprobs * mask).sum(1).mean(),
            "objective/non_score_reward": non_score.sum(1).mean(),
            "val/response_length": lengths.mean(),
            "val/eos_share": finished.float().mean(),
        }
        local["objective/rlhf_reward"] = local["objective/scores"] + local["objective/non_score_reward"]
        if gold is not None:
            local["objective/gold_scores"] = gold.mean()  # the raw gold score: no eos or length terms
        for key in ("policy_loss", "value_loss", "approx_kl", "clipfrac", "value_clipfrac", "ratio", "ratio_var"):
            prefix = "val" if key.startswith("ratio") else "losses"
            local[f"{prefix}/{key}"] = torch.tensor(sum(s[key] for s in stats) / len(stats))
        local["policy/entropy"] = torch.tensor(sum(s["entropy"] for s in stats) / len(stats))
        local["val/first_ratio"] = torch.tensor(stats[0]["ratio"])
        local["losses/first_clipfrac"] = torch.tensor(stats[0]["clipfrac"])
        keys = sorted(local)
        stacked = torch.stack([local[k].float().to(device) for k in keys])
        reduced = accelerator.reduce(stacked, reduction="mean") if world > 1 else stacked
        metrics = {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}
        if controller is not None:
            controller.update(metrics["objective/kl"], config.rollouts_per_update * world)
        elapsed = time.perf_counter() - started
        grad_norms = [s["grad_norm"] for s in stats if math.isfinite(s["grad_norm"])]
        metrics.update(
            {
                "objective/beta": current_beta,
                "learning_rate": config.learning_rate * frac,
                "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else None,
                "time/generation": t_generate,
                "time/scoring": t_score,
                **({"time/gold_scoring": t_gold} if gold is not None else {}),
                "time/training": t_train,
                "time/update": elapsed,
                "eps": config.rollouts_per_update * world / elapsed,
                "tokens_per_second": float(lengths.sum()) * world / max(t_generate, 1e-9),
            }
        )
        update += 1
        history.append({"step": update, **metrics})
        hooks.on_step(update, config.updates, metrics)
        if config.samples_shown and (update % config.sample_every == 0 or update == 1 or update == config.updates):
            table = _sample_table(batch_prompts, texts, raw, scores, k1 * mask, config.samples_shown, update, gold)
            samples.append({"step": update, "rows": table})
            on_samples = getattr(hooks, "on_samples", None)
            if on_samples is not None:
                on_samples(update, table)
        hooks.log(
            f"update {update}/{config.updates}: score {metrics['objective/scores']:.3f}, "
            + (f"gold {metrics['objective/gold_scores']:.3f}, " if gold is not None else "")
            + f"kl {metrics['objective/kl']:.3f}, beta {current_beta:.4g}, clipfrac {metrics['losses/clipfrac']:.3f}, "
            f"length {metrics['val/response_length']:.1f}, {elapsed:.1f} s"
        )
        if update % config.checkpoint_every == 0 or update == config.updates:
            save(update)
            last_saved = update

    if world > 1:
        info.update(_replica_check(accelerator, params))
        if info["weights_identical_across_processes"] is False:
            hooks.log(f"warning: the processes ended with different weights: {info['weights_checksums']}")
    return _finalize(config, accelerator, trained, tokenizer, history, samples, info, resumed_from, hooks)


def _replica_check(accelerator: Any, params: dict[str, nn.Parameter]) -> dict[str, Any]:
    """Whether every process holds the same trainable weights (DDP keeps replicas in step).

    Each process sums each trainable tensor and its squares in float64; the vectors are
    gathered and compared exactly. Sharded runs (FSDP, DeepSpeed ZeRO-3) hold no replicas:
    nothing to compare there.
    """
    from accelerate.utils import DistributedType

    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if accelerator.distributed_type == DistributedType.FSDP or (
        accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3
    ):
        return {"weights_identical_across_processes": None, "weights_checksums": None}
    with torch.no_grad():
        sums = []
        for name in sorted(params):
            p = params[name].detach().double()
            sums += [p.sum(), (p * p).sum()]
        gathered = accelerator.gather(torch.stack(sums).to(accelerator.device)[None]).cpu()
    return {
        "weights_identical_across_processes": all(torch.equal(gathered[0], row) for row in gathered[1:]),
        "weights_checksums": [[float(row[0::2].sum()), float(row[1::2].sum())] for row in gathered],
    }


def _stop_requested(hooks: TrainHooks, accelerator: Any) -> bool:
    """Every process stops together: the main process asks, the others follow."""
    ask = torch.tensor(
        [1.0 if (accelerator.is_main_process and hooks.should_stop()) else 0.0], device=accelerator.device
    )
    if accelerator.num_processes > 1:
        ask = accelerator.reduce(ask, reduction="sum")
    return bool(ask.item() > 0)


def _sample_table(prompts, texts, raw, scores, kl, n, update, gold=None) -> list[dict[str, Any]]:
    from rewardmodel.data import as_messages

    rows = []
    for i in range(min(n, len(texts))):
        messages = as_messages(prompts[i])
        row = {
            "prompt": messages[-1]["content"] if messages else "",
            "response": texts[i],
            "score": float(raw[i]),
            "shaped_score": float(scores[i]),
            "kl": float(kl[i].sum()),
            "update": update,
        }
        if gold is not None:
            row["gold"] = float(gold[i])
        rows.append(row)
    return rows


def _finalize(config, accelerator, trained, tokenizer, history, samples, info, resumed_from, hooks) -> PPOResult:
    out = Path(config.output_dir)
    model_dir = out / "model"
    final = history[-1] if history else {}
    metrics = {k: v for k, v in final.items() if k != "step"}
    metrics["updates"] = len(history)
    if accelerator.is_main_process:
        policy = trained.policy
        if hasattr(policy, "merge_and_unload"):
            policy = policy.merge_and_unload()
        tmp = out / ".model-tmp"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        policy.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        parent = read_sidecar(config.policy)
        sidecar = {
            "format": POLICY_FORMAT,
            "trained_by": "rlloop.ppo",
            "generation": parent.get("generation")
            or {
                "temperature": config.temperature,
                "top_p": config.top_p,
                "max_new_tokens": config.max_new_tokens,
                "stop": config.stop,
            },
            "chat_template": bool(getattr(tokenizer, "chat_template", None)),
            "config": {k: v for k, v in config.to_dict().items() if k not in ("output_dir",)},
        }
        trainstate.write_json(tmp / POLICY_SIDECAR, sidecar)
        trainstate.write_json(tmp / "metrics.json", {"final": metrics, "history": history, "info": info})
        with open(tmp / "samples.jsonl", "w", encoding="utf-8") as handle:
            for table in samples:
                handle.write(json.dumps(table, ensure_ascii=False) + "\n")
        if model_dir.exists():
            import shutil

            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
        hooks.log(f"saved the policy to {model_dir.name}/ in the output directory")
    accelerator.wait_for_everyone()
    return PPOResult(str(model_dir), metrics, history, samples, resumed_from, info)


# --------------------------------------------------------------------------------------
# Command line


class _PrintHooks(TrainHooks):
    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        keys = (
            "objective/scores",
            "objective/gold_scores",
            "objective/kl",
            "objective/entropy",
            "losses/clipfrac",
            "val/response_length",
        )
        print(json.dumps({"update": step, **{k: round(metrics[k], 4) for k in keys if k in metrics}}), flush=True)

    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> PPOConfig:
    parser = argparse.ArgumentParser(prog="python -m rlloop.ppo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--out", required=True, dest="output_dir")
    reward = parser.add_mutually_exclusive_group(required=True)
    reward.add_argument("--reward-model")
    reward.add_argument("--reward-function", help="module:function(prompts, responses) -> scores")
    parser.add_argument("--reference")
    parser.add_argument("--gold-reward-model", help="a reward model that only watches: objective/gold_scores")
    parser.add_argument("--config", help="JSON file of options (command-line --set wins)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one option; VALUE is JSON")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.config:
        options.update(json.loads(Path(args.config).read_text(encoding="utf-8")))
    options.update(parse_sets(args.set))
    options.update(
        {
            "policy": args.policy,
            "prompts": args.prompts,
            "output_dir": args.output_dir,
            "reward_model": args.reward_model,
            "reward_function": args.reward_function,
        }
    )
    if args.reference:
        options["reference"] = args.reference
    if args.gold_reward_model:
        options["gold_reward_model"] = args.gold_reward_model
    try:
        return PPOConfig.from_dict(options)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; the value is read as JSON when it parses, else as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    result = train(config, _PrintHooks())
    print(json.dumps({"model_dir": result.model_dir, "metrics": result.metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
