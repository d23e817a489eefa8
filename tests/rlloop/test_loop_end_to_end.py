"""The whole loop on real worker processes, with a tiny policy built in code, in a few minutes on a CPU.

Import prompts with two responses each → simulated annotators (gold: more "good" is
better) label them through the REST API → a cycle: export, reward model, PPO round,
sampling, each run by a real ``celery worker`` process → the new policy's samples arrive
in the queue with their lineage → the simulated annotators label them → the leaderboard
puts the new policy above the reference, with its interval.

The imported responses are samples of the tiny policy itself, so the reward model learns on
the policy's own outputs; the gold is the share of plain letters in a response (the random
policy writes mostly byte-level junk), dense enough for PPO to move in a few seconds.
"""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from annotation.models import Membership, ProjectKind, Response, Role, Task, TaskState
from jobs.models import JobState
from rlloop.models import CycleState, LoopCycle
from rlloop.services import policy_register
from rlloop.simulate import AnnotatorSpec, gold_scorer, simulate
from rlloop.standings import project_leaderboard
from tests.factories import ProjectFactory, UserFactory
from tests.jobs.workers import Workers, worker_env
from tests.rewardmodel.tiny import build_gpt2
from tests.rlloop.test_rounds import TINY

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(600)]

TINY_RM = "tiny-rm"
# Gold scores are shares of characters (differences of a few tenths): temperatures on that scale.
ANNOTATORS = [AnnotatorSpec("ann", temperature=0.05), AnnotatorSpec("ben", temperature=0.05),
              AnnotatorSpec("cat", temperature=0.1, position_bias=0.2)]  # fmt: skip
GOLD = "tests.rlloop.rewards:legible"
OPTIONS = {
    "reward_model": {"base_model": TINY_RM, "config": {"epochs": 6, "groups_per_batch": 8, "max_length": 64,
                                                       "learning_rate": 3e-3}},
    "ppo": {"config": {"updates": 40, "rollouts_per_update": 16, "minibatch_size": 8, "ppo_epochs": 2,
                       "max_new_tokens": 8, "learning_rate": 1e-2, "kl_coef": 0.01, "checkpoint_every": 10,
                       "sample_every": 10, "temperature": 1.0}, "max_prompts": 30},
    "sampling": {"max_prompts": 40, "sampling": {"max_new_tokens": 8, "temperature": 1.0, "seed": 5}, "priority": 50},
}  # fmt: skip


