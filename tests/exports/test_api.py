"""The export API: managers create, list, read and download; everybody else is refused.

Personas: anonymous (401), an annotator of another project (404: the project does not
exist for them), an annotator of the project (403), the manager (success).
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from exports.models import ExportSnapshot, ExportState
from tests.exports.helpers import add_task, directory, judge
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db
API = "/api/v1"


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    cache.clear()  # the anonymous throttle counts in the cache
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACT_ROOT


@pytest.fixture
def sent(job_messages):
    """Messages for the broker, recorded instead of sent."""
    return job_messages


@pytest.fixture
def judged(project):
    project.allow_ties = True
    project.save()
    for _ in range(12):
        task, (a, b) = add_task(project)
        for n in range(3):
            judge(task, f"voter{n}", [[a], [b]] if n else [[a, b]])
    return project


@pytest.fixture
def finished(judged, manager, sent, django_capture_on_commit_callbacks) -> ExportSnapshot:
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(manager).post(f"{API}/projects/{judged.pk}/exports/", {}, format="json")
    assert response.status_code == 202, response.content
    sent.run(-1)  # what the worker does with the message
    return ExportSnapshot.objects.get(pk=response.json()["id"])


def test_manager_creates_an_export_that_a_worker_runs_after_commit(
    judged, manager, sent, django_capture_on_commit_callbacks
):
    client = client_for(manager)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            f"{API}/projects/{judged.pk}/exports/",
            {"threshold": 0.6, "tie_policy": "abstain", "exclude_annotators": ["voter2"], "batch_pairs": 5},
            format="json",
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "queued" and body["created_by"] == "manager" and body["files"] == []
    assert body["params"]["threshold"] == 0.6 and body["params"]["tie_policy"] == "abstain"
    assert len(body["params"]["exclude_annotators"]) == 1
    assert len(callbacks) == 1 and sent == [("export", body["id"], "default")]

    sent.run(0)
    detail = client.get(f"{API}/projects/{judged.pk}/exports/{body['id']}/").json()
    assert detail["state"] == "succeeded" and detail["progress"] == 1.0
    assert len(detail["content_hash"]) == 64 and detail["source_judgements"] == 36
    assert detail["manifest"]["content_hash"] == detail["content_hash"]
    assert detail["manifest"]["parameters"] == detail["params"]
    names = [f["name"] for f in detail["files"]]
    assert names[0] == "manifest.json" and {"pairs.jsonl", "pairs.parquet", "groups.jsonl"} <= set(names)
    assert all(f["url"].startswith("http://testserver/api/v1/projects/") for f in detail["files"])

    listed = client.get(f"{API}/projects/{judged.pk}/exports/").json()
    assert [e["id"] for e in listed["results"]] == [body["id"]]
    assert "manifest" not in listed["results"][0]


def test_files_download_streamed_as_attachments(finished, manager):
    client = client_for(manager)
    detail = client.get(f"{API}/projects/{finished.project_id}/exports/{finished.pk}/").json()
    for entry in detail["files"]:
        response = client.get(entry["url"])
        assert response.status_code == 200, entry["name"]
        assert response.streaming
        body = b"".join(response.streaming_content)
        assert body == (directory(finished) / entry["name"]).read_bytes()
        disposition = response["Content-Disposition"]
        assert disposition.startswith("attachment;") and entry["name"].split("/")[-1] in disposition
        if entry["name"] != "manifest.json":
            assert len(body) == entry["bytes"]
    pairs = client.get(f"{API}/projects/{finished.project_id}/exports/{finished.pk}/files/pairs.jsonl")
    assert pairs["Content-Type"] == "application/x-ndjson"
    first = json.loads(b"".join(pairs.streaming_content).splitlines()[0])
    assert set(first) >= {"prompt", "chosen", "rejected", "group_id", "weight", "vote_share"}


@pytest.mark.parametrize("name", ["nope.jsonl", "../manifest.json", "batches/../pairs.jsonl", "%2e%2e/x"])
def test_only_listed_files_can_be_downloaded(finished, manager, name):
    response = client_for(manager).get(f"{API}/projects/{finished.project_id}/exports/{finished.pk}/files/{name}")
    assert response.status_code == 404


def test_an_unfinished_export_has_no_files(judged, manager, sent):
    response = client_for(manager).post(f"{API}/projects/{judged.pk}/exports/", {}, format="json")
    snapshot_id = response.json()["id"]
    got = client_for(manager).get(f"{API}/projects/{judged.pk}/exports/{snapshot_id}/files/pairs.jsonl")
    assert got.status_code == 409 and got.json()["code"] == "not_ready"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"threshold": 0.3}, "threshold"),
        ({"tie_policy": "coin"}, "tie_policy"),
        ({"batch_pairs": 0}, "batch_pairs"),
        ({"exclude_annotators": ["ghost"]}, "exclude_annotators"),
        ({"validation_fraction": 2}, "validation_fraction"),
    ],
)
def test_bad_parameters_are_400_by_field(judged, manager, sent, payload, field):
    response = client_for(manager).post(f"{API}/projects/{judged.pk}/exports/", payload, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not ExportSnapshot.objects.exists() and sent == []


def test_batch_pairs_below_the_largest_group_is_refused(manager):
    project = ProjectFactory(kind="ranking", responses_per_task=4)
    from annotation.models import Membership, Role

    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    response = client_for(manager).post(f"{API}/projects/{project.pk}/exports/", {"batch_pairs": 5}, format="json")
    assert response.status_code == 400 and "at least 6" in response.json()["batch_pairs"][0]


def test_an_unreachable_broker_fails_the_export_with_a_message(
    judged, manager, broker_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(manager).post(f"{API}/projects/{judged.pk}/exports/", {}, format="json")
    snapshot = ExportSnapshot.objects.get(pk=response.json()["id"])
    assert snapshot.state == ExportState.FAILED and "task queue" in snapshot.errors[0]["message"]


class TestPersonas:
    def urls(self, snapshot: ExportSnapshot) -> list[str]:
        base = f"{API}/projects/{snapshot.project_id}/exports/"
        return [base, f"{base}{snapshot.pk}/", f"{base}{snapshot.pk}/files/pairs.jsonl"]

    def test_anonymous_is_401(self, finished):
        for url in self.urls(finished):
            assert client_for().get(url).status_code == 401, url
        assert client_for().post(self.urls(finished)[0], {}, format="json").status_code == 401

    def test_an_outsider_gets_404_as_if_nothing_existed(self, finished, outsider):
        client = client_for(outsider)
        for url in self.urls(finished):
            assert client.get(url).status_code == 404, url
        assert client.post(self.urls(finished)[0], {}, format="json").status_code == 404

    def test_an_annotator_of_the_project_is_403(self, finished, annotator, sent):
        client = client_for(annotator)
        for url in self.urls(finished):
            assert client.get(url).status_code == 403, url
        assert client.post(self.urls(finished)[0], {}, format="json").status_code == 403
        assert ExportSnapshot.objects.count() == 1

    def test_a_manager_cannot_reach_another_projects_export_through_their_own(self, finished, manager):
        other = ProjectFactory(name="Elsewhere")
        foreign = ExportSnapshot.objects.create(project=other)
        base = f"{API}/projects/{finished.project_id}/exports/{foreign.pk}/"
        assert client_for(manager).get(base).status_code == 404
        assert client_for(manager).get(base + "files/manifest.json").status_code == 404


def test_the_schema_lists_the_export_endpoints(manager):
    schema = client_for(manager).get(f"{API}/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/projects/{project_id}/exports/" in paths
    assert "/api/v1/projects/{project_id}/exports/{export_id}/files/{name}" in paths


class TestCancel:
    def url(self, snapshot: ExportSnapshot) -> str:
        return f"{API}/projects/{snapshot.project_id}/exports/{snapshot.pk}/cancel/"

    def test_the_manager_cancels_a_queued_export_and_the_message_then_does_nothing(
        self, judged, manager, sent, django_capture_on_commit_callbacks
    ):
        client = client_for(manager)
        with django_capture_on_commit_callbacks(execute=True):
            created = client.post(f"{API}/projects/{judged.pk}/exports/", {}, format="json").json()
        snapshot = ExportSnapshot.objects.get(pk=created["id"])
        response = client.post(self.url(snapshot))
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["state"] == "cancelled" and body["cancelled_by"] == "manager" and body["errors"] == []
        assert body["finished_at"] is not None and body["files"] == []
        sent.run(-1)  # the worker gets the message anyway
        snapshot.refresh_from_db()
        assert snapshot.state == ExportState.CANCELLED and snapshot.attempts == 0
        assert snapshot.cancelled_by == manager
        files = client.get(f"{API}/projects/{judged.pk}/exports/{snapshot.pk}/files/pairs.jsonl")
        assert files.status_code == 409 and "cancelled" in files.json()["detail"]

    def test_a_finished_export_cannot_be_cancelled(self, finished, manager):
        response = client_for(manager).post(self.url(finished))
        assert response.status_code == 409 and response.json()["code"] == "already_finished"
        finished.refresh_from_db()
        assert finished.state == ExportState.SUCCEEDED

    def test_only_the_projects_managers_may_cancel(self, judged, manager, annotator, outsider):
        snapshot = ExportSnapshot.objects.create(project=judged)
        assert client_for().post(self.url(snapshot)).status_code == 401
        assert client_for(outsider).post(self.url(snapshot)).status_code == 404
        assert client_for(annotator).post(self.url(snapshot)).status_code == 403
        other = ProjectFactory(name="Elsewhere")
        foreign = ExportSnapshot.objects.create(project=other)
        through_mine = f"{API}/projects/{judged.pk}/exports/{foreign.pk}/cancel/"
        assert client_for(manager).post(through_mine).status_code == 404
        assert set(ExportSnapshot.objects.values_list("state", flat=True)) == {ExportState.QUEUED}

    def test_a_session_cancel_needs_the_csrf_token(self, judged, manager):
        snapshot = ExportSnapshot.objects.create(project=judged)
        client = APIClient(enforce_csrf_checks=True)
        client.force_login(manager)
        assert client.post(self.url(snapshot)).status_code == 403
        snapshot.refresh_from_db()
        assert snapshot.state == ExportState.QUEUED


def test_the_schema_lists_the_cancel_endpoint(manager):
    paths = client_for(manager).get(f"{API}/schema/?format=json").json()["paths"]
    assert "/api/v1/projects/{project_id}/exports/{export_id}/cancel/" in paths
