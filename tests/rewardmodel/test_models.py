"""The registry's integrity lives in the database: these writes bypass the services on purpose."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from exports.models import ExportSnapshot, ExportState
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunState
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def snapshot():
    project = ProjectFactory()
    return ExportSnapshot.objects.create(
        project=project,
        state=ExportState.SUCCEEDED,
        progress=1.0,
        finished_at=timezone.now(),
        content_hash="h" * 64,
        path="exports/" + "h" * 64,
    )


def new_run(snapshot: ExportSnapshot, **fields) -> RewardModelRun:
    fields = {"base_model": "/models/base", **fields}
    return RewardModelRun.objects.create(project=snapshot.project, snapshot=snapshot, **fields)


def new_version(run: RewardModelRun, number: int, **fields) -> RewardModelVersion:
    return RewardModelVersion.objects.create(
        project=run.project, number=number, run=run, snapshot=run.snapshot, base_model="b", model_dir="m", **fields
    )


def refused(create) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        create()


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "exploded"},
        {"trigger": "cron"},
        {"progress": 1.5},
        {"progress": -0.1},
        {"max_attempts": 0},
        {"attempts": 4, "max_attempts": 3},
        {"step": 11, "total_steps": 10},
        {"state": RunState.SUCCEEDED, "progress": 1.0},  # finished without a time
        {"state": RunState.FAILED, "finished_at": timezone.now()},  # failed without a reason
        {"state": RunState.SUCCEEDED, "progress": 0.5, "finished_at": timezone.now()},
        {"state": RunState.RUNNING, "heartbeat_at": timezone.now(), "owner_token": "t"},  # without a worker
        {"state": RunState.RUNNING, "worker": "w", "owner_token": "t"},  # running without a heartbeat
        {"state": RunState.RUNNING, "worker": "w", "heartbeat_at": timezone.now()},  # without an owner
        {"base_model": ""},
    ],
)
def test_run_check_constraints(snapshot, fields):
    refused(lambda: new_run(snapshot, **fields))


def test_a_valid_run_of_each_state_is_accepted(snapshot):
    now = timezone.now()
    new_run(snapshot)
    new_run(
        snapshot,
        state=RunState.RUNNING,
        worker="w",
        owner_token="t",
        heartbeat_at=now,
        attempts=1,
        step=3,
        total_steps=10,
    )
    new_run(snapshot, state=RunState.SUCCEEDED, progress=1.0, finished_at=now)
    new_run(snapshot, state=RunState.FAILED, error="ValueError: x", finished_at=now)
    new_run(snapshot, state=RunState.CANCELLED, finished_at=now)
    assert RewardModelRun.objects.count() == 5


def test_one_version_per_run_numbered_once_per_project(snapshot):
    run, other = new_run(snapshot), new_run(snapshot)
    new_version(run, 1)
    refused(lambda: new_version(run, 2))  # a second version of the same run
    refused(lambda: new_version(other, 1))  # number 1 taken in this project
    refused(lambda: new_version(other, 0))
    new_version(other, 2)


def test_at_most_one_active_version_per_project(snapshot):
    runs = [new_run(snapshot) for _ in range(3)]
    new_version(runs[0], 1, is_active=True)
    new_version(runs[1], 2, is_active=False)
    refused(lambda: new_version(runs[2], 3, is_active=True))
    # Another project has its own active version.
    project = ProjectFactory()
    theirs = ExportSnapshot.objects.create(
        project=project,
        state=ExportState.SUCCEEDED,
        progress=1.0,
        finished_at=timezone.now(),
        content_hash="a",
        path="p",
    )
    new_version(new_run(theirs), 1, is_active=True)


def test_a_snapshot_that_trained_a_model_cannot_be_deleted(snapshot):
    from django.db.models import RestrictedError

    # Alone, that is: deleting its project deletes both (tests/annotation/test_project_delete.py).
    new_run(snapshot)
    with pytest.raises(RestrictedError):
        snapshot.delete()
