"""Train a Bradley–Terry reward model on an export snapshot, grouped by prompt.

Pure torch + transformers (no Django, no Celery): ``python -m rewardmodel.train --base DIR
--data SNAPSHOT --out RUN`` runs it on any machine; the Celery job wraps :func:`train`.

What it does, top to bottom:

1. Reads ``groups.jsonl`` of the snapshot (``exports.snapshot`` layout: a prompt, its K
   responses, the kept pairs with votes, vote share, weight and a prompt-level split) and
   encodes every response that takes part in a kept pair **once** (:mod:`rewardmodel.data`:
   chat template or the documented plain format; the prompt is cut from the left, the
   response kept; truncations are counted per split in ``info``).
2. Loads the base as ``AutoModelForSequenceClassification`` with one output. A decoder
   without a pad token gets pad = eos and ``config.pad_token_id`` set; transformers then
   reads the reward at the last non-pad token of each row (left or right padding alike). An
   encoder (BERT, MiniLM) reads it from its own pooler over the first ([CLS]) token.
   Caveat of pad = eos: a sequence that ends in eos is read one token earlier.
3. Each optimizer micro-step forwards ``groups_per_batch`` whole groups, every response once,
   and takes the weighted Bradley–Terry loss of the groups' pairs (:mod:`rewardmodel.losses`;
   options: margin from vote strength, soft labels from vote share, reward centering).
   InstructGPT's trick: a K-way group costs K forwards instead of K(K-1) for its C(K,2)
   pairs. Gradient accumulation weighs micro-batches by their pair weight, so accumulation
   equals one large batch exactly.
4. AdamW (decay on matrices only, not on biases and norms), linear warmup then linear decay to
   zero, gradient clipping, bf16 autocast on CUDA, LoRA through peft as an option, dropout off
   by default (a reward model's scores should not be noisy in training; TRL does the same).
5. Evaluates on the validation split after each epoch: accuracy, loss, mean margin, expected
   calibration error and accuracy per agreement bucket beside the annotators' own agreement.
6. Checkpoints (:mod:`trainio.trainstate`, one process: ``rng.safetensors``) every
   ``checkpoint_every_steps`` optimizer steps and at each epoch end: trainable weights,
   optimizer state and RNG state in safetensors, the rest in JSON (loading never unpickles),
   written to a temporary directory and renamed, so a half-written one is never seen. A rerun
   with the same config resumes from the newest one exactly: the data order is a function of
   (seed, epoch), and the position, step and RNG state are restored.
7. At the end, merges LoRA adapters into the weights, shifts the rewards so that validation
   rewards have mean 0 (folded into the head's bias; for a bias-free head, into the bias of
   the final LayerNorm along the head's direction, which shifts every reward by the same
   amount; failing both, recorded as ``reward_offset`` that the scorer subtracts), checks it
   by scoring again, and saves ``output_dir/model``: safetensors weights, tokenizer,
   ``metrics.json``, ``reward_model.json`` (what the scorer needs) and a model card.

Metric names: steps report ``loss``, ``accuracy``, ``margin`` (mean r_chosen - r_rejected),
``learning_rate``, ``grad_norm``, ``epoch``; evaluations add ``ece``, ``accuracy_weighted``,
``pairs``, ``{accuracy,agreement,pairs}_{unanimous,split,single}``, ``reward_mean`` and
``reward_std``. Undefined figures are None.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewardmodel.data import Formatter, Group, collate, encode_group, read_groups, truncation_counts
from rewardmodel.hooks import TrainHooks, TrainingCancelled
from rewardmodel.losses import grouped_loss, pair_metrics
from rewardmodel.options import LORA_RANK_BOUNDS, OPTION_BOUNDS
from trainio import trainstate
from trainio.config import (
    TrainerConfig,
    check_bounds,
    check_device,
    check_flags,
    check_lora,
    check_paths,
    check_precision,
    is_number,
    refuse,
)
from trainio.runtime import resolve_device, seed_everything

CHECKPOINT_FORMAT = "arpad-rm-checkpoint/1"
MODEL_FORMAT = "arpad-reward-model/1"
# Config fields that may differ between a run and its resumption (they change no arithmetic).
RESUMABLE_DIFFERENCES = frozenset({"checkpoint_every_steps", "eval_batch_groups", "output_dir", "device"})


@dataclass
class TrainConfig(TrainerConfig):
    base_model: str
    """Hugging Face checkpoint directory of the base (any model AutoModelForSequenceClassification loads)."""
    data_dir: str
    """An export snapshot directory: ``groups.jsonl`` with a ``split`` per group."""
    output_dir: str
    """The run directory: ``checkpoints/`` while training, ``model/`` at the end."""
    epochs: int = 1
    """Passes over the training groups."""
    learning_rate: float = 2e-5
    """Peak AdamW learning rate, reached after warmup."""
    groups_per_batch: int = 8
    """Prompt groups per micro-step; each group's responses are forwarded together, once each."""
    gradient_accumulation: int = 1
    """Micro-steps per optimizer step."""
    max_length: int = 512
    """Tokens per (prompt, response) input; the prompt is cut from the left to fit."""
    warmup_ratio: float = 0.1
    """Fraction of the optimizer steps spent warming the learning rate up linearly."""
    weight_decay: float = 0.0
    """AdamW weight decay, applied to weight matrices only."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold on the global norm (0 disables clipping)."""
    margin: bool = False
    """Subtract a margin ``margin_scale * (2 * vote_share - 1)`` from each pair's reward gap."""
    soft_labels: bool = False
    """Target P(chosen preferred) = vote_share instead of 1."""
    center_coefficient: float = 0.0
    """Weight of the reward-centering term (r_chosen + r_rejected)^2."""
    lora: dict | None = None
    """LoRA through peft: {"r", "alpha", "dropout", "target_modules"}; None trains every weight."""
    seed: int = 0
    """Seed of the head's initialization, the data order and dropout."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16" (autocast on any device)."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:1", ..."""
    checkpoint_every_steps: int = 50
    """Optimizer steps between checkpoints (there is one at each epoch end as well)."""
    eval_batch_groups: int = 16
    """Groups per forward pass in evaluation."""
    max_train_groups: int | None = None
    """Train on the first N training groups of the snapshot only (tests, benchmarks)."""
    margin_scale: float = 1.0
    """Size of the margin of a unanimous pair when ``margin`` is on."""
    disable_dropout: bool = True
    """Turn every dropout of the base off while training."""

    OPTIONS = "training"

    def validate(self) -> None:
        """Raise ValueError naming every bad field; nothing else happens."""
        problems = check_paths(self, ("base_model", "data_dir", "output_dir"))
        problems += check_bounds(self, OPTION_BOUNDS, optional={"max_train_groups"})
        problems += check_flags(self, ("margin", "soft_labels", "disable_dropout"))
        if not (is_number(self.margin_scale) and self.margin_scale >= 0):
            problems.append("margin_scale must be >= 0")
        problems += check_precision(self.precision)
        problems += check_device(self.device, indexed=True)
        problems += check_lora(self.lora, rank_bounds=LORA_RANK_BOUNDS)
        refuse(problems)


