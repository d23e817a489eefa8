"""A manager trains, follows, compares and activates reward models in a real Chromium.

The "GPU worker" is a thread of the test process that runs the real job
(``rewardmodel.jobs.reward_model_run_execute``) when the run's message would be sent, so
the page's live progress bar and curves follow a training that is really happening.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from annotation.models import Membership, Role
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunState
from tests.e2e.conftest import UI, managed_project
from tests.factories import UserFactory
from tests.rewardmodel.test_services import rule_project, rule_snapshot
from tests.rewardmodel.tiny import build_gpt2

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


@pytest.fixture
def worker_thread(thread_worker, artifact_root, settings) -> list[threading.Thread]:
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.2
    return thread_worker


def test_manager_trains_follows_compares_and_activates(ui: UI, worker_thread: Any, tmp_path, settings) -> None:
    base = build_gpt2(tmp_path / "base")
    settings.REWARDMODEL_BASE_MODELS = {"tiny-gpt2": str(base)}  # as an operator registers a base
    project, manager = managed_project("Helpfulness RM", "rm-browser-manager")
    rule_project(64, project=project)
    snapshot = rule_snapshot(project)
    annotator = UserFactory(username="rm-browser-annotator")
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)

    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/reward-models/")
    ui.page.wait_for_selector("#train-form")
    assert "No version yet" in ui.page.inner_text("#versions-h + p")
    ui.shot("empty")

    ui.page.select_option("#id_snapshot", str(snapshot.pk))
    ui.page.select_option("#id_base_model", "tiny-gpt2")
    ui.page.fill("#id_epochs", "3")
    ui.page.fill("#id_learning_rate", "0.001")
    ui.page.click("summary")
    ui.page.fill("#id_groups_per_batch", "1")
    ui.page.fill("#id_max_length", "48")
    ui.page.check("#id_margin")
    ui.shot("form")
    ui.page.click("#start-run")
    ui.page.wait_for_url(f"**/projects/{project.pk}/reward-models/runs/*/")
    run = RewardModelRun.objects.get()
    assert run.config["margin"] is True and run.config["epochs"] == 3

    # Live: the bar and the curves move while the worker trains.
    ui.wait_until("document.getElementById('run-progress').value > 0.1", 60)
    ui.page.wait_for_selector("#loss-chart svg")
    ui.shot("training")
    ui.wait_until("document.getElementById('run-state').textContent.startsWith('Succeeded')", 120)
    ui.page.wait_for_selector("#accuracy-chart svg")
    assert ui.page.inner_text("#run-result") == "v1"
    assert "registered as v1" in ui.page.inner_text("#run-log")
    assert ui.page.eval_on_selector("#run-progress", "el => el.value") == 1
    # The base by its registered name; no server path in the live log or anywhere on the page.
    assert ui.page.inner_text("#run-base") == "tiny-gpt2"
    assert f"training from tiny-gpt2 on export {snapshot.pk}" in ui.page.inner_text("#run-log")
    assert str(tmp_path) not in ui.page.content() and str(settings.ARTIFACT_ROOT) not in ui.page.content()
    ui.shot("finished")

    # A second version, from the same page, continuing from v1.
    ui.goto(f"/projects/{project.pk}/reward-models/")
    ui.page.select_option("#id_parent_version", "1")
    ui.page.fill("#id_epochs", "1")
    ui.page.fill("#id_learning_rate", "0.001")
    ui.page.click("#start-run")
    ui.page.wait_for_url(f"**/projects/{project.pk}/reward-models/runs/*/")
    ui.wait_until("document.getElementById('run-state').textContent.startsWith('Succeeded')", 120)
    second = RewardModelRun.objects.get(version__number=2)
    assert second.parent_version.number == 1 and second.base_model.endswith("/model")

    ui.goto(f"/projects/{project.pk}/reward-models/")
    rows = ui.page.inner_text("#versions")
    assert "v1 active" in rows.replace("\n", " ").replace("\t", " ") or "active" in rows
    ui.shot("versions")

    ui.goto(f"/projects/{project.pk}/reward-models/compare/")
    ui.page.select_option("#compare-a", "1")
    ui.page.select_option("#compare-b", "2")
    ui.page.click("#compare-run")
    ui.page.wait_for_selector("#compare-result")
    agreement = float(ui.page.inner_text("#compare-agreement"))
    assert 0.0 <= agreement <= 1.0
    ui.shot("compare")

    ui.goto(f"/projects/{project.pk}/reward-models/")
    ui.page.click("#activate-2")
    ui.page.wait_for_selector("text=v2 is now the active reward model")
    assert RewardModelVersion.objects.get(is_active=True).number == 2
    ui.shot("activated")
    ui.assert_clean()

    # An annotator of the project is refused; the page says so rather than showing anything.
    ui.page.context.clear_cookies()
    ui.login(annotator.username)
    response = ui.goto(f"/projects/{project.pk}/reward-models/")
    assert response.status == 403
    assert RewardModelRun.objects.filter(state=RunState.SUCCEEDED).count() == 2
