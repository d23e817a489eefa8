from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.demo import DemoDataMissing, load_demo


class Command(BaseCommand):
    help = "Create the demo users and projects (PandaLM pairwise, OpenAssistant ranking) from real data. Idempotent."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--password", required=True, help="Password for the demo accounts admin and annotator.")

    def handle(self, *args, password: str, **options) -> None:
        try:
            results = load_demo(password=password, stdout=self.stdout)
        except DemoDataMissing as exc:
            raise CommandError(str(exc)) from None
        for result in results:
            state = "created" if result.created else "already there"
            self.stdout.write(f"{result.project.name}: {state} (project {result.project.pk})")