@dataclass
class TrainResult:
    model_dir: str
    metrics: dict
    history: list[dict]
    resumed_from_step: int | None
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Model and device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def load_base(base_model: str) -> tuple[Any, nn.Module]:
    """Tokenizer and a one-output sequence classifier from a checkpoint directory, pad token handled."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not Path(base_model).is_dir():
        raise ValueError(f"base model {base_model!r} is not a directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot load a tokenizer from {base_model}: {exc}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot load {base_model} as a sequence classifier: {exc}") from None
    # Decoder classifiers find the last real token through config.pad_token_id.
    model.config.pad_token_id = tokenizer.pad_token_id
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return tokenizer, model


def pooling_of(model: nn.Module) -> str:
    if hasattr(model, "score"):
        return "last non-pad token (decoder classifier)"
    return "the model's own pooler (first token, [CLS], for BERT-like encoders)"


def apply_lora(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=int(options.get("r", 8)),
        lora_alpha=options.get("alpha", 16),
        lora_dropout=float(options.get("dropout", 0.0)),
        target_modules=options.get("target_modules"),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules that the base does not have
        raise ValueError(f"LoRA cannot wrap this base: {exc}") from None


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        # Attention implementations that take the probability as a float attribute (Llama).
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def takes_position_ids(model: nn.Module) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "position_ids" in inspect.signature(inner.forward).parameters


def forward_rewards(model: nn.Module, inputs: dict[str, torch.Tensor], amp: torch.dtype | None) -> torch.Tensor:
    """One reward per row. Positions count real tokens only, so left padding does not shift
    them (GPT-2's absolute positions would otherwise differ from the unpadded input's)."""
    if "position_ids" not in inputs and takes_position_ids(model):
        positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        inputs = {**inputs, "position_ids": positions}
    device_type = inputs["input_ids"].device.type
    with torch.autocast(device_type=device_type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model(**inputs).logits
    return logits.squeeze(-1).float()


# --------------------------------------------------------------------------------------
# Evaluation and normalization


@torch.no_grad()
def evaluate(
    model: nn.Module,
    groups: list[Group],
    config: TrainConfig,
    *,
    pad_token_id: int,
    device: torch.device,
    amp: torch.dtype | None,
    offset: float = 0.0,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Metrics on ``groups`` and the reward of every response forwarded (each once), minus ``offset``."""
    was_training = model.training
    model.eval()
    rewards, deltas, losses, weights, vc, vr, vt = [], [], [], [], [], [], []
    for start in range(0, len(groups), config.eval_batch_groups):
        batch = collate(groups[start : start + config.eval_batch_groups], pad_token_id=pad_token_id, device=device)
        r = forward_rewards(model, batch.inputs, amp) - offset
        out = grouped_loss(r, batch.chosen, batch.rejected, batch.weight, **loss_options(config, batch))
        rewards.append(r.cpu())
        deltas.append(out.delta.cpu())
        losses.append(out.per_pair.cpu())
        weights.append(batch.weight.cpu())
        vc.append(batch.votes_chosen.cpu())
        vr.append(batch.votes_rejected.cpu())
        vt.append(batch.votes_tie.cpu())
    model.train(was_training)
    if not rewards:
        return {"pairs": 0.0, "groups": 0.0}, torch.zeros(0)
    all_rewards = torch.cat(rewards)
    metrics = pair_metrics(
        torch.cat(deltas), torch.cat(losses), torch.cat(weights), torch.cat(vc), torch.cat(vr), torch.cat(vt)
    )
    metrics["groups"] = float(len(groups))
    metrics["reward_mean"] = float(all_rewards.double().mean())
    metrics["reward_std"] = float(all_rewards.double().std(unbiased=False))
    return metrics, all_rewards


