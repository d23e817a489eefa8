"""``manage.py import_data --project ID --format FMT FILE [--option KEY=VALUE ...]``.

Imports one file into a project, all or nothing, and prints what was created. A refused
import prints every error as ``file:line: field: message`` on stderr and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.importers import FORMATS, ImportFailed, format_options, import_file
from annotation.models import Project


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
        progress = self._progress if options["verbosity"] >= 2 else None
        try:
            summary = import_file(
                project=project, path=options["file"], format=fmt, options=format_options_given, progress=progress
            )
        except ImportFailed as exc:
            for error in exc.errors:
                self.stderr.write(str(error))
            more = f", stopped after the first {len(exc.errors)}" if exc.truncated else ""
            raise CommandError(f"import failed: {len(exc.errors)} error(s){more}; nothing was written")

        self.stdout.write(
            self.style.SUCCESS(
                f"imported {options['file'].name} into {project.name!r}: {summary.prompts} prompts, "
                f"{summary.responses} responses, {summary.tasks} tasks, {summary.judgements} judgements, "
                f"{summary.annotators_created} annotator accounts created"
            )
        )
        for note in summary.notes:
            self.stdout.write(f"note: {note}")
        if summary.skipped:
            self.stdout.write(f"skipped {len(summary.skipped)} record(s):")
            for skipped in summary.skipped:
                self.stdout.write(f"  {options['file'].name}:{skipped['line']}: {skipped['reason']}")

    def _progress(self, fraction: float) -> None:
        self.stderr.write(f"\r{fraction:6.1%}", ending="")
        if fraction >= 1.0:
            self.stderr.write("")
