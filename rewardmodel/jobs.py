"""Running one reward-model run on this worker: claim the row, train, record, register.

``reward_model_run_execute`` is everything a delivered message does. It claims the run
(``services.reward_model_run_claim`` decides whether there is anything to do), trains with
``rewardmodel.train.train`` into the run's output directory (which resumes from the last
complete checkpoint there, so a run taken over from a dead worker continues where that
worker last saved), and registers the version.

:class:`RunRecorder` is the bridge from the training loop to the row. Its writes are
conditional on the row still being running under this worker: if the reaper gave the run
to someone else meanwhile, the next write notices, training stops at once (after a
checkpoint), and nothing this worker does afterwards touches the row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections import deque
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from rewardmodel import conf
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunState
from rewardmodel.services import (
    _json_safe,
    resolve_path,
    reward_model_run_claim,
    reward_model_run_fail,
    reward_model_version_register,
    run_output_dir,
)
from rewardmodel.train import TrainConfig, TrainHooks, TrainingCancelled, train

logger = logging.getLogger(__name__)


def this_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _thin(points: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Keep at most ``limit`` points: every eval point, and every other step point of the oldest half."""
    while len(points) > limit:
        steps = [i for i, p in enumerate(points) if p.get("kind") == "step"]
        if len(steps) < 2:
            return points[-limit:]
        drop = set(steps[: len(steps) // 2][1::2])
        if not drop:
            return points[-limit:]
        points = [p for i, p in enumerate(points) if i not in drop]
    return points


class RunLost(Exception):
    """The row is no longer running under this worker (reaped, cancelled and finished, deleted)."""


class RunRecorder(TrainHooks):
    """Training hooks that write progress, heartbeat, metrics and log tail onto the run row.

    Writes are throttled to one per ``REWARDMODEL_PROGRESS_INTERVAL_SECONDS`` (an eval or a
    checkpoint writes at once); each write also reads ``cancel_requested``, so a cancel is
    seen within one interval and honoured at the next step.
    """

    def __init__(self, run: RewardModelRun, worker_id: str) -> None:
        self.run_id = run.pk
        self.worker_id = worker_id
        self.interval = conf.progress_interval_seconds()
        self.history: list[dict[str, Any]] = list(run.metrics_history)
        self.log_tail: deque[str] = deque(run.log_tail, maxlen=conf.log_tail_lines())
        self.step = run.step
        self.total_steps = run.total_steps
        self.cancel_requested = run.cancel_requested
        self.lost = False
        self._fields: dict[str, Any] = {}
        self._last_write = 0.0

    # --- TrainHooks -------------------------------------------------------------------------

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self.total_steps = int(total_steps)
        self._fields.update(total_steps=self.total_steps, info=_json_safe(dict(info)))
        resumed = info.get("resumed_from_step") if isinstance(info, dict) else None
        if resumed is not None:
            self._fields["resumed_from_step"] = int(resumed)
        self.step = int(resumed or 0)
        # Points an earlier attempt recorded past the checkpoint this one resumes from (all of
        # them when it starts over) are about to be replayed: drop them, or the curve doubles.
        self.history = [p for p in self.history if p.get("step", 0) <= self.step]
        self.flush(force=True)

    def on_step(self, step: int, total_steps: int, metrics: dict[str, Any]) -> None:
        self.step = int(step)
        self.total_steps = int(total_steps)
        self.history.append({"kind": "step", "step": self.step, **_json_safe(dict(metrics))})
        self.flush()

    def on_eval(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.history.append({"kind": "eval", "step": self.step, "epoch": epoch, **_json_safe(dict(metrics))})
        self.flush(force=True)

    def on_checkpoint(self, path: str, step: int) -> None:
        self._fields.update(checkpoint_path=str(path), checkpoint_step=int(step))
        self.log(f"checkpoint at step {step}")
        self.flush(force=True)

    def should_stop(self) -> bool:
        self.flush()
        return self.cancel_requested or self.lost

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        for part in str(line).splitlines() or [""]:
            self.log_tail.append(f"{stamp} {part}"[:2000])

    # --- writing ----------------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> None:
        if self.lost:
            return
        now = time.monotonic()
        if not force and now - self._last_write < self.interval:
            return
        self._last_write = now
        total = self.total_steps or 0
        step = min(self.step, total) if total else self.step
        self.history = _thin(self.history, conf.history_max_points())
        fields = {
            "step": step,
            "progress": min(1.0, step / total) if total else 0.0,
            "heartbeat_at": timezone.now(),
            "metrics_history": self.history,
            "log_tail": list(self.log_tail),
            **self._fields,
        }
        mine = RewardModelRun.objects.filter(pk=self.run_id, state=RunState.RUNNING, worker_id=self.worker_id)
        try:
            written = mine.update(**fields)
            cancel_requested = bool(mine.values_list("cancel_requested", flat=True).first())
        except DatabaseError:
            # A busy or briefly unreachable database must not kill hours of training: the
            # fields stay pending for the next write, and the heartbeat thread keeps trying.
            logger.warning("could not record progress of reward-model run %s", self.run_id, exc_info=True)
            return
        if not written:
            self.lost = True
            logger.warning("reward-model run %s is no longer held by %s; stopping", self.run_id, self.worker_id)
            return
        self._fields = {}
        self.cancel_requested = cancel_requested


class Heartbeat(threading.Thread):
    """Beats for a claimed run from its own thread (and database connection).

    Model loading, data preparation and evaluation call no hook for a long time on a big
    model; the heartbeat says the process is alive meanwhile. It stops when the run is no
    longer this worker's, and dies with the process, which is what the reaper looks for.
    """

    def __init__(self, run_id: int, worker_id: str) -> None:
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.run_id = run_id
        self.worker_id = worker_id
        self.every = max(0.2, conf.heartbeat_stale_seconds() / 4)
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.every):
                try:
                    beat = RewardModelRun.objects.filter(
                        pk=self.run_id, state=RunState.RUNNING, worker_id=self.worker_id
                    ).update(heartbeat_at=timezone.now())
                except DatabaseError:
                    logger.warning("heartbeat of reward-model run %s failed", self.run_id, exc_info=True)
                    continue
                if not beat:
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def reward_model_run_execute(
    *, run_id: int, worker_id: str | None = None, recorder_class: type[RunRecorder] = RunRecorder
) -> RewardModelVersion | None:
    """Claim, train and register one run; the version, or None when this delivery had nothing to do.

    ``recorder_class`` lets the command line add a progress bar to the row's recorder.
    """
    worker_id = worker_id or this_worker_id()
    run = reward_model_run_claim(run_id=run_id, worker_id=worker_id)
    if run is None:
        return RewardModelVersion.objects.filter(run_id=run_id).first()
    heartbeat = Heartbeat(run.pk, worker_id)
    heartbeat.start()
    try:
        return _train_and_register(run, worker_id, recorder_class(run, worker_id))
    finally:
        heartbeat.stop()


def _train_and_register(run: RewardModelRun, worker_id: str, recorder: RunRecorder) -> RewardModelVersion | None:
    output = run_output_dir(run)
    output.mkdir(parents=True, exist_ok=True)
    config = dict(run.config)
    if config.get("device", "auto") == "auto":
        config["device"] = conf.device()
    recorder.log(f"training {run.base_model} on export {run.snapshot_id} into {run.output_dir}")
    try:
        from exports.services import snapshot_directory

        data_dir = snapshot_directory(run.snapshot)
        if data_dir is None:
            raise RuntimeError(f"export {run.snapshot_id} has no files")
        train_config = TrainConfig.from_dict(
            {
                **config,
                "base_model": str(resolve_path(run.base_model)),
                "data_dir": str(data_dir),
                "output_dir": str(output),
            }
        )
        result = train(train_config, recorder)
    except TrainingCancelled:
        recorder.flush(force=True)
        if recorder.lost:
            return None
        _finish_cancelled(run.pk, worker_id, recorder)
        return None
    except Exception as exc:
        logger.exception("reward-model run %s failed", run.pk)
        recorder.log(f"failed: {type(exc).__name__}: {exc}")
        for line in traceback.format_exc().splitlines()[-12:]:
            recorder.log(line)
        recorder.flush(force=True)
        message = str(exc).strip() or "(no message)"
        reward_model_run_fail(run_id=run.pk, error=f"{type(exc).__name__}: {message}", worker_id=worker_id)
        return None
    if result.resumed_from_step is not None:
        recorder._fields["resumed_from_step"] = int(result.resumed_from_step)
    recorder.log(f"finished: {_summary(result.metrics)}")
    recorder.flush(force=True)
    if recorder.lost:
        return None
    return reward_model_version_register(run_id=run.pk, metrics=result.metrics, worker_id=worker_id)


def _finish_cancelled(run_id: int, worker_id: str, recorder: RunRecorder) -> None:
    recorder.log(f"cancelled at step {recorder.step}")
    RewardModelRun.objects.filter(pk=run_id, state=RunState.RUNNING, worker_id=worker_id).update(
        state=RunState.CANCELLED, finished_at=timezone.now(), log_tail=list(recorder.log_tail)
    )


def _summary(metrics: dict[str, Any]) -> str:
    keys = [k for k in metrics if isinstance(metrics[k], int | float)][:6]
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys) or "no metrics"
