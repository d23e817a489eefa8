"""Export snapshots: create the job row, run it, and keep the result immutable.

The ExportSnapshot row, not the broker, is the source of truth (as for imports). Files
are written into a fresh temporary directory under ``ARTIFACT_ROOT/exports/`` and renamed
to ``exports/<content hash>/`` only when complete, so a directory named by a hash always
holds complete files; its files are made read-only. When that directory exists already
(the same project state exported with the same parameters), the new snapshot shares it:
the bytes are the same by construction.

The job's life:

* ``queued`` -> ``running``: a delivery takes the row (under a row lock), counts an
  attempt and writes a fresh ``run_token``. The run writes its progress and heartbeat
  once per chunk of groups at most once a second, and its result, only while the row is
  still ``running`` with its token.
* **Redelivery**: a message for a finished snapshot does nothing; one for a snapshot that
  another worker is running (its heartbeat is fresh) does nothing either.
* **Cancel** (:func:`export_snapshot_cancel`): a queued or running snapshot becomes
  ``cancelled`` at once; a running worker notices at its next chunk (its token no longer
  matches a running row), stops, and removes its temporary files.
* **Reaper** (:func:`export_snapshots_reap`, run by Celery beat): a ``running`` snapshot
  whose heartbeat is older than ``EXPORT_STALE_AFTER_S`` lost its worker. It is queued
  and sent again while it has attempts left (``MAX_ATTEMPTS``), else it fails with the
  reason. A worker that was only slow finds its token gone and stops.
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
from collections.abc import Callable
from datetime import timedelta
from math import comb
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.models import Judgement, Project
from exports.formats import canonical_json
from exports.models import FINISHED_STATES, ExportSnapshot, ExportState
from exports.params import ExportParams, InvalidParams
from exports.snapshot import source_state, write_snapshot

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
_FINISHED = FINISHED_STATES
_PROGRESS_INTERVAL_S = 1.0
DEFAULT_STALE_AFTER_S = 900.0
"""Heartbeat age after which a running snapshot counts as abandoned (setting ``EXPORT_STALE_AFTER_S``).

