"""``manage.py train_reward_model --project N [--snapshot ID | --latest] [--base NAME] [--parent V] ...``.

Creates a reward-model run. By default it is queued for a GPU worker and the command
prints its id; ``--wait`` then follows it with a progress bar until it finishes;
``--inline`` trains here, in this process, with a progress bar (the run row is written
just as a worker would write it, so the web UI follows it too).

The base is a registered base model's name (``manage.py reward_models --project N`` lists
them) or, with ``--parent``, one of the project's versions; never a path.

Training options come from ``--config '{"epochs": 2}'`` and/or repeated
``--set key=value`` (values read as JSON when they parse, as text otherwise).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from annotation.models import Project
from exports.models import ExportSnapshot, ExportState
from jobs.cli import add_job_arguments, finish_job_command
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunTrigger
from rewardmodel.services import RewardModelError, reward_model_run_create


def parse_options(config_json: str | None, assignments: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if config_json:
        try:
            config = json.loads(config_json)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise CommandError("--config must be a JSON object")
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--set {assignment!r}: expected key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        config[key.strip()] = value
    return config


class Command(BaseCommand):
    help = "Train a reward model of a project from an export snapshot (queued for a GPU worker, or --inline)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--snapshot", type=int, help="export snapshot id")
        which.add_argument("--latest", action="store_true", help="the latest succeeded export (the default)")
        parser.add_argument(
            "--base",
            metavar="NAME",
            help="a registered base model (default: the parent's model, else the default base)",
        )
        parser.add_argument("--parent", type=int, metavar="VERSION", help="version number this run continues from")
        parser.add_argument("--config", help="training options as a JSON object")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one option; repeatable")
        add_job_arguments(parser, inline_help="train in this process instead of on a worker")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(pk=options["project"]).first()
        if project is None:
            raise CommandError(f"project {options['project']} does not exist")
        snapshots = ExportSnapshot.objects.filter(project=project)
        if options["snapshot"] is not None:
            snapshot = snapshots.filter(pk=options["snapshot"]).first()
            if snapshot is None:
                raise CommandError(f"export {options['snapshot']} is not an export of project {project.pk}")
        else:
            snapshot = snapshots.filter(state=ExportState.SUCCEEDED).order_by("-id").first()
            if snapshot is None:
                raise CommandError(f"project {project.pk} has no succeeded export: run export_snapshot first")
        parent = None
        if options["parent"] is not None:
            parent = RewardModelVersion.objects.filter(project=project, number=options["parent"]).first()
            if parent is None:
                raise CommandError(f"project {project.pk} has no version {options['parent']}")
        config = parse_options(options["config"], options["set"])
        try:
            with transaction.atomic():
                run = reward_model_run_create(
                    project=project,
                    snapshot=snapshot,
                    config=config,
                    base_model=options["base"],
                    parent_version=parent,
                    trigger=RunTrigger.CLI,
                    send=not options["inline"],
                )
        except RewardModelError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
        self.stdout.write(f"run {run.pk}: {run.base_model} on export {snapshot.pk}")
        run = finish_job_command(self, run, options)
        if run.is_finished:
            self._report(run)

    def _report(self, run: RewardModelRun) -> None:
        version = run.version
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in version.metrics.items() if isinstance(v, int | float))
        self.stdout.write(self.style.SUCCESS(f"v{version.number} registered: {metrics}"))
        self.stdout.write(f"model: {version.model_dir}")
