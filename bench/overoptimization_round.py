"""Reward-model over-optimisation as a platform round: the Gao et al. (2022) set-up through the CLI.

``bench/overoptimization.py`` calls the trainers directly in a throwaway database; this one
runs the same experiment the way a user would, with the platform's own commands, in a
database that stays in ``--work``, so the PPO round's page (proxy score, gold score and KL
per update, and the sampled responses) can be opened afterwards:

1. a project "Over-optimisation: HH-RLHF harmless-base" with the ``../shared/data`` test split
   imported with its original preferences (``import_data``), and an export with a 10 %
   prompt-level holdout (``export_snapshot``);
2. the **gold** reward model: every training pair of the export (``train_reward_model``);
   the **proxy**: the first ``--proxy-pairs`` training pairs only
   (``max_train_groups``), another seed, ``--proxy-epochs`` passes over them (a small-data
   model trained to convergence);
3. the SmolLM2-135M demo policy as reference (``fetch_demo_policy``, ``register_policy``), and a
   PPO round of it against the proxy with the gold watching (``ppo_round --reward-model <proxy>
   --gold-reward-model <gold>``), without a KL penalty by default (``kl_coef 0``: KL is measured,
   not paid; in Gao et al. a penalty does not move the gold-against-KL frontier), so that the
   proxy alone is what it climbs;
4. prints, per update, KL, the proxy's and the gold's mean score of the update's rollouts (and
   their 3-update means), each model's gain in its own held-out score standard deviations, the
   update where the gold peaked and the proxy's gain after it; writes it as JSON.

Every step is skipped when its result is already in ``--work``, so a second round reuses the
data and both reward models; ``--from-policy N`` trains the policy an earlier round produced
further (the KL still measured to the reference), and the figures then cover the whole chain
of rounds, to reach a KL one round on this CPU does not:

    nice -n 10 .venv/bin/python bench/overoptimization_round.py --work var/bench/overopt-round
    nice -n 10 .venv/bin/python bench/overoptimization_round.py --work var/bench/overopt-round \
        --from-policy 2 --updates 30                     # p2 (round 1's result) on to round 2

    # the round's page, on the same database:
    ARPAD_VAR_DIR=var/bench/overopt-round DJANGO_DEBUG=1 .venv/bin/python manage.py changepassword admin
    ARPAD_VAR_DIR=var/bench/overopt-round DJANGO_DEBUG=1 .venv/bin/python manage.py runserver 127.0.0.1:8000

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from overoptimization import SMOOTH, moving_mean, print_curve, summarise
from ppo_hh import HH, REPO

PROJECT = "Over-optimisation: HH-RLHF harmless-base"


def setup_django(work: Path) -> None:
    """The platform's own settings on a SQLite database in ``work`` (what runserver reads afterwards)."""
    os.environ["ARPAD_VAR_DIR"] = str(work)
    os.environ["DJANGO_SETTINGS_MODULE"] = "arpad.settings"
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("DJANGO_SECURE_HTTPS", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    secret = work / "secret_key"
    if not secret.is_file():
        import secrets

        secret.write_text(secrets.token_urlsafe(50))
        secret.chmod(0o600)
    os.environ.setdefault("DJANGO_SECRET_KEY", secret.read_text().strip())
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def rm_options(
    seed: int, epochs: int, max_length: int, groups: int | None, lora: int = 0, learning_rate: float = 1e-4
) -> list[str]:
    options = {
        "epochs": epochs,
        "learning_rate": learning_rate,  # 1e-4: bench/ppo_hh.py's MiniLM setting
        "groups_per_batch": 16,
        "max_length": max_length,
        "eval_batch_groups": 32,
        "checkpoint_every_steps": 10_000,
        "seed": seed,
        "device": "cpu",
    }
    if groups is not None:
        options["max_train_groups"] = groups
    if lora:
        options["lora"] = {"r": lora, "alpha": 2 * lora}
    return [f"{k}={json.dumps(v)}" for k, v in options.items()]


def reward_model(project: Any, name: str, options: list[str], base: str) -> Any:
    """The project's version trained from ``base`` with ``options``, trained here when there is none yet."""
    from django.core.management import call_command

    from rewardmodel.models import RewardModelVersion
    from rewardmodel.services import base_model_name_of

    wanted = {k: json.loads(v) for k, v in (o.split("=", 1) for o in options)}
    version = next(
        (
            v
            for v in RewardModelVersion.objects.filter(project=project).select_related("run").order_by("number")
            if base_model_name_of(v) == base
            and all(v.run.config.get(k) == value for k, value in wanted.items())
            and v.run.config.get("max_train_groups") == wanted.get("max_train_groups")
        ),
        None,
    )
    if version is None:
        t0 = step(f"{name} reward model")
        call_command("train_reward_model", project=project.pk, latest=True, base=base, set=options, inline=True)
        version = RewardModelVersion.objects.filter(project=project).latest("number")
        print(f"{name}: {time.monotonic() - t0:.0f} s", flush=True)
    metrics = version.metrics or {}
    print(
        f"{name} (v{version.number}, {base}): held-out accuracy {metrics.get('accuracy', float('nan')):.3f}, "
        f"score sd {metrics.get('reward_std', float('nan')):.3f}, trained on {version.run.info.get('pairs', {})}",
        flush=True,
    )
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the database, models and round stay here")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    parser.add_argument(
        "--hh-file",
        help="an HH-RLHF file to import instead of the data folder's harmless-base test split "
        "(e.g. the 42k-pair harmless-base train split, for a gold on far more pairs than the proxy's); "
        "a new --work folder for it",
    )
    parser.add_argument("--rm-base", default="all-minilm-l6-v2", help="a registered reward-model base")
    parser.add_argument("--rm-max-length", type=int, default=128)
    parser.add_argument("--proxy-pairs", type=int, default=250)
    parser.add_argument("--proxy-epochs", type=int, default=4)
    parser.add_argument("--proxy-base", help="the proxy's registered base (default: --rm-base)")
    parser.add_argument("--proxy-lora", type=int, default=0, help="LoRA rank of the proxy (0: full fine-tune)")
    parser.add_argument("--proxy-lr", type=float, default=1e-4, help="the proxy's learning rate")
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument(
        "--from-policy",
        type=int,
        metavar="N",
        help="train policy pN (one an earlier round here produced) further, the KL still to the reference; "
        "the figures then cover the whole chain of rounds from the reference",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a PPO option (JSON value)")
    parser.add_argument("--json", help="write the figures here (default: <work>/overoptimization-round-<time>.json)")
    args = parser.parse_args(argv)

    data = Path(args.hh_file) if args.hh_file else Path(args.data) / HH
    if not data.is_file():
        print(f"{data} is missing: this benchmark reads ../shared/data", file=sys.stderr)
        return 2
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    setup_django(work)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.urls import reverse

    from annotation.models import Membership, Project, Role
    from exports.models import ExportSnapshot, ExportState
    from rlloop.models import PolicyRound, PolicyVersion

    started = time.monotonic()
    admin, created = get_user_model().objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        admin.set_unusable_password()  # `manage.py changepassword admin` to open the pages
        admin.save()
    project, _ = Project.objects.get_or_create(
        name=PROJECT, defaults={"responses_per_task": 2, "annotations_per_task": 1, "created_by": admin}
    )
    Membership.objects.get_or_create(project=project, user=admin, defaults={"role": Role.MANAGER})
    if not project.prompts.exists():
        step(f"import {data}")
        call_command(
            "import_data",
            str(data),
            project=project.pk,
            format="hh-rlhf",
            option=["import_preference=true", "divergent=skip"],
            inline=True,
        )
    snapshot = ExportSnapshot.objects.filter(project=project, state=ExportState.SUCCEEDED).order_by("-pk").first()
    if snapshot is None:
        step("export")
        call_command("export_snapshot", project=project.pk, validation_fraction=0.1, inline=True)
        snapshot = ExportSnapshot.objects.filter(project=project, state=ExportState.SUCCEEDED).latest("pk")
    print(f"export {snapshot.pk}: {snapshot.counts}", flush=True)

    if not PolicyVersion.objects.filter(project=project).exists():
        step("reference policy")  # first: the converted SmolLM2 is also a reward-model base
        call_command("fetch_demo_policy")
        call_command("register_policy", project=project.pk, name="smollm2-135m-instruct", reference=True)
    reference = PolicyVersion.objects.get(project=project, is_reference=True)

    gold = reward_model(project, "gold", rm_options(0, 1, args.rm_max_length, None), args.rm_base)
    proxy_options = rm_options(
        1, args.proxy_epochs, args.rm_max_length, args.proxy_pairs, args.proxy_lora, args.proxy_lr
    )
    proxy = reward_model(project, "proxy", proxy_options, args.proxy_base or args.rm_base)
    agreement = held_out_agreement(project, snapshot, gold, proxy)
    print(
        f"proxy vs gold on the {agreement['pairs']} held-out pairs: the same response preferred in "
        f"{agreement['pair_agreement']:.3f}, score correlation {agreement['score_correlation']:.3f}",
        flush=True,
    )

    config = {
        "updates": args.updates,
        "rollouts_per_update": 16,
        "minibatch_size": 8,
        "ppo_epochs": 1,  # 2 optimizer steps per update: what this CPU affords...
        "learning_rate": 1e-3,  # ...so a large step (at 2e-4 the KL was 0.04 nats after 7 updates)
        "lr_schedule": "constant",
        "max_new_tokens": 48,
        "max_prompt_length": 128,
        "temperature": 0.7,
        "kl_coef": 0.0,  # KL measured, not paid
        "missing_eos_penalty": None,  # the proxy's score alone drives the policy
        "lora": {"r": 8, "alpha": 16},
        "sample_every": max(1, args.updates // 4),
        "samples_shown": 4,
        "device": "cpu",
        "seed": 0,
    }
    from rlloop.ppo import parse_sets

    config.update(parse_sets(args.set))
    start = reference
    if args.from_policy is not None:
        start = PolicyVersion.objects.filter(project=project, number=args.from_policy).first()
        if start is None:
            print(f"project {project.pk} has no policy p{args.from_policy}", file=sys.stderr)
            return 2
    step(f"PPO round of {start.display_name} against the proxy (v{proxy.number}), the gold (v{gold.number}) watching")
    t0 = time.monotonic()
    call_command(
        "ppo_round",
        project=project.pk,
        policy=start.number,
        reference=reference.number,
        snapshot=snapshot.pk,
        reward_model=proxy.number,
        gold_reward_model=gold.number,
        config=json.dumps(config),
        inline=True,
    )
    ppo = PolicyRound.objects.filter(project=project).latest("pk")
    if ppo.state != "succeeded" or not ppo.metrics_history:
        print(f"round {ppo.number} ended {ppo.state}: {ppo.error}", file=sys.stderr)
        return 1
    chain = rounds_from_reference(ppo)
    history = []
    for earlier in chain:  # one curve over the chain, its updates numbered on
        offset = len(history)
        history += [{**p, "step": offset + p["step"], "round": earlier.number} for p in earlier.metrics_history]
    if len(chain) > 1:
        print(f"\nthe chain of rounds from {reference.display_name}: {', '.join(str(r.number) for r in chain)}")
    print_curve(history)
    summary = summarise(history)
    for name, version in (("proxy", proxy), ("gold", gold)):
        spread = (version.metrics or {}).get("reward_std")
        summary[f"{name}_gain_in_sd"] = summary[f"{name}_gain"] / spread if spread else None
    peak = summary["gold_peak_update"] - 1
    proxy_smooth = moving_mean([h["objective/raw_scores"] for h in history], SMOOTH)
    summary["proxy_after_gold_peak"] = proxy_smooth[-1] - proxy_smooth[peak]
    summary["gold_after_peak"] = summary["gold_end"] - summary["gold_peak"]
    print(
        f"\nproxy (mean of the first {SMOOTH} updates -> last {SMOOTH}): {summary['proxy_first']:+.3f} -> "
        f"{summary['proxy_last']:+.3f}, gain {summary['proxy_gain']:+.3f} ({summary['proxy_gain_in_sd']:+.2f} sd)\n"
        f"gold:  {summary['gold_first']:+.3f} -> {summary['gold_last']:+.3f}, gain {summary['gold_gain']:+.3f} "
        f"({summary['gold_gain_in_sd']:+.2f} sd)\n"
        f"gold peak ({SMOOTH}-update mean) {summary['gold_peak']:+.3f} at update {summary['gold_peak_update']} "
        f"(KL {summary['gold_peak_kl']:.2f}, sqrt {math.sqrt(max(summary['gold_peak_kl'], 0)):.2f}); "
        f"after it the gold moved {summary['gold_after_peak']:+.3f} and the proxy {summary['proxy_after_gold_peak']:+.3f} "
        f"by the end (KL {summary['kl_end']:.2f})\n"
        f"Pearson r of proxy and gold across updates: {summary['proxy_gold_pearson']:.3f} per update, "
        f"{summary['proxy_gold_pearson_smoothed']:.3f} for the {SMOOTH}-update means\n"
        f"{time.monotonic() - t0:.0f} s for {len(ppo.metrics_history)} updates; the round's page: "
        f"{reverse('policy-round', args=[project.pk, ppo.pk])}",
        flush=True,
    )
    figures = {
        "command": " ".join(["bench/overoptimization_round.py", *(argv if argv is not None else sys.argv[1:])]),
        "project": project.pk,
        "round": ppo.number,
        "chain": [r.number for r in chain],
        "export": snapshot.counts,
        "gold": {"version": gold.number, "metrics": gold.metrics},
        "proxy": {
            "version": proxy.number,
            "metrics": proxy.metrics,
            "pairs": args.proxy_pairs,
            "base": args.proxy_base or args.rm_base,
            "lora": args.proxy_lora,
        },  # fmt: skip
        "held_out_agreement": agreement,
        "config": ppo.config,
        "summary": summary,
        "curve": [
            {k: v for k, v in h.items() if k == "step" or k.startswith(("objective/", "val/", "time/"))}
            for h in history
        ],
        "seconds": round(time.monotonic() - started, 1),
    }
    target = Path(args.json) if args.json else work / f"overoptimization-round-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"wrote {target}")
    return 0


def held_out_agreement(project: Any, snapshot: Any, gold: Any, proxy: Any) -> dict[str, Any]:
    """How often the two models prefer the same response of a held-out pair, and their score correlation."""
    from overoptimization import pearson

    from exports.services import snapshot_directory
    from rewardmodel.data import read_groups
    from rewardmodel.scoring import RewardScorer
    from rewardmodel.services import version_model_dir

    items, pairs = [], []
    for g in read_groups(snapshot_directory(snapshot)):
        if g["split"] != "validation":
            continue
        index = {}
        for r in g["responses"]:
            index[r["id"]] = len(items)
            items.append((g["prompt"], r["text"]))
        pairs += [(index[p["chosen"]], index[p["rejected"]]) for p in g["pairs"]]
    scores = [RewardScorer.from_pretrained(version_model_dir(v), device="cpu").score(items, batch_size=32)
              for v in (gold, proxy)]  # fmt: skip
    same = sum((scores[0][c] > scores[0][r]) == (scores[1][c] > scores[1][r]) for c, r in pairs)
    return {"pairs": len(pairs), "pair_agreement": same / len(pairs), "score_correlation": pearson(*scores)}


def rounds_from_reference(last: Any) -> list[Any]:
    """The rounds that led from the reference to ``last``'s policy, oldest first, ``last`` included."""
    chain = [last]
    while chain[0].policy.round_id is not None:
        chain.insert(0, chain[0].policy.round)
    return chain


if __name__ == "__main__":
    sys.exit(main())
