"""The operations of the one job lifecycle: send, claim, record, finish, cancel, reap.

Every long job (import, export snapshot, reward-model run, and the RL loop's kinds) is a
row of a :class:`jobs.models.Job` subclass, and this module is the only code that moves
such a row between states.

* **Send** (:func:`job_send`): the message goes to the broker after the row commits (a
  worker must never look for a row that is not there yet). A broker that cannot be
  reached fails the row with that reason instead of leaving it queued forever.
* **Claim** (:func:`job_claim`), under the row lock: a finished job is left alone; a job
  running under a fresh heartbeat is a duplicate delivery and is left alone; a running
  job whose heartbeat went stale lost its worker and is taken over; a job whose cancel
  was requested becomes cancelled; one that used up its attempts fails. Otherwise the
  job runs under a fresh owner token, and a retried attempt follows its kind's
  :class:`~jobs.registry.Retry` policy.
* **Record** (:class:`JobContext`): progress, metrics, log lines and kind fields are
  written at most once per ``JOB_PROGRESS_INTERVAL_SECONDS``, each write conditional on
  the owner token; zero rows updated means the job was lost (reaped, finished), and the
  job stops at its next check. Each write also reads the cancel flag. A heartbeat thread
  with its own connection beats meanwhile, so loading a large model or reading every
  vote (no progress for minutes) does not look like a dead worker.
* **Finish**: :meth:`JobContext.succeed` writes the terminal state inside the kind's own
  transaction (the one that registers the version, records the import, ...), so the
  result and the state commit together or not at all; a job that is no longer its owner's
  raises :class:`JobLost` there and the result rolls back. Failures and cancels are
  written by the lifecycle after the kind's transaction rolled back.
* **Reap** (:func:`jobs_reap`, one beat entry for every kind): a running job whose
  heartbeat is stale goes back to the queue while attempts remain, else fails with the
  reason; a job being cancelled is finished as cancelled.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from jobs import conf
from jobs.models import FINISHED_STATES, Job, JobState
from jobs.registry import JobKind, Retry, all_kinds, get_kind, kind_of

logger = logging.getLogger(__name__)

_LOG_LINE_MAX_CHARS = 2000
# Called with (kind label, job id) once a job's end is committed: see on_job_finished.
_FINISHED_LISTENERS: list[Callable[[str, int], None]] = []
_ERROR_MAX_CHARS = 10_000
_TRACEBACK_LINES = 40


class JobStopped(Exception):
    """The job must stop now; raised by :meth:`JobContext.check` inside the kind's code."""


class JobCancelled(JobStopped):
    """A cancel was requested: the job ends ``cancelled`` and publishes nothing."""


class JobLost(JobStopped):
    """The row is no longer this attempt's (reaped and taken over, finished, deleted)."""


class JobFailed(Exception):
    """A failure the kind can explain: ``message`` for people, ``details`` as ``errors`` entries."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class JobAlreadyFinished(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__(f"{job.kind.replace('_', ' ')} {job.pk} already {job.state}")
        self.job = job


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def json_safe(value: Any) -> Any:
    """Metrics as strict JSON: NaN and infinities become None, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        return json_safe(value.item())
    return str(value)


def _stamp(line: str) -> str:
    return f"{timezone.now().strftime('%H:%M:%S')} {line}"[:_LOG_LINE_MAX_CHARS]


def _append_log(job: Job, line: str) -> None:
    job.log_tail = [*job.log_tail, _stamp(line)][-conf.log_tail_lines() :]


