"""Sampling jobs: policy samples become tasks in the queue, with lineage and scores, resumably."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from annotation.models import Project, ProjectKind, Prompt, Response, Task, TaskState
from annotation.services import assignment_claim_next
from jobs.models import JobState
from rlloop import jobs as rl_jobs
from rlloop.models import PolicyRound, SamplingJob
from rlloop.sampling import response_source, sampling_job_create, used_prompt_ids
from rlloop.services import PolicyError, policy_register
from tests.factories import ProjectFactory, UserFactory
from tests.rewardmodel.test_services import manager_of, rule_project
from tests.rlloop.test_rounds import TINY, reward_model_version

pytestmark = pytest.mark.django_db

FAST = {"max_new_tokens": 6, "temperature": 1.0, "seed": 3}


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path, tiny_policy):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    settings.POLICY_BASE_MODELS = {TINY: str(tiny_policy)}
    settings.RLLOOP_DEVICE = "cpu"
    return settings.ARTIFACT_ROOT


@pytest.fixture
def ready(artifacts, tiny_policy):
    project = rule_project(10)
    reference = policy_register(project=project, name=TINY, is_reference=True)
    other = policy_register(project=project, name=TINY)
    rm = reward_model_version(project, tiny_policy, artifacts)
    return project, reference, other, rm


def run(job: SamplingJob) -> SamplingJob:
    rl_jobs.sampling_execute(job_id=job.pk, worker="test")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error, job.traceback)
    return job


def sampled_tasks(job: SamplingJob) -> list[Task]:
    return list(Task.objects.filter(metadata__sampling_job=job.pk).order_by("pk"))


def test_samples_become_prioritised_tasks_with_lineage_and_scores(ready) -> None:
    project, reference, other, rm = ready
    job = sampling_job_create(
        project=project, policies=[other], anchor=reference, max_prompts=6, sampling=FAST, priority=50, send=False
    )
    assert job.responses_per_prompt == 2 and job.reward_model == rm
    job = run(job)
    tasks = sampled_tasks(job)
    assert job.summary["prompts"] == 6 and job.summary["tasks"] == len(tasks) >= 1
    assert job.summary["tasks"] + job.summary["skipped"] == 6
    for task in tasks:
        assert task.state == TaskState.OPEN and task.priority == 50 and task.project == project
        assert task.required_annotations == project.annotations_per_task and task.num_responses == 2
        responses = list(task.responses.all())
        assert {r.source for r in responses} == {response_source(other), response_source(reference)}
        for r in responses:
            meta = r.metadata
            version = other if meta["policy"] == other.label else reference
            assert meta["policy_version"] == version.pk and meta["sampling_job"] == job.pk
            assert meta["sampling"]["temperature"] == 1.0 and meta["sampling"]["max_new_tokens"] == 6
            assert meta["sampling"]["job_seed"] == 3 and isinstance(meta["sampling"]["seed"], int)
            assert meta["reward_model"] == rm.label and isinstance(meta["reward_score"], float)
            assert 1 <= meta["tokens"] <= 6 and meta["reference"] == reference.label
            assert isinstance(meta["kl"], float)
            if version == reference:
                assert meta["kl"] == 0.0
    # Served first: the claim takes the sampled task before the project's older ones.
    annotator = UserFactory()
    project.memberships.create(user=annotator, role="annotator")
    claim = assignment_claim_next(project=project, annotator=annotator)
    assert claim is not None and claim.assignment.task_id in {t.pk for t in tasks}


def test_the_same_seed_gives_the_same_texts_and_a_retry_resumes(ready, monkeypatch) -> None:
    project, reference, other, _ = ready
    monkeypatch.setattr(rl_jobs, "SAMPLING_BATCH_PROMPTS", 2)
    first = run(sampling_job_create(project=project, policies=[other, reference], mode="head_to_head",
                                    prompts="project", max_prompts=6, sampling=FAST, send=False))  # fmt: skip
    texts = [[r.text for r in t.responses.order_by("pk")] for t in sampled_tasks(first)]

    second = sampling_job_create(project=project, policies=[other, reference], mode="head_to_head",
                                 prompts="project", max_prompts=6, sampling=FAST, send=False)  # fmt: skip
    real = rl_jobs.tasks_from_samples
    calls = {"n": 0}

    def crash_on_second_batch(job, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker lost")
        return real(job, rows)

    monkeypatch.setattr(rl_jobs, "tasks_from_samples", crash_on_second_batch)
    rl_jobs.sampling_execute(job_id=second.pk, worker="test")
    second.refresh_from_db()
    assert second.state in (JobState.QUEUED, JobState.FAILED, JobState.RUNNING)
    kept = len(sampled_tasks(second))
    assert kept >= 1 and second.summary["prompts"] == 2
    monkeypatch.setattr(rl_jobs, "tasks_from_samples", real)
    if second.state != JobState.QUEUED:
        SamplingJob.objects.filter(pk=second.pk).update(state=JobState.QUEUED, error="", errors=[], traceback="")
    second = run(second)
    again = [[r.text for r in t.responses.order_by("pk")] for t in sampled_tasks(second)]
    assert again == texts
    assert second.summary["prompts"] == 6 and Task.objects.filter(metadata__sampling_job=second.pk).count() == len(
        texts
    )


def test_identical_texts_are_dropped(ready, monkeypatch) -> None:
    project, reference, other, _ = ready
    from rlloop.generate import PolicySampler, Sample

    def same(self, prompts, *, per_prompt, sampling, seed, batch_size=16):
        return [[Sample(" same  answer ", 3, True, 0.0, False)] * per_prompt for _ in prompts]

    monkeypatch.setattr(PolicySampler, "sample", same)
    job = run(sampling_job_create(project=project, policies=[other], anchor=reference, max_prompts=3, sampling=FAST,
                                  send=False))  # fmt: skip
    assert job.summary == {"prompts": 3, "responses": 0, "duplicates": 3, "tasks": 0, "skipped": 3}
    assert not sampled_tasks(job)


def test_unused_prompts_leave_out_what_a_round_trained_on(ready, artifacts) -> None:
    project, reference, other, rm = ready
    round = PolicyRound.objects.create(
        project=project, method="ppo", number=1, policy=reference, reward_model=rm,
        output_dir=f"policies/project-{project.pk}/round-1",
    )  # fmt: skip
    directory = artifacts / round.output_dir
    directory.mkdir(parents=True)
    (directory / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": "x", "id": f"syn-{i}"}) + "\n" for i in range(8))
    )
    assert used_prompt_ids(project) == {f"syn-{i}" for i in range(8)}
    job = run(sampling_job_create(project=project, policies=[other], anchor=reference, max_prompts=50, sampling=FAST,
                                  send=False))  # fmt: skip
    assert job.summary["prompts"] == 2
    assert {t.prompt.external_id for t in sampled_tasks(job)} <= {"syn-8", "syn-9"}


def test_a_prompt_file_into_another_ranking_project(ready) -> None:
    project, reference, other, _ = ready
    manager = manager_of(project)
    target = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=4, annotations_per_task=2)
    target.memberships.create(user=manager, role="manager")
    records = [{"prompt": [{"role": "user", "content": f"question {i}"}], "id": f"q{i}"} for i in range(3)]
    job = run(sampling_job_create(project=project, target=target, policies=[other, reference], prompts="file",
                                  prompt_records=records, responses_per_prompt=4, sampling=FAST, user=manager,
                                  send=False))  # fmt: skip
    tasks = sampled_tasks(job)
    assert tasks and all(t.project == target and 2 <= t.num_responses <= 4 for t in tasks)
    assert set(Prompt.objects.filter(project=target).values_list("external_id", flat=True)) <= {"q0", "q1", "q2"}
    # Slots alternate: both policies answer each prompt.
    for t in tasks:
        assert {r.metadata["policy"] for r in t.responses.all()} <= {other.label, reference.label}


def test_a_rolled_back_prompt_file_is_never_read_by_a_later_job(ready) -> None:
    from django.db import transaction

    from rlloop.sampling import sampling_prompts_write

    project, reference, other, _ = ready
    records = [{"prompt": [{"role": "user", "content": "from a file that was rolled back"}], "id": "gone"}]
    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        dropped = sampling_job_create(project=project, policies=[other], prompts="file", prompt_records=records,
                                      sampling=FAST, send=False)  # fmt: skip
        raise RuntimeError("roll back")
    job = sampling_job_create(project=project, policies=[other], prompts="project", sampling=FAST, send=False)
    assert job.output_dir != dropped.output_dir  # even where the database gave it the same id
    from rewardmodel.services import resolve_path

    written = sampling_prompts_write(job, resolve_path(job.output_dir))
    assert "gone" not in {r["id"] for r in written} and written


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"policies": []}, "policies"),
        ({"responses_per_prompt": 3}, "responses_per_prompt"),
        ({"mode": "head_to_head", "anchor": "other"}, "anchor"),
        ({"mode": "sideways"}, "mode"),
        ({"sampling": {"temperature": 0}}, "sampling"),
        ({"sampling": {"seed": -1}}, "sampling.seed"),
        ({"sampling": {"beams": 2}}, "sampling.beams"),
        ({"priority": "high"}, "priority"),
        ({"max_prompts": 0}, "max_prompts"),
        ({"prompts": "file", "prompt_records": [{"prompt": ""}]}, "prompts[0]"),
        (
            {"prompts": "file", "prompt_records": [{"prompt": "a", "id": "x"}, {"prompt": "b", "id": "x"}]},
            "prompts[1].id",
        ),
        ({"prompts": "somewhere"}, "prompts"),
    ],
)
def test_refusals_name_the_field_and_create_nothing(ready, kwargs, field) -> None:
    project, reference, other, _ = ready
    args = {"project": project, "policies": [other], "sampling": FAST, "send": False, **kwargs}
    if args.get("anchor") == "other":
        args["anchor"] = other
    with pytest.raises(PolicyError) as info:
        sampling_job_create(**args)
    assert info.value.field == field, info.value
    assert not SamplingJob.objects.exists()


def test_another_projects_policy_or_unmanaged_target_is_refused(ready) -> None:
    project, reference, other, _ = ready
    elsewhere = rule_project(2)
    foreign = policy_register(project=elsewhere, name=TINY)
    with pytest.raises(PolicyError, match="another project"):
        sampling_job_create(project=project, policies=[foreign], send=False)
    manager = manager_of(project)
    with pytest.raises(PolicyError) as info:
        sampling_job_create(project=project, target=elsewhere, policies=[other], user=manager, send=False)
    assert info.value.status == 403
    assert Response.objects.filter(prompt__project=project).count() == 20
    assert isinstance(project, Project)


def test_api_and_cli_create_jobs_and_hide_paths(ready, job_messages, django_capture_on_commit_callbacks) -> None:
    project, reference, other, _ = ready
    manager = manager_of(project)
    client = APIClient()
    client.force_authenticate(manager)
    url = f"/api/v1/projects/{project.pk}/sampling/"
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            url,
            {"policies": [other.number], "anchor": reference.number, "max_prompts": 4, "sampling": FAST, "priority": 7},
            format="json",
        )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["state"] == "queued" and body["policies"] == [other.number] and body["anchor"] == reference.number
    assert body["priority"] == 7 and "output_dir" not in body
    assert job_messages.ids("sampling") == [body["id"]]
    job_messages.run()
    detail = client.get(f"{url}{body['id']}/").json()
    assert detail["state"] == "succeeded" and detail["summary"]["prompts"] == 4
    assert client.get(url).json()["results"][0]["id"] == body["id"]

    bad = client.post(url, {"policies": [99]}, format="json")
    assert bad.status_code == 400 and "policies" in json.dumps(bad.json())
    annotator = UserFactory()
    project.memberships.create(user=annotator, role="annotator")
    client.force_authenticate(annotator)
    assert client.get(url).status_code == 403
    assert client.post(url, {"policies": [other.number]}, format="json").status_code == 403

    call_command("sample_policies", "--project", str(project.pk), "--policy", str(other.number), "--anchor",
                 str(reference.number), "--max-prompts", "2", "--set", "max_new_tokens=4", "--inline")  # fmt: skip
    newest = SamplingJob.objects.order_by("-pk").first()
    assert newest.state == JobState.SUCCEEDED and newest.sampling["max_new_tokens"] == 4
    with pytest.raises(CommandError, match="--policy"):
        call_command("sample_policies", "--project", str(project.pk), "--policy", "42")


def test_a_sample_never_carries_nul_which_postgresql_refuses(tiny_policy, monkeypatch) -> None:
    import torch

    from rlloop.generate import PolicySampler
    from rlloop.policy import Sampling

    sampler = PolicySampler(tiny_policy, device=torch.device("cpu"))
    monkeypatch.setattr(sampler.tokenizer, "decode", lambda tokens, **kwargs: " a\x00b\x00 ")
    [[sample]] = sampler.sample(["hi"], per_prompt=1, sampling=Sampling(4, 1.0, 1.0, ()), seed=0)
    assert sample.text == "ab"
