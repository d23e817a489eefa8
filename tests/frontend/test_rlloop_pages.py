"""The policy manager pages: personas, the register / reference / new-round forms, a round's page, escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation.models import Response
from exports.models import ExportSnapshot
from jobs.models import JobState
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rlloop.models import PolicyRound, PolicyVersion
from rlloop.services import policy_register
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db

CHECKPOINT = "tiny-policy"
XSS = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def checkpoints(settings, tmp_path) -> Path:
    """One registered checkpoint directory (a config.json is all registering and queueing look at)."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    directory = tmp_path / "checkpoints" / CHECKPOINT
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    settings.POLICY_BASE_MODELS = {CHECKPOINT: str(directory)}
    settings.POLICY_MODELS_DIR = str(tmp_path / "no-models")
    return directory


def as_user(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def reward_model(project: Any, number: int = 1, *, active: bool = True) -> RewardModelVersion:
    now = timezone.now()
    snapshot = ExportSnapshot.objects.create(
        project=project, state=JobState.SUCCEEDED, progress=1.0, finished_at=now, content_hash=f"{number}" * 64,
        path=f"exports/{number}", manifest={"files": {}}, counts={"groups": {"train": 3, "validation": 1}},
    )  # fmt: skip
    run = RewardModelRun.objects.create(
        project=project, snapshot=snapshot, base_model="/srv/models/base", state=JobState.SUCCEEDED, progress=1.0,
        finished_at=now,
    )  # fmt: skip
    return RewardModelVersion.objects.create(
        project=project, number=number, run=run, snapshot=snapshot, base_model="/srv/models/base",
        model_dir=f"rm/{number}", is_active=active,
    )  # fmt: skip


def history(updates: int, *, kl_end: float, score_end: float) -> list[dict[str, Any]]:
    """Points as ``JobContext.metric`` records PPO's updates: kind, step, then the metrics."""
    points = []
    for step in range(1, updates + 1):
        t = step / updates
        points.append(
            {
                "kind": "step",
                "step": step,
                "objective/scores": score_end * t,
                "objective/rlhf_reward": score_end * t - 0.05 * kl_end * t,
                "objective/kl": kl_end * t,
                "objective/entropy": 20.0 - 5 * t,
                "losses/clipfrac": 0.1 * t,
                "losses/value_loss": 1.0 - 0.5 * t,
                "losses/policy_loss": -0.01 * t,
                "val/response_length": 30.0 + 4 * t,
                "objective/beta": 0.05,
            }
        )
    return points


def finished_round(
    project: Any, policy: PolicyVersion, rm: RewardModelVersion, number: int, *, kl: float, score: float
) -> PolicyRound:
    """A succeeded PPO round and the version it produced, as the worker leaves them."""
    points = history(4, kl_end=kl, score_end=score)
    samples = [
        {
            "step": step,
            "rows": [
                {
                    "prompt": f"Tell me a story, take {step}",
                    "response": f"Once upon a time\nthere was a river (update {step})",
                    "score": 0.25 * step,
                    "shaped_score": 0.25 * step - 0.1,
                    "kl": 0.5 * step,
                    "update": step,
                },
                {"prompt": "Say hi", "response": XSS, "score": 0.1, "shaped_score": 0.1, "kl": 0.2, "update": step},
            ],
        }
        for step in (1, 4)
    ]
    output = f"policies/project-{project.pk}/round-{number}"
    round = PolicyRound.objects.create(
        project=project, method="ppo", number=number, policy=policy, reference=policy, reward_model=rm,
        data={"prompts": "project", "max_prompts": 100}, config={"updates": 4, "learning_rate": 1e-5},
        state=JobState.SUCCEEDED, progress=1.0, step=4, total_steps=4, attempts=1, started_at=timezone.now(),
        finished_at=timezone.now(), metrics_history=points, metrics={k: v for k, v in points[-1].items() if "/" in k},
        samples=samples, output_dir=output,
        info={"device": "cuda:0", "processes": 2, "trainable_parameters": 1234567, "parameters": 135000000,
              "value": "critic copied from the policy"},
        log_tail=[f"saved the policy to /srv/artifacts/{output}/model", "update 4/4: score 1.000"],
    )  # fmt: skip
    PolicyVersion.objects.create(
        project=project, number=PolicyVersion.objects.filter(project=project).count() + 1, model_dir=f"{output}/model",
        base_model=policy.base_model, parent=policy, round=round, reward_model=rm, reference=policy,
        generation=dict(policy.generation), metrics=round.metrics,
    )  # fmt: skip
    return round


@pytest.fixture
def ready(project, manager) -> dict[str, Any]:
    """A project with prompts, a registered reference policy and an active reward model."""
    prompts = PromptFactory.create_batch(3, project=project)
    Response.objects.create(prompt=prompts[0], text="A careful answer.", source="human")
    policy = policy_register(project=project, name=CHECKPOINT, is_reference=True)
    return {"policy": policy, "rm": reward_model(project)}


@pytest.fixture
def trained(project, ready) -> list[PolicyRound]:
    return [
        finished_round(project, ready["policy"], ready["rm"], 1, kl=2.0, score=0.8),
        finished_round(project, ready["policy"], ready["rm"], 2, kl=5.0, score=1.4),
    ]


def page_data(body: str, element_id: str) -> Any:
    found = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', body, re.S)
    assert found, f"no json_script {element_id}"
    return json.loads(found.group(1))


def field_error(body: str, field_id: str) -> str:
    """The error text shown under the input ``field_id`` (empty: none)."""
    found = re.search(
        rf'<div class="field invalid[^"]*">\s*(?:<input[^>]*>\s*)?<label for="{field_id}">(.*?)</div>', body, re.S
    )
    if not found:
        return ""
    return " ".join(re.findall(r'<small class="field-error" role="alert">(.*?)</small>', found.group(1)))


def test_personas_on_every_page(project, manager, annotator, outsider, trained):
    round = trained[0]
    pages = [
        ("get", reverse("policy-list", args=[project.pk])),
        ("post", reverse("policy-list", args=[project.pk])),
        ("post", reverse("policy-register", args=[project.pk])),
        ("post", reverse("policy-reference", args=[project.pk, 2])),
        ("get", reverse("policy-round", args=[project.pk, round.pk])),
        ("post", reverse("job-cancel", args=[project.pk, "policy_round", round.pk])),
    ]
    for method, url in pages:
        assert getattr(as_user(outsider), method)(url).status_code == 404, url
        assert getattr(as_user(annotator), method)(url).status_code == 403, url
        anonymous = getattr(Client(), method)(url)
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"], url
    # Nothing the refused callers posted took effect.
    assert PolicyVersion.objects.get(project=project, is_reference=True).number == 1
    assert PolicyVersion.objects.filter(project=project).count() == 3
    assert as_user(manager).get(reverse("policy-round", args=[project.pk, 999999])).status_code == 404


def test_the_list_shows_versions_rounds_and_the_reward_vs_kl_points(project, manager, trained, checkpoints):
    response = as_user(manager).get(reverse("policy-list", args=[project.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "p1 (tiny-policy)" in body and "p2 (round 1, ppo)" in body and "p3 (round 2, ppo)" in body
    assert (
        '<span class="badge">reference</span>' in body and 'id="reference-2"' in body and 'id="reference-1"' not in body
    )
    assert "reward model v1" in body and "T 0.7 · top-p 1 · 256 tokens" in body
    assert f'<a href="/projects/{project.pk}/policies/" aria-current="page">Policies</a>' in body
    for round in trained:
        assert f'data-job-url="/api/v1/projects/{project.pk}/jobs/policy_round/{round.pk}/"' in body
    # Server paths never reach the page: the checkpoint directory, the rounds' directories.
    assert str(checkpoints) not in body and "policies/project-" not in body
    assert 'id="round-form"' in body and 'id="register-form"' in body and "rlloop.js" in body
    points = page_data(body, "rl-list-data")["rewardVsKl"]
    assert points == [
        {"name": "scored by reward model v1", "points": [[2.0, 0.8], [5.0, 1.4]], "labels": ["round 1", "round 2"]}
    ]
    policy = response["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "'nonce-" in policy


def test_a_round_page_shows_its_lineage_samples_setup_log_and_config(project, manager, trained):
    round = trained[1]
    body = as_user(manager).get(reverse("policy-round", args=[project.pk, round.pk])).content.decode()
    assert "PPO round 2" in body and "p1 (tiny-policy)" in body and "p3 (round 2, ppo)" in body
    assert 'id="round-progress"' in body and "Succeeded" in body
    # The newest sample table, escaped; the older one is a choice.
    assert "Once upon a time\nthere was a river (update 4)" in body
    assert '<option value="1">update 1</option>' in body and '<option value="4" selected>update 4</option>' in body
    assert "cuda:0" in body and "trainable_parameters" in body and "1234567" in body
    assert "learning_rate" in body and "objective/kl" in body
    # The log's absolute path is replaced, not shown.
    assert "/srv/artifacts" not in body and "saved the policy to [server path]" in body
    data = page_data(body, "rl-round-data")
    assert data["method"] == "ppo" and len(data["history"]) == 4 and data["history"][-1]["objective/kl"] == 5.0
    assert data["api"] == f"/api/v1/projects/{project.pk}/rl-rounds/{round.pk}/"
    older = as_user(manager).get(reverse("policy-round", args=[project.pk, round.pk]) + "?samples=1")
    table = older.content.decode().split('id="rl-round-data"')[0]
    assert "(update 1)" in table and "(update 4)" not in table


def test_a_sample_is_text_never_markup(project, manager, trained):
    body = as_user(manager).get(reverse("policy-round", args=[project.pk, trained[0].pk])).content.decode()
    assert XSS not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # the table
    assert "\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E" in body  # the json_script block


def test_the_new_round_form_queues_a_ppo_round_with_the_chosen_options(
    project, manager, ready, job_messages, django_capture_on_commit_callbacks
):
    form = {
        "method": "ppo", "policy": 1, "reward_model": "", "reference": "", "snapshot": "",
        "updates": 7, "rollouts_per_update": 16, "minibatch_size": 8, "ppo_epochs": 2, "ppo_learning_rate": "3e-6",
        "kl_coef": "0.02", "adaptive_kl": "on", "target_kl": "4", "max_new_tokens": 64, "temperature": "0.9",
        "lora_r": 16, "max_prompts": 2,
        # The SFT fieldset's inputs are sent too, and ignored for PPO.
        "sft_source": "consensus_best", "epochs": "", "sft_learning_rate": "not a number",
    }  # fmt: skip
    client = as_user(manager)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("policy-list", args=[project.pk]), form)
    round = PolicyRound.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("policy-round", args=[project.pk, round.pk])
    assert round.method == "ppo" and round.trigger == "ui" and round.created_by == manager
    assert round.reward_model == ready["rm"] and round.reference == ready["policy"]  # the defaults
    config = round.config
    assert (config["updates"], config["rollouts_per_update"], config["minibatch_size"], config["ppo_epochs"]) == (
        7, 16, 8, 2,
    )  # fmt: skip
    assert config["learning_rate"] == 3e-6 and config["kl_coef"] == 0.02 and config["adaptive_kl"] is True
    assert config["target_kl"] == 4.0 and config["max_new_tokens"] == 64 and config["temperature"] == 0.9
    assert config["lora"] == {"r": 16, "alpha": 32} and round.data == {"prompts": "project", "max_prompts": 2}
    assert job_messages.ids("policy_round") == [round.pk]
    page = client.get(response["Location"]).content.decode()
    # The message says what happened, not a state the progress component shows (and that changes).
    assert "PPO round 1 was created." in page and "queued" not in page.split('class="job-progress"')[0].lower()


def test_the_new_round_form_queues_an_sft_round_on_a_response_source(project, manager, ready, job_messages):
    form = {
        "method": "sft", "policy": 1, "sft_source": "demonstrations", "response_source": "human",
        "epochs": 3, "sft_learning_rate": "1e-4", "batch_size": 4, "max_length": 256, "lora_r": 0,
        # PPO's inputs are ignored for SFT, even a bad one.
        "updates": 0, "reward_model": 1,
    }  # fmt: skip
    response = as_user(manager).post(reverse("policy-list", args=[project.pk]), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    round = PolicyRound.objects.get()
    assert round.method == "sft" and round.reward_model is None and round.snapshot is None
    assert round.data["source"] == "demonstrations" and round.data["response_source"] == "human"
    assert round.config["epochs"] == 3 and round.config["learning_rate"] == 1e-4
    assert round.config["batch_size"] == 4 and round.config["max_length"] == 256 and round.config["lora"] is None


@pytest.mark.parametrize(
    ("change", "field_id", "needle"),
    [
        ({"updates": 0}, "id_updates", "must be an integer in [1, 100000]"),
        ({"minibatch_size": 32, "rollouts_per_update": 8}, "id_minibatch_size", "must not exceed rollouts_per_update"),
        ({"ppo_learning_rate": "2"}, "id_ppo_learning_rate", "must be a number in"),
        ({"temperature": "abc"}, "id_temperature", "Enter a number."),
        ({"lora_r": 999}, "id_lora_r", "must be an integer in [1, 256]"),
        ({"policy": 42}, "id_policy", "Select a valid choice"),
        ({"method": "sft", "sft_source": "consensus_best"}, "id_snapshot", "needs an export snapshot"),
        ({"method": "sft", "sft_source": "demonstrations"}, "id_response_source", "name the source"),
        ({"method": "sft", "response_source": "human", "epochs": 0}, "id_epochs", "must be an integer in [1, 1000]"),
    ],
)
def test_a_bad_round_form_starts_nothing_and_names_the_field(project, manager, ready, change, field_id, needle):
    form = {"method": "ppo", "policy": 1, "updates": 3, "rollouts_per_update": 8, "minibatch_size": 4, **change}
    response = as_user(manager).post(reverse("policy-list", args=[project.pk]), form)
    assert response.status_code == 400
    body = response.content.decode()
    assert needle in field_error(body, field_id), field_error(body, field_id) or body[body.find("round-form") :][:3000]
    assert "Nothing was started" in body and not PolicyRound.objects.exists()


def test_a_ppo_round_without_a_reward_model_says_so_at_the_field(project, manager):
    PromptFactory(project=project)
    policy_register(project=project, name=CHECKPOINT)
    response = as_user(manager).post(reverse("policy-list", args=[project.pk]), {"method": "ppo", "policy": 1})
    assert response.status_code == 400
    assert "no reward model yet" in field_error(response.content.decode(), "id_reward_model")


def test_the_register_form(project, manager, ready):
    url = reverse("policy-register", args=[project.pk])
    client = as_user(manager)
    response = client.post(
        url,
        {
            "register-name": CHECKPOINT,
            "register-is_reference": "on",
            "register-temperature": "0.5",
            "register-notes": "x",
        },
    )
    assert response.status_code == 302 and response["Location"].endswith("/policies/#versions")
    version = PolicyVersion.objects.get(project=project, number=2)
    assert version.is_reference and version.generation["temperature"] == 0.5 and version.notes == "x"
    assert version.generation["max_new_tokens"] == 256  # left empty: the default
    assert not PolicyVersion.objects.get(project=project, number=1).is_reference
    assert "p2 (tiny-policy) is registered." in client.get(response["Location"]).content.decode()

    bad = as_user(manager).post(url, {"register-name": CHECKPOINT, "register-temperature": "9"})
    assert bad.status_code == 400
    assert "must be in (0, 5]" in field_error(bad.content.decode(), "id_register-temperature")
    typed = as_user(manager).post(url, {"register-name": "/etc"})
    assert typed.status_code == 400 and "Select a valid choice" in field_error(
        typed.content.decode(), "id_register-name"
    )
    assert PolicyVersion.objects.filter(project=project).count() == 2


def test_make_reference(project, manager, trained):
    client = as_user(manager)
    response = client.post(reverse("policy-reference", args=[project.pk, 3]))
    assert response.status_code == 302
    assert list(PolicyVersion.objects.filter(project=project, is_reference=True).values_list("number", flat=True)) == [
        3
    ]
    page = client.get(response["Location"]).content.decode()
    assert "p3 (round 2, ppo) is now the project&#x27;s reference." in page
    assert as_user(manager).post(reverse("policy-reference", args=[project.pk, 99])).status_code == 404


def test_a_queued_round_is_cancelled_from_its_page(project, manager, ready, job_messages):
    as_user(manager).post(reverse("policy-list", args=[project.pk]), {"method": "ppo", "policy": 1, "updates": 2})
    round = PolicyRound.objects.get()
    page = as_user(manager).get(reverse("policy-round", args=[project.pk, round.pk])).content.decode()
    cancel = reverse("job-cancel", args=[project.pk, "policy_round", round.pk])
    assert f'action="{cancel}"' in page
    response = as_user(manager).post(cancel, {"next": reverse("policy-round", args=[project.pk, round.pk])})
    assert response.status_code == 302
    round.refresh_from_db()
    assert round.state == JobState.CANCELLED


def test_a_round_that_watched_a_gold_reward_model_carries_the_gold_series(project, manager, ready):
    gold = reward_model(project, number=2, active=False)
    round = finished_round(project, ready["policy"], ready["rm"], 1, kl=4.0, score=1.2)
    golds = [0.3, 0.5, 0.4, 0.1]  # rises, then falls while the proxy keeps rising
    round.metrics_history = [
        {**p, "objective/gold_scores": g} for p, g in zip(round.metrics_history, golds, strict=True)
    ]
    round.data = {**round.data, "gold_reward_model": gold.number}
    for table in round.samples:
        for row in table["rows"]:
            row["gold"] = -0.75
    round.save()
    body = as_user(manager).get(reverse("policy-round", args=[project.pk, round.pk])).content.decode()
    data = page_data(body, "rl-round-data")
    assert [p["objective/gold_scores"] for p in data["history"]] == golds
    assert [p["objective/scores"] for p in data["history"]] == pytest.approx([0.3, 0.6, 0.9, 1.2])
    assert all(row["gold"] == -0.75 for table in data["samples"] for row in table["rows"])
    assert data["score_sd"] is None  # the two versions recorded no held-out spread: no gain chart
    assert 'id="overopt-chart"' in body
    ready["rm"].metrics = {"reward_std": 0.5}
    ready["rm"].save()
    gold.metrics = {"reward_std": 0.25}
    gold.save()
    body = as_user(manager).get(reverse("policy-round", args=[project.pk, round.pk])).content.decode()
    assert page_data(body, "rl-round-data")["score_sd"] == {"proxy": 0.5, "gold": 0.25}
    assert "Gold reward model" in body and "v2 <span" in body
    table = body.split('id="samples-table"')[1].split("</table>")[0]
    assert '<th scope="col" class="num">Gold</th>' in table and "-0.750" in table

    plain = finished_round(project, ready["policy"], ready["rm"], 2, kl=2.0, score=0.8)
    body = as_user(manager).get(reverse("policy-round", args=[project.pk, plain.pk])).content.decode()
    assert not any("objective/gold_scores" in p for p in page_data(body, "rl-round-data")["history"])
    assert "Gold reward model" not in body and ">Gold</th>" not in body
    assert 'id="overopt-chart"' not in body and page_data(body, "rl-round-data")["score_sd"] is None


def test_the_new_round_form_names_a_gold_reward_model(
    project, manager, ready, settings, job_messages, django_capture_on_commit_callbacks
):
    gold = reward_model(project, number=2, active=False)
    form = {"method": "ppo", "policy": 1, "gold_reward_model": 2, "updates": 3, "rollouts_per_update": 8}
    client = as_user(manager)
    page = client.get(reverse("policy-list", args=[project.pk])).content.decode()
    assert 'name="gold_reward_model"' in page and '<option value="2">v2</option>' in page
    # Its files are not on this server yet: refused at the field, nothing started.
    missing = client.post(reverse("policy-list", args=[project.pk]), form)
    assert missing.status_code == 400
    assert "files of reward model v2 are missing" in field_error(missing.content.decode(), "id_gold_reward_model")
    assert not PolicyRound.objects.exists()
    directory = Path(settings.ARTIFACT_ROOT) / gold.model_dir
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("policy-list", args=[project.pk]), form)
    round = PolicyRound.objects.get()
    assert response.status_code == 302 and round.reward_model == ready["rm"]
    assert round.data == {"prompts": "project", "max_prompts": round.data["max_prompts"], "gold_reward_model": 2}
    assert "Gold reward model" in client.get(response["Location"]).content.decode()
