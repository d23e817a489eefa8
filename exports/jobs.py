"""The ``export`` job kind: write a snapshot's files, publish them under their hash, succeed.

A retried attempt starts over (``Retry.RESTART``): the files of a lost attempt were never
published, and :func:`remove_temporary_files` deletes what it left half-written.

Published files go with the last snapshot row that names them (deleting a project deletes
its snapshots): content-addressed directories are shared by snapshots with the same
content, so a directory stays while any snapshot, of any project, still names it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from exports.formats import canonical_json
from exports.models import ExportSnapshot
from exports.params import ExportParams
from exports.services import exports_root, publish_directory
from exports.snapshot import source_state, write_snapshot
from jobs.lifecycle import JobContext
from jobs.registry import Retry, job_kind

# Temporary directories are named after their snapshot, so that a retry finds what a
# lost attempt left behind.
_TEMPORARY_PREFIX = ".tmp-"


def remove_temporary_files(snapshot: ExportSnapshot) -> None:
    """Before a retry: the directories a lost attempt of this snapshot left half-written."""
    for leftover in exports_root().glob(f"{_TEMPORARY_PREFIX}{snapshot.pk}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def remove_published_files(relative_path: str) -> None:
    """Delete a published directory that no snapshot names any more (only ever one under exports/)."""
    if not relative_path or ExportSnapshot.objects.filter(path=relative_path).exists():
        return
    root = exports_root().resolve()
    directory = (Path(settings.ARTIFACT_ROOT) / relative_path).resolve()
    if directory.parent == root:
        shutil.rmtree(directory, ignore_errors=True)


@receiver(post_delete, sender=ExportSnapshot)
def _files_go_with_the_last_snapshot(sender: type[ExportSnapshot], instance: ExportSnapshot, **kwargs: Any) -> None:
    path = instance.path
    transaction.on_commit(lambda: remove_published_files(path))


@job_kind(
    "export",
    model=ExportSnapshot,
    queue="default",
    retry=Retry.RESTART,
    title="export snapshot",
    cleanup=remove_temporary_files,
)
def export_snapshot_execute(snapshot: ExportSnapshot, ctx: JobContext) -> None:
    """The ``export`` job kind: write the files, publish them under their hash, succeed."""
    root = exports_root()
    root.mkdir(parents=True, exist_ok=True)
    work = root / f"{_TEMPORARY_PREFIX}{snapshot.pk}-{uuid.uuid4().hex}"
    work.mkdir()
    try:
        params = ExportParams.from_dict(snapshot.params)
        source = source_state(snapshot.project)
        content = write_snapshot(
            project=snapshot.project, params=params, directory=work, source=source, progress=ctx.progress
        )
        content_hash = hashlib.sha256(canonical_json(content)).hexdigest()
        manifest = {"content_hash": content_hash, "created_at": timezone.now().isoformat(), **content}
        with open(work / "manifest.json", "x", encoding="utf-8") as out:
            json.dump(manifest, out, ensure_ascii=False, indent=2, sort_keys=True)
            out.write("\n")
        ctx.check()  # a cancel during the last chunk: do not publish for nothing
        final = publish_directory(work, root / content_hash)
        manifest = json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        ctx.succeed(
            content_hash=content_hash,
            path=str(final.relative_to(Path(settings.ARTIFACT_ROOT))),
            manifest=manifest,
            counts=content["counts"],
            source_judgements=source.judgements,
            source_max_judgement_id=source.max_judgement_id,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
