"""``manage.py simulate_annotators``: label a project's open tasks as simulated annotators.

    simulate_annotators --project N (--annotators K | --names A,B,...)
        (--gold-reward-model V | --gold-function F) [--temperature T] [--position-bias B]
        [--random-share R] [--max-tasks M] [--seed S] [--url http://127.0.0.1:8000]

The annotators are accounts ``sim-<name>`` that work through the REST API
(``rlloop.simulate``): in this process, or over HTTP with ``--url`` (a server on the same
database). ``F`` is ``package.module:function``; ``V`` a reward-model version number of the
project, or ``PROJECT:V`` for another project's. ``--temperature``, ``--position-bias`` and
``--random-share`` take one value for everyone or a comma list, one per annotator.
"""

from __future__ import annotations

import functools
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from rewardmodel.models import RewardModelVersion
from rewardmodel.services import RewardModelError
from rlloop.simulate import (
    AnnotatorSpec,
    GoldScorer,
    HttpApi,
    InProcessApi,
    SimulationError,
    SpecError,
    gold_scorer,
    import_gold_function,
    simulate,
)

MAX_ANNOTATORS = 100  # a task never needs more judgements (Project.annotations_per_task)
# The option that sets each AnnotatorSpec field, for error messages.
_OPTION_OF = {
    "name": "--names",
    "temperature": "--temperature",
    "position_bias": "--position-bias",
    "random_share": "--random-share",
}


class Command(BaseCommand):
    help = "Label a project's open tasks as simulated annotators (sim-<name>) through the REST API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True, help="project id")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--annotators", type=int, metavar="N", help="N annotators, named sim-1 .. sim-N")
        who.add_argument("--names", metavar="A,B,...", help="annotator names (the accounts are sim-<name>)")
        gold = parser.add_mutually_exclusive_group(required=True)
        gold.add_argument(
            "--gold-reward-model", metavar="V", help="reward-model version number of the project (or PROJECT:V)"
        )
        gold.add_argument(
            "--gold-function", metavar="MODULE:FUNCTION", help="a function (prompt_messages, response_text) -> float"
        )
        parser.add_argument("--temperature", default="1.0", help="> 0; one value or one per annotator (comma list)")
        parser.add_argument("--position-bias", default="0", help="logit for the response shown first; or a list")
        parser.add_argument("--random-share", default="0", help="share of uniformly random answers, 0..1; or a list")
        parser.add_argument("--max-tasks", type=int, help="stop after this many judgements in all")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (default: in this process)")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(pk=options["project"]).first()
        if project is None:
            raise CommandError(f"--project: project {options['project']} does not exist")
        specs = self.specs(options)
        if options["max_tasks"] is not None and options["max_tasks"] < 1:
            raise CommandError(f"--max-tasks: must be at least 1, got {options['max_tasks']}")
        scorer = self.scorer(project, options)
        api: Any = InProcessApi
        if options["url"]:
            try:
                HttpApi(options["url"], "")  # checks the URL before any account is made
            except ValueError as exc:
                raise CommandError(f"--url: {exc}") from None
            api = functools.partial(HttpApi, options["url"])
        try:
            summary = simulate(
                project, specs, scorer=scorer, api=api, max_tasks=options["max_tasks"], seed=options["seed"]
            )
        except SimulationError as exc:
            raise CommandError(str(exc)) from None
        except RewardModelError as exc:
            raise CommandError(f"--gold-reward-model: {exc.message}") from None
        by_name = ", ".join(f"{name} {count}" for name, count in summary.judgements.items())
        self.stdout.write(
            f"project {project.pk}: {summary.total} judgements by {len(specs)} simulated annotators ({by_name}); "
            f"{summary.open_tasks_left} open tasks left"
            + (f" (stopped at --max-tasks {options['max_tasks']})" if summary.stopped_by_max_tasks else "")
        )

    def specs(self, options: dict[str, Any]) -> list[AnnotatorSpec]:
        if options["names"] is not None:
            names = [name.strip() for name in options["names"].split(",")]
            if not all(names):
                raise CommandError(f"--names: {options['names']!r} holds an empty name")
            if len(set(names)) != len(names):
                raise CommandError(f"--names: {options['names']!r} names someone twice")
        else:
            if not 1 <= options["annotators"] <= MAX_ANNOTATORS:
                raise CommandError(f"--annotators: must be 1 to {MAX_ANNOTATORS}, got {options['annotators']}")
            names = [str(i) for i in range(1, options["annotators"] + 1)]
        values = {
            field: per_annotator(options[field], option=_OPTION_OF[field], count=len(names))
            for field in ("temperature", "position_bias", "random_share")
        }
        try:
            return [
                AnnotatorSpec(name=name, **{field: column[i] for field, column in values.items()})
                for i, name in enumerate(names)
            ]
        except SpecError as exc:
            raise CommandError(f"{_OPTION_OF[exc.field]}: {exc.message}") from None

    def scorer(self, project: Project, options: dict[str, Any]) -> GoldScorer:
        if options["gold_function"] is not None:
            try:
                return gold_scorer(import_gold_function(options["gold_function"]))
            except ValueError as exc:
                raise CommandError(f"--gold-function: {exc}") from None
        given = options["gold_reward_model"]
        owner, _, number = given.rpartition(":")
        try:
            owner_id = int(owner) if owner else project.pk
            number_value = int(number.removeprefix("v"))
        except ValueError:
            raise CommandError(f"--gold-reward-model: {given!r} is not a version number (V or PROJECT:V)") from None
        version = RewardModelVersion.objects.filter(project_id=owner_id, number=number_value).first()
        if version is None:
            raise CommandError(f"--gold-reward-model: project {owner_id} has no reward-model version {number_value}")
        return gold_scorer(version)


def per_annotator(text: str, *, option: str, count: int) -> list[float]:
    """``"0.5"`` for everyone, or ``"0.5,1,2"`` one each; CommandError naming ``option`` otherwise."""
    try:
        values = [float(part) for part in str(text).split(",")]
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not a number or a comma list of numbers") from None
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise CommandError(f"{option}: give one value or {count} (one per annotator), got {len(values)}")
    return values