def loss_options(config: TrainConfig, batch: Any) -> dict[str, Any]:
    return {
        "vote_share": batch.vote_share,
        "margin": config.margin,
        "margin_scale": config.margin_scale,
        "soft_labels": config.soft_labels,
        "center_coefficient": config.center_coefficient,
    }


def reward_head(model: nn.Module) -> nn.Linear | None:
    """The one-output linear layer that produces the reward (the last registered one)."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    return heads[-1] if heads else None


def fold_offset(model: nn.Module, offset: float) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Subtract ``offset`` from every reward by changing a bias; returns (method, undo list)."""
    head = reward_head(model)
    if head is None:
        return "none", []
    if head.bias is not None:
        before = head.bias.data.clone()
        head.bias.data -= offset
        return "head_bias", [(head.bias.data, before)]
    # Bias-free head r = w . h: adding d = -offset * w / |w|^2 to h shifts r by -offset. h is the
    # final norm's output here (GPT-2's ln_f); scoring again below checks that assumption.
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm) and m.bias is not None]
    if not norms:
        return "none", []
    norm = norms[-1]
    w = head.weight.data[0].double()
    if float(w @ w) == 0.0:
        return "none", []
    before = norm.bias.data.clone()
    norm.bias.data += (-offset * w / (w @ w)).to(norm.bias.dtype)
    return "final_norm_bias", [(norm.bias.data, before)]


