"""``manage.py leaderboard --project N [--k 32] [--rounds 1000] [--level 0.95] [--who all|people|simulated] [--json]``.

Prints the Bradley–Terry ratings of the project's response sources with their bootstrap
intervals, online Elo and vote counts, then each policy version's reward-model score, KL
and human win rate against the reference (``rlloop.standings``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from rlloop.standings import WHO, project_leaderboard, proxy_vs_human


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


class Command(BaseCommand):
    help = "Rate a project's response sources (policies, models, humans) from the annotators' pair votes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True)
        parser.add_argument("--k", type=float, default=32.0, help="Elo K factor (e.g. 16 or 32)")
        parser.add_argument("--rounds", type=int, default=1000, help="bootstrap resamples over prompts (0: none)")
        parser.add_argument("--level", type=float, default=0.95, help="interval level")
        parser.add_argument("--who", choices=WHO, default="all", help="whose votes count")
        parser.add_argument("--json", action="store_true", help="print the leaderboard and proxy data as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(pk=options["project"]).first()
        if project is None:
            raise CommandError(f"--project: project {options['project']} does not exist")
        if not 0 <= options["rounds"] <= 5000:
            raise CommandError("--rounds: must be in [0, 5000]")
        if not 0.5 <= options["level"] < 1:
            raise CommandError("--level: must be in [0.5, 1)")
        if not options["k"] > 0:
            raise CommandError("--k: must be positive")
        common = {"rounds": options["rounds"], "level": options["level"], "who": options["who"]}
        board = project_leaderboard(project, k=options["k"], **common)
        proxy = proxy_vs_human(project, **common)
        if options["json"]:
            self.stdout.write(json.dumps({"leaderboard": board, "proxy_vs_human": proxy}, indent=2))
            return
        level = round(100 * options["level"])
        self.stdout.write(
            f"{board['votes']} votes between sources ({board['skipped_same_source']} within one left out)"
        )
        self.stdout.write(f"{'source':<36} {'rating':>7} {f'{level}% interval':>17} {'elo':>7} {'W-L-T':>13}")
        for row in board["rows"]:
            interval = f"{_f(row['ci_low'], 0)}–{_f(row['ci_high'], 0)}" if row["ci_low"] is not None else "–"
            record = f"{row['wins']}-{row['losses']}-{row['ties']}"
            self.stdout.write(
                f"{row['name'][:36]:<36} {row['rating']:>7.0f} {interval:>17} {row['elo']:>7.0f} {record:>13}"
            )
        if proxy["policies"]:
            self.stdout.write("")
            self.stdout.write(f"{'policy':<28} {'samples':>7} {'score':>7} {'KL':>7} {'win rate vs ref':>22}")
            for p in proxy["policies"]:
                win = p["win_rate"]
                text = (
                    f"{_f(win['rate'])} [{_f(win['low'])}, {_f(win['high'])}] n={win['votes']}"
                    if win and win["rate"] is not None
                    else "–"
                )
                self.stdout.write(
                    f"{p['label'][:28]:<28} {p['samples']:>7} {_f(p['score']):>7} {_f(p['kl']):>7} {text:>22}"
                )
