"""Imports end to end: upload, the job row, the worker's run, and what the manager reads back."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from annotation import import_jobs
from annotation import jobs as import_kind
from annotation.import_jobs import import_job_run
from annotation.models import ImportJob, ImportJobState, Prompt, Task
from jobs.lifecycle import deliver

API = "/api/v1"

GOOD = [
    {"id": "x1", "prompt": "Why is the sky blue?", "responses": ["Rayleigh scattering.", "Because."]},
    {"id": "x2", "prompt": "Name a prime.", "responses": ["7", "9"]},
]


def jsonl(items) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACT_ROOT


@pytest.fixture
def sent(job_messages):
    """Messages sent to the broker, instead of sending them."""
    return job_messages


def upload(client, project, content: bytes, *, name="items.jsonl", format="jsonl", options=None):
    data = {"file": SimpleUploadedFile(name, content), "format": format}
    if options is not None:
        data["options"] = options
    return client.post(f"{API}/projects/{project.pk}/imports/", data, format="multipart")


@pytest.mark.django_db
class TestUpload:
    def test_upload_stores_the_file_queues_the_job_after_commit_and_the_worker_imports_it(
        self, project, manager, sent, artifacts, django_capture_on_commit_callbacks
    ):
        client = client_for(manager)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = upload(client, project, jsonl(GOOD))
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["state"] == "queued" and body["file_name"] == "items.jsonl" and body["created_by"] == "manager"
        assert "file_path" not in body
        assert len(callbacks) == 1 and sent == [("import", body["id"], "imports")]

        job = ImportJob.objects.get(pk=body["id"])
        stored = Path(job.file_path)
        assert stored.parent == artifacts / "imports" and stored.name.endswith("-items.jsonl")
        assert stored.read_bytes() == jsonl(GOOD)
        assert not Task.objects.exists()  # nothing happens before the worker runs

        sent.run(0)  # what the worker does with the message

        detail = client.get(f"{API}/projects/{project.pk}/imports/{job.pk}/").json()
        assert detail["state"] == "succeeded" and detail["progress"] == 1.0
        assert detail["summary"]["prompts"] == 2 and detail["summary"]["tasks"] == 2
        assert detail["errors"] == [] and detail["attempts"] == 1
        assert Task.objects.filter(project=project).count() == 2
        assert [j["id"] for j in client.get(f"{API}/projects/{project.pk}/imports/").json()["results"]] == [job.pk]

    @pytest.mark.parametrize(
        "name", ["../../etc/passwd", "..\\..\\win.ini", "..", "  ", "/abs/../x.jsonl", "a" * 300 + ".jsonl.gz"]
    )
    def test_the_client_file_name_never_becomes_a_path(self, project, manager, artifacts, name):
        # Django's upload parser already strips directories; import_job_create must not rely on it.
        class HostileUpload:
            def __init__(self) -> None:
                self.name = name

            def chunks(self):
                yield jsonl(GOOD)

        job = import_jobs.import_job_create(
            project=project, user=manager, uploaded_file=HostileUpload(), format="jsonl", options={}
        )
        stored = Path(job.file_path)
        assert stored.resolve().parent == (artifacts / "imports").resolve()
        assert stored.read_bytes() == jsonl(GOOD)
        assert "/" not in job.file_name and "\\" not in job.file_name and job.file_name not in ("", "..")
        assert len(stored.name) <= 133  # 32 hex digits, a dash and at most 100 characters
        if name.endswith(".jsonl.gz"):
            assert stored.name.endswith(".jsonl.gz")  # the extension survives the shortening

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"format": "csv"}, "format"),
            ({"options": "{not json"}, "options"),
            ({"options": "[1, 2]"}, "options"),
            ({"format": "mt-bench", "options": '{"questions": "/etc/passwd"}'}, "options"),
        ],
    )
    def test_bad_requests_are_400_and_store_nothing(self, project, manager, sent, artifacts, fields, field):
        data = {"file": SimpleUploadedFile("a.jsonl", jsonl(GOOD)), "format": "jsonl", **fields}
        response = client_for(manager).post(f"{API}/projects/{project.pk}/imports/", data, format="multipart")
        assert response.status_code == 400
        assert field in response.json()
        assert not ImportJob.objects.exists() and sent == []
        assert not (artifacts / "imports").exists() or not any((artifacts / "imports").iterdir())

    @pytest.mark.parametrize(
        "options",
        [
            '{"max_trees": NaN}',
            '{"annotator_prefix": "oa-", "max_trees": Infinity}',
            '{"max_trees": -Infinity}',
            '{"max_trees": 1e400}',
            '{"max_trees": [{"deeper": NaN}]}',
        ],
    )
    def test_nan_or_infinity_in_an_option_is_400_naming_it(self, project, manager, options):
        # They reached the database, which refused the job's row: a 500.
        response = upload(client_for(manager), project, jsonl(GOOD), format="oasst", options=options)
        assert response.status_code == 400
        assert response.json() == {
            "options": ["max_trees: NaN, Infinity and numbers too large for a float are not valid JSON."]
        }
        assert not ImportJob.objects.exists()

    def test_deeply_nested_options_are_400(self, project, manager):
        options = '{"max_trees": ' + "[" * 5_000 + "]" * 5_000 + "}"
        response = upload(client_for(manager), project, jsonl(GOOD), format="oasst", options=options)
        assert response.status_code == 400 and "nested deeper than" in response.json()["options"][0]
        assert not ImportJob.objects.exists()

    def test_a_missing_or_empty_file_is_400(self, project, manager, sent):
        client = client_for(manager)
        no_file = client.post(f"{API}/projects/{project.pk}/imports/", {"format": "jsonl"}, format="multipart")
        assert no_file.status_code == 400 and "file" in no_file.json()
        assert upload(client, project, b"").status_code == 400
        assert not ImportJob.objects.exists()

    def test_json_bodies_are_refused(self, project, manager, sent):
        response = client_for(manager).post(f"{API}/projects/{project.pk}/imports/", {"format": "jsonl"}, format="json")
        assert response.status_code == 415

    def test_an_unreachable_broker_fails_the_job_visibly(self, project, manager, broker_down):
        response = upload(client_for(manager), project, jsonl(GOOD))
        deliver("import", response.json()["id"])
        job = ImportJob.objects.get()
        assert job.state == ImportJobState.FAILED
        assert "task queue" in job.errors[0]["message"]


@pytest.mark.django_db
class TestRun:
    @pytest.fixture
    def job(self, project, manager, sent):
        def create(content: bytes, **kwargs) -> ImportJob:
            response = upload(client_for(manager), project, content, **kwargs)
            assert response.status_code == 202, response.content
            return ImportJob.objects.get(pk=response.json()["id"])

        return create

    def test_a_bad_file_fails_with_file_line_field_errors_and_changes_nothing(self, project, manager, job):
        bad = [
            GOOD[0],
            {"id": "x2", "prompt": "Q", "responses": ["only one"]},
            {"id": "x3", "prompt": "", "responses": ["a", "b"]},
        ]
        created = job(jsonl(bad), name="bad.jsonl")
        result = import_job_run(job_id=created.pk)
        assert result.state == ImportJobState.FAILED
        body = client_for(manager).get(f"{API}/projects/{project.pk}/imports/{created.pk}/").json()
        assert body["state"] == "failed"
        by_line = {e["line"]: e for e in body["errors"]}
        assert set(by_line) == {2, 3}
        assert all(e["file"] == "bad.jsonl" for e in body["errors"])
        assert by_line[2]["field"] == "responses" and by_line[3]["field"] == "prompt"
        assert all(e["message"] for e in body["errors"])
        assert not Prompt.objects.exists() and not Task.objects.exists()

    def test_a_redelivered_message_for_a_finished_job_does_nothing(self, project, job):
        created = job(jsonl(GOOD))
        first = import_job_run(job_id=created.pk)
        again = import_job_run(job_id=created.pk)
        assert first.state == again.state == ImportJobState.SUCCEEDED
        assert again.attempts == 1 and again.finished_at == first.finished_at
        assert Task.objects.count() == 2

    def test_a_job_left_running_by_a_dead_worker_runs_again(self, project, job):
        created = job(jsonl(GOOD))
        ImportJob.objects.filter(pk=created.pk).update(
            state=ImportJobState.RUNNING,
            attempts=1,
            worker="dead",
            owner_token="dead",
            heartbeat_at=timezone.now() - timedelta(hours=1),
        )
        result = import_job_run(job_id=created.pk)
        assert result.state == ImportJobState.SUCCEEDED and result.attempts == 2
        assert Task.objects.count() == 2

    def test_a_crash_fails_the_job_with_one_line_and_applies_nothing(self, project, job, monkeypatch):
        real_import = import_kind.import_file

        def crash_after_writing(**kwargs):
            real_import(**kwargs)  # everything written ...
            raise RuntimeError("disk on fire\nsecond line of detail")  # ... then a crash

        monkeypatch.setattr(import_kind, "import_file", crash_after_writing)
        created = job(jsonl(GOOD))
        result = import_job_run(job_id=created.pk)
        assert result.state == ImportJobState.FAILED
        assert result.error == "RuntimeError: disk on fire" and "second line of detail" in result.traceback
        assert result.errors == [{"message": "RuntimeError: disk on fire"}]
        assert not Prompt.objects.exists() and not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_while_the_import_runs(postgres_only, project, manager, sent, monkeypatch):
    """On PostgreSQL progress is committed on a side connection, outside the import's transaction."""
    seen: list[float] = []

    def slow_import(*, progress, **kwargs):
        progress(0.4)
        observer = connections.create_connection("default")
        try:
            with observer.cursor() as cursor:
                cursor.execute("SELECT progress FROM annotation_importjob WHERE id = %s", [job.pk])
                seen.append(cursor.fetchone()[0])
        finally:
            observer.close()
        raise RuntimeError("stop here")

    response = upload(client_for(manager), project, jsonl(GOOD))
    job = ImportJob.objects.get(pk=response.json()["id"])
    monkeypatch.setattr(import_kind, "import_file", slow_import)
    assert import_job_run(job_id=job.pk).state == ImportJobState.FAILED
    assert seen == [0.4]


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_delivery_that_loses_the_race_rolls_back(postgres_only, project, manager, sent, monkeypatch):
    """Two deliveries of one message ran at once; the other committed first, so this one undoes itself."""
    real_import = import_kind.import_file

    def other_delivery_finishes_meanwhile(**kwargs):
        summary = real_import(**kwargs)
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute(
                    "UPDATE annotation_importjob SET state = 'succeeded', progress = 1, finished_at = now(), "
                    "owner_token = '', summary = '{\"by\": \"other\"}' WHERE id = %s",
                    [job.pk],
                )
        finally:
            other.close()
        return summary

    response = upload(client_for(manager), project, jsonl(GOOD))
    job = ImportJob.objects.get(pk=response.json()["id"])
    monkeypatch.setattr(import_kind, "import_file", other_delivery_finishes_meanwhile)
    result = import_job_run(job_id=job.pk)
    assert result.state == ImportJobState.SUCCEEDED and result.summary == {"by": "other"}
    assert not Task.objects.exists()  # this run's rows were rolled back (the other run's are its own)
