"""A PPO round on real Celery worker processes: SIGKILL mid-round, reaped, resumed by another worker.

The resumed round must end with exactly the weights of an uninterrupted run of the same
config (run here, in this process, with ``rlloop.ppo.train``), and register one policy.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from django.db import transaction
from safetensors.torch import load_file

from jobs.lifecycle import jobs_reap
from jobs.models import JobState
from rlloop.models import PolicyRound, PolicyVersion
from rlloop.ppo import PPOConfig, train
from rlloop.services import policy_register, policy_round_create
from tests.jobs.workers import Workers, worker_env
from tests.rewardmodel.test_services import rule_project
from tests.rlloop.test_rounds import TINY, reward_model_version

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(600)]

STALE_SECONDS = 3.0
CONFIG = {
    "updates": 6,
    "rollouts_per_update": 4,
    "minibatch_size": 2,
    "ppo_epochs": 2,
    "max_new_tokens": 6,
    "learning_rate": 1e-3,
    "checkpoint_every": 1,
    "adaptive_kl": True,
    "lora": {"r": 4, "alpha": 8},
}


@pytest.fixture
def workers(transactional_db, settings, tmp_path, tiny_policy) -> Iterator[Workers]:
    queue = f"roundtest-{uuid.uuid4().hex[:12]}"
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.RLLOOP_QUEUE = queue
    settings.POLICY_BASE_MODELS = {TINY: str(tiny_policy)}
    settings.JOB_HEARTBEAT_STALE_SECONDS = STALE_SECONDS
    env = worker_env(
        ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT),
        RLLOOP_QUEUE=queue,
        RLLOOP_DEVICE="cpu",
        POLICY_BASE_MODELS=f"{TINY}={tiny_policy}",
        JOB_HEARTBEAT_STALE_SECONDS=str(STALE_SECONDS),
        JOB_PROGRESS_INTERVAL_SECONDS="0.1",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    pool = Workers(env, queue, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def test_a_killed_round_resumes_on_another_worker_to_the_uninterrupted_weights(workers, settings, tmp_path):
    artifacts = Path(settings.ARTIFACT_ROOT)
    project = rule_project(12)
    policy = policy_register(project=project, name=TINY)
    rm = reward_model_version(project, Path(policy.model_dir), artifacts)
    first = workers.start(ARPAD_TEST_JOB_PROGRESS_DELAY="1.0")
    with transaction.atomic():
        round = policy_round_create(project=project, method="ppo", policy=policy, config=CONFIG)

    def after_a_checkpoint():
        row = PolicyRound.objects.get(pk=round.pk)
        assert row.state in (JobState.QUEUED, JobState.RUNNING), (row.state, row.error, row.log_tail[-5:])
        return row if row.state == JobState.RUNNING and (row.checkpoint_step or 0) >= 2 else None

    killed = workers.wait_for(after_a_checkpoint, 240, "the round to pass its second checkpoint")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert not PolicyVersion.objects.filter(round=round).exists()
    workers.wait_for(
        lambda: [(r.kind, r.job_id, r.outcome) for r in jobs_reap()] == [("policy_round", round.pk, "requeued")],
        30,
        "the reaper to requeue the round",
    )
    workers.start()
    done = workers.wait_for(
        lambda: (r := PolicyRound.objects.get(pk=round.pk)).is_finished and r, 300, "the resumed round to finish"
    )
    assert done.state == JobState.SUCCEEDED, (done.error, done.log_tail[-10:])
    assert done.attempts == 2 and done.resumed_from_step >= killed.checkpoint_step
    steps = [p["step"] for p in done.metrics_history if "objective/scores" in p]
    assert steps == list(range(1, CONFIG["updates"] + 1))  # every update once, none doubled by the replay
    version = PolicyVersion.objects.get(round=done)

    # The same round without interruption, in this process.
    uninterrupted = train(
        PPOConfig.from_dict(
            {
                **done.config,
                "policy": policy.model_dir,
                "reference": policy.model_dir,
                "reward_model": str(artifacts / rm.model_dir),
                "prompts": str(artifacts / done.output_dir / "prompts.jsonl"),
                "output_dir": str(tmp_path / "uninterrupted"),
                "device": "cpu",
            }
        )
    )
    want = load_file(Path(uninterrupted.model_dir) / "model.safetensors")
    got = load_file(artifacts / version.model_dir / "model.safetensors")
    assert set(want) == set(got)
    different = [name for name in want if not torch.equal(want[name], got[name])]
    assert different == []
    print(f"killed at update {killed.step} (checkpoint {killed.checkpoint_step}); resumed at {done.resumed_from_step}")
