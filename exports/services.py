"""Export snapshots: create the job row, run it, and keep the result immutable.

The ExportSnapshot row, not the broker, is the source of truth (as for imports). A
message for a snapshot that already finished does nothing; a snapshot left ``running``
by a worker that died is run again from the start, up to ``MAX_ATTEMPTS`` times. Files
are written into a fresh temporary directory under ``ARTIFACT_ROOT/exports/`` and renamed
to ``exports/<content hash>/`` only when complete, so a directory named by a hash always
holds complete files; its files are made read-only. When that directory exists already
(the same project state exported with the same parameters), the new snapshot shares it:
the bytes are the same by construction. The final state is written only if the snapshot
is still running, so two deliveries that run at once finish it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
from math import comb
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.models import Judgement, Project
from exports.formats import canonical_json
from exports.models import ExportSnapshot, ExportState
from exports.params import ExportParams, InvalidParams
from exports.snapshot import source_state, write_snapshot

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
_FINISHED = (ExportState.SUCCEEDED, ExportState.FAILED)
_PROGRESS_INTERVAL_S = 1.0


def exports_root() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "exports"


def snapshot_directory(snapshot: ExportSnapshot) -> Path | None:
    """The directory of a finished snapshot's files, or None before it succeeded."""
    if snapshot.state != ExportState.SUCCEEDED or not snapshot.path:
        return None
    return Path(settings.ARTIFACT_ROOT) / snapshot.path


def export_params_resolve(*, project: Project, params: dict[str, Any]) -> ExportParams:
    """Validate request parameters into canonical ExportParams; raises :class:`InvalidParams`.

    ``threshold`` defaults to the project's agreement threshold. ``exclude_annotators``
    may name annotators by username or user id; a name must belong to someone who has
    judged in this project.
    """
    if not isinstance(params, dict):
        raise InvalidParams("params", "must be an object")
    values = {"threshold": project.agreement_threshold, **params}
    excluded = values.get("exclude_annotators", [])
    if not isinstance(excluded, list | tuple):
        raise InvalidParams("exclude_annotators", "must be a list of usernames")
    names = [e for e in excluded if isinstance(e, str)]
    ids = [e for e in excluded if not isinstance(e, str)]
    if names:
        found = dict(
            Judgement.objects.filter(task__project=project, annotator__username__in=names)
            .values_list("annotator__username", "annotator_id")
            .distinct()
        )
        missing = sorted(set(names) - set(found))
        if missing:
            raise InvalidParams("exclude_annotators", f"nobody named {missing[0]!r} has judged in this project")
        ids.extend(found[name] for name in names)
    values["exclude_annotators"] = ids
    resolved = ExportParams.from_dict(values)
    largest_group = comb(project.responses_per_task, 2)
    if resolved.batch_pairs < largest_group:
        raise InvalidParams(
            "batch_pairs",
            f"must be at least {largest_group}: a batch keeps a group whole, and a task of this "
            f"project has up to {largest_group} pairs",
        )
    return resolved


@transaction.atomic
def export_snapshot_create(*, project: Project, params: dict[str, Any], user: Any) -> ExportSnapshot:
    """Record a queued snapshot with validated parameters; the caller sends it to a worker after commit."""
    resolved = export_params_resolve(project=project, params=params)
    return ExportSnapshot.objects.create(
        project=project,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        params=resolved.to_dict(),
    )


