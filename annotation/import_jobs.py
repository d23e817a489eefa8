"""Import jobs: an uploaded file, stored once, imported by a worker, then removed.

An ImportJob is a job of the shared lifecycle (``jobs``; its kind is in
``annotation/jobs.py``). This module stores the upload, records the queued row, and
removes the upload once nothing will read it again (see ``annotation/jobs.py`` for when).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.uploadedfile import UploadedFile
from django.utils.text import get_valid_filename

from annotation.models import ImportJob, Project
from jobs.lifecycle import job_create, job_execute, job_send
from jobs.models import JobTrigger

# Stored names keep the end of the client's name, where the extension (.jsonl.gz) is.
_STORED_NAME_MAX = 100


def import_job_create(
    *,
    project: Project,
    user: Any,
    uploaded_file: UploadedFile,
    format: str,
    options: dict[str, Any],
    trigger: str = JobTrigger.API,
) -> ImportJob:
    """Store the upload under ``ARTIFACT_ROOT/imports`` and record a queued job for it.

    The client's file name is only ever shown, never used as a path: the stored name is a
    fresh UUID plus a sanitised copy of the name's last characters.
    """
    display_name = _display_name(uploaded_file.name)
    directory = uploads_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}-{_safe_name(display_name)}"
    # "x": refuse to overwrite, should a UUID ever repeat.
    with open(path, "xb") as out:
        for chunk in uploaded_file.chunks():
            out.write(chunk)
    try:
        return job_create(
            ImportJob,
            project=project,
            created_by=user,
            format=format,
            options=options,
            file_name=display_name,
            file_path=str(path),
            trigger=trigger,
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def uploads_dir() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "imports"


def import_upload_discard(job: ImportJob) -> None:
    """Remove the job's stored upload; only ever a file of the uploads folder, and gone is fine."""
    path = Path(job.file_path)
    if path.parent.resolve() != uploads_dir().resolve():
        return  # a row written by hand (a test, the admin) pointing elsewhere: never ours to delete
    path.unlink(missing_ok=True)


def import_job_run(*, job_id: int, worker: str | None = None) -> ImportJob:
    """Run a queued job to the end in this process (what a worker does with its message); the row afterwards."""
    return job_execute(kind="import", job_id=job_id, worker=worker)


def import_job_send(job: ImportJob) -> None:
    """Send the job to a worker once the transaction commits (a broker that is down fails it, saying so)."""
    job_send(job)


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
