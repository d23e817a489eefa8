"""The ``import`` job kind: one uploaded file imported in one transaction.

A retried attempt starts over (``Retry.ROLLBACK``): the import and its final state commit
together in one transaction, so a worker that died mid-import left nothing behind, and
when two deliveries of one message run at once exactly one commits; the other finds the
job no longer its own and rolls its work back. A cancel is honoured at the next progress
report (through the lifecycle's second connection on PostgreSQL) and rolls back too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from annotation.importers import ImportFailed, import_file
from annotation.models import ImportJob
from jobs.lifecycle import JobContext, JobFailed
from jobs.registry import Retry, job_kind


@job_kind("import", model=ImportJob, queue="default", retry=Retry.ROLLBACK)
def import_job_execute(job: ImportJob, ctx: JobContext) -> None:
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
