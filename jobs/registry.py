"""The registry of job kinds: what the worker, the reaper, the API and the CLI know of each kind.

A kind is declared in its app's ``jobs.py`` with one decorator on its run function::

    @job_kind("export", model=ExportSnapshot, queue="default", retry=Retry.RESTART)
    def export_snapshot_execute(snapshot: ExportSnapshot, ctx: JobContext) -> None: ...

The function does the work and calls ``ctx.succeed(...)`` inside the transaction that
records its result; everything else (claim, heartbeat, progress, cancel, failure, reaping,
re-sending) is the lifecycle's. ``jobs.apps`` imports every app's ``jobs`` module at start.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.lifecycle import JobContext
    from jobs.models import Job


class Retry(enum.Enum):
    """What a retried attempt (after a lost worker) does with the work of the one before."""

    RESUME = "resume"
    """Continue from the last checkpoint: progress and metric history up to it are kept."""
    RESTART = "restart"
    """Start over cleanly: progress and history are reset, ``cleanup`` removes leftovers."""
    ROLLBACK = "rollback"
    """The dead attempt's work was one transaction that died with it: start over."""


@dataclass(frozen=True)
class JobKind:
    label: str
    model: type[Job]
    run: Callable[[Any, JobContext], None]
    queue: str | Callable[[], str] = "default"
    retry: Retry = Retry.RESTART
    title: str = ""
    # Removes what a lost attempt may have left behind (temporary files), before a retry.
    cleanup: Callable[[Any], None] | None = None
    stale_seconds: Callable[[], float] | None = None
    max_attempts: Callable[[], int] | None = None

    def queue_name(self) -> str:
        return self.queue() if callable(self.queue) else self.queue

    def stale_after_seconds(self) -> float:
        from jobs import conf

        return self.stale_seconds() if self.stale_seconds is not None else conf.heartbeat_stale_seconds()

    def attempts_allowed(self) -> int:
        from jobs import conf

        return self.max_attempts() if self.max_attempts is not None else conf.max_attempts()


_KINDS: dict[str, JobKind] = {}


class UnknownJobKind(LookupError):
    pass


def job_kind(
    label: str,
    *,
    model: type[Job],
    queue: str | Callable[[], str] = "default",
    retry: Retry = Retry.RESTART,
    title: str = "",
    cleanup: Callable[[Any], None] | None = None,
    stale_seconds: Callable[[], float] | None = None,
    max_attempts: Callable[[], int] | None = None,
) -> Callable[[Callable[[Any, JobContext], None]], Callable[[Any, JobContext], None]]:
    """Register the decorated function as the run function of the kind ``label``."""

    def register(run: Callable[[Any, JobContext], None]) -> Callable[[Any, JobContext], None]:
        existing = _KINDS.get(label)
        if existing is not None and (existing.model is not model or existing.run.__qualname__ != run.__qualname__):
            raise ValueError(f"job kind {label!r} is registered twice")
        _KINDS[label] = JobKind(
            label=label,
            model=model,
            run=run,
            queue=queue,
            retry=retry,
            title=title or label.replace("_", " "),
            cleanup=cleanup,
            stale_seconds=stale_seconds,
            max_attempts=max_attempts,
        )
        model.job_kind_label = label
        return run

    return register


def get_kind(label: str) -> JobKind:
    try:
        return _KINDS[label]
    except KeyError:
        raise UnknownJobKind(f"no job kind {label!r}; known: {', '.join(sorted(_KINDS)) or 'none'}") from None


def kind_of(job: Job | type[Job]) -> JobKind:
    model = job if isinstance(job, type) else type(job)
    return get_kind(model.job_kind_label)


def all_kinds() -> list[JobKind]:
    return [_KINDS[label] for label in sorted(_KINDS)]
