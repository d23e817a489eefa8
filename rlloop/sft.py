"""Supervised fine-tuning of a policy on (prompt, response) demonstrations: stage 1 of RLHF. No Django here.

``python -m rlloop.sft --policy DIR --data PATH --source demonstrations|consensus_best --out RUN``
runs it on any machine; the platform wraps :func:`train`. What it does, top to bottom:

1. **Examples.** ``source="demonstrations"``: ``data`` is a JSONL file, one
   ``{"prompt": text or [messages], "response": text}`` per line (:func:`rlloop.prompts.read_records`;
   a bad line is named ``file:line``). A share ``validation_fraction`` of the lines is held out
   for validation, chosen by a seeded hash of the line's index among the file's non-blank
   lines (the same lines for the same seed and file, whatever else changes). ``source="consensus_best"`` (rejection-sampling fine-tuning):
   ``data`` is an export snapshot directory; each group of ``groups.jsonl`` gives one example,
   its prompt and its consensus-best response (the first id of ``consensus``); groups of split
   ``validation`` are the validation set, groups without a consensus are skipped and counted.
   ``max_examples`` keeps the first N training examples.
2. **Tokens.** The prompt is rendered as the policy will see it when sampling
   (:func:`rlloop.policy.encode_prompt`): the chat template with the generation prompt, or the
   plain ``"\\n\\nHuman: ...\\n\\nAssistant:"`` format. The response part is what the template adds
   when the assistant's message is appended (:meth:`rewardmodel.data.Formatter.render`), or
   ``" " + response`` in the plain format. Both are tokenized separately, without special tokens
   on top of the template's. When the response part holds no eos token (the plain format, a
   template that ends a turn with something else), the eos token is appended: the policy must
   learn to stop, since sampling ends at eos. Over ``max_length`` tokens the prompt is cut from
   the left and the response kept; a response too long on its own is cut at its end. Both
   kinds of truncation are counted per split in ``info``.
3. **Loss** on response tokens only (label -100 on prompt tokens and padding): the summed
   negative log-likelihood of the optimizer step's response tokens divided by their number,
   the micro-batches of a gradient-accumulation window included, so accumulation equals one
   large batch exactly (a token-weighted mean, not a mean of per-example means).
4. **Optimization**: AdamW (decay on weight matrices only; plain per-tensor kernels on CPU for
   bit-exact resumption), linear warmup over ``warmup_ratio`` of the steps then linear decay
   to zero, gradient clipping (``max_grad_norm``, 0 disables), bf16 autocast on CUDA, dropout
   off (:func:`rlloop.policy.load_causal_lm`), LoRA through peft as an option
   (:func:`rlloop.ppo.apply_lora`). The data order of an epoch is a function of (seed, epoch).
5. **Evaluation** on the validation set before training (``eval_at_start``; recorded in
   ``info["initial_eval"]`` and as epoch 0 in the history) and after each epoch:
   ``eval/loss`` (mean NLL per response token), ``eval/perplexity`` and ``eval/token_accuracy``
   (argmax = the response token), reported through ``hooks.on_eval``.
6. **Checkpoints** (:mod:`trainio.trainstate`, format ``arpad-sft-checkpoint/1``) every
   ``checkpoint_every_steps`` optimizer steps and at each epoch end: trainable weights,
   optimizer, RNG state, position (epoch, window) and history. A rerun with the same config
   resumes from the newest one exactly; a changed config or changed data is refused.
   ``hooks.should_stop()`` is polled before every optimizer step: a checkpoint is saved and
   :class:`~rewardmodel.hooks.TrainingCancelled` raised.
7. **Result**: LoRA adapters merged, ``output_dir/model`` written atomically (a temporary
   directory renamed): safetensors weights, tokenizer, ``arpad_policy.json`` (lineage and the
   parent's generation defaults) and ``metrics.json``.

Metric names: each optimizer step reports ``loss``, ``token_accuracy``, ``learning_rate``,
``grad_norm``, ``tokens`` (response tokens in the step), ``epoch`` (fractional) and
``seconds``; evaluations ``eval/loss``, ``eval/perplexity``, ``eval/token_accuracy`` and
``eval/tokens``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
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
from torch.nn import functional

from rewardmodel.hooks import TrainHooks, TrainingCancelled
from rewardmodel.train import epoch_order, lr_factor, make_optimizer
from rlloop.policy import (
    POLICY_SIDECAR,
    Sampling,
    load_causal_lm,
    load_tokenizer,
    read_sidecar,
)
from rlloop.ppo import LORA_RANK_BOUNDS, apply_lora, parse_sets
from rlloop.prompts import check_prompt, read_records
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
from trainio.runtime import resolve_device, seed_everything

CHECKPOINT_FORMAT = "arpad-sft-checkpoint/1"
POLICY_FORMAT = "arpad-policy/1"
SOURCES = ("demonstrations", "consensus_best")
IGNORE = -100
# Config fields that may differ between a run and its resumption (they change no arithmetic).
RESUMABLE_DIFFERENCES = frozenset({"checkpoint_every_steps", "output_dir", "device", "eval_batch_size"})

# name: (low, high); ints where both bounds are ints.
BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 1000),
    "learning_rate": (1e-9, 1.0),
    "batch_size": (1, 4096),
    "gradient_accumulation": (1, 1024),
    "max_length": (8, 131_072),
    "warmup_ratio": (0.0, 0.99),
    "weight_decay": (0.0, 10.0),
    "max_grad_norm": (0.0, 1e6),
    "validation_fraction": (0.0, 0.9),
    "seed": (0, 2**31 - 1),
    "checkpoint_every_steps": (1, 10**9),
    "max_examples": (1, 10**9),
    "eval_batch_size": (1, 4096),
}


@dataclass
class SFTConfig(TrainerConfig):
    policy: str
    """Checkpoint directory of the policy to fine-tune (a causal LM with a fast tokenizer)."""
    data: str
    """A demonstrations JSONL file, or an export snapshot directory (``groups.jsonl``) for consensus_best."""
    output_dir: str
    """The run directory: ``checkpoints/`` while training, ``model/`` at the end."""
    source: str = "demonstrations"
    """"demonstrations" (the file's responses) or "consensus_best" (each group's consensus-best response)."""
    epochs: int = 1
    learning_rate: float = 2e-5
    """Peak AdamW learning rate, reached after warmup."""
    batch_size: int = 8
    """Examples per micro-batch."""
    gradient_accumulation: int = 1
    """Micro-batches per optimizer step."""
    max_length: int = 512
    """Tokens per example; the prompt is cut from the left to fit."""
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    """AdamW weight decay, on weight matrices only."""
    max_grad_norm: float = 1.0
    """Gradient clipping on the global norm; 0 disables it."""
    validation_fraction: float = 0.1
    """Demonstrations held out for validation (by a seeded hash of the line index); snapshots use their split."""
    lora: dict | None = None
    """LoRA through peft: {"r", "alpha", "dropout", "target_modules"}; None trains every weight."""
    seed: int = 0
    """Seed of the data order, the validation hold-out and LoRA's initialization."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""
    checkpoint_every_steps: int = 100
    """Optimizer steps between checkpoints (there is one at each epoch end as well)."""
    max_examples: int | None = None
    """Train on the first N training examples only."""
    eval_batch_size: int = 16
    eval_at_start: bool = True
    """Evaluate once before the first step (the baseline the epochs are compared with)."""

    OPTIONS = "SFT"
    ARTICLE = "an"

    def validate(self) -> None:
        """Raise ValueError naming every bad field."""
        problems = check_bounds(self, BOUNDS, optional={"max_examples"})
        problems += check_paths(self, ("policy", "data", "output_dir"))
        if self.source not in SOURCES:
            problems.append(f"source must be one of {', '.join(SOURCES)}")
        problems += check_flags(self, ("eval_at_start",))
        problems += check_precision(self.precision)
        problems += check_device(self.device)
        problems += check_lora(self.lora, rank_bounds=LORA_RANK_BOUNDS)
        refuse(problems)


