"""Reward-model services in one process: creating, claiming, reaping, cancelling, registering.

The helpers at the top (a judged project whose preferences follow a known rule, exported
through the real export service; a tiny base checkpoint) are shared by the other test
modules of the job.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from annotation.models import Membership, Project, ProjectKind, Prompt, Response, Role, Task, TaskResponse
from exports.models import ExportSnapshot, ExportState
from jobs.lifecycle import job_claim, jobs_reap
from jobs.registry import get_kind
from rewardmodel import jobs
from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion, RunState, RunTrigger
from rewardmodel.services import (
    RewardModelError,
    retrain_rules_check,
    reward_model_run_cancel,
    reward_model_run_create,
    reward_model_version_activate,
    reward_model_version_create,
    reward_model_versions_compare,
    score_batch,
    scorer_cache,
)
from tests.exports.helpers import export, judge
from tests.factories import ProjectFactory, UserFactory
from tests.rewardmodel.tiny import PROMPT_WORDS, build_gpt2, response_text

# Small and quick: a run of these options takes a few seconds on one CPU core.
FAST = {"epochs": 1, "groups_per_batch": 4, "max_length": 64, "checkpoint_every_steps": 2, "learning_rate": 1e-3}


# --- helpers shared by the job's test modules ---------------------------------------------------


def rule_project(n_groups: int = 24, *, k: int = 2, seed: int = 0, project: Project | None = None) -> Project:
    """A project whose tasks were judged by one rule: more ``good`` words is better."""
    rng = random.Random(seed)
    if project is None:
        kind = ProjectKind.PAIRWISE if k == 2 else ProjectKind.RANKING
        project = ProjectFactory(kind=kind, responses_per_task=k, annotations_per_task=1)
    start = Prompt.objects.filter(project=project).count()
    for g in range(start, start + n_groups):
        words = " ".join(rng.choice(PROMPT_WORDS) for _ in range(5))
        prompt = Prompt.objects.create(
            project=project, external_id=f"syn-{g}", messages=[{"role": "user", "content": words}]
        )
        goods = rng.sample(range(7), k)
        responses = [Response.objects.create(prompt=prompt, text=response_text(n, 6, rng)) for n in goods]
        task = Task.objects.create(project=project, prompt=prompt, num_responses=k, required_annotations=1)
        TaskResponse.objects.bulk_create(
            TaskResponse(task=task, response=r, position=i) for i, r in enumerate(responses)
        )
        best_first = [r.pk for _, r in sorted(zip(goods, responses, strict=True), key=lambda t: -t[0])]
        judge(task, "rater", [[r] for r in best_first])
    return project


def rule_snapshot(project: Project) -> ExportSnapshot:
    return export(project, validation_fraction=0.25)


def manager_of(project: Project, username: str = "rm-manager") -> Any:
    user = UserFactory(username=username)
    Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.MANAGER})
    return user


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    scorer_cache.clear()
    return settings.ARTIFACT_ROOT


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return build_gpt2(tmp_path_factory.mktemp("tiny-gpt2") / "base")


TINY = "tiny-gpt2"


@pytest.fixture
def tiny(settings, tiny_base) -> str:
    """The tiny base registered under a name, as an operator registers one: runs choose bases by name."""
    settings.REWARDMODEL_BASE_MODELS = {TINY: str(tiny_base)}
    return TINY


@pytest.fixture
def rule(db):
    project = rule_project()
    return project, rule_snapshot(project)


@pytest.fixture
def sent(job_messages):
    return job_messages


KIND = "reward_model"


def claim(run_id: int, worker: str):
    claimed = job_claim(kind=get_kind(KIND), job_id=run_id, worker=worker)
    return None if claimed is None else claimed.job


def reap(now=None) -> list[tuple[int, str]]:
    return [(r.job_id, r.outcome) for r in jobs_reap(now=now, kinds=[get_kind(KIND)])]


def make_run(project: Project, snapshot: ExportSnapshot, base: str, **config: Any) -> RewardModelRun:
    return reward_model_run_create(project=project, snapshot=snapshot, base_model=base, config={**FAST, **config})


pytestmark = pytest.mark.django_db


# --- create ---------------------------------------------------------------------------------


def test_create_fills_the_config_and_sends_after_commit(rule, tiny, django_capture_on_commit_callbacks, sent):
    project, snapshot = rule
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = make_run(project, snapshot, tiny, margin=True)
    # Nothing is sent before the row is committed.
    assert not sent and len(callbacks) == 1
    callbacks[0]()
    assert sent == [(KIND, run.pk, "gpu")]
    assert run.state == RunState.QUEUED and run.config["margin"] is True
    assert run.config["weight_decay"] == 0.0  # defaults filled in
    assert "data_dir" not in run.config and run.output_dir == f"rewardmodels/project-{project.pk}/run-{run.pk}"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"epoch": 1}, "config.epoch"),
        ({"epochs": 0}, "config.epochs"),
        ({"epochs": "2"}, "config.epochs"),
        ({"learning_rate": float("nan")}, "config.learning_rate"),
        ({"margin": 1}, "config.margin"),
        ({"output_dir": "/tmp/x"}, "config.output_dir"),
        ({"lora": "yes"}, "config.lora"),
        ("epochs=1", "config"),
    ],
)
def test_bad_config_is_refused_with_the_field_and_nothing_created(rule, tiny, config, field):
    project, snapshot = rule
    with pytest.raises(RewardModelError) as refused:
        reward_model_run_create(project=project, snapshot=snapshot, base_model=tiny, config=config)
    assert refused.value.field == field
    assert not RewardModelRun.objects.exists()


def test_snapshot_must_be_succeeded_in_the_same_project_and_base_must_exist(rule, tiny, tmp_path):
    project, snapshot = rule
    other = rule_project(4)
    with pytest.raises(RewardModelError, match="another project"):
        reward_model_run_create(project=other, snapshot=snapshot, base_model=tiny)
    queued = ExportSnapshot.objects.create(project=project, state=ExportState.QUEUED)
    with pytest.raises(RewardModelError, match="is queued"):
        reward_model_run_create(project=project, snapshot=queued, base_model=tiny)
    with pytest.raises(RewardModelError, match="is not a registered base model"):
        reward_model_run_create(project=project, snapshot=snapshot, base_model=str(tmp_path / "nowhere"))
    assert not RewardModelRun.objects.exists()


# --- claim / redelivery ---------------------------------------------------------------------


def test_claim_is_exclusive_while_the_heartbeat_is_fresh(rule, tiny):
    project, snapshot = rule
    run = make_run(project, snapshot, tiny)
    first = claim(run.pk, "w1")
    assert first is not None and first.state == RunState.RUNNING and first.attempts == 1
    # A duplicate delivery while w1 beats: nothing happens.
    assert claim(run.pk, "w2") is None
    run.refresh_from_db()
    assert (run.worker, run.attempts) == ("w1", 1)
    # w1 goes silent; a redelivered message takes the run over.
    RewardModelRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    taken = claim(run.pk, "w2")
    assert taken is not None and (taken.worker, taken.attempts) == ("w2", 2)
    assert any("w1 stopped beating" in line for line in taken.log_tail)


def test_claim_of_a_missing_or_finished_run_does_nothing(rule, tiny):
    project, snapshot = rule
    assert claim(999_999, "w") is None
    run = make_run(project, snapshot, tiny)
    reward_model_run_cancel(run=run)
    assert claim(run.pk, "w") is None
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED and run.attempts == 0


# --- reaper ---------------------------------------------------------------------------------


def test_reaper_requeues_then_fails_with_the_reason(rule, tiny, settings, sent, django_capture_on_commit_callbacks):
    settings.JOB_HEARTBEAT_STALE_SECONDS = 60
    project, snapshot = rule
    run = make_run(project, snapshot, tiny)
    run.max_attempts = 2
    run.save()
    later = timezone.now() + timedelta(seconds=61)
    for attempt, expected in ((1, "requeued"), (2, "failed")):
        assert claim(run.pk, f"w{attempt}") is not None
        # Fresh heartbeat: the reaper leaves it alone.
        assert reap() == []
        with django_capture_on_commit_callbacks(execute=True):
            assert reap(now=later) == [(run.pk, expected)]
        run.refresh_from_db()
        RewardModelRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    assert run.state == RunState.FAILED
    assert "worker w2 lost: no heartbeat since" in run.error and "after 2 of 2 attempts" in run.error
    assert len(sent) == 1  # re-sent once, for the requeue


def test_reaper_finishes_a_dead_run_that_was_being_cancelled(rule, tiny, settings):
    settings.JOB_HEARTBEAT_STALE_SECONDS = 60
    project, snapshot = rule
    run = make_run(project, snapshot, tiny)
    claim(run.pk, "w1")
    reward_model_run_cancel(run=run)
    assert reap(now=timezone.now() + timedelta(minutes=5)) == [(run.pk, "cancelled")]


# --- register / activate --------------------------------------------------------------------


def test_register_is_idempotent_and_numbers_per_project(rule, tiny):
    project, snapshot = rule
    runs = [make_run(project, snapshot, tiny) for _ in range(2)]
    v1 = reward_model_version_create(run=runs[0], metrics={"rm/accuracy": 0.9, "x": float("nan")})
    again = reward_model_version_create(run=runs[0], metrics={"rm/accuracy": 0.1})
    assert again.pk == v1.pk and RewardModelVersion.objects.filter(run=runs[0]).count() == 1
    assert v1.metrics == {"rm/accuracy": 0.9, "x": None}
    v2 = reward_model_version_create(run=runs[1], metrics={})
    assert (v1.number, v2.number) == (1, 2)
    # The first version is active; the second waits for a decision.
    assert RewardModelVersion.objects.get(pk=v1.pk).is_active and not v2.is_active
    reward_model_version_activate(version=v2)
    assert list(RewardModelVersion.objects.filter(is_active=True)) == [v2]


def test_a_run_that_is_no_longer_its_workers_registers_nothing(rule, tiny, monkeypatch):
    """The version and the run's success commit together: a lost run leaves neither."""
    project, snapshot = rule
    run = make_run(project, snapshot, tiny)
    real_create = jobs.reward_model_version_create

    def taken_over_meanwhile(*, run, metrics):
        version = real_create(run=run, metrics=metrics)
        RewardModelRun.objects.filter(pk=run.pk).update(owner_token="another-attempt")
        return version

    monkeypatch.setattr(jobs, "reward_model_version_create", taken_over_meanwhile)
    assert jobs.reward_model_run_execute(run_id=run.pk, worker="w") is None
    run.refresh_from_db()
    # Rolled back together: the version, and the takeover this test faked inside the same transaction.
    assert run.state == RunState.RUNNING and run.finished_at is None
    assert not RewardModelVersion.objects.exists()


