"""``manage.py agreement_report``: the agreement report of a project, or of a judgement file.

::

    manage.py agreement_report --project ID [--json] [--bootstrap N] [--seed S]
    manage.py agreement_report --file PATH --format pandalm [--option KEY=VALUE ...] [--json]

Prints a fixed-width table by default, or the JSON report with ``--json`` (strict JSON:
no NaN). With ``--file`` the file is imported into a temporary project inside a
transaction that is rolled back once the report is computed, so nothing is written (see
:func:`annotation.reports.agreement_report_from_file`); a refused import prints its
errors as ``file:line: field: message`` on stderr and exits non-zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.importers import FORMATS, ImportFailed
from annotation.models import Project, ProjectKind
from annotation.reports import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONTESTED_LIMIT,
    DEFAULT_LOW_AGREEMENT_BELOW,
    DEFAULT_MIN_OVERLAP,
    DEFAULT_POSITION_BIAS_P,
    DEFAULT_TOO_FAST_MS,
    agreement_report,
    agreement_report_from_file,
    render_table,
)


class Command(BaseCommand):
    help = (
        "Agreement report (percent agreement, kappas, alpha, annotator flags, contested items) of a project, "
        "or of a judgement file imported into a temporary project that is rolled back."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--project", type=int, help="project id")
        target.add_argument("--file", type=Path, help="a judgement file to report on without saving it")
        parser.add_argument("--format", choices=sorted(FORMATS), help="format of --file")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="import option for --file, repeatable (e.g. --option duplicates=last)",
        )
        parser.add_argument(
            "--kind",
            choices=ProjectKind.values,
            help="kind of the temporary project for --file (default: pairwise for pandalm, mt-bench, hh-rlhf)",
        )
        parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
        parser.add_argument(
            "--bootstrap",
            type=int,
            default=DEFAULT_BOOTSTRAP,
            help=f"bootstrap resamples of the items, 0 for none (default {DEFAULT_BOOTSTRAP})",
        )
        parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
        parser.add_argument(
            "--min-overlap",
            type=int,
            default=DEFAULT_MIN_OVERLAP,
            help=f"shared response pairs a Cohen's kappa needs (default {DEFAULT_MIN_OVERLAP})",
        )
        parser.add_argument(
            "--contested-threshold",
            type=float,
            help="majority share below which a response pair is contested (default: the project's threshold)",
        )
        parser.add_argument(
            "--contested-limit",
            type=int,
            default=DEFAULT_CONTESTED_LIMIT,
            help=f"contested response pairs listed (default {DEFAULT_CONTESTED_LIMIT})",
        )
        parser.add_argument(
            "--low-agreement-below",
            type=float,
            default=DEFAULT_LOW_AGREEMENT_BELOW,
            help=f"flag low_agreement below this leave-one-out agreement (default {DEFAULT_LOW_AGREEMENT_BELOW})",
        )
        parser.add_argument(
            "--position-bias-p",
            type=float,
            default=DEFAULT_POSITION_BIAS_P,
            help=f"flag position_bias below this p-value (default {DEFAULT_POSITION_BIAS_P})",
        )
        parser.add_argument(
            "--too-fast-ms",
            type=float,
            default=DEFAULT_TOO_FAST_MS,
            help=f"flag too_fast below this median time per judgement (default {DEFAULT_TOO_FAST_MS:g} ms)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["project"] is None and options["file"] is None:
            raise CommandError("give --project ID, or --file PATH with --format")
        report_options = {
            "bootstrap": options["bootstrap"],
            "seed": options["seed"],
            "min_overlap": options["min_overlap"],
            "contested_threshold": options["contested_threshold"],
            "contested_limit": options["contested_limit"],
            "low_agreement_below": options["low_agreement_below"],
            "position_bias_p": options["position_bias_p"],
            "too_fast_ms": options["too_fast_ms"],
        }
        try:
            if options["project"] is not None:
                report = self._project_report(options, report_options)
            else:
                report = self._file_report(options, report_options)
        except ValueError as exc:  # an out-of-range option, checked by the report service
            raise CommandError(str(exc))

        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, allow_nan=False))
        else:
            self.stdout.write(render_table(report), ending="")

    def _project_report(self, options: dict[str, Any], report_options: dict[str, Any]) -> dict[str, Any]:
        for name in ("format", "kind"):
            if options[name] is not None:
                raise CommandError(f"--{name} goes with --file, not --project")
        if options["option"]:
            raise CommandError("--option goes with --file, not --project")
        try:
            project = Project.objects.get(pk=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"project {options['project']} does not exist")
        return agreement_report(project=project, **report_options)

    def _file_report(self, options: dict[str, Any], report_options: dict[str, Any]) -> dict[str, Any]:
        path: Path = options["file"]
        if options["format"] is None:
            raise CommandError(f"--file needs --format, one of {', '.join(sorted(FORMATS))}")
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        import_options: dict[str, str] = {}
        for raw in options["option"]:
            key, sep, value = raw.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--option {raw!r}: write KEY=VALUE")
            import_options[key.strip()] = value
        try:
            return agreement_report_from_file(
                path=path, format=options["format"], options=import_options, kind=options["kind"], **report_options
            )
        except ImportFailed as exc:
            for error in exc.errors:
                self.stderr.write(str(error))
            more = f", stopped after the first {len(exc.errors)}" if exc.truncated else ""
            raise CommandError(f"could not read {path.name}: {len(exc.errors)} error(s){more}; nothing was written")