def _thin(points: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Keep at most ``limit`` points: every non-step point, and every other step point of the oldest half."""
    while len(points) > limit:
        steps = [i for i, p in enumerate(points) if p.get("kind", "step") == "step"]
        drop = set(steps[: len(steps) // 2][1::2])
        if not drop:
            return points[-limit:]
        points = [p for i, p in enumerate(points) if i not in drop]
    return points


def _owned(job: Job | type[Job], job_id: int, token: str) -> Any:
    model = job if isinstance(job, type) else type(job)
    return model.objects.filter(pk=job_id, state=JobState.RUNNING, owner_token=token)


# --- create and send ------------------------------------------------------------------------


def job_create(model: type[Job], **fields: Any) -> Any:
    """Record a queued job of ``model``'s kind, its attempts bounded by the kind's setting."""
    fields.setdefault("max_attempts", max(1, kind_of(model).attempts_allowed()))
    return model.objects.create(**fields)


def job_send(job: Job) -> None:
    """Send the job's message once the current transaction commits (at once outside one)."""
    label, pk = job.kind, job.pk
    transaction.on_commit(lambda: deliver(label, pk))


def deliver(label: str, job_id: int) -> None:
    """Put one job's message on its kind's queue; a broker that cannot be reached fails the row."""
    from jobs.tasks import run_job

    kind = get_kind(label)
    try:
        run_job.apply_async(args=[label, job_id], queue=kind.queue_name())
    except Exception as exc:
        logger.exception("could not queue %s %s", label, job_id)
        job_fail(
            kind=kind,
            job_id=job_id,
            error=f"could not reach the task queue ({one_line(exc)}); start it again when the broker is back",
        )


def job_fail(*, kind: JobKind, job_id: int, error: str, details: list[dict[str, Any]] | None = None) -> bool:
    """Fail a job that has not finished; False when it had already finished."""
    error = error[:_ERROR_MAX_CHARS] or "failed"
    updated = (
        kind.model.objects.filter(pk=job_id)
        .exclude(state__in=FINISHED_STATES)
        .update(
            state=JobState.FAILED,
            error=error,
            errors=details or [{"message": error}],
            owner_token="",
            finished_at=timezone.now(),
        )
    )
    if updated:
        announce_finished(kind.label, job_id)
    return bool(updated)


# --- claim ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    job: Any
    token: str
    retried: bool  # an earlier attempt started (and was lost)


def job_claim(*, kind: JobKind, job_id: int, worker: str) -> Claim | None:
    """Take the job for this delivery, or None when there is nothing for it to do (see the module docstring)."""
    now = timezone.now()
    with transaction.atomic():
        job = kind.model.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            logger.warning("%s %s does not exist; message dropped", kind.label, job_id)
            return None
        if job.is_finished:
            return None
        if job.state == JobState.RUNNING:
            age = job.heartbeat_age_seconds(now)
            if age is not None and age < kind.stale_after_seconds():
                logger.info("%s %s is held by %s; duplicate message ignored", kind.label, job_id, job.worker)
                return None
            _append_log(job, f"worker {job.worker} stopped beating; {worker} takes it over")
        if job.cancel_requested:
            _append_log(job, "cancelled before it started")
            _finish(job, JobState.CANCELLED, now)
            return None
        if job.attempts >= job.max_attempts:
            job.error = f"gave up after {job.attempts} attempts: the worker was lost each time"
            job.errors = [{"message": job.error}]
            _finish(job, JobState.FAILED, now)
            return None
        retried = job.attempts > 0
        if retried and kind.retry is not Retry.RESUME:
            # Restart / roll back: nothing of the lost attempt counts any more.
            job.progress, job.step, job.metrics_history = 0.0, 0, []
            job.checkpoint_path, job.checkpoint_step = "", None
        job.state = JobState.RUNNING
        job.attempts += 1
        job.owner_token = uuid.uuid4().hex
        job.worker = worker[:255]
        job.heartbeat_at = now
        job.started_at = job.started_at or now
        job.error, job.errors, job.traceback = "", [], ""
        _append_log(job, f"attempt {job.attempts} of {job.max_attempts} started on {worker}")
        job.save()
    if retried and kind.retry is Retry.RESTART and kind.cleanup is not None:
        kind.cleanup(job)
    return Claim(job=job, token=job.owner_token, retried=retried)


def _finish(job: Job, state: str, now: datetime) -> None:
    job.state = state
    job.finished_at = now
    job.owner_token = ""
    job.save()
    announce_finished(kind_of(job).label, job.pk)


def on_job_finished(listener: Callable[[str, int], None]) -> Callable[[str, int], None]:
    """Register ``listener(kind label, job id)``, called once a job's end (any state) is committed.

    It runs in the process that ended the job (a worker, the reaper, a cancelling web
    request); a listener's exception is logged, never raised into that process. What
    chains jobs (``rlloop.cycle``) must also catch up periodically: a process can die
    between the commit and the call.
    """
    if listener not in _FINISHED_LISTENERS:
        _FINISHED_LISTENERS.append(listener)
    return listener


def announce_finished(label: str, job_id: int) -> None:
    def call() -> None:
        for listener in list(_FINISHED_LISTENERS):
            try:
                listener(label, job_id)
            except Exception:
                logger.exception("a job-finished listener failed for %s %s", label, job_id)

    transaction.on_commit(call)


# --- record ---------------------------------------------------------------------------------


class _Heartbeat(threading.Thread):
    """Beats for a claimed job from its own thread (and database connection).

    Dies with the process, which is what the reaper looks for. Stops when the job is no
    longer this attempt's. ``paused`` spares SQLite a write that would only wait for the
    lock the job's own transaction holds.
    """

    def __init__(self, model: type[Job], job_id: int, token: str, every: float) -> None:
        super().__init__(name=f"heartbeat-{model._meta.label_lower}-{job_id}", daemon=True)
        self.model, self.job_id, self.token, self.every = model, job_id, token, every
        self.paused = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.every):
                if self.paused:
                    continue
                try:
                    beat = _owned(self.model, self.job_id, self.token).update(heartbeat_at=timezone.now())
                except DatabaseError:
                    logger.warning("heartbeat of %s %s failed", self.model.__name__, self.job_id, exc_info=True)
                    continue
                if not beat:
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=30)