def test_cancel_of_a_finished_run_is_a_conflict(rule, tiny):
    project, snapshot = rule
    run = make_run(project, snapshot, tiny)
    reward_model_run_cancel(run=run)
    with pytest.raises(RewardModelError) as refused:
        reward_model_run_cancel(run=run)
    assert refused.value.status == 409


# --- training in this process ---------------------------------------------------------------


def test_a_run_trains_registers_scores_and_records_its_curve(rule, tiny, settings):
    project, snapshot = rule
    run = make_run(project, snapshot, tiny, epochs=2)
    version = jobs.reward_model_run_execute(run_id=run.pk, worker="w")
    run.refresh_from_db()
    assert run.state == RunState.SUCCEEDED, (run.error, run.log_tail[-5:])
    assert version is not None and version.number == 1 and version.is_active
    model_dir = Path(settings.ARTIFACT_ROOT) / version.model_dir
    assert (model_dir / "config.json").is_file() and list(model_dir.glob("*.safetensors"))
    steps = [p for p in run.metrics_history if p["kind"] == "step"]
    evals = [p for p in run.metrics_history if p["kind"] == "eval"]
    assert len(steps) == run.total_steps and [p["step"] for p in steps] == list(range(1, run.total_steps + 1))
    assert len(evals) == 2 and run.checkpoint_step is not None
    assert run.metrics == version.metrics and version.metrics
    rewards = score_batch(version, [("tell me", "good good good good alpha beta"), ("tell me", "alpha beta gamma")])
    assert len(rewards) == 2 and all(isinstance(r, float) for r in rewards)
    # A second delivery of the finished run's message changes nothing.
    assert jobs.reward_model_run_execute(run_id=run.pk, worker="w2").pk == version.pk
    assert RewardModelVersion.objects.count() == 1


