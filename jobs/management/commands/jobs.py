"""``manage.py jobs list|show|wait|cancel|reap``: every job kind from one command.

``list [--kind K] [--project N] [--state S]`` prints the newest jobs; ``show KIND ID``
one job with its log tail; ``wait KIND ID`` follows it with a progress bar until it
ends; ``cancel KIND ID`` cancels it; ``reap`` runs the reaper once (what beat does each
minute).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.cli import follow_job
from jobs.lifecycle import JobAlreadyFinished, job_cancel, jobs_reap
from jobs.models import JobState
from jobs.registry import UnknownJobKind, all_kinds, get_kind


class Command(BaseCommand):
    help = "List, show, follow or cancel jobs of any kind (imports, exports, reward-model runs, ...)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="the newest jobs")
        listing.add_argument("--kind", help="one kind only")
        listing.add_argument("--project", type=int, help="one project only")
        listing.add_argument("--state", choices=JobState.values)
        listing.add_argument("--limit", type=int, default=20)
        for name, text in (("show", "one job and its log"), ("wait", "follow a job until it ends"), ("cancel", "")):
            one = sub.add_parser(name, help=text or "cancel a queued or running job")
            one.add_argument("kind")
            one.add_argument("job_id", type=int)
            if name == "wait":
                one.add_argument("--poll-seconds", type=float, default=1.0)
                one.add_argument("--timeout", type=float, default=None)
        sub.add_parser("reap", help="take back the running jobs whose worker stopped beating")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self._list(options)
        elif action == "reap":
            outcomes = jobs_reap()
            for reaped in outcomes:
                self.stdout.write(f"{reaped.kind} {reaped.job_id}: {reaped.outcome}")
            self.stdout.write(f"{len(outcomes)} job(s) reaped")
        else:
            job = self._job(options["kind"], options["job_id"])
            if action == "show":
                self._show(job)
            elif action == "wait":
                job = follow_job(job, poll_seconds=options["poll_seconds"], timeout=options["timeout"])
                self._show(job)
                if job.state != JobState.SUCCEEDED:
                    raise CommandError(f"{job.kind} {job.pk} {job.state}: {job.error or 'no error recorded'}")
            else:
                try:
                    job = job_cancel(job=job)
                except JobAlreadyFinished as exc:
                    raise CommandError(str(exc)) from None
                self.stdout.write(f"{job.kind} {job.pk}: {job.state}" + (", stopping" if not job.is_finished else ""))

    def _job(self, label: str, job_id: int) -> Any:
        try:
            kind = get_kind(label)
        except UnknownJobKind as exc:
            raise CommandError(str(exc)) from None
        job = kind.model.objects.filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"no {kind.title} {job_id}")
        return job

    def _list(self, options: dict[str, Any]) -> None:
        rows = []
        kinds = [get_kind(options["kind"])] if options["kind"] else all_kinds()
        for kind in kinds:
            qs = kind.model.objects.all()
            if options["project"] is not None:
                qs = qs.filter(project_id=options["project"])
            if options["state"]:
                qs = qs.filter(state=options["state"])
            rows.extend(qs.order_by("-created_at")[: options["limit"]])
        rows.sort(key=lambda job: job.created_at, reverse=True)
        for job in rows[: options["limit"]]:
            self.stdout.write(
                f"{job.kind:<14} {job.pk:>6}  project {job.project_id:<5} {job.state:<10} {job.progress:>4.0%}  "
                f"attempt {job.attempts}/{job.max_attempts}  {job.created_at:%Y-%m-%d %H:%M}  {job.error[:60]}"
            )

    def _show(self, job: Any) -> None:
        self.stdout.write(
            f"{job.kind} {job.pk} of project {job.project_id}: {job.state}, {job.progress:.0%}, "
            f"attempt {job.attempts} of {job.max_attempts}" + (f", on {job.worker}" if job.worker else "")
        )
        if job.error:
            self.stdout.write(f"error: {job.error}")
        for line in job.log_tail[-20:]:
            self.stdout.write(f"  {line}")
