"""HH-RLHF through the whole platform on this CPU: a reward model, then a LoRA PPO round of SmolLM2-135M.

What one run does, each step through the platform's own services and job kinds (the jobs
run inline, in this process, exactly as a worker runs them):

1. a throwaway SQLite database and artifact folder under a temporary directory;
2. imports Anthropic HH-RLHF harmless-base (``../shared/data``) with its original preference
   as judgements, and exports it with a 20 % prompt-level validation split;
3. trains a reward model (``--rm-base``, default the MiniLM encoder; ``smollm2-135m-instruct``
   trains the demo policy itself as a decoder reward model) and prints its held-out accuracy;
4. registers the demo policy (``manage.py fetch_demo_policy`` must have converted it) as the
   project's reference and runs a PPO round on the export's training prompts against that
   reward model, printing score, KL and length per update and samples before and after.

    .venv/bin/python bench/ppo_hh.py                                  # MiniLM RM + 12 PPO updates
    .venv/bin/python bench/ppo_hh.py --rm-only --rm-base smollm2-135m-instruct --rm-epochs 1
    .venv/bin/python bench/ppo_hh.py --updates 20 --set kl_coef=0.1 --json out.json

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HH = "hh-rlhf/harmless-base-test.jsonl.gz"


def setup_django(var: Path) -> None:
    os.environ["ARPAD_VAR_DIR"] = str(var)
    os.environ["DJANGO_SETTINGS_MODULE"] = "arpad.settings_test"
    os.environ.pop("DATABASE_URL", None)
    os.environ["DATABASE_URL"] = f"sqlite:///{var / 'bench.sqlite3'}"
    os.environ.setdefault("POLICY_MODELS_DIR", str(REPO / "var" / "models" / "policies"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument("--rm-base", default="all-minilm-l6-v2", help="a registered reward-model base")
    parser.add_argument("--rm-epochs", type=int, default=1)
    parser.add_argument("--rm-max-length", type=int, default=128)
    parser.add_argument("--rm-train-groups", type=int, default=0, help="at most this many training groups (0: all)")
    parser.add_argument("--rm-lora", type=int, default=0, help="LoRA rank of the reward model (0: full fine-tune)")
    parser.add_argument("--rm-only", action="store_true", help="stop after the reward model")
    parser.add_argument("--updates", type=int, default=12)
    parser.add_argument("--max-prompts", type=int, default=512)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a PPO option (JSON value)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data) / HH
    if not data.is_file():
        print(f"{data} is missing: this benchmark reads ../shared/data", file=sys.stderr)
        return 2
    figures: dict = {"rm_base": args.rm_base}
    with tempfile.TemporaryDirectory(prefix="arpad-ppo-hh-") as tmp:
        setup_django(Path(tmp))
        from annotation.importers import import_file
        from annotation.models import Project
        from exports.models import ExportState
        from exports.services import export_snapshot_create, export_snapshot_run
        from rewardmodel.jobs import reward_model_run_execute
        from rewardmodel.services import reward_model_run_create

        started = time.monotonic()
        project = Project.objects.create(name="HH-RLHF harmless-base", responses_per_task=2, annotations_per_task=1)
        summary = import_file(
            project=project, path=data, format="hh-rlhf", options={"import_preference": True, "divergent": "skip"}
        )
        snapshot = export_snapshot_create(project=project, params={"validation_fraction": 0.2}, user=None)
        snapshot = export_snapshot_run(snapshot_id=snapshot.pk)
        assert snapshot.state == ExportState.SUCCEEDED, snapshot.errors
        print(f"imported {summary.judgements} judgements, exported {snapshot.counts}", flush=True)

        rm_config = {
            "epochs": args.rm_epochs,
            "learning_rate": 1e-4 if args.rm_lora or args.rm_base == "all-minilm-l6-v2" else 2e-5,
            "groups_per_batch": 16,
            "max_length": args.rm_max_length,
            "eval_batch_groups": 32,
            "checkpoint_every_steps": 50,
        }
        if args.rm_train_groups:
            rm_config["max_train_groups"] = args.rm_train_groups
        if args.rm_lora:
            rm_config["lora"] = {"r": args.rm_lora, "alpha": 2 * args.rm_lora}
        run = reward_model_run_create(
            project=project, snapshot=snapshot, base_model=args.rm_base, config=rm_config, send=False
        )
        t0 = time.monotonic()
        version = reward_model_run_execute(run_id=run.pk, worker="bench")
        run.refresh_from_db()
        if version is None:
            print(f"reward model failed: {run.error}\n" + "\n".join(run.log_tail[-10:]), file=sys.stderr)
            return 1
        figures["rm"] = {
            "accuracy": version.metrics.get("accuracy"),
            "pairs": run.info.get("pairs"),
            "config": rm_config,
            "seconds": round(time.monotonic() - t0, 1),
        }
        print(
            f"reward model {args.rm_base}: held-out accuracy {version.metrics.get('accuracy'):.3f} on "
            f"{run.info['pairs']['validation']} validation pairs ({run.info['pairs']['train']} train), "
            f"{figures['rm']['seconds']:.0f} s",
            flush=True,
        )
        if not args.rm_only:
            figures["ppo"] = ppo(project, snapshot, version, args)
        figures["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def ppo(project, snapshot, reward_model, args) -> dict:
    from rlloop.demo_policy import DEMO_POLICY_NAME
    from rlloop.jobs import policy_round_execute
    from rlloop.ppo import parse_sets
    from rlloop.services import policy_register, policy_round_create

    policy = policy_register(project=project, name=DEMO_POLICY_NAME, is_reference=True)
    config = {
        "updates": args.updates,
        "rollouts_per_update": 8,
        "minibatch_size": 4,
        "ppo_epochs": 2,
        "learning_rate": 5e-5,
        "lr_schedule": "constant",
        "max_new_tokens": 48,
        "temperature": 0.7,
        "kl_coef": 0.05,
        "lora": {"r": 8, "alpha": 16},
        "checkpoint_every": 4,
        "sample_every": max(1, args.updates // 3),
        "samples_shown": 4,
        "device": "cpu",
        **parse_sets(args.set),
    }
    round = policy_round_create(
        project=project,
        method="ppo",
        policy=policy,
        reward_model=reward_model,
        snapshot=snapshot,
        data={"max_prompts": args.max_prompts},
        config=config,
        send=False,
    )
    t0 = time.monotonic()
    result = policy_round_execute(round_id=round.pk, worker="bench")
    round.refresh_from_db()
    if result is None:
        print(f"PPO round failed: {round.error}\n" + "\n".join(round.log_tail[-10:]), file=sys.stderr)
        raise SystemExit(1)
    steps = [p for p in round.metrics_history if "objective/scores" in p]
    print("update  score   rm      kl     beta    length  eos   clipfrac  seconds")
    for p in steps:
        print(
            f"{p['step']:>6}  {p['objective/scores']:+.3f}  {p['objective/raw_scores']:+.3f}  {p['objective/kl']:.3f}  "
            f"{p['objective/beta']:.4f}  "
            f"{p['val/response_length']:6.1f}  {p['val/eos_share']:.2f}  {p['losses/clipfrac']:.3f}     "
            f"{p['time/update']:.1f}"
        )
    for table in (round.samples[0], round.samples[-1]):
        print(f"\n--- samples at update {table['step']}")
        for row in table["rows"][:3]:
            print(f"[score {row['score']:+.2f}, kl {row['kl']:.2f}] {row['prompt'][:100]!r}\n  -> {row['response']!r}")
    third = max(1, len(steps) // 3)
    first = sum(p["objective/scores"] for p in steps[:third]) / third
    last = sum(p["objective/scores"] for p in steps[-third:]) / third
    raw_first = sum(p["objective/raw_scores"] for p in steps[:third]) / third
    raw_last = sum(p["objective/raw_scores"] for p in steps[-third:]) / third
    print(
        f"\nscore (reward model, eos penalty included), mean of the first {third} updates {first:+.3f} -> last "
        f"{third} {last:+.3f}; reward model alone {raw_first:+.3f} -> {raw_last:+.3f}; "
        f"KL at the end {steps[-1]['objective/kl']:.3f}; {time.monotonic() - t0:.0f} s for {len(steps)} updates"
    )
    return {
        "config": config,
        "history": [{k: p[k] for k in p if k.startswith(("objective/", "val/", "losses/", "time/"))} for p in steps],
        "samples": [round.samples[0], round.samples[-1]],
        "score_first_third": first,
        "score_last_third": last,
        "rm_score_first_third": raw_first,
        "rm_score_last_third": raw_last,
        "info": round.info,
    }


if __name__ == "__main__":
    sys.exit(main())
