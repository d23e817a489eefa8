"""The one job lifecycle, the same for every kind: claim, ownership, progress, cancel, reaper, send."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from annotation.models import ImportJob
from exports.models import ExportSnapshot
from jobs.lifecycle import (
    JobAlreadyFinished,
    deliver,
    job_cancel,
    job_claim,
    job_create,
    job_execute,
    job_send,
    jobs_reap,
)
from jobs.models import JobState
from jobs.registry import all_kinds, get_kind, kind_of
from rewardmodel.models import RewardModelRun
from tests.factories import ProjectFactory
from tests.jobkinds.models import CountdownJob

KINDS = ["import", "export", "reward_model", "countdown"]


def queued_job(label: str, project=None):
    """A queued row of each kind, made the way its service makes it (minus the work)."""
    project = project or ProjectFactory()
    if label == "import":
        return job_create(ImportJob, project=project, format="jsonl", file_name="a.jsonl", file_path="/nowhere")
    if label == "export":
        return job_create(ExportSnapshot, project=project)
    if label == "reward_model":
        snapshot = ExportSnapshot.objects.create(
            project=project, state=JobState.SUCCEEDED, progress=1.0, finished_at=timezone.now(), content_hash="h",
            path="p",
        )  # fmt: skip
        return job_create(RewardModelRun, project=project, snapshot=snapshot, base_model="/models/base")
    return job_create(CountdownJob, project=project, steps=3)


def test_every_kind_is_registered_with_its_queue_and_retry_policy():
    kinds = {kind.label: kind for kind in all_kinds()}
    assert {"import", "export", "reward_model", "countdown"} <= set(kinds)
    assert (kinds["import"].retry.value, kinds["export"].retry.value, kinds["reward_model"].retry.value) == (
        "rollback",
        "restart",
        "resume",
    )
    assert kinds["reward_model"].queue_name() == "gpu" and kinds["export"].queue_name() == "default"
    assert kind_of(ExportSnapshot).label == "export" and ExportSnapshot().kind == "export"


@pytest.mark.django_db
@pytest.mark.parametrize("label", KINDS)
def test_claim_runs_once_takes_over_a_stale_job_and_gives_up_when_attempts_run_out(label, settings):
    settings.JOB_HEARTBEAT_STALE_SECONDS = 60
    kind = get_kind(label)
    job = queued_job(label)
    first = job_claim(kind=kind, job_id=job.pk, worker="w1")
    assert first is not None and first.job.state == JobState.RUNNING and first.job.attempts == 1 and first.token
    # A duplicate delivery while w1 beats: nothing happens.
    assert job_claim(kind=kind, job_id=job.pk, worker="w2") is None
    # w1 goes silent: a redelivered message takes the job over, under a new owner token.
    kind.model.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    second = job_claim(kind=kind, job_id=job.pk, worker="w2")
    assert second is not None and second.job.attempts == 2 and second.token != first.token and second.retried
    assert any("w1 stopped beating" in line for line in second.job.log_tail)
    # Out of attempts: failed, saying why.
    kind.model.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=5), attempts=job.max_attempts
    )
    assert job_claim(kind=kind, job_id=job.pk, worker="w3") is None
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "gave up after" in job.error and job.finished_at is not None
    # Finished: nothing to do, and a missing row is dropped.
    assert job_claim(kind=kind, job_id=job.pk, worker="w4") is None
    assert job_claim(kind=kind, job_id=10**9, worker="w4") is None


@pytest.mark.django_db
@pytest.mark.parametrize("label", KINDS)
def test_cancel_is_at_once_when_queued_and_requested_when_running(label):
    kind = get_kind(label)
    queued = queued_job(label)
    cancelled = job_cancel(job=queued)
    assert cancelled.state == JobState.CANCELLED and cancelled.finished_at is not None
    assert job_claim(kind=kind, job_id=queued.pk, worker="w") is None  # the message arrives anyway
    with pytest.raises(JobAlreadyFinished):
        job_cancel(job=cancelled)

    running = queued_job(label)
    job_claim(kind=kind, job_id=running.pk, worker="w")
    requested = job_cancel(job=running)
    assert requested.state == JobState.RUNNING and requested.cancel_requested
    assert "cancel requested" in requested.log_tail[-1]


@pytest.mark.django_db
def test_writes_land_only_while_the_attempt_owns_the_job(settings):
    """The reaper handed the job to another attempt: this one's next write notices, and it stops."""
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0
    job = job_create(CountdownJob, project=ProjectFactory(), steps=10)
    from tests.jobkinds import jobs as countdown_module

    real_sleep = time.sleep
    calls = []

    def taken_over_at_step_3(seconds):
        calls.append(seconds)
        if len(calls) == 3:
            CountdownJob.objects.filter(pk=job.pk).update(owner_token="someone-else")
        real_sleep(0)

    countdown_module.time.sleep = taken_over_at_step_3
    try:
        after = job_execute(kind="countdown", job_id=job.pk, worker="w")
    finally:
        countdown_module.time.sleep = real_sleep
    assert after.state == JobState.RUNNING and after.owner_token == "someone-else" and after.result is None
    assert len(calls) == 3 and after.step == 2  # stopped at the first write after the takeover


