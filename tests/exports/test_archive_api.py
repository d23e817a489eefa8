"""Downloading an export snapshot as one streamed .tar.gz: every listed file, for managers only."""

from __future__ import annotations

import io
import shutil
import tarfile

import pytest
from django.test import Client
from django.urls import reverse

from exports.models import ExportSnapshot
from tests.exports import test_api as shared
from tests.exports.helpers import directory
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db
artifacts, sent, judged, finished = shared.artifacts, shared.sent, shared.judged, shared.finished
client_for = shared.client_for


def url(snapshot: ExportSnapshot) -> str:
    return reverse("api-export-archive", args=[snapshot.project_id, snapshot.pk])


def unpack(response) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_the_manager_downloads_every_file_of_a_snapshot_in_one_archive(finished, manager):
    response = client_for(manager).get(url(finished))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/gzip"
    assert response["Content-Disposition"] == f'attachment; filename="export-{finished.pk}.tar.gz"'
    assert response["Cache-Control"] == "no-store"  # judgements inside, like the single files
    files = unpack(response)
    assert list(files) == [f"export-{finished.pk}/{name}" for name in finished.file_names]
    assert any("/batches/" in name for name in files)  # the batch files keep their folder
    for name in finished.file_names:
        assert files[f"export-{finished.pk}/{name}"] == (directory(finished) / name).read_bytes()


def test_a_client_that_asks_for_the_archives_type_gets_it(finished, manager):
    response = client_for(manager).get(url(finished), HTTP_ACCEPT="application/gzip")
    assert response.status_code == 200 and response["Content-Type"] == "application/gzip"


def test_the_exports_page_links_the_archive_and_a_session_downloads_it(finished, manager):
    client = Client()
    client.force_login(manager)
    page = client.get(reverse("project-exports", args=[finished.project_id])).content.decode()
    assert f'<a href="{url(finished)}" download id="export-{finished.pk}-archive">' in page
    response = client.get(url(finished))
    assert response.status_code == 200 and len(unpack(response)) == len(finished.file_names)


def test_only_the_projects_managers_may_download(finished, annotator, outsider):
    assert client_for(outsider).get(url(finished)).status_code == 404
    assert client_for(annotator).get(url(finished)).status_code == 403
    assert client_for().get(url(finished)).status_code == 401
    other = ProjectFactory(name="Elsewhere")
    foreign = ExportSnapshot.objects.create(project=other)
    through_own = f"/api/v1/projects/{finished.project_id}/exports/{foreign.pk}/archive/"
    assert client_for(annotator).get(through_own).status_code == 403


def test_unfinished_or_gone_snapshots_are_conflicts_in_the_platforms_shape(judged, finished, manager, sent):
    queued = client_for(manager).post(f"/api/v1/projects/{judged.pk}/exports/", {}, format="json").json()
    response = client_for(manager).get(f"/api/v1/projects/{judged.pk}/exports/{queued['id']}/archive/")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"export {queued['id']} is queued: it has no files",
        "code": "not_ready",
        "field": None,
    }
    (directory(finished) / "pairs.jsonl").unlink()
    response = client_for(manager).get(url(finished), HTTP_ACCEPT="application/gzip")
    assert response.status_code == 409 and response.json()["code"] == "files_missing"  # JSON all the same
    assert "pairs.jsonl is gone" in response.json()["detail"]
    shutil.rmtree(directory(finished))
    response = client_for(manager).get(url(finished))
    assert response.status_code == 409 and response.json()["code"] == "files_missing"
    assert str(directory(finished)) not in response.content.decode()


def test_a_listed_file_replaced_by_a_link_is_refused(finished, manager, tmp_path):
    (tmp_path / "secret").write_text("hunter2")
    target = directory(finished) / "pairs.jsonl"
    target.unlink()
    target.symlink_to(tmp_path / "secret")
    response = client_for(manager).get(url(finished))
    assert response.status_code == 409 and "hunter2" not in response.content.decode()
