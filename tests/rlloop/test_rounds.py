"""Policies and rounds through the platform: register, create (API, CLI), run as a job, lineage, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import JobState
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rlloop.models import PolicyRound, PolicyVersion
from rlloop.services import PolicyError, policy_register, policy_round_create
from tests.factories import ProjectFactory
from tests.rewardmodel.test_services import manager_of, rule_project, rule_snapshot

pytestmark = pytest.mark.django_db

TINY = "tiny-policy"
# A few seconds on one core: 3 updates of 4 rollouts of at most 6 tokens.
FAST_PPO = {
    "updates": 3,
    "rollouts_per_update": 4,
    "minibatch_size": 2,
    "ppo_epochs": 2,
    "max_new_tokens": 6,
    "learning_rate": 1e-3,
    "checkpoint_every": 1,
    "sample_every": 1,
    "samples_shown": 2,
}


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path, tiny_policy):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    settings.POLICY_BASE_MODELS = {TINY: str(tiny_policy)}
    settings.RLLOOP_DEVICE = "cpu"
    return settings.ARTIFACT_ROOT


@pytest.fixture
def project():
    return rule_project(12)


def reward_model_version(
    project: Any, source: Path, root: Path, number: int = 1, *, active: bool = True
) -> RewardModelVersion:
    """A registered reward-model version whose model is ``source`` read as a one-output classifier."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    snapshot = rule_snapshot(project)
    run = RewardModelRun.objects.create(
        project=project, snapshot=snapshot, base_model=str(source), state=JobState.SUCCEEDED, progress=1.0,
        finished_at=timezone.now(),
        output_dir=f"rewardmodels/project-{project.pk}/run-x{number}",
    )  # fmt: skip
    model_dir = f"{run.output_dir}/model"
    AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=1).save_pretrained(root / model_dir)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(root / model_dir)
    return RewardModelVersion.objects.create(
        project=project, number=number, run=run, snapshot=snapshot, base_model=str(source), model_dir=model_dir,
        is_active=active,
    )  # fmt: skip


@pytest.fixture
def ready(project, artifacts, tiny_policy):
    """A project with prompts, a policy (its reference) and an active reward model."""
    policy = policy_register(project=project, name=TINY, is_reference=True)
    rm = reward_model_version(project, tiny_policy, artifacts)
    return project, policy, rm


def test_registering_a_checkpoint_by_name(project) -> None:
    version = policy_register(project=project, name=TINY, generation={"temperature": 0.5})
    assert version.number == 1 and version.name == TINY and version.display_name == "p1 (tiny-policy)"
    assert version.generation == {"temperature": 0.5, "top_p": 1.0, "max_new_tokens": 256, "stop": []}
    assert version.chat_template == "checkpoint"
    with pytest.raises(PolicyError, match="not a registered policy checkpoint"):
        policy_register(project=project, name="/etc")
    with pytest.raises(PolicyError) as info:
        policy_register(project=project, name=TINY, generation={"temperature": -1})
    assert info.value.field == "generation"
    second = policy_register(project=project, name=TINY, is_reference=True)
    third = policy_register(project=project, name=TINY, is_reference=True)
    second.refresh_from_db()
    assert not second.is_reference and third.is_reference  # one reference per project


def test_a_ppo_round_runs_as_a_job_and_registers_a_policy_with_its_lineage(
    ready, artifacts, job_messages, django_capture_on_commit_callbacks
) -> None:
    project, policy, rm = ready
    manager = manager_of(project)
    client = APIClient()
    client.force_authenticate(manager)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            f"/api/v1/projects/{project.pk}/rl-rounds/",
            {"method": "ppo", "policy": policy.number, "config": FAST_PPO, "data": {"max_prompts": 8}},
            format="json",
        )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["state"] == "queued" and body["method"] == "ppo" and body["reward_model"] == rm.number
    assert body["reference"] == policy.number and body["config"]["updates"] == 3
    assert "output_dir" not in body and "model_dir" not in str(body)
    assert job_messages.ids("policy_round") == [body["id"]]

    job_messages.run()
    round = PolicyRound.objects.get(pk=body["id"])
    assert round.state == JobState.SUCCEEDED, (round.error, round.log_tail)
    result = round.result
    assert result.number == 2 and result.parent == policy and result.reward_model == rm
    assert result.reference == policy and not result.is_reference
    assert (Path(result.model_dir).is_absolute() is False) and "round-" in result.model_dir
    assert "objective/kl" in result.metrics and result.metrics["updates"] == 3

    detail = client.get(f"/api/v1/projects/{project.pk}/rl-rounds/{round.pk}/").json()
    steps = [p for p in detail["metrics_history"] if "objective/scores" in p]
    assert [p["step"] for p in steps] == [1, 2, 3]
    assert detail["samples"] and {"prompt", "response", "score", "kl"} <= set(detail["samples"][-1]["rows"][0])
    assert detail["result"] == 2 and detail["step"] == 3 and detail["total_steps"] == 3
    assert (artifacts / round.output_dir / "prompts.jsonl").read_text().count("\n") == 8
    listed = client.get(f"/api/v1/projects/{project.pk}/policies/").json()["results"]
    assert [p["number"] for p in listed] == [2, 1]


