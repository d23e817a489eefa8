"""Loop cycles: export → reward model → PPO round → sampling as chained jobs; failures, cancel, catch-up, the rule."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from annotation.models import Task
from exports.models import ExportSnapshot
from jobs.models import JobState
from rlloop.cycle import cycle_cancel, cycle_start, cycles_advance, loop_rules_check
from rlloop.models import CycleState, CycleStep, LoopCycle, LoopRule, PolicyVersion
from rlloop.services import PolicyError, policy_register
from tests.factories import ProjectFactory, UserFactory
from tests.rewardmodel.test_services import FAST, manager_of, rule_project
from tests.rlloop.test_rounds import FAST_PPO, TINY

pytestmark = pytest.mark.django_db

TINY_RM = "tiny-rm"


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path, tiny_policy, tmp_path_factory):
    from tests.rewardmodel.tiny import build_gpt2

    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    settings.POLICY_BASE_MODELS = {TINY: str(tiny_policy)}
    settings.REWARDMODEL_BASE_MODELS = {TINY_RM: str(build_gpt2(tmp_path / "rm-base"))}
    settings.RLLOOP_DEVICE = "cpu"
    settings.REWARDMODEL_DEVICE = "cpu"
    return settings.ARTIFACT_ROOT


OPTIONS = {
    "reward_model": {"base_model": TINY_RM, "config": FAST},
    "ppo": {"config": FAST_PPO, "max_prompts": 6},
    "sampling": {"max_prompts": 4, "sampling": {"max_new_tokens": 6, "seed": 1}, "priority": 30},
}


def drain(job_messages, capture, start: int = 0) -> int:
    """Run every recorded job message in order, as workers would; new ones are recorded as they are sent."""
    index = start
    while index < len(job_messages):
        with capture(execute=True):
            job_messages.run(index)
        index += 1
    return index


def test_a_cycle_chains_its_four_jobs_and_ends_with_tasks_in_the_queue(
    job_messages, django_capture_on_commit_callbacks
) -> None:
    project = rule_project(12)
    policy = policy_register(project=project, name=TINY, is_reference=True)
    manager = manager_of(project)
    with django_capture_on_commit_callbacks(execute=True):
        cycle = cycle_start(project=project, options=OPTIONS, user=manager)
    assert cycle.state == CycleState.RUNNING and cycle.step == CycleStep.EXPORT and cycle.number == 1
    assert [kind for kind, _, _ in job_messages] == ["export"]
    drain(job_messages, django_capture_on_commit_callbacks)
    assert [kind for kind, _, _ in job_messages] == ["export", "reward_model", "policy_round", "sampling"]
    cycle.refresh_from_db()
    assert cycle.state == CycleState.SUCCEEDED and cycle.step == CycleStep.DONE, cycle.reason
    assert cycle.snapshot.state == cycle.reward_model_run.state == JobState.SUCCEEDED
    new = cycle.policy_round.result
    assert new.number == 2 and new.parent == policy and new.reward_model == cycle.reward_model_run.version
    job = cycle.sampling_job
    assert job.state == JobState.SUCCEEDED and job.anchor == policy and list(job.policies.all()) == [new]
    assert job.reward_model == cycle.reward_model_run.version and job.priority == 30
    tasks = Task.objects.filter(metadata__sampling_job=job.pk)
    assert tasks.count() == job.summary["tasks"] >= 1
    assert all(t.rl_round == cycle.policy_round.number for t in tasks)
    # The next cycle starts from the newest policy.
    with django_capture_on_commit_callbacks(execute=True):
        second = cycle_start(project=project, options=OPTIONS)
    assert second.number == 2 and second.policy == new


def test_a_step_that_cannot_start_stops_the_cycle_with_the_reason(job_messages, django_capture_on_commit_callbacks):
    project = ProjectFactory()  # no judgements: the export holds no training pair
    policy_register(project=project, name=TINY, is_reference=True)
    with django_capture_on_commit_callbacks(execute=True):
        cycle = cycle_start(project=project, options=OPTIONS)
    drain(job_messages, django_capture_on_commit_callbacks)
    cycle.refresh_from_db()
    assert cycle.state == CycleState.FAILED and cycle.step == CycleStep.REWARD_MODEL
    assert cycle.reason == f"Reward model could not start: snapshot: export {cycle.snapshot_id} has no training pairs"
    assert [kind for kind, _, _ in job_messages] == ["export"]


def test_a_failed_job_stops_the_cycle_and_one_cycle_runs_at_a_time(job_messages, django_capture_on_commit_callbacks):
    project = rule_project(6)
    policy_register(project=project, name=TINY, is_reference=True)
    options = {**OPTIONS, "reward_model": {"base_model": TINY_RM, "config": {**FAST, "max_length": 8}}}
    with django_capture_on_commit_callbacks(execute=True):
        cycle = cycle_start(project=project, options=options)
    with pytest.raises(PolicyError) as info:
        cycle_start(project=project)
    assert info.value.status == 409 and "still running" in info.value.message
    with django_capture_on_commit_callbacks(execute=True):
        job_messages.run(0)
    # The reward-model run fails (simulated here: its worker reports an error).
    from jobs.lifecycle import job_fail
    from jobs.registry import get_kind

    cycle.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        job_fail(kind=get_kind("reward_model"), job_id=cycle.reward_model_run_id, error="CUDA out of memory")
    cycle.refresh_from_db()
    assert cycle.state == CycleState.FAILED and cycle.step == CycleStep.REWARD_MODEL
    assert cycle.reason == f"Reward model job {cycle.reward_model_run_id} failed: CUDA out of memory"


def test_cancel_stops_the_current_job_and_the_chain(job_messages, django_capture_on_commit_callbacks) -> None:
    project = rule_project(6)
    policy_register(project=project, name=TINY, is_reference=True)
    manager = manager_of(project)
    with django_capture_on_commit_callbacks(execute=True):
        cycle = cycle_start(project=project, options=OPTIONS)
        cycle = cycle_cancel(cycle=cycle, user=manager)
    assert cycle.state == CycleState.CANCELLED and cycle.reason == "cancelled by rm-manager during the export step"
    assert ExportSnapshot.objects.get(pk=cycle.snapshot_id).state == JobState.CANCELLED
    with pytest.raises(PolicyError) as info:
        cycle_cancel(cycle=cycle)
    assert info.value.status == 409


def test_the_periodic_check_catches_up_a_lost_announcement(job_messages, django_capture_on_commit_callbacks) -> None:
    project = rule_project(8)
    policy_register(project=project, name=TINY, is_reference=True)
    with django_capture_on_commit_callbacks(execute=True):
        cycle = cycle_start(project=project, options=OPTIONS)
    with django_capture_on_commit_callbacks(execute=False):  # the process died before announcing
        job_messages.run(0)
    cycle.refresh_from_db()
    assert cycle.step == CycleStep.EXPORT and cycle.snapshot.state == JobState.SUCCEEDED
    with django_capture_on_commit_callbacks(execute=True):
        cycles_advance()
    cycle.refresh_from_db()
    assert cycle.step == CycleStep.REWARD_MODEL and cycle.reward_model_run is not None
    with django_capture_on_commit_callbacks(execute=True):
        assert cycles_advance()[0].step == CycleStep.REWARD_MODEL  # nothing twice
    assert [kind for kind, _, _ in job_messages] == ["export", "reward_model"]


def test_the_rule_starts_a_cycle_when_enough_new_agreed_pairs_arrived(job_messages, django_capture_on_commit_callbacks):
    project = rule_project(4)
    policy_register(project=project, name=TINY, is_reference=True)
    rule = LoopRule.objects.create(project=project, min_new_pairs=10, options=OPTIONS)
    assert loop_rules_check() == [(project.pk, "4 new pair votes since the last cycle; waiting for 10 new pairs")]
    rule_project(8, project=project)
    with django_capture_on_commit_callbacks(execute=True):
        [(_, outcome)] = loop_rules_check()
    assert outcome == "12 new agreed pairs: started cycle 1"
    rule.refresh_from_db()
    assert rule.last_cycle.trigger == "rule" and rule.last_outcome == outcome
    assert loop_rules_check() == [(project.pk, "a cycle is running")]


def test_options_are_checked_before_anything_starts() -> None:
    project = rule_project(2)
    policy_register(project=project, name=TINY, is_reference=True)
    for options, field in (
        ({"sideways": {}}, "options.sideways"),
        ({"ppo": {"config": {"updates": 0}}}, "options.ppo.config"),
        ({"ppo": {"colour": 1}}, "options.ppo.colour"),
        ({"reward_model": {"config": {"epochs": -1}}}, "options.reward_model.config.epochs"),
        ({"export": {"threshold": 7}}, "options.export.threshold"),
    ):
        with pytest.raises(PolicyError) as info:
            cycle_start(project=project, options=options)
        assert info.value.field == field, (options, info.value)
    assert not LoopCycle.objects.exists()


def test_api_and_cli(job_messages, django_capture_on_commit_callbacks) -> None:
    project = rule_project(6)
    policy_register(project=project, name=TINY, is_reference=True)
    client = APIClient()
    client.force_authenticate(manager_of(project))
    url = f"/api/v1/projects/{project.pk}/cycles/"
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(url, {"options": OPTIONS}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["state"] == "running" and body["step"] == "export" and body["policy"] == 1
    assert body["steps"][0]["kind"] == "export" and body["steps"][0]["job"]["state"] == "queued"
    assert client.post(url, {}, format="json").status_code == 409
    cancel = client.post(f"{url}{body['id']}/cancel/")
    assert cancel.status_code == 202 and cancel.json()["state"] == "cancelled"
    assert client.get(url).json()["results"][0]["id"] == body["id"]
    annotator = UserFactory()
    project.memberships.create(user=annotator, role="annotator")
    client.force_authenticate(annotator)
    assert client.get(url).status_code == 403

    with django_capture_on_commit_callbacks(execute=True):
        call_command("run_cycle", "--project", str(project.pk), "--set", "ppo.max_prompts=4")
    newest = LoopCycle.objects.order_by("-id").first()
    assert newest.number == 2 and newest.options["ppo"]["max_prompts"] == 4 and newest.trigger == "cli"
    with pytest.raises(CommandError, match="still running"):
        call_command("run_cycle", "--project", str(project.pk))
    assert PolicyVersion.objects.filter(project=project).count() == 1
