"""Downloading a reward-model version: its model directory as one streamed .tar.gz, for managers only."""

from __future__ import annotations

import io
import tarfile

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from exports.models import ExportSnapshot, ExportState
from rewardmodel.models import RewardModelRun, RewardModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(project, settings, tmp_path) -> RewardModelVersion:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    snapshot = ExportSnapshot.objects.create(project=project, state=ExportState.SUCCEEDED, content_hash="0" * 64,
                                             path="exports/" + "0" * 64, finished_at=timezone.now(), progress=1.0)  # fmt: skip
    run = RewardModelRun.objects.create(project=project, snapshot=snapshot, base_model="b",
                                        output_dir=f"rewardmodels/project-{project.pk}/run-1")  # fmt: skip
    version = RewardModelVersion.objects.create(project=project, number=3, run=run, snapshot=snapshot, base_model="b",
                                                model_dir=f"{run.output_dir}/model")  # fmt: skip
    model = settings.ARTIFACT_ROOT / version.model_dir
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"architectures": ["GPT2ForSequenceClassification"]}')
    (model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 64)
    (model / "tokenizer.json").write_text('{"model": {}}')
    (model / "metrics.json").write_text('{"accuracy": 0.75}')
    (model / "README.md").write_text("# Reward model v3\n")
    return version


def url(version: RewardModelVersion) -> str:
    return reverse("api-rm-archive", args=[version.project_id, version.number])


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_manager_downloads_the_model_directory_as_one_archive(version, manager, settings):
    response = api(manager).get(url(version))
    assert response.status_code == 200
    assert response.streaming and response["Content-Type"] == "application/gzip"
    name = f"reward-model-{version.project_id}-v3.tar.gz"
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content)), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    model = settings.ARTIFACT_ROOT / version.model_dir
    folder = name.removesuffix(".tar.gz")
    assert files == {f"{folder}/{p.name}": p.read_bytes() for p in model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "README.md"} == {
        n.split("/", 1)[1] for n in files
    }


def test_a_client_that_asks_for_the_archives_type_gets_it(version, manager, settings):
    response = api(manager).get(url(version), HTTP_ACCEPT="application/gzip")
    assert response.status_code == 200 and response["Content-Type"] == "application/gzip"
    (settings.ARTIFACT_ROOT / version.model_dir / "config.json").unlink()
    refused = api(manager).get(url(version), HTTP_ACCEPT="application/gzip")
    assert refused.status_code == 409 and refused.json()["code"] == "model_missing"


def test_a_session_download_works_from_the_page_link(version, manager):
    client = Client()
    client.force_login(manager)
    page = client.get(reverse("rewardmodel-list", args=[version.project_id])).content.decode()
    assert f'href="{url(version)}" download' in page
    response = client.get(url(version))
    assert response.status_code == 200 and response["Content-Type"] == "application/gzip"


def test_only_the_projects_managers_may_download(version, annotator, outsider):
    assert api(outsider).get(url(version)).status_code == 404
    assert api(annotator).get(url(version)).status_code == 403
    assert APIClient().get(url(version)).status_code == 401
    missing = reverse("api-rm-archive", args=[version.project_id, 9])
    assert api(annotator).get(missing).status_code == 403


def test_a_version_whose_files_are_gone_is_a_conflict_in_the_platforms_shape(version, manager, settings):
    model = settings.ARTIFACT_ROOT / version.model_dir
    (model / "config.json").unlink()  # incomplete: not a model any more
    response = api(manager).get(url(version))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "the files of v3 are missing from the artifact store",
        "code": "model_missing",
        "field": None,
    }
    for path in model.iterdir():
        path.unlink()
    model.rmdir()
    assert api(manager).get(url(version)).json()["code"] == "model_missing"
    response = api(manager).get(reverse("api-rm-archive", args=[version.project_id, 9]))
    assert response.status_code == 404 and response.json()["code"] == "no_such_version"


def test_a_model_directory_outside_the_store_or_behind_links_gives_nothing_away(version, manager, settings, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "config.json").write_text("{}")
    (secret / "id_rsa").write_text("PRIVATE KEY")
    model = settings.ARTIFACT_ROOT / version.model_dir
    (model / "id_rsa").symlink_to(secret / "id_rsa")
    (model / "more").symlink_to(secret, target_is_directory=True)
    body = b"".join(api(manager).get(url(version)).streaming_content)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
    assert not any("id_rsa" in n or "/more" in n for n in names), names

    # A row naming a directory outside ARTIFACT_ROOT (absolute, or climbing out) is refused.
    for model_dir in (str(secret), "../secret"):
        RewardModelVersion.objects.filter(pk=version.pk).update(model_dir=model_dir)
        response = api(manager).get(url(version))
        assert response.status_code == 409 and response.json()["code"] == "model_missing", model_dir
        assert "PRIVATE" not in response.content.decode() and str(secret) not in response.content.decode()
