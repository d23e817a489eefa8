"""Reward-model over-optimisation on HH-RLHF, the set-up of Gao et al. (2022), on this CPU.

A "gold" reward model stands in for human judgement; a "proxy" trained on less data is what
PPO optimises; the gold only watches (``PPOConfig.gold_reward_model``: it scores the very
responses the proxy scored, and never enters the loss). Over-optimisation is the proxy's
score still rising while the gold's stalls or falls as the policy moves away (KL) from
its reference. One run:

1. imports Anthropic HH-RLHF harmless-base (``../shared/data``; only its test split of 2,312
   pairs is there) into a throwaway SQLite project with its original preference as
   judgements, and exports it with a ``--holdout`` prompt-level validation split, as
   ``bench/ppo_hh.py`` does;
2. trains the gold reward model on every training pair of the export (2,080 of them with the
   default 10 % held out: about 9 minutes here; ``--gold-pairs N``: a seeded sample of N
   instead), and the proxy on ``--proxy-pairs`` of those pairs sampled with another seed and
   trained with another seed, the same base (``--rm-base``, default the MiniLM encoder) and
   options, each with ``rewardmodel.train`` directly; prints each one's held-out accuracy and
   how well their scores of the held-out responses agree (``--work DIR`` keeps both models
   for a later run with other PPO options);
3. runs ``rlloop.ppo`` directly: the policy (``--policy smollm2``, the converted demo policy
   with LoRA r = 8; ``--policy tiny``, a random 2-layer Llama built in code, when time
   forbids) against the proxy, with a low KL coefficient (0.01) and no eos penalty, so that
   the proxy alone is what it optimises, on the export's single-turn training prompts; 16
   rollouts of at most 48 tokens per update, one PPO epoch of two minibatches at a learning
   rate of 1e-3 (``--set key=value`` changes any of these);
4. prints, per update, the KL to the reference, the proxy's and the gold's mean score of the
   update's 16 rollouts (and their means over 3 updates), then the proxy's and the gold's
   gain, the update where the gold peaked against its value at the end, and the Pearson
   correlation of proxy and gold across updates; writes it all as JSON under ``var/bench/``.

    .venv/bin/python manage.py fetch_demo_policy            # once: the SmolLM2-135M policy
    nice -n 10 .venv/bin/python bench/overoptimization.py  # 2,080-pair gold, 500-pair proxy, 24 updates
    .venv/bin/python bench/overoptimization.py --proxy-pairs 250 --set kl_coef=0.0
    .venv/bin/python bench/overoptimization.py --policy tiny --updates 20

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ppo_hh import HH, REPO, setup_django  # the PPO benchmark's data and Django set-up

SMOOTH = 3  # updates per moving mean: one update's 16 rollouts are a noisy mean


# --------------------------------------------------------------------------------------
# Data: the export's groups, split into the gold's and the proxy's training sets


def export_groups(data: Path, holdout: float) -> tuple[list[dict], dict]:
    """HH-RLHF imported and exported through the platform, as ``bench/ppo_hh.py`` does; the groups and counts."""
    from annotation.importers import import_file
    from annotation.models import Project
    from exports.models import ExportState
    from exports.services import export_snapshot_create, export_snapshot_run, snapshot_directory
    from rewardmodel.data import read_groups

    project = Project.objects.create(name="HH-RLHF harmless-base", responses_per_task=2, annotations_per_task=1)
    import_file(project=project, path=data, format="hh-rlhf", options={"import_preference": True, "divergent": "skip"})
    snapshot = export_snapshot_create(project=project, params={"validation_fraction": holdout}, user=None)
    snapshot = export_snapshot_run(snapshot_id=snapshot.pk)
    assert snapshot.state == ExportState.SUCCEEDED, snapshot.errors
    return read_groups(snapshot_directory(snapshot)), snapshot.counts


def sample_pairs(groups: list[dict], pairs: int | None, seed: int) -> list[dict]:
    """Whole training groups in a seeded order until ``pairs`` pairs are in (None: all of them)."""
    train = [g for g in groups if g["split"] == "train" and g["pairs"]]
    if pairs is None:
        return train
    random.Random(seed).shuffle(train)
    chosen, count = [], 0
    for g in train:
        if count >= pairs:
            break
        chosen.append(g)
        count += len(g["pairs"])
    return chosen


def write_snapshot(directory: Path, train: list[dict], validation: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "groups.jsonl", "w", encoding="utf-8") as out:
        for g in [*train, *validation]:
            out.write(json.dumps(g, ensure_ascii=False) + "\n")
    return directory


# --------------------------------------------------------------------------------------
# Reward models


def train_reward_model(name: str, base: str, data_dir: Path, out: Path, seed: int, args: argparse.Namespace) -> dict:
    from rewardmodel.hooks import TrainHooks
    from rewardmodel.train import TrainConfig, train

    class Progress(TrainHooks):
        def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
            if step % 25 == 0 or step == total_steps:
                print(f"  {name}: step {step}/{total_steps}, loss {metrics['loss']:.3f}", flush=True)

    config = TrainConfig.from_dict(
        {
            "base_model": base,
            "data_dir": str(data_dir),
            "output_dir": str(out),
            "epochs": args.rm_epochs,
            "learning_rate": 1e-4,  # bench/ppo_hh.py's MiniLM setting
            "groups_per_batch": 16,
            "max_length": args.rm_max_length,
            "eval_batch_groups": 32,
            "checkpoint_every_steps": 10_000,
            "seed": seed,
            "device": "cpu",
        }
    )
    t0 = time.monotonic()
    # In a --work folder a finished model is reused: the trainer resumes from its final
    # checkpoint when the config and the data are the same, and only saves it again.
    result = train(config, Progress())
    record = out / "bench-seconds.json"
    if result.resumed_from_step is None or not record.is_file():
        record.write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))
    return {
        "model_dir": result.model_dir,
        "pairs": result.info["pairs"],
        "accuracy": result.metrics.get("accuracy"),
        "reward_std": result.metrics.get("reward_std"),  # of the held-out responses: the model's own scale
        "seed": seed,
        "seconds": json.loads(record.read_text())["seconds"],
        "reused": result.resumed_from_step is not None,
    }


def pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def held_out_agreement(gold_dir: str, proxy_dir: str, validation: list[dict]) -> dict:
    """Pearson correlation of the two models' scores of every held-out response, and their pair agreement."""
    from rewardmodel.scoring import RewardScorer

    items, pairs, index = [], [], {}
    for g in validation:
        for r in g["responses"]:
            index[(id(g), r["id"])] = len(items)
            items.append((g["prompt"], r["text"]))
        pairs += [(index[(id(g), p["chosen"])], index[(id(g), p["rejected"])]) for p in g["pairs"]]
    scores = {}
    for name, directory in (("gold", gold_dir), ("proxy", proxy_dir)):
        scores[name] = RewardScorer.from_pretrained(directory, device="cpu").score(items, batch_size=32)
    same = sum((scores["gold"][c] > scores["gold"][r]) == (scores["proxy"][c] > scores["proxy"][r]) for c, r in pairs)
    return {
        "responses": len(items),
        "score_correlation": pearson(scores["gold"], scores["proxy"]),
        "pair_agreement": same / len(pairs) if pairs else None,
    }


