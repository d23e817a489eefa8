"""What ``ppo_round`` and ``sft_round`` share: find the project's objects by number, create, follow."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from annotation.models import Project
from exports.models import ExportSnapshot
from jobs.cli import add_job_arguments, finish_job_command
from jobs.models import JobTrigger
from rewardmodel.management.commands.train_reward_model import parse_options
from rewardmodel.models import RewardModelVersion
from rlloop.models import PolicyRound, PolicyVersion
from rlloop.services import PolicyError, policy_round_create


class RoundCommand(BaseCommand):
    method = ""

    def add_common_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")
        parser.add_argument("--policy", type=int, metavar="V", help="policy number to train (default: the newest)")
        parser.add_argument("--snapshot", type=int, help="export snapshot id")
        parser.add_argument("--max-prompts", type=int, help="at most this many prompts (a seeded sample)")
        parser.add_argument("--config", help="trainer options as a JSON object")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one option; repeatable")
        add_job_arguments(parser, inline_help="train in this process instead of on a GPU worker")

    def project(self, options: dict[str, Any]) -> Project:
        project = Project.objects.filter(pk=options["project"]).first()
        if project is None:
            raise CommandError(f"project {options['project']} does not exist")
        return project

    def find(self, model: type, project: Project, what: str, **lookup: Any) -> Any:
        found = model.objects.filter(project=project, **lookup).first()
        if found is None:
            raise CommandError(f"project {project.pk} has no {what} {next(iter(lookup.values()))}")
        return found

    def create(self, project: Project, options: dict[str, Any], **fields: Any) -> PolicyRound:
        if options["policy"] is not None:
            policy = self.find(PolicyVersion, project, "policy", number=options["policy"])
        else:
            policy = PolicyVersion.objects.filter(project=project).order_by("-number").first()
            if policy is None:
                raise CommandError(f"project {project.pk} has no policy: register one with register_policy")
        snapshot = None
        if options["snapshot"] is not None:
            snapshot = self.find(ExportSnapshot, project, "export", pk=options["snapshot"])
        data = dict(fields.pop("data", {}))
        if options["max_prompts"] is not None:
            data["max_prompts"] = options["max_prompts"]
        try:
            with transaction.atomic():
                round = policy_round_create(
                    project=project,
                    method=self.method,
                    policy=policy,
                    snapshot=snapshot,
                    data=data,
                    config=parse_options(options["config"], options["set"]),
                    trigger=JobTrigger.CLI,
                    send=not options["inline"],
                    **fields,
                )
        except PolicyError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
        self.stdout.write(
            f"round {round.number} (job {round.pk}): {round.get_method_display()} of {policy.display_name}"
        )
        round = finish_job_command(self, round, options)
        if round.is_finished:
            result = round.result
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items() if isinstance(v, int | float))
            self.stdout.write(self.style.SUCCESS(f"{result.label} registered: {metrics}"))
        return round

    def reward_model(self, project: Project, number: int | None) -> RewardModelVersion | None:
        return None if number is None else self.find(RewardModelVersion, project, "reward-model version", number=number)