# --------------------------------------------------------------------------------------
# Checkpoints


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete reward-model checkpoints under ``root``, newest first. Temporary directories are not listed."""
    return trainstate.list_checkpoints(root, CHECKPOINT_FORMAT)


def save_checkpoint(
    root: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    epoch: int,
    window: int,
    history: list[dict],
    config: TrainConfig,
    data_sha256: str,
) -> Path:
    tmp = trainstate.begin(root, step)
    trainstate.write_rng(tmp, None)
    trainstate.write_main(
        tmp,
        fmt=CHECKPOINT_FORMAT,
        step=step,
        params={name: p for name, p in model.named_parameters() if p.requires_grad},
        optimizer=optimizer,
        state={
            "epoch": epoch,
            "window": window,
            "history": history,
            "config": config.to_dict(),
            "data_sha256": data_sha256,
        },
    )
    return trainstate.commit(root, step)


def load_checkpoint(
    path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, data_sha256: str
) -> dict[str, Any]:
    return trainstate.load(
        path,
        params={name: p for name, p in model.named_parameters() if p.requires_grad},
        optimizer=optimizer,
        rank=None,
        config=config.to_dict(),
        resumable_differences=RESUMABLE_DIFFERENCES,
        data_sha256=data_sha256,
        data_name="groups.jsonl",
    )


# --------------------------------------------------------------------------------------
# Training


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the training groups in ``epoch``: a function of (seed, epoch) only, for exact resumption."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then linear decay; ``step`` counts steps done (no zero-rate step)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(total - warmup, 1))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach=False on CPU: the plain per-tensor kernels, for bit-exact resumption there; on
    # CUDA torch's default (fused multi-tensor) kernels, which are much faster.
    on_cpu = all(p.device.type == "cpu" for g in groups for p in g["params"])
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.learning_rate, foreach=False if on_cpu else None
    )


def prepare_data(config: TrainConfig, formatter: Formatter) -> tuple[list[Group], list[Group], dict[str, Any]]:
    raw = read_groups(config.data_dir)
    train_groups = [encode_group(g, formatter) for g in raw if g["split"] == "train" and g["pairs"]]
    available = len(train_groups)
    if config.max_train_groups is not None:
        train_groups = train_groups[: config.max_train_groups]
    val_groups = [encode_group(g, formatter) for g in raw if g["split"] == "validation" and g["pairs"]]
    if not train_groups:
        raise ValueError(f"{config.data_dir} has no training groups with a kept pair")
    info = {
        "groups": {"train": len(train_groups), "validation": len(val_groups), "train_available": available},
        "pairs": {"train": sum(g.n_pairs for g in train_groups), "validation": sum(g.n_pairs for g in val_groups)},
        "truncation": {"train": truncation_counts(train_groups), "validation": truncation_counts(val_groups)},
        "group_sizes": {},
    }
    for g in train_groups + val_groups:
        info["group_sizes"][str(g.k)] = info["group_sizes"].get(str(g.k), 0) + 1
    info["group_sizes"] = dict(sorted(info["group_sizes"].items(), key=lambda kv: int(kv[0])))
    return train_groups, val_groups, info


def train(config: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a reward model as ``config`` says; see the module docstring."""
    config.validate()
    hooks = hooks or TrainHooks()
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    device = resolve_device(config.device)
    amp = autocast_dtype(config.precision, device)
    data_sha256 = (
        trainstate.file_sha256(Path(config.data_dir) / "groups.jsonl")
        if (Path(config.data_dir) / "groups.jsonl").is_file()
        else ""
    )

    seed_everything(config.seed)
    tokenizer, model = load_base(config.base_model)
    formatter = Formatter(tokenizer, config.max_length)
    train_groups, val_groups, info = prepare_data(config, formatter)
    if config.lora is not None:
        model = apply_lora(model, config.lora)
    if config.disable_dropout:
        disable_dropout(model)
    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config)
    pad_id = tokenizer.pad_token_id

    n_micro = math.ceil(len(train_groups) / config.groups_per_batch)
    steps_per_epoch = math.ceil(n_micro / config.gradient_accumulation)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_ratio * total_steps))
    info.update(
        {
            "device": str(device),
            "precision": "bf16 autocast" if amp is not None else "fp32",
            "pooling": pooling_of(model),
            "format": "chat template" if formatter.uses_chat_template else "plain (HH-RLHF style)",
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "warmup_steps": warmup,
        }
    )

    step, start_epoch, start_window, history = 0, 0, 0, []
    resumed_from: int | None = None
    found = list_checkpoints(checkpoints)
    if found:
        state = load_checkpoint(found[0][1], model=model, optimizer=optimizer, config=config, data_sha256=data_sha256)
        step, start_epoch, start_window, history = state["step"], state["epoch"], state["window"], state["history"]
        resumed_from = step
        hooks.log(f"resumed from checkpoint {found[0][1].name} at step {step}")
    info["resumed_from_step"] = resumed_from
    hooks.on_start(total_steps, info)
    trunc = info["truncation"]["train"]
    hooks.log(
        f"{info['groups']['train']} train groups, {info['pairs']['train']} pairs, "
        f"{trunc['prompt_truncated']} prompts and {trunc['response_truncated']} responses truncated; {total_steps} steps"
    )

    def checkpoint(epoch: int, window: int) -> Path:
        path = save_checkpoint(
            checkpoints, model=model, optimizer=optimizer, step=step, epoch=epoch, window=window,
            history=history, config=config, data_sha256=data_sha256,
        )  # fmt: skip
        hooks.on_checkpoint(str(path), step)
        return path

    params = [p for p in model.parameters() if p.requires_grad]
    last_saved = (start_epoch, start_window) if resumed_from is not None else None
    for epoch in range(start_epoch, config.epochs):
        order = epoch_order(len(train_groups), config.seed, epoch)
        micro = [order[i : i + config.groups_per_batch] for i in range(0, len(order), config.groups_per_batch)]
        windows = [
            micro[i : i + config.gradient_accumulation] for i in range(0, len(micro), config.gradient_accumulation)
        ]
        for w in range(start_window if epoch == start_epoch else 0, len(windows)):
            if hooks.should_stop():
                path = checkpoints / f"step-{step:08d}" if last_saved == (epoch, w) else checkpoint(epoch, w)
                raise TrainingCancelled(step, str(path))
            started = time.perf_counter()
            for g in optimizer.param_groups:
                g["lr"] = config.learning_rate * lr_factor(step, total_steps, warmup)
            optimizer.zero_grad(set_to_none=True)
            window_groups = [[train_groups[i] for i in mb] for mb in windows[w]]
            total_weight = sum(sum(g.weight) for mb in window_groups for g in mb)
            loss_sum, right, delta_sum, n_pairs = 0.0, 0.0, 0.0, 0
            for mb in window_groups:
                batch = collate(mb, pad_token_id=pad_id, device=device)
                rewards = forward_rewards(model, batch.inputs, amp)
                result = grouped_loss(
                    rewards, batch.chosen, batch.rejected, batch.weight, **loss_options(config, batch)
                )
                share = float(batch.weight.sum()) / total_weight
                (result.loss * share).backward()
                loss_sum += float(result.loss.detach()) * share
                d = result.delta.detach()
                right += float((d > 0).sum() + 0.5 * (d == 0).sum())
                delta_sum += float(d.sum())
                n_pairs += d.numel()
            if config.max_grad_norm > 0:
                clip = torch.nn.utils.clip_grad_norm_(
                    params, config.max_grad_norm, foreach=None if device.type == "cuda" else False
                )
                grad_norm = float(clip)
            else:
                grad_norm = float(
                    torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
                )
            if not math.isfinite(loss_sum):
                raise FloatingPointError(f"the loss is {loss_sum} at step {step + 1}; lower the learning rate")
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            step += 1
            hooks.on_step(
                step,
                total_steps,
                {
                    "loss": loss_sum,
                    "accuracy": right / max(n_pairs, 1),
                    "margin": delta_sum / max(n_pairs, 1),
                    "learning_rate": lr,
                    "grad_norm": grad_norm,
                    "epoch": epoch + (w + 1) / len(windows),
                    "pairs": float(n_pairs),
                    "seconds": time.perf_counter() - started,
                },
            )
            if step % config.checkpoint_every_steps == 0 and w + 1 < len(windows):
                checkpoint(epoch, w + 1)
                last_saved = (epoch, w + 1)
        metrics, _ = evaluate(model, val_groups, config, pad_token_id=pad_id, device=device, amp=amp)
        metrics = {"epoch": epoch + 1, "step": step, **metrics}
        history.append(metrics)
        hooks.on_eval(epoch + 1, metrics)
        hooks.log(
            f"epoch {epoch + 1}: validation "
            + json.dumps({k: metrics.get(k) for k in ("accuracy", "loss", "ece", "margin")})
        )
        checkpoint(epoch + 1, 0)
        last_saved = (epoch + 1, 0)

    return finalize(
        model, tokenizer, formatter, config, val_groups, train_groups, history, info, resumed_from,
        device=device, amp=amp, hooks=hooks,
    )  # fmt: skip