@dataclass
class SFTResult:
    model_dir: str
    metrics: dict
    history: list[dict]
    resumed_from_step: int | None
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Data


@dataclass
class Demonstration:
    """One (prompt, response) pair before tokenization."""

    prompt: list[dict[str, str]] | str
    response: str
    id: Any
    group_id: Any = None


@dataclass
class Example:
    """One tokenized example: the prompt's ids (as sampling sees them) and the response's ids (trained)."""

    prompt_ids: list[int]
    response_ids: list[int]
    prompt_truncated: bool
    response_truncated: bool
    id: Any = None


def held_out(index: int, seed: int, fraction: float) -> bool:
    """Whether line ``index`` is a validation example: a seeded hash, uniform in [0, 1), below ``fraction``."""
    digest = hashlib.sha256(f"arpad-sft:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def snapshot_file(path: str | Path) -> Path:
    """``groups.jsonl`` of a snapshot directory (or the file itself)."""
    path = Path(path)
    return path / "groups.jsonl" if path.is_dir() else path


def data_file(config: SFTConfig) -> Path:
    """The one file whose hash identifies the training data."""
    if config.source == "consensus_best":
        return snapshot_file(config.data)
    return Path(config.data)


def read_demonstrations(config: SFTConfig) -> tuple[list[Demonstration], list[Demonstration], dict[str, Any]]:
    """(train, validation, counts) at the text level, as ``config.source`` says."""
    if config.source == "consensus_best":
        return read_consensus_best(config.data)
    path = Path(config.data)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; source demonstrations reads a JSONL file (snapshots: consensus_best)")
    train, validation = [], []
    for index, record in enumerate(read_records(path, need_response=True)):
        demo = Demonstration(record["prompt"], record["response"], record["id"])
        (validation if held_out(index, config.seed, config.validation_fraction) else train).append(demo)
    return train, validation, {"lines": len(train) + len(validation)}


def read_consensus_best(data: str | Path) -> tuple[list[Demonstration], list[Demonstration], dict[str, Any]]:
    """Each snapshot group's prompt and its consensus-best response (the first id of ``consensus``)."""
    path = snapshot_file(data)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: source consensus_best reads an export snapshot directory")
    train, validation = [], []
    skipped = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                group = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(group, dict):
                raise ValueError(f"{where}: a group must be an object")
            missing = [k for k in ("split", "prompt", "responses") if k not in group]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}")
            if group["split"] not in ("train", "validation"):
                raise ValueError(f"{where}: unknown split {group['split']!r}")
            prompt = check_prompt(group["prompt"], where)
            consensus = group.get("consensus")
            if not consensus:
                skipped += 1
                continue
            if not isinstance(consensus, list):
                raise ValueError(f"{where}: consensus must be a list of response ids")
            responses = group["responses"]
            if not isinstance(responses, list) or not all(isinstance(r, dict) and "id" in r for r in responses):
                raise ValueError(f"{where}: responses must be a list of objects with an id")
            texts = {r["id"]: r.get("text") for r in responses}
            best = consensus[0]
            if best not in texts:
                raise ValueError(f"{where}: consensus names response {best!r}, which the group does not hold")
            text = texts[best]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: response {best!r} has no text")
            demo = Demonstration(prompt, text, best, group.get("group_id"))
            (validation if group["split"] == "validation" else train).append(demo)
    return train, validation, {"groups": len(train) + len(validation) + skipped, "groups_without_consensus": skipped}


