"""Reward-model training throughput: grouped vs flat pairwise, and TRL's RewardTrainer.

What it measures
    For K = 2, 4, 9 (``--k``): one synthetic snapshot of K-way groups (the known-rule task of
    ``tests/rewardmodel/tiny.py``: a response is better the more ``good`` words it has), and
    on it, from the same base and seed, for the same number of epochs:

    grouped  ``rewardmodel`` training as ``rewardmodel.train`` does it: every response of a
             group forwarded once per step, the group's C(K,2) pairs taken from those rewards;
    flat     the same pairs, each pair forwarded on its own (2 forwards per pair, K(K-1)
             per group): what a pairwise trainer does with a K-way group;
    trl      TRL's ``RewardTrainer`` on the same flat pairs, pre-tokenized with the same
             formatter (columns ``chosen_ids`` / ``rejected_ids``).

    Grouped and flat run the same optimizer steps over the same pairs: each step takes the
    pairs of ``--groups-per-step`` groups, split into forward passes of at most
    ``--micro-sequences`` sequences whose gradients are accumulated with the pair weights, so
    both see the same gradient up to rounding; only the number of forwarded sequences differs.
    TRL gets the same pairs per optimizer step (batch = pairs per step / accumulation) and
    the same learning rate, warmup, clipping and weight decay; it weighs pairs uniformly and
    shuffles its own way, so its accuracy is comparable in kind, not step for step.

    Reported per run: pairs/s (trained pairs per second of training, data already
    tokenized), sequences/s, peak memory (peak RSS of the run's own subprocess; on CUDA also
    torch's peak allocated), validation accuracy after the epochs, and the speed-up of
    grouped over flat beside the target 0.8 x (K-1)/2.

How
    Each run is a subprocess of this script (``--phase``), so its peak RSS is its own.
    ``--base DIR`` trains from any checkpoint (AutoModelForSequenceClassification with one
    output); without it a random GPT-2 is built from ``--layers`` / ``--width`` (a 16 x 768
    one has ~113M parameters, for a GPU box without network access). ``--threads`` sets
    torch's CPU threads (1 is fastest for tiny models on a shared machine).

    .venv/bin/python bench/rm_throughput.py                      # CPU, tiny model, ~minutes
    .venv/bin/python bench/rm_throughput.py --layers 16 --width 768 --groups 512 \\
        --prompt-words 120 --response-words 60 --max-length 256 --micro-sequences 64   # GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_data(args: argparse.Namespace, k: int, root: Path) -> Path:
    from tests.rewardmodel.tiny import synthetic_groups, write_snapshot

    groups = synthetic_groups(
        args.groups,
        k=k,
        length=max(args.response_words, k),
        prompt_words=args.prompt_words,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )
    return write_snapshot(root / f"data-k{k}", groups)


def build_base(args: argparse.Namespace, root: Path) -> Path:
    if args.base:
        return Path(args.base)
    from tests.rewardmodel.tiny import build_gpt2

    heads = max(1, args.width // 64)
    return build_gpt2(root / "base", n_layer=args.layers, n_embd=args.width, n_head=heads, seed=args.seed)


def peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pack(groups: list, max_sequences: int) -> list[list]:
    """Consecutive groups in forward passes of at most ``max_sequences`` sequences (a bigger group alone)."""
    passes, current, size = [], [], 0
    for g in groups:
        n = len(g.encoded)
        if current and size + n > max_sequences:
            passes.append(current)
            current, size = [], 0
        current.append(g)
        size += n
    if current:
        passes.append(current)
    return passes


def run_phase(args: argparse.Namespace) -> dict:
    """One training run in this process; returns its figures."""
    import torch

    from rewardmodel.data import Formatter, collate, encode_group, flatten_pairs, read_groups
    from rewardmodel.losses import grouped_loss
    from rewardmodel.train import (
        TrainConfig,
        autocast_dtype,
        disable_dropout,
        epoch_order,
        evaluate,
        forward_rewards,
        load_base,
        lr_factor,
        make_optimizer,
    )
    from trainio.runtime import resolve_device, seed_everything

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = autocast_dtype("auto", device)
    seed_everything(args.seed)
    tokenizer, model = load_base(args.base)
    formatter = Formatter(tokenizer, args.max_length)
    raw = read_groups(args.data)
    train_groups = [encode_group(g, formatter) for g in raw if g["split"] == "train"]
    val_groups = [encode_group(g, formatter) for g in raw if g["split"] == "validation"]
    config = TrainConfig(
        base_model=args.base,
        data_dir=args.data,
        output_dir="-",
        epochs=args.epochs,
        learning_rate=args.lr,
        groups_per_batch=args.groups_per_step,
        max_length=args.max_length,
        warmup_ratio=0.1,
        weight_decay=0.0,
        max_grad_norm=1.0,
        eval_batch_groups=max(1, args.micro_sequences // max(len(train_groups[0].encoded), 1)),
    )
    disable_dropout(model)
    model.to(device)
    pad = tokenizer.pad_token_id
    steps_per_epoch = math.ceil(len(train_groups) / args.groups_per_step)
    total_steps = steps_per_epoch * args.epochs
    warmup = round(0.1 * total_steps)
    pairs_per_epoch = sum(g.n_pairs for g in train_groups)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    sequences = 0
    if args.phase in ("grouped", "flat"):
        optimizer = make_optimizer(model, config)
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        # Untimed warm-up: the forwards and backwards of the first --warmup-steps steps, without
        # optimizer steps (the weights stay as they are), so lazy initialization, allocator growth
        # and per-shape kernel setup (oneDNN on CPU, cuBLAS on GPU) are not billed to the measure.
        order = epoch_order(len(train_groups), args.seed, 0)
        head = [train_groups[i] for i in order[: args.warmup_steps * args.groups_per_step]]
        for micro in pack(head if args.phase == "grouped" else flatten_pairs(head), args.micro_sequences):
            warm = collate(micro, pad_token_id=pad, device=device)
            forward_rewards(model, warm.inputs, amp).sum().backward()
        optimizer.zero_grad(set_to_none=True)
        step = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for epoch in range(args.epochs):
            order = epoch_order(len(train_groups), args.seed, epoch)
            for s in range(steps_per_epoch):
                chosen = [train_groups[i] for i in order[s * args.groups_per_step : (s + 1) * args.groups_per_step]]
                units = chosen if args.phase == "grouped" else flatten_pairs(chosen)
                total_weight = sum(sum(g.weight) for g in units)
                for g in optimizer.param_groups:
                    g["lr"] = args.lr * lr_factor(step, total_steps, warmup)
                optimizer.zero_grad(set_to_none=True)
                for micro in pack(units, args.micro_sequences):
                    batch = collate(micro, pad_token_id=pad, device=device)
                    rewards = forward_rewards(model, batch.inputs, amp)
                    out = grouped_loss(rewards, batch.chosen, batch.rejected, batch.weight)
                    (out.loss * (float(batch.weight.sum()) / total_weight)).backward()
                    sequences += batch.n_responses
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    else:
        seconds, sequences, model = run_trl(args, model, tokenizer, train_groups, device)
    metrics, _ = evaluate(model, val_groups, config, pad_token_id=pad, device=device, amp=amp)
    result = {
        "phase": args.phase,
        "pairs": pairs_per_epoch * args.epochs,
        "sequences": sequences,
        "seconds": seconds,
        "pairs_per_s": pairs_per_epoch * args.epochs / seconds,
        "sequences_per_s": sequences / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "accuracy": metrics.get("accuracy"),
        "loss": metrics.get("loss"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
    }
    return result


def run_trl(args: argparse.Namespace, model, tokenizer, train_groups, device) -> tuple[float, int, object]:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from rewardmodel.data import flatten_pairs

    rows = {"chosen_ids": [], "rejected_ids": []}
    for pair in flatten_pairs(train_groups):
        rows["chosen_ids"].append(pair.encoded[0].input_ids)
        rows["rejected_ids"].append(pair.encoded[1].input_ids)
    dataset = Dataset.from_dict(rows)
    pairs_per_step = max(1, round(len(dataset) / math.ceil(len(train_groups) / args.groups_per_step)))
    per_device = max(1, min(pairs_per_step, args.micro_sequences // 2))
    accumulation = max(1, round(pairs_per_step / per_device))
    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(
            output_dir=out,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            learning_rate=args.lr,
            lr_scheduler_type="linear",
            warmup_steps=0.1,  # transformers 5: a float below 1 is a ratio of the steps
            weight_decay=0.0,
            max_grad_norm=1.0,
            max_length=args.max_length,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            eval_strategy="no",
            disable_dropout=True,
            seed=args.seed,
            data_seed=args.seed,
            use_cpu=device.type != "cuda",
            bf16=device.type == "cuda",
            dataloader_num_workers=0,
            optim="adamw_torch",
        )
        trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        trainer.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    return seconds, 2 * len(dataset) * args.epochs, trainer.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="checkpoint directory (default: build a random GPT-2)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 9])
    parser.add_argument("--groups", type=int, default=160, help="groups per snapshot (a quarter go to validation)")
    parser.add_argument("--validation-fraction", type=float, default=0.25)
    parser.add_argument("--prompt-words", type=int, default=24)
    parser.add_argument("--response-words", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--groups-per-step", type=int, default=8)
    parser.add_argument("--micro-sequences", type=int, default=64, help="most sequences in one forward pass")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps' worth of forwards first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-trl", action="store_true", help="leave TRL's RewardTrainer out")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--phase", choices=["grouped", "flat", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print("RESULT " + json.dumps(run_phase(args)))
        return

    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = build_base(args, root)
        phases = ["grouped", "flat"] + ([] if args.no_trl else ["trl"])
        for k in args.k:
            data = build_data(args, k, root)
            for phase in phases:
                cmd = [sys.executable, __file__, "--phase", phase, "--data", str(data), "--base", str(base)]
                for name in (
                    "epochs",
                    "groups_per_step",
                    "micro_sequences",
                    "max_length",
                    "lr",
                    "seed",
                    "threads",
                    "device",
                ):
                    cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode != 0 or not lines:
                    print(f"K={k} {phase}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = {"k": k, **json.loads(lines[-1][len("RESULT ") :])}
                rows.append(row)
                print(
                    f"K={k} {phase:8s} {row['pairs_per_s']:9.1f} pairs/s  acc {row['accuracy']:.3f}  "
                    f"{row['seconds']:.1f}s",
                    file=sys.stderr,
                )
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    if not rows:
        return
    first = rows[0]
    print(
        f"\nbase: {args.base or f'random GPT-2 {args.layers}x{args.width}'} ({first['parameters'] / 1e6:.1f}M parameters), "
        f"device {first['device']}, {args.threads} CPU thread(s), {args.epochs} epochs, {args.groups_per_step} groups/step, "
        f"<= {args.micro_sequences} sequences/forward"
    )
    header = (
        "| K | trainer | pairs | pairs/s | seq/s | peak RSS MB | peak CUDA MB | val acc | speed-up vs flat | target |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    flat = {r["k"]: r for r in rows if r["phase"] == "flat"}
    for r in rows:
        speed = target = ""
        if r["k"] in flat:
            speed = f"{r['pairs_per_s'] / flat[r['k']]['pairs_per_s']:.2f}x"
        if r["phase"] == "grouped" and r["k"] > 2:
            goal = 0.8 * (r["k"] - 1) / 2
            met = r["k"] in flat and r["pairs_per_s"] / flat[r["k"]]["pairs_per_s"] >= goal
            target = f">= {goal:.2f}x {'met' if met else 'NOT met'}"
        cuda = f"{r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else "-"
        print(
            f"| {r['k']} | {r['phase']} | {r['pairs']} | {r['pairs_per_s']:.1f} | {r['sequences_per_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {cuda} | {r['accuracy']:.3f} | {speed} | {target} |"
        )


if __name__ == "__main__":
    main()
