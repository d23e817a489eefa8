"""Export snapshots: create the job row, run it, and keep the result immutable.

An ExportSnapshot is a job of the shared lifecycle (``jobs``; kind ``export``, retried
from scratch). Files are written into a fresh temporary directory under
``ARTIFACT_ROOT/exports/`` and renamed to ``exports/<content hash>/`` only when complete,
so a directory named by a hash always holds complete files; its files are made
read-only. When that directory exists already (the same project state exported with
the same parameters), the new snapshot shares it: the bytes are the same by construction.
The snapshot turns ``succeeded`` only while its attempt still owns the row, so a
cancelled or reaped attempt never finishes it a second time; a cancel between chunks
stops the export and publishes nothing.
"""

from __future__ import annotations

import logging
import os
import stat
from math import comb
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from annotation.models import Judgement, Project
from arpad.archive import ArchiveRefused, Member, named_members
from arpad.errors import ServiceError
from exports.models import ExportSnapshot, ExportState
from exports.params import ExportParams, InvalidParams
from jobs.lifecycle import JobAlreadyFinished, job_cancel, job_create, job_execute, job_send
from jobs.models import JobTrigger

logger = logging.getLogger(__name__)


def exports_root() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "exports"


def snapshot_directory(snapshot: ExportSnapshot) -> Path | None:
    """The directory of a finished snapshot's files, or None before it succeeded."""
    if snapshot.state != ExportState.SUCCEEDED or not snapshot.path:
        return None
    return Path(settings.ARTIFACT_ROOT) / snapshot.path


class ExportError(ServiceError):
    """A refused request about a snapshot (see :class:`arpad.errors.ServiceError`)."""


def export_snapshot_files(*, snapshot: ExportSnapshot) -> list[Member]:
    """Every file of a succeeded snapshot (``manifest.json`` first, then the manifest's list), to download as one archive.

    Only the names the manifest lists, only regular files inside the artifact store and
    never through a link (``arpad.archive``). Refused with 409: ``not_ready`` before the
    snapshot succeeded, ``files_missing`` when its files are gone.
    """
    directory = snapshot_directory(snapshot)
    if directory is None:
        raise ExportError(
            None, f"export {snapshot.pk} is {snapshot.state}: it has no files", code="not_ready", status=409
        )
    try:
        return named_members(directory, snapshot.file_names)
    except ArchiveRefused as exc:
        raise ExportError(
            None,
            f"export {snapshot.pk}'s files are gone from the artifact store ({exc})",
            code="files_missing",
            status=409,
        ) from None


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


def new_agreed_pairs(
    *, project: Project, since: ExportSnapshot | None, params: ExportParams, at_least: int
) -> tuple[int, int | None]:
    """New pair votes of the project since the succeeded export ``since`` (None: ever), and how
    many more pairs are agreed now, under ``params``, than that export kept.

    A new vote adds at most one kept pair, so the agreement is only aggregated when at
    least ``at_least`` new votes arrived: an idle project costs one COUNT. The second
    figure is None when it was not computed. What the retrain rule and the loop rule check.
    """
    from annotation.models import PairVote
    from exports.snapshot import aggregate_project, source_state

    baseline, last_judgement = 0, -1
    if since is not None:
        baseline = int(since.counts.get("pairs_kept", 0))
        last_judgement = since.source_max_judgement_id or -1
    votes = PairVote.objects.filter(task__project=project, judgement_id__gt=last_judgement).count()
    if votes < at_least:
        return votes, None
    kept = int(aggregate_project(project, params, source_state(project)).result.kept.sum())
    return votes, kept - baseline


@transaction.atomic
def export_snapshot_create(
    *, project: Project, params: dict[str, Any], user: Any, trigger: str = JobTrigger.API
) -> ExportSnapshot:
    """Record a queued snapshot with validated parameters; the caller sends it to a worker after commit."""
    resolved = export_params_resolve(project=project, params=params)
    return job_create(
        ExportSnapshot,
        project=project,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        params=resolved.to_dict(),
        trigger=trigger,
    )


def export_snapshot_run(*, snapshot_id: int, worker: str | None = None) -> ExportSnapshot:
    """Run a queued (or abandoned) snapshot to the end in this process; the row as it is afterwards.

    What a worker does with the snapshot's message. The row comes back untouched when
    there is nothing for this delivery to do (finished, cancelled, or running elsewhere).
    """
    return job_execute(kind="export", job_id=snapshot_id, worker=worker)


def export_snapshot_send(snapshot: ExportSnapshot) -> None:
    """Send the snapshot to a worker once the transaction commits (a broker that is down fails it, saying so)."""
    job_send(snapshot)


def export_snapshot_cancel(*, snapshot_id: int, user: Any = None) -> bool:
    """Cancel a queued or running snapshot; False when it had already finished (nothing changes then).

    A queued snapshot never starts; a running one stops at its next chunk and publishes
    nothing (``jobs.lifecycle.job_cancel``).
    """
    snapshot = ExportSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is None:
        return False
    try:
        job_cancel(job=snapshot, user=user)
    except JobAlreadyFinished:
        return False
    return True


def publish_directory(work: Path, final: Path) -> Path:
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