# --------------------------------------------------------------------------------------
# PPO against the proxy, the gold watching


def policy_dir(kind: str, tmp: Path) -> Path:
    if kind == "tiny":
        from tests.rewardmodel.tiny import CHATML, build_llama

        return build_llama(tmp / "tiny-policy", chat_template=CHATML)
    from rlloop.demo_policy import demo_policy_dir, is_converted

    directory = demo_policy_dir()
    if not is_converted(directory):
        raise SystemExit(f"{directory} is missing: run `manage.py fetch_demo_policy` once, or use --policy tiny")
    return directory


def run_ppo(policy: Path, prompts: Path, proxy: str, gold: str, out: Path, args: argparse.Namespace) -> Any:
    from rewardmodel.hooks import TrainHooks
    from rlloop.ppo import PPOConfig, parse_sets, train

    class Progress(TrainHooks):
        def on_step(self, step: int, total_steps: int, m: dict[str, float]) -> None:
            print(
                f"  update {step}/{total_steps}: kl {m['objective/kl']:.2f}, proxy {m['objective/raw_scores']:+.3f}, "
                f"gold {m['objective/gold_scores']:+.3f}, length {m['val/response_length']:.1f}, "
                f"{m['time/update']:.0f} s",
                flush=True,
            )

    options = {
        "policy": str(policy),
        "prompts": str(prompts),
        "output_dir": str(out),
        "reward_model": proxy,
        "gold_reward_model": gold,
        "updates": args.updates,
        "rollouts_per_update": 16,
        "minibatch_size": 8,
        "ppo_epochs": 1,  # 2 optimizer steps per update: what this CPU affords...
        # ...so a large step: at 2e-4 the KL was 0.04 nats after 7 updates, far from over-optimised.
        "learning_rate": 1e-3,
        "lr_schedule": "constant",
        "max_new_tokens": 48,
        "max_prompt_length": 128,  # single-turn prompts: 109 tokens at most with the chat template
        "temperature": 0.7,
        "kl_coef": 0.01,  # low: the proxy is to be over-optimised
        "missing_eos_penalty": None,  # the proxy's score alone drives the policy
        "lora": {"r": 8, "alpha": 16} if args.policy == "smollm2" else None,
        "checkpoint_every": 10_000,
        "sample_every": max(1, args.updates // 3),
        "samples_shown": 4,
        "device": "cpu",
        "seed": 0,
    }
    options.update(parse_sets(args.set))
    config = PPOConfig.from_dict(options)
    return config, train(config, Progress())


def moving_mean(values: list[float], width: int) -> list[float]:
    """Trailing mean over the last ``width`` values (fewer at the start)."""
    return [sum(values[max(0, i - width + 1) : i + 1]) / (i + 1 - max(0, i - width + 1)) for i in range(len(values))]


def summarise(history: list[dict]) -> dict:
    kl = [h["objective/kl"] for h in history]
    proxy = [h["objective/raw_scores"] for h in history]
    gold = [h["objective/gold_scores"] for h in history]
    proxy_smooth, gold_smooth = moving_mean(proxy, SMOOTH), moving_mean(gold, SMOOTH)
    k = min(SMOOTH, len(history))
    first = {"proxy": sum(proxy[:k]) / k, "gold": sum(gold[:k]) / k}
    last = {"proxy": sum(proxy[-k:]) / k, "gold": sum(gold[-k:]) / k}
    peak = max(range(len(gold_smooth)), key=lambda i: gold_smooth[i])
    return {
        "updates": len(history),
        "kl_end": kl[-1],
        "proxy_first": first["proxy"],
        "proxy_last": last["proxy"],
        "proxy_gain": last["proxy"] - first["proxy"],
        "gold_first": first["gold"],
        "gold_last": last["gold"],
        "gold_gain": last["gold"] - first["gold"],
        "gold_peak_update": peak + 1,
        "gold_peak": gold_smooth[peak],
        "gold_peak_kl": kl[peak],
        "gold_end": gold_smooth[-1],
        "proxy_gold_pearson": pearson(proxy, gold),
        "proxy_gold_pearson_smoothed": pearson(proxy_smooth, gold_smooth),
    }


def print_curve(history: list[dict]) -> None:
    proxy = moving_mean([h["objective/raw_scores"] for h in history], SMOOTH)
    gold = moving_mean([h["objective/gold_scores"] for h in history], SMOOTH)
    print(f"\nupdate  KL     sqrt(KL)  proxy   gold    proxy({SMOOTH})  gold({SMOOTH})  length  seconds")
    for i, h in enumerate(history):
        print(
            f"{h['step']:>6}  {h['objective/kl']:6.2f} {math.sqrt(max(h['objective/kl'], 0.0)):6.2f}    "
            f"{h['objective/raw_scores']:+.3f}  {h['objective/gold_scores']:+.3f}  {proxy[i]:+.3f}     "
            f"{gold[i]:+.3f}    {h['val/response_length']:6.1f}  {h['time/update']:6.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--holdout", type=float, default=0.1, help="prompt-level validation share of the export")
    parser.add_argument("--gold-pairs", type=int, help="train the gold on a seeded sample of N pairs (default: all)")
    parser.add_argument("--proxy-pairs", type=int, default=500)
    parser.add_argument("--rm-base", default="all-minilm-l6-v2", help="a registered reward-model base")
    parser.add_argument("--rm-epochs", type=int, default=1)
    parser.add_argument("--rm-max-length", type=int, default=128)
    parser.add_argument("--rm-only", action="store_true", help="stop after the two reward models")
    parser.add_argument("--policy", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--updates", type=int, default=24)
    parser.add_argument("--max-prompts", type=int, default=1024)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a PPO option (JSON value)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--work",
        help="keep the export and the reward models here: a later run reuses those of the same size "
        "(other --holdout, --rm-* options need another folder)",
    )
    parser.add_argument("--json", help="write the figures here (default: var/bench/overoptimization-<time>.json)")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()  # a bar per model load drowns the figures
    hf_logging.set_verbosity_error()
    data = Path(args.data) / HH
    if not data.is_file():
        print(f"{data} is missing: this benchmark reads ../shared/data", file=sys.stderr)
        return 2
    started = time.monotonic()
    figures: dict[str, Any] = {"command": " ".join(["bench/overoptimization.py", *(argv or sys.argv[1:])])}
    with tempfile.TemporaryDirectory(prefix="arpad-overopt-") as tmp_name:
        tmp = Path(tmp_name)
        work = Path(args.work).resolve() if args.work else tmp
        work.mkdir(parents=True, exist_ok=True)
        setup_django(tmp)
        from rewardmodel.bases import registry

        base = str(registry.get(args.rm_base).path)
        # The export is written once per --work folder: a new export differs in its ids and
        # dates, and the reward-model trainer resumes only on the very same data.
        cached = work / "export.json"
        if cached.is_file() and json.loads(cached.read_text())["holdout"] == args.holdout:
            saved = json.loads(cached.read_text())
            groups, counts = saved["groups"], saved["counts"]
        else:
            groups, counts = export_groups(data, args.holdout)
            cached.write_text(json.dumps({"holdout": args.holdout, "counts": counts, "groups": groups}))
        validation = [g for g in groups if g["split"] == "validation" and g["pairs"]]
        gold_train = sample_pairs(groups, args.gold_pairs, seed=0)
        proxy_train = sample_pairs(groups, args.proxy_pairs, seed=1)
        available = sum(len(g["pairs"]) for g in sample_pairs(groups, None, 0))
        print(
            f"export: {counts}; {available} training pairs available, gold trains on "
            f"{sum(len(g['pairs']) for g in gold_train)}, proxy on {sum(len(g['pairs']) for g in proxy_train)}",
            flush=True,
        )

        rms = {}
        for name, train_groups, seed in (("gold", gold_train, 0), ("proxy", proxy_train, 1)):
            # Named by size: a run with another --proxy-pairs in the same --work reuses the gold.
            size = sum(len(g["pairs"]) for g in train_groups)
            directory = write_snapshot(work / f"{name}-{size}-data", train_groups, validation)
            rms[name] = train_reward_model(name, base, directory, work / f"{name}-{size}-rm", seed, args)
            print(
                f"{name} reward model ({args.rm_base}): held-out accuracy {rms[name]['accuracy']:.3f} on "
                f"{rms[name]['pairs']['validation']} pairs, trained on {rms[name]['pairs']['train']} pairs "
                f"(seed {seed}) in {rms[name]['seconds']:.0f} s"
                + (f" (reused from {work})" if rms[name]["reused"] else ""),
                flush=True,
            )
        agreement = held_out_agreement(rms["gold"]["model_dir"], rms["proxy"]["model_dir"], validation)
        print(
            f"proxy vs gold on the {agreement['responses']} held-out responses: score correlation "
            f"{agreement['score_correlation']:.3f}, same preferred response in {agreement['pair_agreement']:.3f} "
            "of the pairs",
            flush=True,
        )
        figures.update(
            {
                "export": counts,
                "training_pairs_available": available,
                "rm_base": args.rm_base,
                "gold": {k: v for k, v in rms["gold"].items() if k != "model_dir"},
                "proxy": {k: v for k, v in rms["proxy"].items() if k != "model_dir"},
                "held_out_agreement": agreement,
            }
        )

        if not args.rm_only:
            from rlloop.prompts import write_records

            rng = random.Random(0)
            # Single-turn prompts only: a multi-turn HH dialogue runs to 128 tokens at the median
            # and 312 at p90, which makes an update several times slower on this CPU.
            records = [
                {"prompt": g["prompt"], "id": str(g.get("prompt_id", g.get("group_id")))}
                for g in groups
                if g["split"] == "train" and len(g["prompt"]) == 1 and g["prompt"][0].get("role") == "user"
            ]
            records = rng.sample(records, min(args.max_prompts, len(records)))
            prompts = write_records(tmp / "prompts.jsonl", records)
            policy = policy_dir(args.policy, tmp)
            print(f"PPO of {args.policy} against the proxy on {len(records)} prompts, the gold watching", flush=True)
            t0 = time.monotonic()
            config, result = run_ppo(
                policy, prompts, rms["proxy"]["model_dir"], rms["gold"]["model_dir"], tmp / "ppo", args
            )
            history = result.history
            print_curve(history)
            summary = summarise(history)
            # The two models score on their own scales: gains in held-out standard deviations compare.
            for name in ("proxy", "gold"):
                spread = rms[name]["reward_std"]
                summary[f"{name}_gain_in_sd"] = summary[f"{name}_gain"] / spread if spread else None
            print(
                f"\nproxy (mean of the first {SMOOTH} updates -> last {SMOOTH}): {summary['proxy_first']:+.3f} -> "
                f"{summary['proxy_last']:+.3f}, gain {summary['proxy_gain']:+.3f} "
                f"({summary['proxy_gain_in_sd']:+.2f} of its held-out score sd {rms['proxy']['reward_std']:.3f})\n"
                f"gold:  {summary['gold_first']:+.3f} -> {summary['gold_last']:+.3f}, gain {summary['gold_gain']:+.3f} "
                f"({summary['gold_gain_in_sd']:+.2f} of its held-out score sd {rms['gold']['reward_std']:.3f})\n"
                f"gold peak ({SMOOTH}-update mean) {summary['gold_peak']:+.3f} at update {summary['gold_peak_update']} "
                f"(KL {summary['gold_peak_kl']:.2f}); at the end {summary['gold_end']:+.3f} (KL {summary['kl_end']:.2f})\n"
                f"Pearson r of proxy and gold across updates: {summary['proxy_gold_pearson']:.3f} per update, "
                f"{summary['proxy_gold_pearson_smoothed']:.3f} for the {SMOOTH}-update means\n"
                f"{time.monotonic() - t0:.0f} s for {len(history)} updates",
                flush=True,
            )
            for table in (result.samples[0], result.samples[-1]):
                print(f"\n--- samples at update {table['step']}")
                for row in table["rows"][:3]:
                    print(
                        f"[proxy {row['score']:+.2f}, gold {row['gold']:+.2f}, kl {row['kl']:.2f}] "
                        f"{row['prompt'][:80]!r}\n  -> {row['response']!r}"
                    )
            keep = ("objective/", "val/response_length", "val/eos_share", "time/update")
            figures["ppo"] = {
                "policy": args.policy,
                "prompts": len(records),
                "config": {k: v for k, v in config.to_dict().items() if k not in ("policy", "prompts", "output_dir")},
                "summary": summary,
                "curve": [{"step": h["step"], **{k: h[k] for k in h if k.startswith(keep)}} for h in history],
                "samples": [result.samples[0], result.samples[-1]],
                "info": result.info,
            }
            for key in ("reward_model", "gold_reward_model"):
                figures["ppo"]["config"].pop(key, None)
    figures["seconds"] = round(time.monotonic() - started, 1)
    target = (
        Path(args.json)
        if args.json
        else REPO / "var" / "bench" / f"overoptimization-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