class JobContext:
    """What a kind's run function is handed: the claimed row and the ways to report on it.

    Everything is held in memory and written at most once per interval (``force`` writes
    at once). A write lands only while the row is still this attempt's; the first write
    that finds it gone marks the context lost, and the next :meth:`check` stops the job.

    Inside a transaction of the kind's own (an import runs in one), a write on the job's
    connection would stay invisible until the end and would lock the row; there the
    progress goes through a second connection (PostgreSQL; SQLite holds its single write
    lock for the whole transaction, so there the row shows progress when it finishes).
    """

    def __init__(
        self,
        *,
        kind: JobKind,
        claim: Claim,
        heartbeat: _Heartbeat | None = None,
        observer: Callable[[JobContext], None] | None = None,
    ) -> None:
        job = claim.job
        self.kind = kind
        self.job = job
        self.job_id: int = job.pk
        self.token = claim.token
        self.worker: str = job.worker
        self.attempt: int = job.attempts
        self.retried = claim.retried
        self.interval = conf.progress_interval_seconds()
        self.history: list[dict[str, Any]] = list(job.metrics_history)
        self.log_tail: deque[str] = deque(job.log_tail, maxlen=conf.log_tail_lines())
        self.step: int = job.step
        self.total_steps: int | None = job.total_steps
        self.fraction: float = job.progress
        self.cancel_requested = bool(job.cancel_requested)
        self.lost = False
        self.observer = observer
        self._heartbeat = heartbeat
        self._fields: dict[str, Any] = {}
        self._last_write = 0.0
        self._side: Any = None
        self._side_broken = False
        # Transactions already open when the job started (a test's, a caller's): only one
        # the kind opens itself makes a write on this connection invisible to others.
        self._outer_depth = len(connection.atomic_blocks)

    # --- reporting ------------------------------------------------------------------------

    def progress(
        self,
        fraction: float | None = None,
        *,
        step: int | None = None,
        total: int | None = None,
        check: bool = True,
        force: bool = False,
    ) -> None:
        """Record progress (a fraction, or a step of a total) and, with ``check``, stop if the job must stop."""
        if total is not None:
            self.total_steps = int(total)
        if step is not None:
            self.step = int(step)
        if fraction is not None:
            self.fraction = min(max(float(fraction), 0.0), 1.0)
        elif self.total_steps:
            self.fraction = min(1.0, self.step / self.total_steps)
        self.flush(force=force)
        if check:
            self.check()

    def metric(self, point: dict[str, Any], *, force: bool = False) -> None:
        """Append one point of the metric history (``kind`` defaults to "step")."""
        self.history.append(json_safe({"kind": "step", "step": self.step, **point}))
        self.flush(force=force)

    def forget_history_after(self, step: int) -> None:
        """Drop the points past ``step``: a resumed attempt replays them, and the curve must not double."""
        self.history = [p for p in self.history if p.get("step", 0) <= step]

    def log(self, line: str) -> None:
        for part in str(line).splitlines() or [""]:
            self.log_tail.append(_stamp(part))
        if self.observer is not None:
            self.observer(self)

    def set(self, *, force: bool = False, **fields: Any) -> None:
        """Kind-specific columns, written with the next write."""
        self._fields.update(fields)
        self.flush(force=force)

    def checkpoint(self, path: str, step: int) -> None:
        """A complete checkpoint exists: a retried attempt of a resuming kind starts from it."""
        self._fields.update(checkpoint_path=str(path), checkpoint_step=int(step))
        self.log(f"checkpoint at step {step}")
        self.flush(force=True)

    def should_stop(self) -> bool:
        self.flush()
        return self.cancel_requested or self.lost

    def check(self) -> None:
        """Raise :class:`JobCancelled` or :class:`JobLost` when the job must stop."""
        if self.lost:
            raise JobLost(f"{self.kind.label} {self.job_id} is no longer held by this attempt")
        if self.cancel_requested:
            raise JobCancelled(f"{self.kind.label} {self.job_id} was cancelled")

    # --- writing --------------------------------------------------------------------------

    def _row_fields(self) -> dict[str, Any]:
        total = self.total_steps
        step = min(self.step, total) if total else self.step
        self.history = _thin(self.history, conf.history_max_points())
        return {
            "step": step,
            "total_steps": total,
            "progress": self.fraction,
            "heartbeat_at": timezone.now(),
            "metrics_history": self.history,
            "log_tail": list(self.log_tail),
            **self._fields,
        }

    def flush(self, *, force: bool = False) -> None:
        if self.observer is not None:
            self.observer(self)
        if self.lost:
            return
        now = time.monotonic()
        if not force and now - self._last_write < self.interval:
            return
        self._last_write = now
        if len(connection.atomic_blocks) > self._outer_depth:
            self._flush_side()
            return
        if self._heartbeat is not None:
            self._heartbeat.paused = False
        mine = _owned(self.kind.model, self.job_id, self.token)
        try:
            written = mine.update(**self._row_fields())
            cancel = bool(mine.values_list("cancel_requested", flat=True).first())
        except DatabaseError:
            # A busy or briefly unreachable database must not kill hours of work: the
            # fields stay pending for the next write, and the heartbeat keeps trying.
            logger.warning("could not record progress of %s %s", self.kind.label, self.job_id, exc_info=True)
            return
        if not written:
            self.lost = True
            logger.warning("%s %s is no longer held by %s; stopping", self.kind.label, self.job_id, self.worker)
            return
        self._fields = {}
        self.cancel_requested = self.cancel_requested or cancel

    def _flush_side(self) -> None:
        if connection.vendor != "postgresql":
            if self._heartbeat is not None:
                self._heartbeat.paused = True
            return
        if self._side_broken:
            return
        fields = self._row_fields()
        model = self.kind.model
        try:
            if self._side is None:
                self._side = connections.create_connection(DEFAULT_DB_ALIAS)
            # Only the cosmetic columns: kind fields wait for the job's own transaction.
            table = self._side.ops.quote_name(model._meta.db_table)
            with self._side.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET progress = %s, step = %s, heartbeat_at = %s "  # noqa: S608 (quoted name)
                    "WHERE id = %s AND state = %s AND owner_token = %s RETURNING cancel_requested",
                    [
                        fields["progress"],
                        fields["step"],
                        fields["heartbeat_at"],
                        self.job_id,
                        JobState.RUNNING.value,
                        self.token,
                    ],
                )
                row = cursor.fetchone()
        except DatabaseError:
            logger.warning("could not record progress of %s %s", self.kind.label, self.job_id, exc_info=True)
            self._side_broken = True
            return
        # No row: from outside this transaction the row may simply not be visible yet (a
        # test's wrapping transaction); the terminal write decides whether the job was lost.
        if row is not None and row[0]:
            self.cancel_requested = True

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._side is not None:
            self._side.close()
            self._side = None

    # --- finishing ------------------------------------------------------------------------

    def succeed(self, **fields: Any) -> None:
        """Mark the job succeeded with its result columns; call it inside the transaction that records the result.

        Raises :class:`JobLost` when the row is no longer this attempt's (the caller's
        transaction then rolls back), and :class:`JobCancelled` when a cancel arrived,
        so nothing is published for a cancelled job.
        """
        if self._heartbeat is not None:
            self._heartbeat.stop()
        with transaction.atomic():
            self._succeed(fields)

    def _succeed(self, fields: dict[str, Any]) -> None:
        mine = _owned(self.kind.model, self.job_id, self.token)
        row = mine.select_for_update().values_list("cancel_requested", flat=True).first()
        if row is None:
            self.lost = True
            raise JobLost(f"{self.kind.label} {self.job_id} is no longer held by this attempt")
        if row:
            self.cancel_requested = True
            raise JobCancelled(f"{self.kind.label} {self.job_id} was cancelled")
        if self.total_steps is not None:
            self.step = self.total_steps
        self.fraction = 1.0
        self.log("finished")
        values = {
            **self._row_fields(),
            **fields,
            "state": JobState.SUCCEEDED,
            "progress": 1.0,
            "owner_token": "",
            "error": "",
            "errors": [],
            "finished_at": timezone.now(),
        }
        if not mine.update(**values):
            self.lost = True
            raise JobLost(f"{self.kind.label} {self.job_id} is no longer held by this attempt")
        self._fields = {}

    def _end(self, state: str, **fields: Any) -> bool:
        values = {**self._row_fields(), **fields, "state": state, "owner_token": "", "finished_at": timezone.now()}
        try:
            return bool(_owned(self.kind.model, self.job_id, self.token).update(**values))
        except DatabaseError:
            logger.exception("could not record the end of %s %s", self.kind.label, self.job_id)
            return False