Generous on purpose: the first step of a large export (reading every vote, about 10 s
per million judgements) sends no heartbeat, and a slow worker that is reaped only loses
its run, never corrupts one."""


class ExportStopped(Exception):
    """The run no longer owns its snapshot (cancelled, or reaped and handed to another run)."""


def stale_after() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "EXPORT_STALE_AFTER_S", DEFAULT_STALE_AFTER_S)))


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
    """Run a queued (or abandoned) snapshot to the end and return it in its final state.

    Returns the row untouched when there is nothing for this delivery to do: the snapshot
    finished (or was cancelled), or another worker is running it.
    """
    snapshot, token = _export_snapshot_start(snapshot_id)
    if token is None:
        return snapshot
    root = exports_root()
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".tmp-{uuid.uuid4().hex}"
    work.mkdir()
    progress = _ProgressRecorder(snapshot.pk, token)
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
        progress.check()  # a cancel during the last chunk: do not publish for nothing
        final = _publish(work, root / content_hash)
        manifest = json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        finished = _own_run(snapshot.pk, token).update(
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
            logger.info("export snapshot %s was cancelled or taken over before it finished", snapshot.pk)
    except ExportStopped:
        logger.info("export snapshot %s: run %s stopped (cancelled or taken over)", snapshot.pk, token)
    except Exception as exc:
        logger.exception("export snapshot %s crashed", snapshot.pk)
        _own_run(snapshot.pk, token).update(
            state=ExportState.FAILED, errors=[{"message": _one_line(exc)}], finished_at=timezone.now()
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    snapshot.refresh_from_db()
    return snapshot


def _own_run(snapshot_id: int, token: str):
    """The snapshot's row while this run still owns it (running, with this run's token)."""
    return ExportSnapshot.objects.filter(pk=snapshot_id, state=ExportState.RUNNING, run_token=token)


def export_snapshot_fail(*, snapshot_id: int, errors: list[dict[str, Any]]) -> bool:
    """Mark a snapshot that has not finished as failed; False when it had already finished."""
    updated = (
        ExportSnapshot.objects.filter(pk=snapshot_id)
        .exclude(state__in=_FINISHED)
        .update(state=ExportState.FAILED, errors=errors, finished_at=timezone.now())
    )
    return bool(updated)


def export_snapshot_cancel(*, snapshot_id: int, user: Any = None) -> bool:
    """Cancel a queued or running snapshot; False when it had already finished (nothing changes then).

    A queued snapshot never starts; a running one stops at its next chunk (see the module
    docstring). The files of a cancelled snapshot are never published.
    """
    who = getattr(user, "username", None) if getattr(user, "is_authenticated", False) else None
    updated = (
        ExportSnapshot.objects.filter(pk=snapshot_id)
        .exclude(state__in=_FINISHED)
        .update(
            state=ExportState.CANCELLED,
            cancelled_by=user if who else None,
            errors=[{"message": f"cancelled by {who}" if who else "cancelled"}],
            finished_at=timezone.now(),
        )
    )
    return bool(updated)


def export_snapshots_reap(*, now: Any = None, send: Callable[[int], None] | None = None) -> dict[str, list[int]]:
    """Re-queue (or fail) the running snapshots whose worker stopped sending heartbeats.

    A snapshot with attempts left goes back to ``queued`` and is sent again after commit
    (``send``, default: the Celery task); one without fails with the reason. Returns the
    ids of both kinds. Safe to run from several places at once: rows are taken with
    ``SKIP LOCKED`` where the database has it, and re-checked under the lock.
    """
    now = now or timezone.now()
    limit = now - stale_after()
    send = send or _send_to_worker
    stale = Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, started_at__lt=limit)
    requeued: list[int] = []
    failed: list[int] = []
    with transaction.atomic():
        rows = ExportSnapshot.objects.select_for_update(skip_locked=True).filter(stale, state=ExportState.RUNNING)
        for snapshot in rows.order_by("pk"):
            seen = snapshot.heartbeat_at or snapshot.started_at
            reason = f"the worker stopped responding (no heartbeat since {seen.isoformat()})"
            if snapshot.attempts >= MAX_ATTEMPTS:
                snapshot.state = ExportState.FAILED
                snapshot.errors = [{"message": f"{reason}; gave up after {snapshot.attempts} attempts"}]
                snapshot.finished_at = now
                snapshot.run_token = ""
                snapshot.save(update_fields=["state", "errors", "finished_at", "run_token"])
                failed.append(snapshot.pk)
            else:
                snapshot.state = ExportState.QUEUED
                snapshot.errors = [
                    {"message": f"{reason}; queued again (attempt {snapshot.attempts} of {MAX_ATTEMPTS})"}
                ]
                snapshot.run_token = ""
                snapshot.save(update_fields=["state", "errors", "run_token"])
                transaction.on_commit(lambda pk=snapshot.pk: send(pk))
                requeued.append(snapshot.pk)
    if requeued or failed:
        logger.warning("export reaper: queued again %s, failed %s", requeued, failed)
    return {"requeued": requeued, "failed": failed}


def _send_to_worker(snapshot_id: int) -> None:
    from exports.tasks import run_export_snapshot

    try:
        run_export_snapshot.delay(snapshot_id=snapshot_id)
    except Exception:
        # The row stays queued; the next reaper run does not see it (it is not running),
        # so say why on the row.
        logger.exception("could not queue export snapshot %s again", snapshot_id)
        export_snapshot_fail(
            snapshot_id=snapshot_id, errors=[{"message": "its worker stopped, and the task queue was unreachable"}]
        )


def _export_snapshot_start(snapshot_id: int) -> tuple[ExportSnapshot, str | None]:
    """Take the snapshot for this run: ``(snapshot, token)``, token None when there is nothing to run."""
    with transaction.atomic():
        snapshot = ExportSnapshot.objects.select_for_update().select_related("project").get(pk=snapshot_id)
        if snapshot.state in _FINISHED:
            return snapshot, None
        if snapshot.state == ExportState.RUNNING:
            seen = snapshot.heartbeat_at or snapshot.started_at
            if seen is not None and seen >= timezone.now() - stale_after():
                # A redelivered message while a live worker runs it: leave that run alone.
                logger.info("export snapshot %s is running elsewhere; this delivery does nothing", snapshot_id)
                return snapshot, None
            # RUNNING with a stale heartbeat: its worker died; nothing it wrote was published.
        if snapshot.attempts >= MAX_ATTEMPTS:
            snapshot.state = ExportState.FAILED
            snapshot.errors = [{"message": f"gave up after {snapshot.attempts} attempts"}]
            snapshot.finished_at = timezone.now()
            snapshot.save(update_fields=["state", "errors", "finished_at"])
            return snapshot, None
        token = uuid.uuid4().hex
        snapshot.state = ExportState.RUNNING
        snapshot.attempts += 1
        snapshot.progress = 0.0
        snapshot.run_token = token
        snapshot.started_at = snapshot.heartbeat_at = timezone.now()
        snapshot.save(update_fields=["state", "attempts", "progress", "run_token", "started_at", "heartbeat_at"])
    return snapshot, token


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
    """Called once per chunk: stops the run when it no longer owns its row, else writes progress.

    The ownership check is one indexed ``SELECT`` per chunk; progress and heartbeat are
    written at most once a second. An export reads outside any transaction, so both are
    visible at once.
    """

    def __init__(self, snapshot_id: int, token: str) -> None:
        self.snapshot_id = snapshot_id
        self.token = token
        self._last_written_at = 0.0

    def check(self) -> None:
        if not _own_run(self.snapshot_id, self.token).exists():
            raise ExportStopped(self.snapshot_id)

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_written_at < _PROGRESS_INTERVAL_S:
            self.check()
            return
        value = min(max(float(fraction), 0.0), 1.0)
        if not _own_run(self.snapshot_id, self.token).update(progress=value, heartbeat_at=timezone.now()):
            raise ExportStopped(self.snapshot_id)
        self._last_written_at = now


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