def test_a_failing_run_says_why(rule, tmp_path, settings):
    project, snapshot = rule
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    settings.REWARDMODEL_BASE_MODELS = {"broken": str(broken)}
    run = reward_model_run_create(project=project, snapshot=snapshot, base_model="broken", config=FAST)
    assert jobs.reward_model_run_execute(run_id=run.pk, worker="w") is None
    run.refresh_from_db()
    assert run.state == RunState.FAILED
    exc_type, _, message = run.error.partition(": ")
    assert exc_type.isidentifier() and message, run.error
    assert any("failed:" in line for line in run.log_tail) and "Traceback" in run.traceback
    assert not RewardModelVersion.objects.exists()


def test_cancel_is_honoured_at_the_next_step_after_a_checkpoint(rule, tiny, monkeypatch):
    project, snapshot = rule
    run = make_run(project, snapshot, tiny, epochs=3)
    real_on_step = jobs.TrainingHooks.on_step

    def cancel_at_step_3(self, step, total_steps, metrics):
        real_on_step(self, step, total_steps, metrics)
        if step == 3:
            RewardModelRun.objects.filter(pk=self.ctx.job_id).update(cancel_requested=True)

    monkeypatch.setattr(jobs.TrainingHooks, "on_step", cancel_at_step_3)
    assert jobs.reward_model_run_execute(run_id=run.pk, worker="w") is None
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED and run.finished_at is not None
    assert run.step <= 4 < run.total_steps
    assert run.checkpoint_step is not None and run.checkpoint_step >= 3
    assert not RewardModelVersion.objects.exists()


