"""``manage.py sample_policies --project N --policy V [--policy V ...] [--anchor V] [--set k=v] [--wait|--inline]``.

Samples fresh responses from policy versions into new tasks of the project (``--target P``:
another project you run), served before older work (``--priority``). Prompts: those no
round trained on (default), ``--all-prompts``, or ``--prompts-file FILE.jsonl`` (one
``{"prompt": ..., "id": ...}`` per line). Sampling options: ``--set temperature=0.8 --set
max_new_tokens=128 --set seed=7`` (default: the first policy's generation settings).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from annotation.models import Project
from jobs.cli import add_job_arguments, finish_job_command
from jobs.models import JobTrigger
from rewardmodel.management.commands.train_reward_model import parse_options
from rewardmodel.models import RewardModelVersion
from rlloop.management.commands._round import RoundCommand
from rlloop.models import PolicyVersion, SamplingMode
from rlloop.sampling import sampling_job_create
from rlloop.services import PolicyError


class Command(RoundCommand):
    help = "Sample policy versions into new tasks for annotators (queued for a GPU worker, or --inline)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id of the policies")
        parser.add_argument("--policy", type=int, action="append", required=True, metavar="V", help="repeatable")
        parser.add_argument("--anchor", type=int, metavar="V", help="a policy that answers one slot of every task")
        parser.add_argument("--target", type=int, metavar="P", help="project id the tasks go to (default: --project)")
        parser.add_argument("--mode", choices=SamplingMode.values, default=SamplingMode.POOL)
        parser.add_argument("--responses", type=int, metavar="K", help="responses per task")
        parser.add_argument("--reward-model", type=int, metavar="V", help="scores the samples (default: active)")
        parser.add_argument("--all-prompts", action="store_true", help="also prompts a round trained on")
        parser.add_argument("--prompts-file", help="a JSONL file of prompts instead of the project's")
        parser.add_argument("--max-prompts", type=int, default=200, help="at most this many prompts (a seeded sample)")
        parser.add_argument("--priority", type=int, default=10, help="higher is served first")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="sampling option")
        add_job_arguments(parser, inline_help="sample in this process instead of on a GPU worker")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options)
        policies = []
        for number in options["policy"]:
            found = PolicyVersion.objects.filter(project=project, number=number).first()
            if found is None:
                raise CommandError(f"--policy: project {project.pk} has no policy {number}")
            policies.append(found)
        anchor = self.find(PolicyVersion, project, "policy", number=options["anchor"]) if options["anchor"] else None
        target = None
        if options["target"] is not None:
            target = Project.objects.filter(pk=options["target"]).first()
            if target is None:
                raise CommandError(f"--target: project {options['target']} does not exist")
        reward_model = None
        if options["reward_model"] is not None:
            reward_model = self.find(
                RewardModelVersion, project, "reward-model version", number=options["reward_model"]
            )
        prompts, records = ("project" if options["all_prompts"] else "unused"), None
        if options["prompts_file"]:
            from rlloop.prompts import read_records

            try:
                records = [{"prompt": r["prompt"], "id": r["id"]} for r in read_records(options["prompts_file"])]
            except ValueError as exc:
                raise CommandError(f"--prompts-file: {exc}") from None
            prompts = "file"
        try:
            with transaction.atomic():
                job = sampling_job_create(
                    project=project,
                    policies=policies,
                    target=target,
                    anchor=anchor,
                    mode=options["mode"],
                    responses_per_prompt=options["responses"],
                    reward_model=reward_model,
                    prompts=prompts,
                    prompt_records=records,
                    max_prompts=options["max_prompts"],
                    sampling=parse_options(None, options["set"]),
                    priority=options["priority"],
                    trigger=JobTrigger.CLI,
                    send=not options["inline"],
                )
        except PolicyError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
        names = ", ".join(p.label for p in policies) + (f" with anchor {anchor.label}" if anchor else "")
        self.stdout.write(f"sampling job {job.pk}: {names} into {job.target.name}")
        job = finish_job_command(self, job, options)
        if job.is_finished:
            summary = job.summary
            self.stdout.write(
                self.style.SUCCESS(
                    f"{summary.get('tasks', 0)} tasks from {summary.get('prompts', 0)} prompts"
                    f" ({summary.get('duplicates', 0)} duplicate texts dropped)"
                )
            )