def export_snapshot_run(*, snapshot_id: int) -> ExportSnapshot:
    """Run a queued (or abandoned) snapshot to the end and return it in its final state."""
    snapshot = _export_snapshot_start(snapshot_id)
    if snapshot.state in _FINISHED:
        return snapshot
    root = exports_root()
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".tmp-{uuid.uuid4().hex}"
    work.mkdir()
    progress = _ProgressRecorder(snapshot.pk)
    try:
        params = ExportParams.from_dict(snapshot.params)
        source = source_state(snapshot.project)
        content = write_snapshot(
            project=snapshot.project, params=params, directory=work, source=source, progress=progress
        )
        content_hash = hashlib.sha256(canonical_json(content)).hexdigest()
        manifest = {"content_hash": content_hash, "created_at": timezone.now().isoformat(), **content}
        with open(work / "manifest.json", "x", encoding="utf-8") as out:
            json.dump(manifest, out, ensure_ascii=False, indent=2, sort_keys=True)
            out.write("\n")
        final = _publish(work, root / content_hash)
        manifest = json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        finished = ExportSnapshot.objects.filter(pk=snapshot.pk, state=ExportState.RUNNING).update(
            state=ExportState.SUCCEEDED,
            progress=1.0,
            content_hash=content_hash,
            path=str(final.relative_to(Path(settings.ARTIFACT_ROOT))),
            manifest=manifest,
            counts=content["counts"],
            source_judgements=source.judgements,
            source_max_judgement_id=source.max_judgement_id,
            errors=[],
            finished_at=timezone.now(),
        )
        if not finished:
            logger.info("export snapshot %s was finished by another delivery", snapshot.pk)
    except Exception as exc:
        logger.exception("export snapshot %s crashed", snapshot.pk)
        export_snapshot_fail(snapshot_id=snapshot.pk, errors=[{"message": _one_line(exc)}])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    snapshot.refresh_from_db()
    return snapshot


def export_snapshot_fail(*, snapshot_id: int, errors: list[dict[str, Any]]) -> bool:
    """Mark a snapshot that has not finished as failed; False when it had already finished."""
    updated = (
        ExportSnapshot.objects.filter(pk=snapshot_id)
        .exclude(state__in=_FINISHED)
        .update(state=ExportState.FAILED, errors=errors, finished_at=timezone.now())
    )
    return bool(updated)


def _export_snapshot_start(snapshot_id: int) -> ExportSnapshot:
    with transaction.atomic():
        snapshot = ExportSnapshot.objects.select_for_update().select_related("project").get(pk=snapshot_id)
        if snapshot.state in _FINISHED:
            return snapshot
        # QUEUED, or RUNNING when a worker died mid-run: nothing it wrote was published.
        if snapshot.attempts >= MAX_ATTEMPTS:
            snapshot.state = ExportState.FAILED
            snapshot.errors = [{"message": f"gave up after {snapshot.attempts} attempts"}]
            snapshot.finished_at = timezone.now()
            snapshot.save(update_fields=["state", "errors", "finished_at"])
            return snapshot
        snapshot.state = ExportState.RUNNING
        snapshot.attempts += 1
        snapshot.progress = 0.0
        snapshot.started_at = snapshot.heartbeat_at = timezone.now()
        snapshot.save(update_fields=["state", "attempts", "progress", "started_at", "heartbeat_at"])
    return snapshot


def _publish(work: Path, final: Path) -> Path:
    """Move a complete directory to its content-addressed name, or keep the one already there."""
    read_only = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    for path in work.rglob("*"):
        if path.is_file():
            path.chmod(read_only)
    if not final.exists():
        try:
            os.rename(work, final)
            return final
        except OSError:
            # Another run published the same hash between the check and the rename.
            if not final.exists():
                raise
    return final


class _ProgressRecorder:
    """Writes the snapshot's progress and heartbeat at most once a second.

    An export reads outside any transaction, so the write is visible at once.
    """

    def __init__(self, snapshot_id: int) -> None:
        self.snapshot_id = snapshot_id
        self._last_written_at = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_written_at < _PROGRESS_INTERVAL_S:
            return
        value = min(max(float(fraction), 0.0), 1.0)
        ExportSnapshot.objects.filter(pk=self.snapshot_id, state=ExportState.RUNNING).update(
            progress=value, heartbeat_at=timezone.now()
        )
        self._last_written_at = now


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