class _WorkerDied(BaseException):
    """Stands in for SIGKILL in one process: nothing in the job catches it."""


def test_a_dead_workers_run_is_reaped_and_resumes_from_its_checkpoint(
    rule, tiny, monkeypatch, settings, sent, django_capture_on_commit_callbacks
):
    settings.JOB_HEARTBEAT_STALE_SECONDS = 30
    project, snapshot = rule
    run = make_run(project, snapshot, tiny, epochs=2)
    real_on_step = jobs.TrainingHooks.on_step

    def die_after_first_checkpoint(self, step, total_steps, metrics):
        real_on_step(self, step, total_steps, metrics)
        if step == 3 and self.ctx.worker == "w1":
            raise _WorkerDied

    monkeypatch.setattr(jobs.TrainingHooks, "on_step", die_after_first_checkpoint)
    with pytest.raises(_WorkerDied):
        jobs.reward_model_run_execute(run_id=run.pk, worker="w1")
    run.refresh_from_db()
    assert run.state == RunState.RUNNING and run.checkpoint_step == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert reap(now=timezone.now() + timedelta(seconds=31)) == [(run.pk, "requeued")]
    assert sent == [(KIND, run.pk, "gpu")]
    version = jobs.reward_model_run_execute(run_id=run.pk, worker="w2")
    run.refresh_from_db()
    assert run.state == RunState.SUCCEEDED, run.error
    assert run.attempts == 2 and run.resumed_from_step == 2
    steps = [p["step"] for p in run.metrics_history if p["kind"] == "step"]
    # The curve has each step once: the lost attempt's step 3 was replayed, not duplicated.
    assert steps == list(range(1, run.total_steps + 1))
    assert version is not None and RewardModelVersion.objects.filter(run=run).count() == 1


