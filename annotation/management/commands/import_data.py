"""``manage.py import_data --project ID --format FMT FILE [--option KEY=VALUE ...] [--wait | --inline]``.

Imports one file into a project, all or nothing, as an import job (the job commands'
pattern, ``jobs.cli``): the file is stored under ``ARTIFACT_ROOT/imports`` like an upload,
and the job is queued for a worker (``--wait`` follows it with a progress bar) or run here
(``--inline``). A finished import prints what was created; a refused one prints every
error as ``file:line: field: message`` on stderr and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from annotation.import_jobs import import_job_create, import_job_send
from annotation.importers import FORMATS, format_options
from annotation.models import Project
from jobs.cli import add_job_arguments, finish_job_command
from jobs.models import JobTrigger


class Command(BaseCommand):
    help = "Import prompts, responses, tasks and judgements from a file into a project (all or nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the file to import (plain or gzip)")
        parser.add_argument("--project", type=int, required=True, help="project id")
        parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="file format")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="format option, repeatable (e.g. --option divergent=skip); --list-options shows them",
        )
        parser.add_argument("--list-options", action="store_true", help="list the format's options and exit")
        add_job_arguments(parser, inline_help="import here instead of on a worker")

    def handle(self, *args: Any, **options: Any) -> None:
        fmt = options["format"]
        if options["list_options"]:
            for option in format_options(fmt):
                choices = f" ({'|'.join(option['choices'])})" if option["choices"] else ""
                self.stdout.write(f"{option['name']}{choices} [default: {option['default']}]: {option['help']}")
            return
        try:
            project = Project.objects.get(pk=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"project {options['project']} does not exist")
        format_options_given: dict[str, str] = {}
        for raw in options["option"]:
            key, sep, value = raw.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--option {raw!r}: write KEY=VALUE")
            format_options_given[key.strip()] = value
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        with path.open("rb") as handle, transaction.atomic():
            job = import_job_create(
                project=project,
                user=None,
                uploaded_file=File(handle, name=path.name),
                format=fmt,
                options=format_options_given,
                trigger=JobTrigger.CLI,
            )
            if not options["inline"]:
                import_job_send(job)
        job = finish_job_command(self, job, options)
        if not job.is_finished:
            return
        summary = _Summary(job.summary)
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {path.name} into {project.name!r}: {summary.prompts} prompts, "
                f"{summary.responses} responses, {summary.tasks} tasks, {summary.judgements} judgements, "
                f"{summary.annotators_created} import accounts created"
            )
        )
        if summary.shuffle_seed:
            self.stdout.write(f"responses shuffled with seed {summary.shuffle_seed} (option shuffle_seed repeats it)")
        for note in summary.notes:
            self.stdout.write(f"note: {note}")
        if summary.skipped:
            self.stdout.write(f"skipped {len(summary.skipped)} record(s):")
            for skipped in summary.skipped:
                self.stdout.write(f"  {path.name}:{skipped['line']}: {skipped['reason']}")


class _Summary:
    """The stored summary of a finished import, read by attribute."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.prompts = data.get("prompts", 0)
        self.responses = data.get("responses", 0)
        self.tasks = data.get("tasks", 0)
        self.judgements = data.get("judgements", 0)
        self.annotators_created = data.get("annotators_created", 0)
        self.shuffle_seed = data.get("shuffle_seed", "")
        self.notes = data.get("notes", [])
        self.skipped = data.get("skipped", [])