def encode_examples(tokenizer: Any, demos: list[Demonstration], max_length: int) -> list[Example]:
    """Tokenize demonstrations as the module docstring says (step 2)."""
    from rewardmodel.data import Formatter

    if not demos:
        return []
    formatter = Formatter(tokenizer, max_length)
    templated = formatter.uses_chat_template
    heads, tails = zip(*(formatter.render(d.prompt, d.response) for d in demos), strict=True)
    # The prompt as encode_prompt gives it to the sampler; the response bare.
    prompts = tokenizer(list(heads), add_special_tokens=not templated)["input_ids"]
    responses = tokenizer(list(tails), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for demo, p, r in zip(demos, prompts, responses, strict=True):
        p, r = list(p), list(r)
        if eos not in r:
            r.append(eos)
        response_truncated = len(r) > max_length - 1
        if response_truncated:  # keep at least one prompt token: the model sees where the answer starts
            r = r[: max_length - 1]
        room = max_length - len(r)
        prompt_truncated = len(p) > room
        if prompt_truncated:
            p = p[-room:]
        out.append(Example(p, r, prompt_truncated, response_truncated, demo.id))
    return out


def truncation_counts(examples: list[Example]) -> dict[str, Any]:
    lengths = [len(e.prompt_ids) + len(e.response_ids) for e in examples]
    return {
        "examples": len(examples),
        "prompt_truncated": sum(e.prompt_truncated for e in examples),
        "response_truncated": sum(e.response_truncated for e in examples),
        "response_tokens": sum(len(e.response_ids) for e in examples),
        "max_tokens": max(lengths, default=0),
        "mean_tokens": round(sum(lengths) / max(len(lengths), 1), 2),
    }


def collate(
    examples: list[Example], *, pad_token_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (the token at each response
    position, -100 on prompt tokens and padding; the model's shift makes position t predict t)."""
    width = max(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        p, n = len(e.prompt_ids), len(e.prompt_ids) + len(e.response_ids)
        ids[row, :n] = torch.tensor(e.prompt_ids + e.response_ids, dtype=torch.long)
        mask[row, :n] = 1
        labels[row, p:n] = torch.tensor(e.response_ids, dtype=torch.long)
    return ids.to(device), mask.to(device), labels.to(device)


def response_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed NLL of the labelled tokens (position t - 1 predicts label t), correct argmax count, token count."""
    target = labels[:, 1:]
    keep = target != IGNORE
    picked = logits[:, :-1][keep].float()
    wanted = target[keep]
    nll = functional.cross_entropy(picked, wanted, reduction="sum")
    correct = (picked.detach().argmax(-1) == wanted).sum()
    return nll, correct, int(wanted.numel())


# --------------------------------------------------------------------------------------
# Training


def forward_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(device_type=ids.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    examples: list[Example],
    *,
    batch_size: int,
    pad_token_id: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, Any]:
    """``eval/loss`` (mean NLL per response token), ``eval/perplexity``, ``eval/token_accuracy``."""
    was_training = model.training
    model.eval()
    nll_sum, correct, tokens = 0.0, 0, 0
    try:
        for start in range(0, len(examples), batch_size):
            ids, mask, labels = collate(examples[start : start + batch_size], pad_token_id=pad_token_id, device=device)
            nll, right, n = response_nll(forward_logits(model, ids, mask, amp), labels)
            nll_sum += float(nll)
            correct += int(right)
            tokens += n
    finally:
        model.train(was_training)
    loss = nll_sum / max(tokens, 1)
    return {
        "eval/loss": loss,
        "eval/perplexity": math.exp(loss) if loss < 700 else None,
        "eval/token_accuracy": correct / max(tokens, 1),
        "eval/tokens": tokens,
        "eval/examples": len(examples),
    }


def train(config: SFTConfig, hooks: TrainHooks | None = None) -> SFTResult:
    """Run (or resume) supervised fine-tuning as ``config`` says; see the module docstring."""
    config.validate()
    hooks = hooks or TrainHooks()
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    device = resolve_device(config.device)
    amp = (
        torch.bfloat16 if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda") else None
    )

    tokenizer = load_tokenizer(config.policy)
    train_demos, val_demos, counts = read_demonstrations(config)
    data_sha256 = trainstate.file_sha256(data_file(config))
    available = len(train_demos)
    if config.max_examples is not None:
        train_demos = train_demos[: config.max_examples]
    if not train_demos:
        raise ValueError(f"{config.data} gives no training examples")
    train_set = encode_examples(tokenizer, train_demos, config.max_length)
    val_set = encode_examples(tokenizer, val_demos, config.max_length)

    seed_everything(config.seed)
    model = load_causal_lm(config.policy)
    if config.lora is not None:
        model = apply_lora(model, config.lora)
    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    trainable = list(params.values())
    pad_id = tokenizer.pad_token_id

    n_micro = math.ceil(len(train_set) / config.batch_size)
    steps_per_epoch = math.ceil(n_micro / config.gradient_accumulation)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_ratio * total_steps))
    info: dict[str, Any] = {
        "source": config.source,
        "data": counts,
        "examples": {"train": len(train_set), "validation": len(val_set), "train_available": available},
        "truncation": {"train": truncation_counts(train_set), "validation": truncation_counts(val_set)},
        "format": "chat template" if getattr(tokenizer, "chat_template", None) else "plain (HH-RLHF style)",
        "device": str(device),
        "precision": "bf16 autocast" if amp is not None else "fp32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup,
    }

    step, start_epoch, start_window, history = 0, 0, 0, []
    resumed_from: int | None = None
    found = trainstate.list_checkpoints(checkpoints, CHECKPOINT_FORMAT)
    if found:
        state = trainstate.load(
            found[0][1],
            params=params,
            optimizer=optimizer,
            rank=0,
            config=config.to_dict(),
            resumable_differences=RESUMABLE_DIFFERENCES,
            data_sha256=data_sha256,
        )
        step, start_epoch, start_window, history = state["step"], state["epoch"], state["window"], state["history"]
        info["initial_eval"] = state.get("initial_eval")
        resumed_from = step
        hooks.log(f"resumed from checkpoint {found[0][1].name} at step {step}")
    elif config.eval_at_start and val_set:
        initial = evaluate(
            model, val_set, batch_size=config.eval_batch_size, pad_token_id=pad_id, device=device, amp=amp
        )
        info["initial_eval"] = initial
        history.append({"step": 0, "epoch": 0, **initial})
    info["resumed_from_step"] = resumed_from
    hooks.on_start(total_steps, info)
    trunc = info["truncation"]["train"]
    hooks.log(
        f"SFT ({config.source}): {len(train_set)} train and {len(val_set)} validation examples, "
        f"{trunc['prompt_truncated']} prompts and {trunc['response_truncated']} responses truncated; "
        f"{total_steps} steps, {info['trainable_parameters']:,} trainable parameters"
    )

    def checkpoint(epoch: int, window: int) -> Path:
        tmp = trainstate.begin(checkpoints, step)
        trainstate.write_rng(tmp, 0)
        trainstate.write_main(
            tmp,
            fmt=CHECKPOINT_FORMAT,
            step=step,
            params=params,
            optimizer=optimizer,
            state={
                "config": config.to_dict(),
                "data_sha256": data_sha256,
                "epoch": epoch,
                "window": window,
                "history": history,
                "initial_eval": info.get("initial_eval"),
            },
        )
        path = trainstate.commit(checkpoints, step)
        hooks.on_checkpoint(str(path), step)
        return path

    last_saved = (start_epoch, start_window) if resumed_from is not None else None
    for epoch in range(start_epoch, config.epochs):
        order = epoch_order(len(train_set), config.seed, epoch)
        micro = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        windows = [
            micro[i : i + config.gradient_accumulation] for i in range(0, len(micro), config.gradient_accumulation)
        ]
        for w in range(start_window if epoch == start_epoch else 0, len(windows)):
            if hooks.should_stop():
                path = checkpoints / f"step-{step:08d}" if last_saved == (epoch, w) else checkpoint(epoch, w)
                raise TrainingCancelled(step, str(path))
            started = time.perf_counter()
            lr = config.learning_rate * lr_factor(step, total_steps, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            batches = [[train_set[i] for i in mb] for mb in windows[w]]
            total_tokens = sum(len(e.response_ids) for mb in batches for e in mb)
            nll_sum, correct = 0.0, 0
            for mb in batches:
                ids, mask, labels = collate(mb, pad_token_id=pad_id, device=device)
                nll, right, _ = response_nll(forward_logits(model, ids, mask, amp), labels)
                (nll / total_tokens).backward()
                nll_sum += float(nll.detach())
                correct += int(right)
            loss = nll_sum / total_tokens
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss} at step {step + 1}; lower the learning rate")
            if config.max_grad_norm > 0:
                grad_norm = float(
                    torch.nn.utils.clip_grad_norm_(
                        trainable, config.max_grad_norm, foreach=None if device.type == "cuda" else False
                    )
                )
            else:
                grads = [p.grad.norm() for p in trainable if p.grad is not None]
                grad_norm = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
            optimizer.step()
            step += 1
            metrics = {
                "loss": loss,
                "token_accuracy": correct / total_tokens,
                "learning_rate": lr,
                "grad_norm": grad_norm,
                "tokens": total_tokens,
                "epoch": epoch + (w + 1) / len(windows),
                "seconds": time.perf_counter() - started,
            }
            history.append({"step": step, **metrics})
            hooks.on_step(step, total_steps, metrics)
            if step % config.checkpoint_every_steps == 0 and w + 1 < len(windows):
                checkpoint(epoch, w + 1)
                last_saved = (epoch, w + 1)
        if val_set:
            metrics = evaluate(
                model, val_set, batch_size=config.eval_batch_size, pad_token_id=pad_id, device=device, amp=amp
            )
            history.append({"step": step, "epoch": epoch + 1, **metrics})
            hooks.on_eval(epoch + 1, {"epoch": epoch + 1, "step": step, **metrics})
            hooks.log(
                f"epoch {epoch + 1}: validation loss {metrics['eval/loss']:.4f}, "
                f"token accuracy {metrics['eval/token_accuracy']:.3f}"
            )
        else:
            hooks.log(f"epoch {epoch + 1} done (no validation examples)")
        checkpoint(epoch + 1, 0)
        last_saved = (epoch + 1, 0)

    return _finalize(config, model, tokenizer, history, info, resumed_from, hooks)


def _finalize(config, model, tokenizer, history, info, resumed_from, hooks) -> SFTResult:
    out = Path(config.output_dir)
    final = out / "model"
    steps = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval/loss" in h and h["epoch"] > 0]
    metrics: dict[str, Any] = {"steps": len(steps), "train/loss": steps[-1]["loss"] if steps else None}
    if evals:
        metrics.update({k: v for k, v in evals[-1].items() if k.startswith("eval/")})
    if info.get("initial_eval"):
        metrics["eval/loss_before"] = info["initial_eval"]["eval/loss"]

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    tmp = out / f".tmp-model-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    parent = read_sidecar(config.policy)
    defaults = dataclasses.asdict(Sampling())
    defaults["stop"] = list(defaults["stop"])
    sidecar = {
        "format": POLICY_FORMAT,
        "trained_by": "rlloop.sft",
        "generation": parent.get("generation") or defaults,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "config": {k: v for k, v in config.to_dict().items() if k != "output_dir"},
    }
    trainstate.write_json(tmp / POLICY_SIDECAR, sidecar)
    trainstate.write_json(tmp / "metrics.json", {"final": metrics, "history": history, "info": info})
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    trainstate.fsync_dir(out)
    hooks.log(f"saved the policy to {final.name}/ in the output directory")
    return SFTResult(str(final), metrics, history, resumed_from, info)


# --------------------------------------------------------------------------------------
# Command line


class _PrintHooks(TrainHooks):
    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        keys = ("loss", "learning_rate", "grad_norm", "tokens", "epoch")
        print(json.dumps({"step": step, **{k: metrics[k] for k in keys}}), flush=True)

    def on_eval(self, epoch: int, metrics: dict) -> None:
        print(json.dumps({"eval": epoch, **metrics}), flush=True)

    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> SFTConfig:
    parser = argparse.ArgumentParser(prog="python -m rlloop.sft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="policy checkpoint directory")
    parser.add_argument("--data", required=True, help="demonstrations JSONL file or export snapshot directory")
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--out", required=True, dest="output_dir", help="run directory (checkpoints/, model/)")
    parser.add_argument("--config", help="JSON file of options (command-line --set wins)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one option; VALUE is JSON")
    args = parser.parse_args(argv)
    try:
        options: dict[str, Any] = {}
        if args.config:
            options.update(json.loads(Path(args.config).read_text(encoding="utf-8")))
        options.update(parse_sets(args.set))
        options.update({"policy": args.policy, "data": args.data, "source": args.source, "output_dir": args.output_dir})
        return SFTConfig.from_dict(options)
    except (OSError, TypeError, ValueError) as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        result = train(config, _PrintHooks())
    except (ValueError, TrainingCancelled) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model_dir": result.model_dir, "metrics": result.metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
