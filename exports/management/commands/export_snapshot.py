"""``manage.py export_snapshot --project ID [--threshold X ...] [--wait | --inline]``.

Creates an export snapshot of a project. By default it is queued for a worker (the
default queue) and the command prints its id; ``--wait`` follows it to the end and
``--inline`` (alias ``--sync``) runs it here; both print where the files are. Options left out take the defaults of ``exports.params.ExportParams``
(the threshold: the project's agreement threshold).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from annotation.aggregate import TIE_POLICIES, WEIGHTINGS
from annotation.models import Project
from exports.params import PAIR_WEIGHTS, InvalidParams
from exports.services import export_snapshot_create, export_snapshot_send, snapshot_directory
from jobs.cli import add_job_arguments, finish_job_command
from jobs.models import JobTrigger

# option name -> parameter name, for the options that map one to one
_PARAMS = {
    "threshold": "threshold",
    "min_votes": "min_votes",
    "tie_policy": "tie_policy",
    "weighting": "weighting",
    "min_reliability": "min_reliability",
    "validation_fraction": "validation_fraction",
    "split_seed": "split_seed",
    "batch_pairs": "batch_pairs",
    "pair_weight": "pair_weight",
}


class Command(BaseCommand):
    help = "Export a project's majority-filtered preferences as an immutable, content-hashed snapshot."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")
        parser.add_argument("--threshold", type=float, help="vote share a pair's winner needs (0.5..1)")
        parser.add_argument("--min-votes", type=int, help="counted votes a pair needs (default 1)")
        parser.add_argument("--tie-policy", choices=TIE_POLICIES, help="how tie votes count (default neither)")
        parser.add_argument("--weighting", choices=WEIGHTINGS, help="vote weights (default none)")
        parser.add_argument("--min-reliability", type=float, help="exclude annotators less accurate than this")
        parser.add_argument("--exclude-annotator", action="append", default=[], metavar="USERNAME", help="repeatable")
        parser.add_argument("--validation-fraction", type=float, help="share of prompts in validation (default 0.1)")
        parser.add_argument("--split-seed", help="salt of the train/validation split (default arpad)")
        parser.add_argument("--batch-pairs", type=int, help="most pairs per batch file (default 64)")
        parser.add_argument("--pair-weight", choices=PAIR_WEIGHTS, help="weight column (default group)")
        add_job_arguments(parser, inline_help="run the export here instead of on a worker")
        parser.add_argument("--sync", dest="inline", action="store_true", help="the same as --inline")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            project = Project.objects.get(pk=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"project {options['project']} does not exist")
        params: dict[str, Any] = {
            param: options[option] for option, param in _PARAMS.items() if options[option] is not None
        }
        if options["exclude_annotator"]:
            params["exclude_annotators"] = options["exclude_annotator"]
        try:
            with transaction.atomic():
                snapshot = export_snapshot_create(project=project, params=params, user=None, trigger=JobTrigger.CLI)
                if not options["inline"]:
                    export_snapshot_send(snapshot)
        except InvalidParams as exc:
            raise CommandError(f"--{exc.field.replace('_', '-')}: {exc.message}")
        snapshot = finish_job_command(self, snapshot, options)
        if not snapshot.is_finished:
            return
        counts = snapshot.counts
        dropped = ", ".join(f"{n} {reason}" for reason, n in counts["pairs_dropped"].items() if n) or "none"
        self.stdout.write(
            self.style.SUCCESS(
                f"export {snapshot.pk}: {sum(counts['groups'].values())} groups, "
                f"{counts['pairs_kept']} pairs (train {counts['pairs']['train']}, "
                f"validation {counts['pairs']['validation']}); dropped: {dropped}"
            )
        )
        self.stdout.write(f"content hash {snapshot.content_hash}")
        self.stdout.write(str(snapshot_directory(snapshot)))
