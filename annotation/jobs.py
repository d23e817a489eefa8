"""The ``import`` job kind: one uploaded file imported in one transaction.

A retried attempt starts over (``Retry.ROLLBACK``): the import and its final state commit
together in one transaction, so a worker that died mid-import left nothing behind, and
when two deliveries of one message run at once exactly one commits; the other finds the
job no longer its own and rolls its work back. A cancel is honoured at the next progress
report (through the lifecycle's second connection on PostgreSQL) and rolls back too.

The stored upload lives as long as the job may still read it: it is removed once the job
finished, however it finished (succeeded: its rows, with file and line provenance, are the
record now; refused: the errors name file, line and field, and the manager fixes their own
copy; cancelled, or failed), and with its row (deleting a project deletes its imports). A
lost worker's job keeps it, since the reaper queues the job again. Keeping every upload
would grow the artifacts volume without bound and keep data its owner meant to be gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from annotation.import_jobs import import_upload_discard
from annotation.importers import ImportFailed, import_file
from annotation.models import ImportJob
from jobs.lifecycle import JobContext, JobFailed, JobLost
from jobs.registry import Retry, job_kind


# Imports have a queue (and in production a worker) of their own: a large or hostile file
# then holds up other imports, never the exports and bookkeeping on ``default``.
@job_kind("import", model=ImportJob, queue="imports", retry=Retry.ROLLBACK)
def import_job_execute(job: ImportJob, ctx: JobContext) -> None:
    try:
        _import(job, ctx)
    except JobLost:
        raise  # the attempt that took the job over reads the file
    except Exception:
        # Refused, cancelled or crashed: the lifecycle records the end, nothing retries it.
        # (A worker killed mid-import raises nothing here; the reaper's retry finds the file.)
        import_upload_discard(job)
        raise
    # After the commit: were an enclosing transaction rolled back, the job would run again.
    transaction.on_commit(lambda: import_upload_discard(job))


@receiver(post_save, sender=ImportJob)
def _upload_goes_when_the_job_ends(sender: type[ImportJob], instance: ImportJob, **kwargs: Any) -> None:
    # The ends that never reach import_job_execute: cancelled while queued, failed by the
    # reaper after its last attempt.
    if instance.is_finished:
        transaction.on_commit(lambda: import_upload_discard(instance))


@receiver(post_delete, sender=ImportJob)
def _upload_goes_with_its_job(sender: type[ImportJob], instance: ImportJob, **kwargs: Any) -> None:
    transaction.on_commit(lambda: import_upload_discard(instance))


def _import(job: ImportJob, ctx: JobContext) -> None:
    try:
        with transaction.atomic():
            summary = import_file(
                project=job.project,
                path=Path(job.file_path),
                format=job.format,
                options=job.options,
                progress=ctx.progress,
                display_name=job.file_name,
            )
            ctx.succeed(summary=summary.as_dict())
    except ImportFailed as exc:
        errors = [_error(e.file, e.line, e.field, e.message) for e in exc.errors]
        if exc.truncated:
            errors.append(_error(job.file_name, None, None, f"stopped after {len(exc.errors)} errors"))
        count = len(exc.errors)
        first = exc.errors[0] if exc.errors else None
        where = f" (first: {first})" if first is not None else ""
        raise JobFailed(f"{count} error{'s' if count != 1 else ''} in {job.file_name}{where}", errors) from exc


def _error(file: Any, line: Any, field: Any, message: Any) -> dict[str, Any]:
    return {"file": file, "line": line, "field": field, "message": str(message)}