def test_round_refusals_name_the_field_and_create_nothing(ready, artifacts, job_messages) -> None:
    project, policy, rm = ready
    other = rule_project(2, project=ProjectFactory())
    other_rm = reward_model_version(other, Path(policy.model_dir), artifacts)
    cases = [
        ({"reward_model": other_rm}, "reward_model"),
        ({"config": {"reward_function": "os:system"}}, "config.reward_function"),
        ({"config": {"policy": "/etc"}}, "config.policy"),
        ({"config": {"updates": 0}}, "config"),
        ({"config": {"wat": 1}}, "config.wat"),
        ({"data": {"max_prompts": 0}}, "data.max_prompts"),
        ({"method": "dpo"}, "method"),
    ]
    for overrides, field in cases:
        kwargs = {"project": project, "method": "ppo", "policy": policy, **overrides}
        with pytest.raises(PolicyError) as info:
            policy_round_create(**kwargs)
        assert info.value.field == field, (overrides, info.value)
    assert PolicyRound.objects.count() == 0 and job_messages == []


def test_a_ppo_round_needs_a_reward_model_and_prompts(project, artifacts, job_messages) -> None:
    policy = policy_register(project=project, name=TINY)
    with pytest.raises(PolicyError, match="no reward model yet"):
        policy_round_create(project=project, method="ppo", policy=policy)
    empty = ProjectFactory()
    bare = policy_register(project=empty, name=TINY)
    with pytest.raises(PolicyError, match="no responses of source 'human'"):
        policy_round_create(
            project=empty, method="sft", policy=bare, data={"source": "demonstrations", "response_source": "human"}
        )
    reward_model_version(empty, Path(bare.model_dir), artifacts)
    with pytest.raises(PolicyError, match="no prompts"):
        policy_round_create(project=empty, method="ppo", policy=bare)


def test_cancelling_a_queued_round(ready, job_messages) -> None:
    project, policy, _ = ready
    manager = manager_of(project)
    round = policy_round_create(project=project, method="ppo", policy=policy, config=FAST_PPO)
    client = APIClient()
    client.force_authenticate(manager)
    answer = client.post(f"/api/v1/projects/{project.pk}/rl-rounds/{round.pk}/cancel/")
    assert answer.status_code == 202 and answer.json()["state"] == "cancelled"
    again = client.post(f"/api/v1/projects/{project.pk}/rl-rounds/{round.pk}/cancel/")
    assert again.status_code == 409