def test_compare_two_versions_on_one_validation_set(rule, tiny):
    project, snapshot = rule
    versions = []
    for seed in (0, 1):
        run = make_run(project, snapshot, tiny, epochs=2, seed=seed)
        versions.append(jobs.reward_model_run_execute(run_id=run.pk, worker="w"))
    result = reward_model_versions_compare(a=versions[0], b=versions[1])
    n_validation = snapshot.counts["pairs"]["validation"]
    assert result["pairs"] == result["pairs_available"] == n_validation > 0
    for side in ("a", "b"):
        assert 0.0 <= result[side]["accuracy"] <= 1.0
    assert 0.0 <= result["agreement"] <= 1.0 and -1.0 <= result["pearson"] <= 1.0
    same = reward_model_versions_compare(a=versions[0], b=versions[0])
    assert same["agreement"] == 1.0 and same["pearson"] == pytest.approx(1.0)
    assert same["a"]["accuracy"] == same["b"]["accuracy"]
    other = rule_project(4)
    foreign = RewardModelVersion(project=other, number=1)
    with pytest.raises(RewardModelError, match="different projects"):
        reward_model_versions_compare(a=versions[0], b=foreign)


def test_trigger_is_recorded(rule, tiny):
    project, snapshot = rule
    run = reward_model_run_create(project=project, snapshot=snapshot, base_model=tiny, trigger=RunTrigger.CLI)
    assert run.trigger == "cli"


# --- retrain rule ---------------------------------------------------------------------------


def test_retrain_rule_waits_for_new_agreed_pairs_then_starts_one_run(
    rule, tiny, sent, django_capture_on_commit_callbacks
):
    project, snapshot = rule
    first = jobs.reward_model_run_execute(run_id=make_run(project, snapshot, tiny).pk, worker="w")
    RetrainRule.objects.create(project=project, min_new_pairs=10, base_model=tiny, config=FAST)
    assert retrain_rules_check() == [(project.pk, Contains("0 new pair votes"))]
    rule_project(6, project=project, seed=1)
    assert retrain_rules_check() == [(project.pk, Contains("6 new pair votes"))]
    rule_project(6, project=project, seed=2)
    with django_capture_on_commit_callbacks(execute=True):
        [(_, outcome)] = retrain_rules_check()
    assert "12 new agreed pairs: started export" in outcome, outcome
    # The export is a job of its own, on the default queue; the check only started it.
    [(kind, export_id, queue)] = sent
    assert (kind, queue) == ("export", "default")
    assert "waiting for export" in retrain_rules_check()[0][1]
    sent.run()  # the worker runs the export
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        [(_, outcome)] = retrain_rules_check()
    assert f"on export {export_id}" in outcome, outcome
    rule_row = RetrainRule.objects.get(project=project)
    assert rule_row.pending_snapshot is None
    run = rule_row.last_run
    assert run.trigger == RunTrigger.RULE and run.parent_version == first and run.config["epochs"] == FAST["epochs"]
    assert run.snapshot != snapshot and run.snapshot.counts["pairs_kept"] == snapshot.counts["pairs_kept"] + 12
    assert run.snapshot.params == snapshot.params  # the active version's export parameters
    assert sent == [(KIND, run.pk, "gpu")]
    assert rule_row.last_outcome == outcome and rule_row.last_checked_at is not None
    # While that run is queued, the rule does not start another.
    assert "already queued" in retrain_rules_check()[0][1]
    assert RewardModelRun.objects.filter(trigger=RunTrigger.RULE).count() == 1


class Contains(str):
    """Equal to any string that contains it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and str.__contains__(other, str(self))

    __hash__ = str.__hash__


def test_training_goes_to_the_gpu_queue_and_bookkeeping_to_default():
    from arpad.celery import app
    from jobs import tasks as job_tasks
    from rewardmodel import tasks

    def queue_of(task: Any) -> str:
        return app.amqp.router.route(dict(task._get_exec_options()), task.name, (), {})["queue"].name

    assert get_kind(KIND).queue_name() == "gpu"
    # A GPU worker runs one task at a time: the reaper watching it must not wait behind it.
    assert queue_of(job_tasks.reap_jobs) == "default"
    assert queue_of(tasks.check_retrain_rules) == "default"
