"""``manage.py ppo_round --project N [--policy V] [--reward-model V] [--reference V] [--gold-reward-model V] ...``.

Queues a PPO round for a GPU worker (or trains it ``--inline``); prompts are the project's
(``--snapshot ID``: the training prompts of an export; ``--max-prompts N``: a seeded sample).
Defaults: the newest policy, the active reward model, the project's reference policy.
``--gold-reward-model V``: a reward-model version that only watches, scoring the same rollouts
(``objective/gold_scores``, the set-up of Gao et al. 2022); never trained on.
Options are those of ``rlloop.ppo.PPOConfig``: ``--set updates=20 --set lora='{"r": 8}'``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from rlloop.management.commands._round import RoundCommand
from rlloop.models import PolicyVersion, RoundMethod


class Command(RoundCommand):
    help = "Start a PPO round of a project's policy against a reward model (queued for a GPU worker, or --inline)."
    method = RoundMethod.PPO

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_common_arguments(parser)
        parser.add_argument("--reward-model", type=int, metavar="V", help="reward-model version (default: active)")
        parser.add_argument("--reference", type=int, metavar="V", help="policy number of the KL reference")
        parser.add_argument(
            "--gold-reward-model", type=int, metavar="V", help="reward-model version that only watches (gold score)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options)
        reference = None
        if options["reference"] is not None:
            reference = self.find(PolicyVersion, project, "policy", number=options["reference"])
        self.create(
            project,
            options,
            reward_model=self.reward_model(project, options["reward_model"]),
            reference=reference,
            gold_reward_model=self.reward_model(project, options["gold_reward_model"]),
        )