# --- execute --------------------------------------------------------------------------------


def job_execute(
    *,
    kind: str | JobKind,
    job_id: int,
    worker: str | None = None,
    observer: Callable[[JobContext], None] | None = None,
) -> Any:
    """Claim the job, run its kind's function, and record how it ended; returns the row as it is now.

    Never raises for a failure of the job itself: the row records it. ``observer`` is
    called on every report (the command line draws its progress bar with it).
    """
    kind = get_kind(kind) if isinstance(kind, str) else kind
    worker = worker or this_worker()
    claim = job_claim(kind=kind, job_id=job_id, worker=worker)
    if claim is None:
        return kind.model.objects.filter(pk=job_id).first()
    heartbeat = _Heartbeat(kind.model, job_id, claim.token, every=max(0.2, kind.stale_after_seconds() / 4))
    heartbeat.start()
    ctx = JobContext(kind=kind, claim=claim, heartbeat=heartbeat, observer=observer)
    try:
        kind.run(claim.job, ctx)
        if not ctx.lost and _owned(kind.model, job_id, claim.token).exists():
            # The function returned without succeeding: a bug in the kind, said plainly.
            raise RuntimeError(f"the {kind.label} function returned without recording a result")
    except JobLost:
        logger.info("%s %s: this attempt lost the job and stopped", kind.label, job_id)
    except JobCancelled:
        ctx.log(f"cancelled at {ctx.fraction:.0%}")
        ctx._end(JobState.CANCELLED)
    except Exception as exc:
        if isinstance(exc, JobFailed):
            error, details, tb = exc.message, exc.details, ""
        else:
            logger.exception("%s %s crashed", kind.label, job_id)
            error, details = one_line(exc), []
            tb = "\n".join(traceback.format_exc().splitlines()[-_TRACEBACK_LINES:])
        ctx.log(f"failed: {error}")
        error = error[:_ERROR_MAX_CHARS] or "failed"
        ctx._end(JobState.FAILED, error=error, errors=details or [{"message": error}], traceback=tb)
    finally:
        ctx.close()
    row = kind.model.objects.filter(pk=job_id).first()
    if row is not None and row.is_finished:
        announce_finished(kind.label, job_id)
    return row