@pytest.mark.django_db
def test_a_cancel_is_seen_at_the_next_progress_write_and_nothing_is_recorded(settings):
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0
    job = job_create(CountdownJob, project=ProjectFactory(), steps=10)
    from tests.jobkinds import jobs as countdown_module

    real_sleep = time.sleep
    calls = []

    def cancel_at_step_4(seconds):
        calls.append(seconds)
        if len(calls) == 4:
            job_cancel(job=job)
        real_sleep(0)

    countdown_module.time.sleep = cancel_at_step_4
    try:
        after = job_execute(kind="countdown", job_id=job.pk, worker="w")
    finally:
        countdown_module.time.sleep = real_sleep
    assert after.state == JobState.CANCELLED and after.result is None and len(calls) == 4
    assert after.owner_token == "" and "cancelled" in after.log_tail[-1]


@pytest.mark.django_db
def test_progress_writes_are_throttled(settings, django_assert_max_num_queries):
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 3600
    job = job_create(CountdownJob, project=ProjectFactory(), steps=200)
    # 200 steps: the claim, the success and a handful of statements, not one write per step.
    with django_assert_max_num_queries(20):
        after = job_execute(kind="countdown", job_id=job.pk, worker="w")
    assert after.state == JobState.SUCCEEDED and after.result == 200 and after.step == 200 and after.progress == 1.0


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_beats_while_the_job_reports_nothing(settings):
    settings.JOB_HEARTBEAT_STALE_SECONDS = 0.8  # beats every 0.2 s
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 3600
    job = job_create(CountdownJob, project=ProjectFactory(), steps=1, pause_seconds=1.5)
    seen = []

    def watch() -> None:
        try:
            for _ in range(12):
                time.sleep(0.1)
                row = CountdownJob.objects.get(pk=job.pk)
                if row.state == JobState.RUNNING:
                    seen.append(row.heartbeat_at)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    after = job_execute(kind="countdown", job_id=job.pk, worker="w")
    watcher.join()
    assert after.state == JobState.SUCCEEDED
    assert len(set(seen)) >= 3, seen  # the heartbeat moved during a 1.5 s step with no report


@pytest.mark.django_db
@pytest.mark.parametrize("label", KINDS)
def test_send_waits_for_the_commit_and_a_broker_that_is_down_fails_the_job(
    label, job_messages, django_capture_on_commit_callbacks, monkeypatch
):
    job = queued_job(label)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with transaction.atomic():
            job_send(job)
        assert job_messages == []  # nothing before the commit
    callbacks[0]()
    assert job_messages == [(label, job.pk, get_kind(label).queue_name())]

    from jobs.tasks import run_job

    def refused(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(run_job, "apply_async", refused)
    deliver(label, job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "could not reach the task queue" in job.error
    assert "Connection refused" in job.errors[0]["message"]


@pytest.mark.django_db
def test_one_reaper_for_every_kind(settings, job_messages, django_capture_on_commit_callbacks):
    settings.JOB_HEARTBEAT_STALE_SECONDS = 60
    now = timezone.now()
    dead = now - timedelta(seconds=61)
    expected = []
    for label in KINDS:
        kind = get_kind(label)
        lost, exhausted, cancelling, alive = (queued_job(label) for _ in range(4))
        for job in (lost, exhausted, cancelling, alive):
            job_claim(kind=kind, job_id=job.pk, worker="w")
        kind.model.objects.filter(pk__in=[lost.pk, exhausted.pk, cancelling.pk]).update(heartbeat_at=dead)
        kind.model.objects.filter(pk=exhausted.pk).update(attempts=exhausted.max_attempts)
        kind.model.objects.filter(pk=cancelling.pk).update(cancel_requested=True)
        expected += [(label, lost.pk, "requeued"), (label, exhausted.pk, "failed"), (label, cancelling.pk, "cancelled")]
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = jobs_reap(now=now)
    assert sorted((r.kind, r.job_id, r.outcome) for r in outcomes) == sorted(expected)
    assert sorted(job_messages) == sorted((k, pk, get_kind(k).queue_name()) for k, pk, o in expected if o == "requeued")
    assert jobs_reap(now=now) == []  # nothing twice


@pytest.mark.django_db
def test_the_job_command_lists_shows_waits_for_and_cancels_any_kind(settings):
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0
    project = ProjectFactory()
    done = job_create(CountdownJob, project=project, steps=4)
    job_execute(kind="countdown", job_id=done.pk, worker="w")
    queued = job_create(CountdownJob, project=project, steps=4)
    out = StringIO()
    call_command("jobs", "list", "--project", str(project.pk), stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].split()[:2] == ["countdown", str(queued.pk)] and "queued" in lines[0]
    assert lines[1].split()[:2] == ["countdown", str(done.pk)] and "succeeded" in lines[1]
    out = StringIO()
    call_command("jobs", "wait", "countdown", str(done.pk), stdout=out)
    assert "succeeded" in out.getvalue()
    call_command("jobs", "cancel", "countdown", str(queued.pk), stdout=StringIO())
    assert CountdownJob.objects.get(pk=queued.pk).state == JobState.CANCELLED
    with pytest.raises(CommandError, match="no job kind 'nope'"):
        call_command("jobs", "show", "nope", "1")
    with pytest.raises(CommandError, match="cancelled"):
        call_command("jobs", "wait", "countdown", str(queued.pk), stdout=StringIO())


def test_the_trivial_kind_is_three_pieces():
    """A model subclass, a function and a registry line: nothing else was written for it."""
    root = Path(__file__).resolve().parents[1] / "jobkinds"
    assert sorted(p.name for p in root.glob("*.py")) == ["__init__.py", "apps.py", "jobs.py", "models.py"]