def test_ppo_round_command_inline(ready, capsys) -> None:
    project, policy, rm = ready
    call_command(
        "ppo_round", "--project", str(project.pk), "--policy", "1", "--reward-model", "1", "--inline",
        "--max-prompts", "6", *[a for k, v in FAST_PPO.items() for a in ("--set", f"{k}={v}")],
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "p2 registered" in out
    assert PolicyVersion.objects.get(project=project, number=2).round.method == "ppo"
    with pytest.raises(CommandError, match="no reward-model version 9"):
        call_command("ppo_round", "--project", str(project.pk), "--reward-model", "9")


def test_register_policy_command_lists_and_registers(project, capsys) -> None:
    call_command("register_policy", "--list")
    assert TINY in capsys.readouterr().out
    call_command("register_policy", "--project", str(project.pk), "--name", TINY, "--reference")
    assert "registered p1 (tiny-policy)" in capsys.readouterr().out
    with pytest.raises(CommandError, match="not a registered policy checkpoint"):
        call_command("register_policy", "--project", str(project.pk), "--name", "nope")


def test_an_sft_round_on_demonstrations_becomes_the_reference(project, artifacts, job_messages) -> None:
    from annotation.models import Prompt, Response

    for prompt in Prompt.objects.filter(project=project):
        Response.objects.create(prompt=prompt, text="good good good", source="human")
    policy = policy_register(project=project, name=TINY)
    round = policy_round_create(
        project=project,
        method="sft",
        policy=policy,
        data={"source": "demonstrations", "response_source": "human"},
        config={"epochs": 2, "learning_rate": 1e-2, "batch_size": 4, "max_length": 64},
        send=False,
    )
    assert round.reward_model is None and round.config["epochs"] == 2
    from rlloop.jobs import policy_round_execute

    version = policy_round_execute(round_id=round.pk, worker="test")
    round.refresh_from_db()
    assert round.state == JobState.SUCCEEDED, (round.error, round.log_tail)
    assert version.parent == policy and version.is_reference  # the project had no reference yet
    lines = (artifacts / round.output_dir / "demonstrations.jsonl").read_text().splitlines()
    assert len(lines) == Prompt.objects.filter(project=project).count()
    assert version.metrics["eval/loss"] < round.info["initial_eval"]["eval/loss"]


# --- a gold reward model that only watches ---------------------------------------------------------


def test_a_ppo_round_with_a_gold_reward_model_records_the_gold_score(
    ready, artifacts, tiny_policy, job_messages, django_capture_on_commit_callbacks
) -> None:
    project, policy, rm = ready
    gold = reward_model_version(project, tiny_policy, artifacts, number=2, active=False)
    client = APIClient()
    client.force_authenticate(manager_of(project))
    url = f"/api/v1/projects/{project.pk}/rl-rounds/"
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(url, {"policy": 1, "gold_reward_model": 2, "config": FAST_PPO}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["reward_model"] == rm.number and body["gold_reward_model"] == gold.number
    assert body["data"]["gold_reward_model"] == 2 and "model_dir" not in str(body)

    job_messages.run()
    round = PolicyRound.objects.get(pk=body["id"])
    assert round.state == JobState.SUCCEEDED, (round.error, round.log_tail)
    steps = [p for p in round.metrics_history if "objective/scores" in p]
    assert len(steps) == 3 and all(isinstance(p["objective/gold_scores"], float) for p in steps)
    assert all("gold" in row for table in round.samples for row in table["rows"])
    assert "objective/gold_scores" in round.result.metrics
    detail = client.get(f"{url}{round.pk}/").json()
    assert detail["gold_reward_model"] == 2

    refused = client.post(url, {"policy": 1, "gold_reward_model": 9}, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "gold_reward_model"
    assert "no gold reward model 9" in refused.json()["detail"]
    assert PolicyRound.objects.count() == 1


def test_ppo_round_command_with_a_gold_reward_model(ready, artifacts, tiny_policy, capsys) -> None:
    project, _, _ = ready
    reward_model_version(project, tiny_policy, artifacts, number=2, active=False)
    call_command(
        "ppo_round", "--project", str(project.pk), "--gold-reward-model", "2", "--inline", "--max-prompts", "6",
        *[a for k, v in FAST_PPO.items() for a in ("--set", f"{k}={v}")],
    )  # fmt: skip
    assert "p2 registered" in capsys.readouterr().out
    round = PolicyRound.objects.get()
    assert round.data["gold_reward_model"] == 2 and round.reward_model.number == 1
    assert all("objective/gold_scores" in p for p in round.metrics_history if "objective/scores" in p)
    with pytest.raises(CommandError, match="no reward-model version 9"):
        call_command("ppo_round", "--project", str(project.pk), "--gold-reward-model", "9")


def test_gold_reward_model_refusals_name_the_field_and_create_nothing(
    ready, artifacts, tiny_policy, job_messages
) -> None:
    project, policy, rm = ready
    other = rule_project(2, project=ProjectFactory())
    other_rm = reward_model_version(other, tiny_policy, artifacts)
    gone = reward_model_version(project, tiny_policy, artifacts, number=2, active=False)
    import shutil

    shutil.rmtree(artifacts / gone.model_dir)
    cases = [
        ({"gold_reward_model": other_rm}, "gold_reward_model"),
        ({"gold_reward_model": gone}, "gold_reward_model"),
        ({"gold_reward_model": rm, "method": "sft", "data": {"response_source": "human"}}, "gold_reward_model"),
        ({"config": {"gold_reward_model": str(artifacts / rm.model_dir)}}, "config.gold_reward_model"),
        ({"data": {"gold_reward_model": 1}}, "data.gold_reward_model"),
    ]
    for overrides, field in cases:
        kwargs = {"project": project, "method": "ppo", "policy": policy, **overrides}
        with pytest.raises(PolicyError) as info:
            policy_round_create(**kwargs)
        assert info.value.field == field, (overrides, info.value)
    assert PolicyRound.objects.count() == 0 and job_messages == []
    # The proxy's own version as the gold is allowed (pointless: it agrees with itself).
    round = policy_round_create(project=project, method="ppo", policy=policy, gold_reward_model=rm, send=False)
    assert round.data["gold_reward_model"] == rm.number