# --- cancel ---------------------------------------------------------------------------------


def job_cancel(*, job: Job, user: Any = None) -> Any:
    """Cancel a job: at once when it is queued, at the worker's next check when it runs.

    Raises :class:`JobAlreadyFinished` for a finished job (nothing changes then).
    """
    who = user if getattr(user, "is_authenticated", False) else None
    with transaction.atomic():
        job = type(job).objects.select_for_update().get(pk=job.pk)
        if job.is_finished:
            raise JobAlreadyFinished(job)
        job.cancel_requested = True
        job.cancelled_by = who
        by = f" by {who.get_username()}" if who is not None else ""
        if job.state == JobState.QUEUED:
            _append_log(job, f"cancelled{by} before it started")
            _finish(job, JobState.CANCELLED, timezone.now())
        else:
            _append_log(job, f"cancel requested{by}; the worker stops at its next step")
            job.save()
    return job


# --- reap -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaped:
    kind: str
    job_id: int
    outcome: str  # "requeued" | "failed" | "cancelled"


def jobs_reap(*, now: datetime | None = None, kinds: list[JobKind] | None = None) -> list[Reaped]:
    """Running jobs of every kind whose worker stopped beating: queued again, failed or cancelled.

    Each job is re-checked under its row lock (taken with SKIP LOCKED where the database
    has it), so a reaper racing a live heartbeat or another reaper does nothing twice.
    """
    now = now or timezone.now()
    outcomes: list[Reaped] = []
    for kind in kinds or all_kinds():
        cutoff = now - timedelta(seconds=kind.stale_after_seconds())
        stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
        candidates = list(kind.model.objects.filter(stale, state=JobState.RUNNING).values_list("pk", flat=True))
        for job_id in candidates:
            with transaction.atomic():
                job = kind.model.objects.select_for_update(skip_locked=True).filter(pk=job_id).first()
                if job is None or job.state != JobState.RUNNING:
                    continue
                if job.heartbeat_at is not None and job.heartbeat_at >= cutoff:
                    continue
                seen = job.heartbeat_at.isoformat(timespec="seconds") if job.heartbeat_at else "never"
                lost = f"worker {job.worker} lost: no heartbeat since {seen}"
                if job.cancel_requested:
                    _append_log(job, f"{lost}; it was being cancelled")
                    _finish(job, JobState.CANCELLED, now)
                    outcome = "cancelled"
                elif job.attempts < job.max_attempts:
                    _append_log(job, f"{lost}; queued again (attempt {job.attempts + 1} of {job.max_attempts} next)")
                    job.state = JobState.QUEUED
                    job.owner_token = ""
                    job.save()
                    job_send(job)
                    outcome = "requeued"
                else:
                    job.error = f"{lost}; gave up after {job.attempts} of {job.max_attempts} attempts"
                    job.errors = [{"message": job.error}]
                    _append_log(job, job.error)
                    _finish(job, JobState.FAILED, now)
                    outcome = "failed"
            outcomes.append(Reaped(kind.label, job_id, outcome))
            logger.warning("reaped %s %s: %s", kind.label, job_id, outcome)
    return outcomes


__all__ = [
    "Claim",
    "JobAlreadyFinished",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobLost",
    "JobStopped",
    "Reaped",
    "deliver",
    "job_cancel",
    "job_claim",
    "job_create",
    "job_execute",
    "job_fail",
    "job_send",
    "jobs_reap",
    "json_safe",
    "kind_of",
    "one_line",
    "this_worker",
]
