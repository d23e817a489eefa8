"""``manage.py run_cycle --project N [--policy V] [--options JSON] [--set step.key=value ...]``.

Runs one turn of the loop: an export of the agreed pairs, a reward model on it, a PPO
round of the policy (default: the newest) against that model, and fresh samples of the
new policy as tasks in the queue, each a job the workers run in turn. ``--set
ppo.config.updates=20 --set sampling.max_prompts=100``. Follow it on the Loop page or
with ``GET /api/v1/projects/N/cycles/``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from jobs.models import JobTrigger
from rlloop.cycle import cycle_start
from rlloop.models import PolicyVersion
from rlloop.services import PolicyError


def _assign(options: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if len(keys) < 2 or not all(keys):
        raise CommandError(f"--set {dotted}: name a step and an option, e.g. ppo.max_prompts=100")
    node = options
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise CommandError(f"--set {dotted}: {key} is not an object")
    node[keys[-1]] = value


class Command(BaseCommand):
    help = "Run one loop cycle: export, reward model, PPO round and sampling, as chained jobs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True)
        parser.add_argument("--policy", type=int, metavar="V", help="policy number to train (default: the newest)")
        parser.add_argument("--options", help="the cycle's options as a JSON object")
        parser.add_argument("--set", action="append", default=[], metavar="STEP.KEY=VALUE", help="one option")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(pk=options["project"]).first()
        if project is None:
            raise CommandError(f"--project: project {options['project']} does not exist")
        policy = None
        if options["policy"] is not None:
            policy = PolicyVersion.objects.filter(project=project, number=options["policy"]).first()
            if policy is None:
                raise CommandError(f"--policy: project {project.pk} has no policy {options['policy']}")
        cycle_options: dict[str, Any] = {}
        if options["options"]:
            try:
                cycle_options = json.loads(options["options"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--options is not valid JSON: {exc}") from None
            if not isinstance(cycle_options, dict):
                raise CommandError("--options must be a JSON object")
        for assignment in options["set"]:
            key, sep, raw = assignment.partition("=")
            if not sep:
                raise CommandError(f"--set {assignment!r}: expected step.key=value")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            _assign(cycle_options, key.strip(), value)
        try:
            cycle = cycle_start(project=project, policy=policy, options=cycle_options, trigger=JobTrigger.CLI)
        except PolicyError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
        self.stdout.write(
            f"cycle {cycle.number} of {project.name}: training {cycle.policy.display_name}; export {cycle.snapshot_id}"
            " queued, the next steps start as each job succeeds"
        )
