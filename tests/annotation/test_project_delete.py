"""Deleting a project: every row of it goes (reward-model lineage included), and its files with them.

Reward-model runs and versions point at their export snapshot and run with RESTRICT: that
lineage cannot be deleted piecemeal, but it never blocks deleting the whole project (it was
PROTECT, and deleting a project that had trained a model was a ProtectedError, a 500).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from django.utils import timezone
from rest_framework.test import APIClient

from annotation.import_jobs import import_job_create
from annotation.models import ImportJob, Project, Prompt, Task
from exports.models import ExportSnapshot
from jobs.lifecycle import job_execute
from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion
from rewardmodel.services import reward_model_version_create
from tests.exports.helpers import directory
from tests.factories import UserFactory
from tests.rewardmodel.test_services import FAST, rule_project, rule_snapshot
from tests.rewardmodel.test_services import tiny_base as tiny_base  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    return settings.ARTIFACT_ROOT


def run_row(project: Project, snapshot: ExportSnapshot, name: str, **fields) -> RewardModelRun:
    fields = {"base_model": "/models/base", "config": FAST, **fields}
    return RewardModelRun.objects.create(
        project=project, snapshot=snapshot, output_dir=f"rewardmodels/project-{project.pk}/{name}", **fields
    )


def files_of(run: RewardModelRun) -> Path:
    """A run's directory as training leaves it: a checkpoint and the model."""
    root = Path(settings.ARTIFACT_ROOT) / run.output_dir
    for part in ("checkpoints/step-2", "model"):
        (root / part).mkdir(parents=True)
        (root / part / "model.safetensors").write_bytes(b"weights")
    return root


def queued_import(project: Project, user) -> ImportJob:
    upload = SimpleUploadedFile("items.jsonl", b'{"prompt": "q", "responses": ["a", "b"]}\n')
    return import_job_create(project=project, user=user, uploaded_file=upload, format="jsonl", options={})


def test_a_manager_deletes_a_project_that_trained_a_reward_model(
    project, manager, other_project, tiny_base, job_messages, django_capture_on_commit_callbacks
):
    rule_project(24, project=project)
    snapshot = rule_snapshot(project)
    trained = run_row(project, snapshot, "run-trained", base_model=str(tiny_base))
    job_execute(kind="reward_model", job_id=trained.pk, worker="w")
    version = RewardModelVersion.objects.get(run=trained)  # a real model on disk
    child = run_row(project, snapshot, "run-child", parent_version=version)
    RetrainRule.objects.create(project=project, min_new_pairs=5, last_run=child, pending_snapshot=snapshot)
    upload = Path(queued_import(project, manager).file_path)
    run_dir = Path(settings.ARTIFACT_ROOT) / trained.output_dir
    exported = directory(snapshot)
    assert (Path(settings.ARTIFACT_ROOT) / version.model_dir / "config.json").is_file()
    assert exported.is_dir() and upload.is_file()
    # Another project's export, which must not be touched.
    kept = rule_snapshot(rule_project(4, project=other_project))

    client = APIClient()
    client.force_authenticate(manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(f"/api/v1/projects/{project.pk}/")

    assert response.status_code == 204, response.content
    assert not Project.objects.filter(pk=project.pk).exists()
    for model in (RewardModelRun, RewardModelVersion, RetrainRule, ExportSnapshot, ImportJob, Prompt, Task):
        assert not model.objects.filter(project_id=project.pk).exists(), model.__name__
    # Its files went with it: the model and checkpoints, the export, the queued upload.
    assert not run_dir.exists() and not exported.exists() and not upload.exists()
    assert not (Path(settings.ARTIFACT_ROOT) / f"rewardmodels/project-{project.pk}").exists()
    assert ExportSnapshot.objects.filter(pk=kept.pk).exists() and directory(kept).is_dir()


def test_the_admin_deletes_a_project_that_trained_a_reward_model(client, project, django_capture_on_commit_callbacks):
    snapshot = rule_snapshot(rule_project(8, project=project))
    run = run_row(project, snapshot, "run-1")
    files = files_of(run)
    reward_model_version_create(run=run, metrics={})
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/annotation/project/{project.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not Project.objects.filter(pk=project.pk).exists() and not RewardModelRun.objects.exists()
    assert not files.exists()


def test_lineage_cannot_be_deleted_piecemeal(project):
    snapshot = rule_snapshot(rule_project(8, project=project))
    run = run_row(project, snapshot, "run-1")
    files = files_of(run)
    reward_model_version_create(run=run, metrics={})
    with pytest.raises(IntegrityError):
        snapshot.delete()
    with pytest.raises(IntegrityError):
        run.delete()
    assert files.is_dir() and RewardModelVersion.objects.filter(run=run).exists()


def test_a_run_without_a_version_can_be_deleted_with_its_files(project, django_capture_on_commit_callbacks):
    snapshot = rule_snapshot(rule_project(8, project=project))
    failed = run_row(project, snapshot, "run-failed", state="failed", finished_at=timezone.now(), error="boom")
    files = files_of(failed)
    with django_capture_on_commit_callbacks(execute=True):
        failed.delete()
    assert not files.exists()
    assert directory(snapshot).is_dir()  # the snapshot is still there, and so are its files


def test_an_export_directory_another_snapshot_names_is_kept(project, other_project, django_capture_on_commit_callbacks):
    # Content-addressed: two snapshots with the same content share one directory.
    snapshot = rule_snapshot(rule_project(8, project=project))
    twin = ExportSnapshot.objects.create(
        project=other_project,
        state=snapshot.state,
        finished_at=snapshot.finished_at,
        progress=1.0,
        content_hash=snapshot.content_hash,
        path=snapshot.path,
        manifest=snapshot.manifest,
    )
    with django_capture_on_commit_callbacks(execute=True):
        project.delete()
    assert directory(twin).is_dir()
    with django_capture_on_commit_callbacks(execute=True):
        other_project.delete()
    assert not directory(twin).exists()


def test_files_stay_when_the_deletion_rolls_back(project, django_capture_on_commit_callbacks):
    snapshot = rule_snapshot(rule_project(8, project=project))
    files = files_of(run_row(project, snapshot, "run-1"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        project.delete()
    assert callbacks and files.is_dir() and directory(snapshot).is_dir()  # nothing before the commit
