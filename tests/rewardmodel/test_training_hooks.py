"""The training hooks' speed and progress lines: steps/s on each step point, throttled log lines between checkpoints."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rewardmodel.jobs import TrainingHooks, duration_text
from tests.rewardmodel import test_services as shared


class FakeContext:
    """What TrainingHooks uses of a JobContext, recorded."""

    def __init__(self) -> None:
        self.step = 0
        self.points: list[dict[str, Any]] = []
        self.lines: list[str] = []

    def forget_history_after(self, step: int) -> None: ...

    def set(self, **fields: Any) -> None: ...

    def progress(self, **kwargs: Any) -> None: ...

    def metric(self, point: dict[str, Any], **kwargs: Any) -> None:
        self.points.append(point)

    def log(self, line: str) -> None:
        self.lines.append(line)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(total: int, seconds_per_step: float, *, start: int = 0, loss=lambda step: 0.7 - step * 1e-4):
    ctx, clock = FakeContext(), Clock()
    hooks = TrainingHooks(ctx, clock=clock)
    hooks.on_start(total, {"resumed_from_step": start or None})
    for step in range(start + 1, total + 1):
        clock.now += seconds_per_step
        hooks.on_step(step, total, {"loss": loss(step), "accuracy": 0.5})
    return ctx


def test_a_run_logs_about_twenty_progress_lines_with_loss_speed_and_time_left():
    ctx = run(400, 1 / 3.125)
    progress = [line for line in ctx.lines if line.startswith("step ")]
    assert len(progress) == 20
    assert progress[5] == "step 120/400, loss 0.689, 3.1 steps/s, 1 min 30 s left"
    assert progress[-1] == "step 400/400, loss 0.661, 3.1 steps/s"  # the last one: nothing left
    # The loss of a line is the mean over the steps since the previous one.
    assert re.match(r"step 20/400, loss 0\.699,", progress[0])
    # Every step point carries the measured speed.
    assert [p["steps_per_second"] for p in ctx.points[1:]] == pytest.approx([3.125] * 399)


def test_a_fast_run_does_not_flood_the_log():
    ctx = run(5000, 0.0004)  # 2 s in all
    assert ctx.lines == [f"step 5000/5000, loss {0.7 - 0.5 * 1e-4 * 5001:.3f}, 2500.0 steps/s"]


def test_a_slow_run_says_something_every_five_minutes():
    ctx = run(100_000, 10.0, loss=lambda step: 0.5)
    lines = ctx.lines[:3]
    assert lines[0] == "step 30/100000, loss 0.500, 10.0 s/step, 277 h 41 min left"
    assert [line.split(",")[0] for line in lines] == ["step 30/100000", "step 60/100000", "step 90/100000"]


def test_speed_follows_the_last_minute_and_a_resumed_attempt_measures_afresh():
    ctx, clock = FakeContext(), Clock()
    hooks = TrainingHooks(ctx, clock=clock)
    hooks.on_start(1000, {"resumed_from_step": 200})
    for step in range(201, 601):
        clock.now += 1.0 if step <= 300 else 0.25  # it gets faster
        hooks.on_step(step, 1000, {"loss": 0.5})
    assert ctx.points[-1]["steps_per_second"] == pytest.approx(4.0, rel=0.05)
    assert ctx.points[0]["steps_per_second"] == pytest.approx(1.0)  # resumed at 200: counted from there


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0 s"), (45, "45 s"), (90.3, "1 min 30 s"), (3600, "1 h 00 min"), (7500, "2 h 05 min")]
)
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


tiny_base = shared.tiny_base  # a session fixture


@pytest.mark.django_db
def test_a_real_run_records_its_speed_and_a_progress_line(settings, tmp_path, tiny_base):
    from rewardmodel import jobs
    from rewardmodel.models import RewardModelRun
    from tests.rewardmodel.test_services import FAST, make_run, rule_project, rule_snapshot

    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    settings.REWARDMODEL_BASE_MODELS = {"tiny-gpt2": str(tiny_base)}
    project = rule_project()
    run = make_run(project, rule_snapshot(project), "tiny-gpt2")
    jobs.reward_model_run_execute(run_id=run.pk, worker="w")
    run = RewardModelRun.objects.get(pk=run.pk)
    total = run.total_steps
    assert total and FAST["epochs"] == 1
    steps = [p for p in run.metrics_history if p["kind"] == "step"]
    assert all(p["steps_per_second"] > 0 for p in steps)
    lines = [line for line in run.log_tail if re.search(rf"step {total}/{total}, loss \d\.\d{{3}}, ", line)]
    assert len(lines) == 1, run.log_tail
