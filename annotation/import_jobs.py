"""Import jobs: an uploaded file, stored once, imported by a worker.

The ImportJob row, not the broker, is the source of truth. Messages are acknowledged late,
so a worker that dies mid-import gets its message redelivered; the import itself is one
transaction (``import_file`` is atomic), so the dead attempt left nothing behind and the
next one simply starts over. A message for a job that already finished does nothing.

The final state is written in the same transaction as the imported rows, and only if the
job is still running. So when two deliveries of one message run at once, exactly one of
them commits its import; the other finds the job finished and rolls its own work back.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.uploadedfile import UploadedFile
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from annotation.importers import ImportFailed, import_file
from annotation.models import ImportJob, ImportJobState, Project

logger = logging.getLogger(__name__)

_FINISHED = (ImportJobState.SUCCEEDED, ImportJobState.FAILED)
# Stored names keep the end of the client's name, where the extension (.jsonl.gz) is.
_STORED_NAME_MAX = 100
# Progress is written at most this often; an import can report thousands of steps.
_PROGRESS_INTERVAL_S = 1.0


class _Superseded(Exception):
    """Another delivery of the same message finished the job first."""


def import_job_create(
    *, project: Project, user: Any, uploaded_file: UploadedFile, format: str, options: dict[str, Any]
) -> ImportJob:
    """Store the upload under ``ARTIFACT_ROOT/imports`` and record a queued job for it.

    The client's file name is only ever shown, never used as a path: the stored name is a
    fresh UUID plus a sanitised copy of the name's last characters.
    """
    display_name = _display_name(uploaded_file.name)
    directory = Path(settings.ARTIFACT_ROOT) / "imports"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}-{_safe_name(display_name)}"
    # "x": refuse to overwrite, should a UUID ever repeat.
    with open(path, "xb") as out:
        for chunk in uploaded_file.chunks():
            out.write(chunk)
    try:
        return ImportJob.objects.create(
            project=project,
            created_by=user,
            format=format,
            options=options,
            file_name=display_name,
            file_path=str(path),
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def import_job_run(*, job_id: int) -> ImportJob:
    """Run a queued job to the end and return it in its final state."""
    job = _import_job_start(job_id)
    if job.state in _FINISHED:
        return job
    progress = _ProgressRecorder(job.pk)
    try:
        with transaction.atomic():
            summary = import_file(
                project=job.project,
                path=Path(job.file_path),
                format=job.format,
                options=job.options,
                progress=progress,
                display_name=job.file_name,
            )
            finished = ImportJob.objects.filter(pk=job.pk, state=ImportJobState.RUNNING).update(
                state=ImportJobState.SUCCEEDED,
                progress=1.0,
                summary=summary.as_dict(),
                errors=[],
                finished_at=timezone.now(),
            )
            if not finished:
                raise _Superseded
    except _Superseded:
        logger.info("import job %s was finished by another delivery; this run was rolled back", job.pk)
    except ImportFailed as exc:
        errors = [_error(e.file, e.line, e.field, e.message) for e in exc.errors]
        if getattr(exc, "truncated", False):
            errors.append(_error(job.file_name, None, None, f"stopped after {len(exc.errors)} errors"))
        import_job_fail(job_id=job.pk, errors=errors)
    except Exception as exc:
        # A bug or an outage, not a bad file: the operator gets the traceback, the user one line.
        logger.exception("import job %s crashed", job.pk)
        import_job_fail(job_id=job.pk, errors=[_error(job.file_name, None, None, _one_line(exc))])
    finally:
        progress.close()
    job.refresh_from_db()
    return job


def import_job_fail(*, job_id: int, errors: list[dict[str, Any]]) -> bool:
    """Mark a job that has not finished as failed; False when it had already finished."""
    updated = (
        ImportJob.objects.filter(pk=job_id)
        .exclude(state__in=_FINISHED)
        .update(state=ImportJobState.FAILED, errors=errors, finished_at=timezone.now())
    )
    return bool(updated)


def _import_job_start(job_id: int) -> ImportJob:
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.state in _FINISHED:
            return job
        # QUEUED, or RUNNING when a worker died mid-import: its transaction died with it.
        job.state = ImportJobState.RUNNING
        job.attempts += 1
        job.progress = 0.0
        job.started_at = timezone.now()
        job.save(update_fields=["state", "attempts", "progress", "started_at"])
    return job


class _ProgressRecorder:
    """Writes the job's progress on a connection of its own.

    The import runs in one transaction; a progress write on that connection would stay
    invisible until the import ended. A second connection commits each write at once.
    Only on PostgreSQL: SQLite holds its single write lock for the whole import, so there
    the job shows progress when it finishes. Progress is cosmetic: a failed write is
    logged and further writes are dropped, the import goes on.
    """

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.enabled = connection.vendor == "postgresql"
        self._conn: Any = None
        self._last_written_at = 0.0
        self._last_value = 0.0

    def __call__(self, fraction: float) -> None:
        if not self.enabled:
            return
        value = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if value <= self._last_value or now - self._last_written_at < _PROGRESS_INTERVAL_S:
            return
        try:
            if self._conn is None:
                self._conn = connections.create_connection(DEFAULT_DB_ALIAS)
            table = self._conn.ops.quote_name(ImportJob._meta.db_table)
            with self._conn.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET progress = %s WHERE id = %s AND state = %s",  # noqa: S608 (quoted table name)
                    [value, self.job_id, ImportJobState.RUNNING.value],
                )
        except DatabaseError:
            logger.warning("could not record progress of import job %s", self.job_id, exc_info=True)
            self.enabled = False
            return
        self._last_written_at, self._last_value = now, value

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _display_name(client_name: str | None) -> str:
    # Browsers send a bare name, but a script may send a path (either separator).
    name = (client_name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", ".."):
        return "upload"
    return name[-255:]


def _safe_name(display_name: str) -> str:
    try:
        safe = get_valid_filename(display_name)
    except SuspiciousFileOperation:
        return "upload"
    return safe[-_STORED_NAME_MAX:]


def _error(file: Any, line: Any, field: Any, message: Any) -> dict[str, Any]:
    return {"file": file, "line": line, "field": field, "message": str(message)}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
