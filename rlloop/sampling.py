"""Sampling jobs: fresh responses of policy versions, as tasks in an annotators' queue.

This is where the loop closes. A job takes a set of prompts (the project's prompts no
round has trained on, all of them, or a prompt file), samples responses from one or
several policy versions on a worker of the ``gpu`` queue, drops identical texts, scores
every response with a reward model and creates one task per prompt in a target project
with a priority, so the tasks are served before older work.

Two ways to fill a task:

- ``pool``: K responses per prompt, the policies taking the slots in turn (prompt by
  prompt, so each policy meets each other policy); with an ``anchor`` (the previous
  policy or the reference) one slot is always the anchor's.
- ``head_to_head``: one response per policy (plus the anchor's): K is the number of them.

Lineage. Each response's ``metadata`` holds the policy version, the round it came from,
the sampling job, the sampling options and the seed of its batch, whether it finished by
itself, its token count, its KL from the reference (when the job knows one) and its
reward-model score. Its ``source`` is the policy's label (``policy p3``), which the
leaderboard rates. None of this reaches annotators: the labeling page and the claim API
send prompt and response texts only.

Everything a worker would trip over is checked at create time, naming the field; the
prompt file is written into the job's directory then, and a project's prompts by the first
attempt, so a retried attempt samples exactly the same prompts with the same seeds and
skips those whose task already exists.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
from pathlib import Path
from typing import Any

from django.db import transaction

from annotation.models import Project, ProjectKind, Prompt, Response, Role, Task, TaskResponse
from jobs.lifecycle import JobAlreadyFinished, job_cancel, job_create, job_send
from jobs.models import JobTrigger
from rewardmodel.models import RewardModelVersion
from rewardmodel.services import resolve_path
from rlloop import conf
from rlloop.models import PolicyRound, PolicyVersion, RoundMethod, SamplingJob, SamplingMode
from rlloop.prompts import seeded_sample
from rlloop.services import PolicyError, generation_resolve, policy_dir

PROMPT_SOURCES = ("unused", "project", "file")
MAX_POLICIES = 8
MAX_FILE_PROMPTS = 10_000
TASK_SOURCE = "on-policy sampling"


def response_source(version: PolicyVersion) -> str:
    """The name a policy's responses carry in ``Response.source``: what the leaderboard rates."""
    return f"policy {version.label}"


def used_prompt_ids(project: Project) -> set[str]:
    """External ids of the project's prompts that a PPO round of the project has trained on."""
    used: set[str] = set()
    for output_dir in PolicyRound.objects.filter(project=project, method=RoundMethod.PPO).values_list(
        "output_dir", flat=True
    ):
        path = resolve_path(output_dir) / "prompts.jsonl" if output_dir else None
        if path is None or not path.is_file():
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    used.add(str(json.loads(line).get("id")))
                except (ValueError, AttributeError):
                    continue
    return used


def _check_prompt_records(records: Any) -> list[dict[str, Any]]:
    from rlloop.prompts import check_prompt

    if not isinstance(records, list) or not records:
        raise PolicyError("prompts", "must be a non-empty list of prompts")
    if len(records) > MAX_FILE_PROMPTS:
        raise PolicyError("prompts", f"at most {MAX_FILE_PROMPTS} prompts per job")
    out, seen = [], set()
    for i, record in enumerate(records):
        where = f"prompts[{i}]"
        if isinstance(record, dict):
            unknown = sorted(set(record) - {"prompt", "id"})
            if unknown:
                raise PolicyError(f"{where}.{unknown[0]}", "unknown; a prompt record has prompt and id")
            prompt, rid = record.get("prompt"), record.get("id")
        else:
            prompt, rid = record, None
        try:
            prompt = check_prompt(prompt, where)
        except ValueError as exc:
            raise PolicyError(where, str(exc).split(": ", 1)[-1]) from None
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if rid is None:
            digest = hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]
            rid = f"prompt-{digest}"
        if not isinstance(rid, str | int) or isinstance(rid, bool) or not str(rid).strip() or len(str(rid)) > 255:
            raise PolicyError(f"{where}.id", "must be a non-empty string of at most 255 characters")
        rid = str(rid)
        if rid in seen:
            raise PolicyError(f"{where}.id", f"{rid!r} appears twice")
        seen.add(rid)
        out.append({"prompt": prompt, "id": rid})
    return out


