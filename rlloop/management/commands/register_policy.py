"""``manage.py register_policy --project N --name NAME [--reference] [--generation JSON]``; ``--list`` shows names.

Registers a checkpoint the operator made available (``rlloop.bases``: the converted demo
policy, ``POLICY_MODELS_DIR``, ``POLICY_BASE_MODELS``) as the project's next policy version.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from rlloop.models import PolicyVersion
from rlloop.services import PolicyError, checkpoint_names, policy_register


class Command(BaseCommand):
    help = "Register a checkpoint by name as a policy of a project, or list the registered checkpoints and policies."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, help="project id")
        parser.add_argument("--name", help="a registered checkpoint's name")
        parser.add_argument("--reference", action="store_true", help="make it the project's KL reference")
        parser.add_argument("--generation", help='generation defaults, e.g. {"temperature": 0.7}')
        parser.add_argument("--list", action="store_true", help="list checkpoints (and the project's policies)")

    def handle(self, *args: Any, **options: Any) -> None:
        project = None
        if options["project"] is not None:
            project = Project.objects.filter(pk=options["project"]).first()
            if project is None:
                raise CommandError(f"project {options['project']} does not exist")
        if options["list"] or not options["name"]:
            names = checkpoint_names()
            self.stdout.write("checkpoints: " + (", ".join(names) if names else "none registered"))
            if project is not None:
                for version in PolicyVersion.objects.filter(project=project).order_by("number"):
                    marker = " (reference)" if version.is_reference else ""
                    self.stdout.write(f"{version.display_name}{marker}")
            return
        if project is None:
            raise CommandError("--project is required to register a policy")
        generation = None
        if options["generation"]:
            try:
                generation = json.loads(options["generation"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--generation is not valid JSON: {exc}") from None
        try:
            version = policy_register(
                project=project, name=options["name"], is_reference=options["reference"], generation=generation
            )
        except PolicyError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"registered {version.display_name} in project {project.pk}"))