@pytest.fixture
def workers(transactional_db, settings, tmp_path, tiny_policy) -> Iterator[Workers]:
    queue = f"looptest-{uuid.uuid4().hex[:12]}"
    rm_base = build_gpt2(tmp_path / "rm-base")
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.RLLOOP_QUEUE = settings.REWARDMODEL_QUEUE = queue
    settings.POLICY_BASE_MODELS = {TINY: str(tiny_policy)}
    settings.REWARDMODEL_BASE_MODELS = {TINY_RM: str(rm_base)}
    env = worker_env(
        ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT),
        RLLOOP_QUEUE=queue,
        REWARDMODEL_QUEUE=queue,
        RLLOOP_DEVICE="cpu",
        REWARDMODEL_DEVICE="cpu",
        POLICY_BASE_MODELS=f"{TINY}={tiny_policy}",
        REWARDMODEL_BASE_MODELS=f"{TINY_RM}={rm_base}",
        JOB_PROGRESS_INTERVAL_SECONDS="0.2",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    pool = Workers(env, f"default,imports,{queue}", tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def import_file(n: int, policy_dir, rng: random.Random) -> bytes:
    """Prompts each with two samples of the reference policy: the reward model learns on the policy's own outputs."""
    import torch

    from rlloop.generate import PolicySampler
    from rlloop.policy import Sampling

    prompts = [f"say something {rng.choice(['nice', 'kind', 'warm'])} {i}" for i in range(n)]
    sampler = PolicySampler(policy_dir, device=torch.device("cpu"))
    samples = sampler.sample(prompts, per_prompt=2, sampling=Sampling(8, 1.0, 1.0, ()), seed=rng.randrange(2**31))
    lines = [
        {
            "id": f"q{i}",
            "prompt": prompt,
            "responses": [{"text": s.text or "-", "source": "seed-samples"} for s in pair],
        }
        for i, (prompt, pair) in enumerate(zip(prompts, samples, strict=True))
        if len({s.text for s in pair}) == 2
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode(), len(lines)


def test_the_loop_end_to_end(workers, settings, tiny_policy) -> None:
    started = time.monotonic()
    # The server shuffles each annotator's display order with the global generator: seeded, the labels repeat.
    random.seed(0)
    project = ProjectFactory(name="Loop", kind=ProjectKind.PAIRWISE, annotations_per_task=3)
    manager = UserFactory(username="loop-lead")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    client = APIClient()
    client.force_authenticate(manager)
    workers.start()

    # 1. Import prompts with two responses each; a worker runs the import.
    content, count = import_file(300, tiny_policy, random.Random(0))
    upload = SimpleUploadedFile("prompts.jsonl", content)
    answer = client.post(f"/api/v1/projects/{project.pk}/imports/", {"file": upload, "format": "jsonl"})
    assert answer.status_code == 202, answer.content
    workers.wait_for(lambda: Task.objects.filter(project=project).count() == count, 120, "the import")

    # 2. Simulated annotators label every task through the API.
    scorer = gold_scorer(GOLD)
    first = simulate(project, ANNOTATORS, scorer=scorer, seed=1)
    assert first.total == 3 * count and not Task.objects.filter(project=project, state=TaskState.OPEN).exists()

    # 3. A cycle: export → reward model → PPO round → sampling, each on the worker.
    reference = policy_register(project=project, name=TINY, is_reference=True)
    answer = client.post(f"/api/v1/projects/{project.pk}/cycles/", {"options": OPTIONS}, format="json")
    assert answer.status_code == 202, answer.content
    cycle_id = answer.json()["id"]

    def cycle_done():
        cycle = LoopCycle.objects.get(pk=cycle_id)
        return cycle if cycle.is_finished else None

    cycle = workers.wait_for(cycle_done, 420, "the cycle")
    assert cycle.state == CycleState.SUCCEEDED, (cycle.step, cycle.reason)
    new = cycle.policy_round.result
    job = cycle.sampling_job
    assert job.state == JobState.SUCCEEDED and job.summary["tasks"] >= 20, job.summary
    detail = client.get(f"/api/v1/projects/{project.pk}/cycles/{cycle_id}/").json()
    assert [s["job"]["state"] for s in detail["steps"]] == ["succeeded"] * 4 and detail["result"] == new.number

    # 4. The new tasks are in the queue with their lineage, served first.
    sampled = Task.objects.filter(project=project, metadata__sampling_job=job.pk, state=TaskState.OPEN)
    assert sampled.count() == job.summary["tasks"]
    for response in Response.objects.filter(tasks__in=sampled):
        meta = response.metadata
        assert meta["policy"] in (new.label, reference.label) and meta["sampling_job"] == job.pk
        assert isinstance(meta["reward_score"], float) and meta["sampling"]["job_seed"] == 5

    from tests.rlloop.rewards import legible

    gold = {}
    for label in (new.label, reference.label):
        texts = list(Response.objects.filter(tasks__in=sampled, metadata__policy=label).values_list("text", flat=True))
        gold[label] = sum(legible(None, t) for t in texts) / len(texts)
    # 5. The simulated annotators label them; the leaderboard rates the new policy above the reference.
    second = simulate(project, ANNOTATORS, scorer=scorer, seed=2)
    assert second.total == 3 * job.summary["tasks"]
    board = project_leaderboard(project, rounds=500)
    rows = {row["name"]: row for row in board["rows"]}
    mine, theirs = rows[f"policy {new.label}"], rows[f"policy {reference.label}"]
    print(
        f"\nloop end to end in {time.monotonic() - started:.0f} s: {new.label} rating {mine['rating']:.0f}"
        f" [{mine['ci_low']:.0f}, {mine['ci_high']:.0f}] vs reference 1000 over {mine['votes']} votes;"
        f" gold score of the samples {gold[new.label]:.3f} vs {gold[reference.label]:.3f};"
        f" reward-model validation accuracy {cycle.reward_model_run.version.metrics.get('accuracy'):.3f}"
    )
    assert mine["rating"] > theirs["rating"] == pytest.approx(1000.0)
    assert mine["ci_low"] is not None and mine["ci_low"] < mine["rating"] < mine["ci_high"]
    out = io.StringIO()
    from django.core.management import call_command

    call_command("leaderboard", "--project", str(project.pk), "--rounds", "200", stdout=out)
    assert f"policy {new.label}" in out.getvalue()
