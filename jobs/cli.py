"""The one command-line pattern of every job command: queue it, ``--wait`` for it, or run it ``--inline``.

A job command creates its row (``send=False`` when it runs inline) and hands it to
:func:`finish_job_command`, which either says where the job went, follows the row with a
``tqdm`` bar until it finishes (``--wait``, the job runs on a worker), or runs the job in
this process with the same bar (``--inline``). A job that did not succeed ends the
command with a :class:`CommandError` carrying the row's error and the end of its log.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.lifecycle import JobContext, job_execute
from jobs.models import JobState
from jobs.registry import kind_of


def add_job_arguments(parser: CommandParser, *, inline_help: str = "run the job in this process") -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="follow the queued job with a progress bar until it ends")
    mode.add_argument("--inline", action="store_true", help=inline_help)
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="how often --wait reads the job")
    parser.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")


class _Bar:
    """A tqdm bar over a job: steps when the job counts steps, per cent otherwise."""

    def __init__(self, job: Any) -> None:
        self.job_label = f"{kind_of(job).title} {job.pk}"
        self.bar: Any = None
        self.by_steps = False
        self.log_seen = 0

    def show(self, *, step: int, total: int | None, fraction: float, log_tail: list[str]) -> None:
        from tqdm import tqdm

        if self.bar is None or (total and not self.by_steps):
            if self.bar is not None:
                self.bar.close()
            self.by_steps = bool(total)
            self.bar = tqdm(
                total=total if total else 100,
                desc=self.job_label,
                unit="step" if total else "%",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        value = step if self.by_steps else round(fraction * 100)
        if value > self.bar.n:
            self.bar.update(value - self.bar.n)
        for line in log_tail[self.log_seen :]:
            self.bar.write(line, file=sys.stderr)
        self.log_seen = len(log_tail)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def follow_job(job: Any, *, poll_seconds: float = 1.0, timeout: float | None = None) -> Any:
    """Read the job's row until it finishes, drawing its progress; the final row."""
    bar = _Bar(job)
    bar.log_seen = len(job.log_tail)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            job.refresh_from_db()
            bar.show(step=job.step, total=job.total_steps, fraction=job.progress, log_tail=list(job.log_tail))
            if job.is_finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise CommandError(f"{bar.job_label} is still {job.state} after {timeout:g} s; it goes on")
            time.sleep(max(0.05, poll_seconds))
    finally:
        bar.close()


def run_job_inline(job: Any) -> Any:
    """Run the job in this process (claim, heartbeat, record) with a progress bar; the final row."""
    bar = _Bar(job)
    bar.log_seen = len(job.log_tail)

    def observe(ctx: JobContext) -> None:
        bar.show(step=ctx.step, total=ctx.total_steps, fraction=ctx.fraction, log_tail=list(ctx.log_tail))

    try:
        return job_execute(kind=kind_of(job), job_id=job.pk, observer=observe)
    except KeyboardInterrupt:
        # The row stays running with a heartbeat that stopped: the reaper hands it to a worker.
        raise CommandError(f"interrupted; {bar.job_label} is retried when the reaper finds it") from None
    finally:
        bar.close()


def finish_job_command(command: BaseCommand, job: Any, options: dict[str, Any]) -> Any:
    """Queue, wait for or run ``job`` per the options of :func:`add_job_arguments`; the row as it ended."""
    kind = kind_of(job)
    if options.get("inline"):
        job = run_job_inline(job)
    elif options.get("wait"):
        job = follow_job(job, poll_seconds=options.get("poll_seconds") or 1.0, timeout=options.get("timeout"))
    else:
        command.stdout.write(
            f"{kind.title} {job.pk} queued on the {kind.queue_name()} queue; "
            f"follow it with: manage.py jobs wait {kind.label} {job.pk}"
        )
        return job
    if job.state != JobState.SUCCEEDED:
        # The details (an import's file:line: field: message) when there are some, else the log's end.
        details = [d for d in job.errors if d != {"message": job.error}]
        for line in [_detail(d) for d in details] or job.log_tail[-10:]:
            command.stderr.write(line)
        raise CommandError(f"{kind.title} {job.pk} {job.state}: {job.error or 'no error recorded'}")
    return job


def _detail(detail: Any) -> str:
    """``file:line: field: message``, leaving out what the detail does not have."""
    if not isinstance(detail, dict):
        return str(detail)
    where = ":".join(str(detail[k]) for k in ("file", "line") if detail.get(k) is not None)
    parts = [part for part in (where, detail.get("field"), detail.get("message", "")) if part]
    return ": ".join(str(part) for part in parts)