def _slots(mode: str, k: int | None, policies: list[PolicyVersion], anchor: PolicyVersion | None, target: Project):
    most = target.responses_per_task
    if mode == SamplingMode.HEAD_TO_HEAD:
        k_resolved = len(policies) + (1 if anchor else 0)
        if k is not None and k != k_resolved:
            raise PolicyError("responses_per_prompt", f"a head-to-head takes one response per policy: {k_resolved}")
    else:
        k_resolved = k if k is not None else most
    if isinstance(k_resolved, bool) or not isinstance(k_resolved, int) or k_resolved < 2:
        raise PolicyError("responses_per_prompt", "must be an integer of at least 2 (with the anchor, if any)")
    if target.kind == ProjectKind.PAIRWISE and k_resolved != 2:
        raise PolicyError("responses_per_prompt", f"{target.name} is pairwise: its tasks hold exactly 2 responses")
    if k_resolved > most:
        raise PolicyError("responses_per_prompt", f"{target.name} takes at most {most} responses per task")
    if mode == SamplingMode.POOL and anchor is not None and k_resolved - 1 < 1:
        raise PolicyError("responses_per_prompt", "leaves no slot beside the anchor")
    return k_resolved


@transaction.atomic
def sampling_job_create(
    *,
    project: Project,
    policies: list[PolicyVersion],
    target: Project | None = None,
    anchor: PolicyVersion | None = None,
    mode: str = SamplingMode.POOL,
    responses_per_prompt: int | None = None,
    reward_model: RewardModelVersion | None = None,
    prompts: str = "unused",
    prompt_records: Any = None,
    max_prompts: int = 200,
    sampling: dict[str, Any] | None = None,
    priority: int = 10,
    user: Any = None,
    trigger: str = JobTrigger.API,
    send: bool = True,
) -> SamplingJob:
    """Record a queued sampling job; its message goes to the GPU queue once the transaction commits.

    ``target`` defaults to ``project``; another target must be managed by ``user`` (the API
    checks the caller manages ``project``). ``reward_model`` defaults to the project's
    active version (responses are then unscored when there is none).
    """
    target = target or project
    if mode not in SamplingMode.values:
        raise PolicyError("mode", f"must be one of {', '.join(SamplingMode.values)}")
    if not policies:
        raise PolicyError("policies", "name at least one policy version")
    if len(policies) > MAX_POLICIES:
        raise PolicyError("policies", f"at most {MAX_POLICIES} policy versions per job")
    if len({p.pk for p in policies}) != len(policies):
        raise PolicyError("policies", "a policy version is named twice")
    for p in [*policies, *([anchor] if anchor else [])]:
        if p.project_id != project.pk:
            raise PolicyError("policies" if p is not anchor else "anchor", f"{p.label} belongs to another project")
        if not (policy_dir(p) / "config.json").is_file():
            raise PolicyError("policies" if p is not anchor else "anchor", f"the checkpoint of {p.label} is missing")
    if anchor is not None and anchor.pk in {p.pk for p in policies}:
        raise PolicyError("anchor", f"{anchor.label} is already one of the policies")
    if target.pk != project.pk and user is not None and target.role_of(user) != Role.MANAGER:
        raise PolicyError("target", "you do not manage that project", code="permission_denied", status=403)
    if reward_model is not None and reward_model.project_id != project.pk:
        raise PolicyError("reward_model", "belongs to another project")
    if reward_model is None:
        reward_model = RewardModelVersion.objects.filter(project=project, is_active=True).first()
    k = _slots(mode, responses_per_prompt, policies, anchor, target)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1_000_000 <= priority <= 1_000_000:
        raise PolicyError("priority", "must be an integer in [-1000000, 1000000]")
    if isinstance(max_prompts, bool) or not isinstance(max_prompts, int) or not 1 <= max_prompts <= conf.max_prompts():
        raise PolicyError("max_prompts", f"must be an integer in [1, {conf.max_prompts()}]")
    sampling = dict(sampling or {})
    seed = sampling.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise PolicyError("sampling.seed", "must be an integer in [0, 2^31)")
    try:
        resolved = generation_resolve(sampling, base=policies[0].generation)
    except PolicyError as exc:
        raise PolicyError(f"sampling{(exc.field or '').removeprefix('generation')}", exc.message) from None
    if prompts not in PROMPT_SOURCES:
        raise PolicyError("prompts", f"must be one of {', '.join(PROMPT_SOURCES)}, or a list of prompts")
    records = None
    if prompts == "file":
        records = _check_prompt_records(prompt_records)
        _check_target_prompts(target, records)
    else:
        if prompt_records is not None:
            raise PolicyError("prompt_records", 'only with prompts = "file"')
        if not _project_records(project, unused=prompts == "unused", policies=policies, limit=1):
            what = "no prompt that no round has trained on" if prompts == "unused" else "no prompts"
            raise PolicyError("prompts", f"{project.name} has {what}: import prompts or pick a prompt file")
    job = job_create(
        SamplingJob,
        project=project,
        target=target,
        anchor=anchor,
        reward_model=reward_model,
        mode=mode,
        responses_per_prompt=k,
        priority=priority,
        sampling={**resolved, "seed": seed},
        data={"prompts": prompts, "max_prompts": max_prompts},
        trigger=trigger,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    job.policies.set(policies)
    # A folder of its own even when a rolled-back creation left one behind under the same id
    # (SQLite gives a rolled-back id to the next row): the job never reads another's prompts.
    job.output_dir = f"sampling/project-{project.pk}/job-{job.pk}-{secrets.token_hex(4)}"
    job.save(update_fields=["output_dir"])
    if records is not None:
        from rlloop.prompts import write_records

        records = seeded_sample(records, max_prompts, seed)
        write_records(resolve_path(job.output_dir) / "prompts.jsonl", records)
    if send:
        job_send(job)
    return job


def _check_target_prompts(target: Project, records: list[dict[str, Any]]) -> None:
    """A file prompt whose id the target already holds must be the same conversation."""
    ids = [r["id"] for r in records]
    existing = dict(Prompt.objects.filter(project=target, external_id__in=ids).values_list("external_id", "messages"))
    for i, record in enumerate(records):
        if record["id"] in existing and existing[record["id"]] != record["prompt"]:
            raise PolicyError(f"prompts[{i}].id", f"{target.name} already holds a different prompt {record['id']!r}")


def _project_records(
    project: Project, *, unused: bool, policies: list[PolicyVersion], limit: int | None = None
) -> list[dict[str, Any]]:
    """The project's answerable prompts; with ``unused``, minus those a round trained on or these policies answered."""
    skip = used_prompt_ids(project) if unused else set()
    answered = set()
    if unused:
        answered = set(
            Response.objects.filter(
                prompt__project=project, source__in=[response_source(p) for p in policies]
            ).values_list("prompt_id", flat=True)
        )
    out = []
    for pk, external_id, messages in (
        Prompt.objects.filter(project=project).order_by("pk").values_list("pk", "external_id", "messages")
    ):
        if external_id in skip or pk in answered:
            continue
        if not isinstance(messages, list) or not messages or messages[-1].get("role") == "assistant":
            continue
        out.append({"prompt": [{"role": m["role"], "content": m["content"]} for m in messages], "id": external_id})
        if limit is not None and len(out) >= limit:
            break
    return out


def sampling_prompts_write(job: SamplingJob, directory: Path) -> list[dict[str, Any]]:
    """The job's prompts, written once into its directory (a retried attempt reads the same file)."""
    from rlloop.prompts import read_records, write_records

    target = directory / "prompts.jsonl"
    if not target.is_file() and job.data.get("prompts") == "file":
        raise RuntimeError(f"the job's prompt file is missing ({target.name} in its output directory)")
    if not target.is_file():
        records = _project_records(
            job.project, unused=job.data.get("prompts") == "unused", policies=list(job.policies.all())
        )
        records = seeded_sample(records, int(job.data.get("max_prompts", 200)), int(job.sampling.get("seed", 0)))
        if not records:
            raise RuntimeError("the project holds no prompt to sample any more")
        write_records(target, records)
    return read_records(target)


def sampling_job_cancel(*, job: SamplingJob, user: Any = None) -> SamplingJob:
    try:
        return job_cancel(job=job, user=user)
    except JobAlreadyFinished as exc:
        raise PolicyError(None, f"sampling job {job.pk} already {exc.job.state}", code="already_finished", status=409)


# --- turning samples into tasks ------------------------------------------------------------


_SPACE = re.compile(r"\s+")


def same_text_key(text: str) -> str:
    """Texts equal up to whitespace are one response."""
    return _SPACE.sub(" ", text).strip()


def plan_slots(job: SamplingJob, policies: list[PolicyVersion], index: int) -> list[PolicyVersion]:
    """Which version answers each slot of the ``index``-th prompt's task."""
    anchor = [job.anchor] if job.anchor_id else []
    if job.mode == SamplingMode.HEAD_TO_HEAD:
        return [*policies, *anchor]
    free = job.responses_per_prompt - len(anchor)
    return [*(policies[(index + j) % len(policies)] for j in range(free)), *anchor]


def batch_seed(job_seed: int, batch: int, version: PolicyVersion) -> int:
    digest = hashlib.sha256(f"{job_seed}:{batch}:{version.pk}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def done_prompt_ids(job: SamplingJob) -> set[str]:
    return set(
        Task.objects.filter(project=job.target, metadata__sampling_job=job.pk).values_list(
            "prompt__external_id", flat=True
        )
    )


@transaction.atomic
def tasks_from_samples(job: SamplingJob, rows: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[str, int]:
    """Create the batch's prompts (in the target), responses and tasks in one transaction.

    ``rows`` holds, per prompt record, its candidates: ``{"version", "text", "metadata"}``.
    Identical texts (up to whitespace) are dropped, the first kept; a prompt left with
    fewer than two responses gets no task. Response positions are shuffled per prompt
    from the job's seed.
    """
    target = Project.objects.select_for_update().get(pk=job.target_id)
    counts = {"prompts": 0, "responses": 0, "duplicates": 0, "tasks": 0, "skipped": 0}
    rl_round = max((p.round.number for p in job.policies.all() if p.round_id), default=None)
    for record, candidates in rows:
        counts["prompts"] += 1
        kept, seen = [], set()
        for c in candidates:
            key = same_text_key(c["text"])
            if not key or key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            kept.append(c)
        if len(kept) < 2:
            counts["skipped"] += 1
            continue
        prompt, _ = Prompt.objects.get_or_create(
            project=target,
            external_id=record["id"],
            defaults={"messages": record["prompt"], "metadata": {"sampling_job": job.pk}},
        )
        responses = Response.objects.bulk_create(
            [
                Response(prompt=prompt, text=c["text"], source=response_source(c["version"]), metadata=c["metadata"])
                for c in kept
            ]
        )
        counts["responses"] += len(responses)
        order = list(range(len(responses)))
        random.Random(f"{job.sampling.get('seed', 0)}:{record['id']}").shuffle(order)
        task = Task.objects.create(
            project=target,
            prompt=prompt,
            num_responses=len(responses),
            priority=job.priority,
            required_annotations=target.annotations_per_task,
            source=TASK_SOURCE,
            rl_round=rl_round,
            metadata={"sampling_job": job.pk, "policies": sorted({c["version"].label for c in kept})},
        )
        TaskResponse.objects.bulk_create(
            [TaskResponse(task=task, response=responses[i], position=pos) for pos, i in enumerate(order)]
        )
        counts["tasks"] += 1
    return counts