def finalize(
    model: nn.Module,
    tokenizer: Any,
    formatter: Formatter,
    config: TrainConfig,
    val_groups: list[Group],
    train_groups: list[Group],
    history: list[dict],
    info: dict[str, Any],
    resumed_from: int | None,
    *,
    device: torch.device,
    amp: torch.dtype | None,
    hooks: TrainHooks,
) -> TrainResult:
    """Merge LoRA, normalize the rewards, check by scoring, save ``output_dir/model``."""
    from rewardmodel.modelcard import model_card

    if config.lora is not None:
        model = model.merge_and_unload()
    model.eval()
    pad_id = tokenizer.pad_token_id
    # Normalize on validation rewards; a snapshot without a validation split falls back to train.
    norm_groups, norm_split = (val_groups, "validation") if val_groups else (train_groups, "train")
    if norm_split == "validation" and config.lora is None and history:
        # The model is the one the last epoch's evaluation scored: reuse its figures.
        before = history[-1]
    else:
        before, _ = evaluate(model, norm_groups, config, pad_token_id=pad_id, device=device, amp=amp)
    offset = float(before["reward_mean"])
    method, undo = fold_offset(model, offset)
    after, _ = evaluate(model, norm_groups, config, pad_token_id=pad_id, device=device, amp=amp)
    tolerance = 1e-3 * max(1.0, float(before["reward_std"]))
    reward_offset = 0.0
    if method == "none" or abs(after["reward_mean"]) > tolerance:
        for tensor, original in undo:
            tensor.copy_(original)
        hooks.log(f"could not fold the reward offset into a bias ({method}); the scorer subtracts it")
        method, reward_offset = "scorer_offset", offset
        after, _ = evaluate(model, norm_groups, config, pad_token_id=pad_id, device=device, amp=amp, offset=offset)
    normalization = {
        "split": norm_split,
        "offset": offset,
        "method": method,
        "reward_mean_before": before["reward_mean"],
        "reward_std_before": before["reward_std"],
        "reward_mean_after": after["reward_mean"],
        "reward_std_after": after["reward_std"],
    }
    metrics = dict(after if norm_split == "validation" else history[-1] if history else {})
    metrics.update({"reward_mean_before": before["reward_mean"], "reward_std_before": before["reward_std"]})
    metrics["reward_mean"] = after["reward_mean"]
    metrics["reward_std"] = after["reward_std"]

    out = Path(config.output_dir)
    final = out / "model"
    tmp = out / f".tmp-model-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.config.pad_token_id = pad_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    sidecar = {
        "format": MODEL_FORMAT,
        "max_length": config.max_length,
        "reward_offset": reward_offset,
        "normalization": normalization,
        "format_used": info.get("format"),
        "pooling": info.get("pooling"),
        "base_model": config.base_model,
    }
    trainstate.write_json(tmp / "reward_model.json", sidecar)
    record = {
        "metrics": metrics,
        "history": history,
        "normalization": normalization,
        "info": info,
        "config": config.to_dict(),
    }
    trainstate.write_json(tmp / "metrics.json", _json_safe(record))
    (tmp / "README.md").write_text(
        model_card(config=config, metrics=metrics, history=history, info=info, normalization=normalization),
        encoding="utf-8",
    )
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    hooks.log(f"saved {final.name}/ in the output directory: validation accuracy {metrics.get('accuracy')}")
    return TrainResult(
        model_dir=str(final), metrics=metrics, history=history, resumed_from_step=resumed_from, info=info
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------
# Command line


class _ProgressHooks(TrainHooks):
    def __init__(self) -> None:
        self.bar: Any = None

    def on_start(self, total_steps: int, info: dict) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, initial=info.get("resumed_from_step") or 0, desc="reward model", unit="step")

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}")

    def log(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m rewardmodel.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="base checkpoint directory")
    parser.add_argument("--data", required=True, help="export snapshot directory (groups.jsonl)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints/, model/)")
    parser.add_argument("--config", help="a JSON file of further TrainConfig fields")
    simple = {
        "epochs": int, "learning_rate": float, "groups_per_batch": int, "gradient_accumulation": int,
        "max_length": int, "warmup_ratio": float, "weight_decay": float, "max_grad_norm": float,
        "center_coefficient": float, "seed": int, "precision": str, "device": str,
        "checkpoint_every_steps": int, "eval_batch_groups": int, "max_train_groups": int, "margin_scale": float,
    }  # fmt: skip
    for name, kind in simple.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    parser.add_argument("--margin", action="store_true", default=None)
    parser.add_argument("--soft-labels", dest="soft_labels", action="store_true", default=None)
    parser.add_argument("--keep-dropout", dest="disable_dropout", action="store_false", default=None)
    parser.add_argument("--lora-r", type=int, help="train LoRA adapters of this rank instead of every weight")
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--lora-target", nargs="*", help="module names (default: peft's choice for the architecture)")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(json.loads(Path(args.config).read_text(encoding="utf-8")))
    values.update({"base_model": args.base, "data_dir": args.data, "output_dir": args.out})
    for name in [*simple, "margin", "soft_labels", "disable_dropout"]:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.lora_r is not None:
        values["lora"] = {
            "r": args.lora_r,
            "alpha": args.lora_alpha,
            "dropout": args.lora_dropout,
            "target_modules": args.lora_target,
        }
    return TrainConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(argv)
        result = train(config, _ProgressHooks())
    except (ValueError, TrainingCancelled) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_json_safe({"model_dir": result.model_dir, "metrics": result.metrics}), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
