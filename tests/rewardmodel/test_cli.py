"""``manage.py train_reward_model`` and ``manage.py reward_models``."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rewardmodel.models import RewardModelRun, RewardModelVersion, RunState
from tests.rewardmodel import test_services as shared
from tests.rewardmodel.test_services import FAST

# Fixtures shared with the service tests.
artifacts = shared.artifacts
rule = shared.rule
sent = shared.sent
tiny_base = shared.tiny_base
tiny = shared.tiny

pytestmark = pytest.mark.django_db


def call(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_inline_training_registers_a_version_and_lists_it(rule, tiny, capsys):
    project, snapshot = rule
    out, _ = call(
        "train_reward_model", "--project", str(project.pk), "--latest", "--base", tiny,
        "--config", json.dumps(FAST), "--set", "epochs=2", "--set", "seed=3", "--inline",
    )  # fmt: skip
    run = RewardModelRun.objects.get()
    assert run.state == RunState.SUCCEEDED and run.trigger == "cli"
    assert run.config["epochs"] == 2 and run.config["seed"] == 3
    assert "v1 registered" in out
    # tqdm drew its bar on stderr.
    assert f"run {run.pk}" in capsys.readouterr().err
    listed, _ = call("reward_models", "--project", str(project.pk))
    assert "* v1" in listed and "succeeded" in listed
    as_json = json.loads(call("reward_models", "--project", str(project.pk), "--json")[0])
    assert as_json["versions"][0]["number"] == 1 and as_json["versions"][0]["active"] is True

    call(
        "train_reward_model",
        "--project",
        str(project.pk),
        "--base",
        tiny,
        "--config",
        json.dumps(FAST),
        "--inline",
    )
    compared, _ = call("reward_models", "--project", str(project.pk), "--compare", "1", "2")
    assert "validation pairs" in compared and "agreement" in compared
    activated, _ = call("reward_models", "--project", str(project.pk), "--activate", "2")
    assert "v2 is now the active" in activated
    assert RewardModelVersion.objects.get(is_active=True).number == 2


def test_queued_run_is_sent_and_can_be_cancelled(rule, tiny, sent, django_capture_on_commit_callbacks):
    project, snapshot = rule
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = call(
            "train_reward_model", "--project", str(project.pk), "--snapshot", str(snapshot.pk), "--base", tiny
        )
    run = RewardModelRun.objects.get()
    assert "queued" in out and sent == [("reward_model", run.pk, "gpu")]
    out, _ = call("reward_models", "--project", str(project.pk), "--cancel", str(run.pk))
    assert "cancelled" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "999"], "does not exist"),
        (["--set", "epochs"], "expected key=value"),
        (["--config", "[1]"], "JSON object"),
        (["--set", "epochs=0"], "config.epochs"),
        (["--set", "bogus=1"], "config.bogus"),
        (["--parent", "4"], "no version 4"),
        (["--snapshot", "98765"], "not an export of project"),
        (["--base", "/etc"], "'/etc' is not a registered base model; registered: all-minilm-l6-v2, tiny-gpt2"),
    ],
)
def test_bad_arguments_say_what_is_wrong_and_create_nothing(rule, tiny, args, message):
    project, _ = rule
    base = ["--project", str(project.pk), "--base", tiny]
    if args[:1] == ["--project"]:
        base = ["--base", tiny]
    with pytest.raises(CommandError, match=message):
        call("train_reward_model", *base, *args)
    assert not RewardModelRun.objects.exists()


def test_a_failed_inline_run_exits_with_the_reason(rule, tmp_path, settings):
    project, _ = rule
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    settings.REWARDMODEL_BASE_MODELS = {"broken": str(broken)}
    with pytest.raises(CommandError, match=r"failed: \w+"):
        call("train_reward_model", "--project", str(project.pk), "--base", "broken", "--inline")


@pytest.mark.django_db(transaction=True)
def test_wait_follows_a_queued_run_to_its_version(tiny, settings, tmp_path, thread_worker):
    """``--wait`` polls the row while a worker (here a thread running the real job) trains."""
    from tests.rewardmodel.test_services import rule_project, rule_snapshot

    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    project = rule_project(24)
    rule_snapshot(project)
    threads = thread_worker

    out, _ = call(
        "train_reward_model", "--project", str(project.pk), "--base", tiny,
        "--config", json.dumps(FAST), "--wait", "--poll-seconds", "0.2",
    )  # fmt: skip
    for thread in threads:
        thread.join(timeout=60)
    assert len(threads) == 1 and "v1 registered" in out
    assert RewardModelRun.objects.get().state == RunState.SUCCEEDED
