"""Imports through the API, run by a real Celery worker process on the configured broker."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import ImportJob, ImportJobState, Judgement, Prompt, Task
from jobs.lifecycle import deliver

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180)]


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def upload(client, project, name: str, content: bytes, fmt: str, options: dict | None = None):
    return client.post(
        f"/api/v1/projects/{project.pk}/imports/",
        {
            "file": SimpleUploadedFile(name, content),
            "format": fmt,
            "options": json.dumps(options or {}),
        },
        format="multipart",
    )


def finished(job_id: int):
    job = ImportJob.objects.get(pk=job_id)
    return job if job.state in (ImportJobState.SUCCEEDED, ImportJobState.FAILED) else None


def test_worker_imports_real_pandalm_file(celery_worker_process, project, manager, shared_data):
    project.allow_ties = True
    project.save()
    client = token_client(manager)
    content = (shared_data / "pandalm" / "testset-v1.json").read_bytes()
    response = upload(client, project, "testset-v1.json", content, "pandalm")
    assert response.status_code == 202, response.content
    job = celery_worker_process(lambda: finished(response.json()["id"]), timeout=150, what="the import job")
    assert job.state == ImportJobState.SUCCEEDED, job.errors
    assert job.summary["tasks"] == 999
    assert Task.objects.filter(project=project).count() == 999
    assert Judgement.objects.filter(task__project=project).count() == 999 * 3
    status = client.get(f"/api/v1/projects/{project.pk}/imports/{job.pk}/").json()
    assert status["state"] == "succeeded" and status["progress"] == 1.0


def test_worker_reports_a_bad_file_and_writes_nothing(celery_worker_process, project, manager):
    client = token_client(manager)
    lines = [
        json.dumps({"id": "a", "prompt": "Say hi", "responses": ["hi", "hello"]}),
        json.dumps({"id": "b", "prompt": "Say bye", "responses": ["bye"]}),
    ]
    response = upload(client, project, "two.jsonl", "\n".join(lines).encode(), "jsonl")
    assert response.status_code == 202
    job = celery_worker_process(lambda: finished(response.json()["id"]), what="the import job")
    assert job.state == ImportJobState.FAILED
    assert any(e["file"] == "two.jsonl" and e["line"] == 2 for e in job.errors), job.errors
    assert Prompt.objects.filter(project=project).count() == 0


def test_a_redelivered_message_imports_once(celery_worker_process, project, manager):
    client = token_client(manager)
    line = json.dumps({"id": "only", "prompt": "Pick one", "responses": ["x", "y"]})
    response = upload(client, project, "one.jsonl", line.encode(), "jsonl")
    job_id = response.json()["id"]
    celery_worker_process(lambda: finished(job_id), what="the import job")
    # The broker delivers the same message again (e.g. after a worker restart).
    for _ in range(3):
        deliver("import", job_id)
    celery_worker_process(
        lambda: ImportJob.objects.get(pk=job_id).attempts == 1 and Task.objects.filter(project=project).count() == 1,
        what="the redelivered messages",
    )
    assert ImportJob.objects.get(pk=job_id).state == ImportJobState.SUCCEEDED
    assert Task.objects.filter(project=project).count() == 1
