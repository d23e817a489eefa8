"""The ``reward_model`` job kind: train one run on a worker of the ``gpu`` queue and register its version.

A run is a job of the shared lifecycle (``jobs``). A retried attempt resumes
(``Retry.RESUME``): ``rewardmodel.train.train`` continues from the last complete
checkpoint in the run's output directory, and the metric points recorded past that
checkpoint are dropped before they are replayed. The version is created in the same
transaction that marks the run succeeded, so a run has exactly one version or none.

:class:`TrainingHooks` is the bridge from the training loop to the lifecycle's context:
progress, metrics, checkpoints and log lines go to the row; a cancel or a lost row makes
``should_stop`` true, and training saves a checkpoint and stops.

A run's directory (checkpoints, and the model of its version) goes with its row: a run
with a version cannot be deleted alone (its lineage), but deleting the project deletes
them all, and their files once that commits.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from jobs.lifecycle import JobContext, job_execute
from jobs.registry import Retry, job_kind
from rewardmodel import conf
from rewardmodel.hooks import TrainHooks, TrainingCancelled
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rewardmodel.services import (
    OUTSIDE_REGISTRY,
    base_model_label,
    base_model_name_of,
    resolve_path,
    reward_model_version_create,
    run_output_dir,
)


def remove_run_files(output_dir: str) -> None:
    """Delete a run's directory, and its project's folder once empty; only ever under rewardmodels/."""
    if not output_dir:
        return
    root = conf.rewardmodels_root().resolve()
    directory = resolve_path(output_dir).resolve()
    if directory == root or not directory.is_relative_to(root):
        return
    shutil.rmtree(directory, ignore_errors=True)
    if directory.parent != root:
        with contextlib.suppress(OSError):  # other runs of the project are still there
            directory.parent.rmdir()


@receiver(post_delete, sender=RewardModelRun)
def _files_go_with_the_run(sender: type[RewardModelRun], instance: RewardModelRun, **kwargs: Any) -> None:
    output_dir = instance.output_dir
    transaction.on_commit(lambda: remove_run_files(output_dir))


class TrainingHooks(TrainHooks):
    """Training callbacks that report through the job's context.

    Each step point of the history carries ``steps_per_second``, measured on the wall clock
    over about the last minute of this attempt (evaluations and checkpoints included, so a
    page's time left counts them). Between checkpoints the log gets a progress line
    ("step 120/400, loss 0.612, 3.1 steps/s, 1 min 30 s left", the loss averaged over the
    steps since the previous line) about every 1/``LOG_LINES_PER_RUN`` of the run, never
    twice within ``LOG_MIN_SECONDS`` (a fast run would push everything else out of the
    200-line tail) and at least every ``LOG_MAX_SECONDS`` (a slow run still says something).
    """

    LOG_LINES_PER_RUN = 20
    LOG_MIN_SECONDS = 5.0
    LOG_MAX_SECONDS = 300.0
    RATE_WINDOW_SECONDS = 60.0

    def __init__(self, ctx: JobContext, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.clock = clock
        self._marks: deque[tuple[float, int]] = deque()
        self._logged: tuple[float, int] = (clock(), 0)
        self._losses: list[float] = []

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        resumed = info.get("resumed_from_step") if isinstance(info, dict) else None
        step = int(resumed or 0)
        now = self.clock()
        self._marks = deque([(now, step)])
        self._logged = (now, step)
        self._losses = []
        # Points an earlier attempt recorded past the checkpoint this one resumes from (all of
        # them when it starts over) are about to be replayed: drop them, or the curve doubles.
        self.ctx.forget_history_after(step)
        fields: dict[str, Any] = {"info": dict(info)}
        if resumed is not None:
            fields["resumed_from_step"] = step
        self.ctx.set(**fields)
        self.ctx.progress(step=step, total=int(total_steps), check=False, force=True)

    def on_step(self, step: int, total_steps: int, metrics: dict[str, Any]) -> None:
        now = self.clock()
        rate = self._rate(now, int(step))
        point = dict(metrics)
        if rate is not None:
            point["steps_per_second"] = rate
        self.ctx.step = int(step)
        self.ctx.metric(point)
        loss = metrics.get("loss")
        if isinstance(loss, int | float) and math.isfinite(loss):
            self._losses.append(float(loss))
        self._progress_line(now, int(step), int(total_steps), rate)
        self.ctx.progress(step=int(step), total=int(total_steps), check=False)

    def _rate(self, now: float, step: int) -> float | None:
        """Steps per second over the marks of about the last ``RATE_WINDOW_SECONDS``; None before a first step."""
        self._marks.append((now, step))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.RATE_WINDOW_SECONDS:
            self._marks.popleft()
        then, first = self._marks[0]
        if now <= then or step <= first:
            return None
        return (step - first) / (now - then)

    def _progress_line(self, now: float, step: int, total: int, rate: float | None) -> None:
        last_time, last_step = self._logged
        every = max(1, math.ceil(total / self.LOG_LINES_PER_RUN))
        final = step >= total
        due = final or step - last_step >= every or now - last_time >= self.LOG_MAX_SECONDS
        if not due or (not final and now - last_time < self.LOG_MIN_SECONDS):
            return
        parts = [f"step {step}/{total}"]
        if self._losses:
            parts.append(f"loss {sum(self._losses) / len(self._losses):.3f}")
        if rate is not None:
            parts.append(f"{rate:.1f} steps/s" if rate >= 1 else f"{1 / rate:.1f} s/step")
            if not final:
                parts.append(f"{duration_text((total - step) / rate)} left")
        self.ctx.log(", ".join(parts))
        self._logged = (now, step)
        self._losses = []

    def on_eval(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.ctx.metric({"kind": "eval", "epoch": epoch, **metrics}, force=True)

    def on_checkpoint(self, path: str, step: int) -> None:
        self.ctx.checkpoint(path, step)

    def should_stop(self) -> bool:
        return self.ctx.should_stop()

    def log(self, line: str) -> None:
        self.ctx.log(line)


@job_kind("reward_model", model=RewardModelRun, queue=conf.queue, retry=Retry.RESUME, title="reward-model run")
def reward_model_run_train(run: RewardModelRun, ctx: JobContext) -> None:
    output = run_output_dir(run)
    output.mkdir(parents=True, exist_ok=True)
    config = dict(run.config)
    if config.get("device", "auto") == "auto":
        config["device"] = conf.device()
    # Names, not directories: the log is shown to the project's managers (paths stay in the admin).
    parent = run.parent_version
    start = base_model_label(run)
    if parent is not None:
        start = f"{parent.label} (base {base_model_name_of(run) or OUTSIDE_REGISTRY})"
    ctx.log(f"training from {start} on export {run.snapshot_id}")
    from exports.services import snapshot_directory
    from rewardmodel.train import TrainConfig, train  # torch: only in the process that trains

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
    try:
        result = train(train_config, TrainingHooks(ctx))
    except TrainingCancelled:
        # A checkpoint was saved; the lifecycle records why the run stopped.
        ctx.check()
        raise RuntimeError("training stopped although no cancel was requested") from None
    ctx.log(f"finished: {_summary(result.metrics)}")
    with transaction.atomic():
        version = reward_model_version_create(run=run, metrics=result.metrics)
        fields: dict[str, Any] = {"metrics": version.metrics}
        if result.resumed_from_step is not None:
            fields["resumed_from_step"] = int(result.resumed_from_step)
        ctx.log(f"registered as {version.label}")
        ctx.succeed(**fields)


def reward_model_run_execute(*, run_id: int, worker: str | None = None) -> RewardModelVersion | None:
    """Claim, train and register one run in this process; its version, or None when it has none.

    What a worker does with the run's message; ``manage.py train_reward_model --inline`` too.
    """
    job_execute(kind="reward_model", job_id=run_id, worker=worker)
    return RewardModelVersion.objects.filter(run_id=run_id).first()


def duration_text(seconds: float) -> str:
    """A time left as people say it: "45 s", "3 min 20 s", "2 h 05 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _summary(metrics: dict[str, Any]) -> str:
    keys = [k for k in metrics if isinstance(metrics[k], int | float)][:6]
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys) or "no metrics"
