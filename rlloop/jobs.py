"""The ``policy_round`` job kind: train one round on a worker of the ``gpu`` queue and register its policy.

A round is a job of the shared lifecycle (``jobs``). A retried attempt resumes
(``Retry.RESUME``): the trainer continues from the last complete checkpoint in the round's
directory, on the data file the first attempt wrote, and the metric points recorded past
that checkpoint are dropped before they are replayed. The policy version is created in the
same transaction that marks the round succeeded.

Each method is one entry of :data:`METHODS`: how to build its trainer's config from the
round and which function trains. A DPO or GRPO round adds an entry and a trainer module.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from jobs.lifecycle import JobContext, job_execute
from jobs.registry import Retry, job_kind
from rewardmodel.hooks import TrainingCancelled
from rewardmodel.jobs import TrainingHooks
from rewardmodel.services import resolve_path, version_model_dir
from rlloop import conf
from rlloop.models import PolicyRound, PolicyVersion, RoundMethod, SamplingJob
from rlloop.sampling import batch_seed, done_prompt_ids, plan_slots, sampling_prompts_write, tasks_from_samples
from rlloop.services import policy_dir, policy_from_round, round_data_write, round_gold_reward_model

KEPT_SAMPLE_TABLES = 20


class RoundHooks(TrainingHooks):
    """The reward-model job's bridge to the job context, plus the table of sample generations."""

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(ctx)
        self.tables: list[dict[str, Any]] = list(ctx.job.samples or [])

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        resumed = int(info.get("resumed_from_step") or 0) if isinstance(info, dict) else 0
        # Tables past the checkpoint this attempt resumes from are about to be sampled again.
        self.tables = [t for t in self.tables if int(t.get("step", 0)) <= resumed]
        super().on_start(total_steps, info)
        self.ctx.set(samples=self.tables)

    def on_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        # Model text may hold NUL, which PostgreSQL's jsonb refuses: dropped from every string.
        rows = [{k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in row.items()} for row in rows]
        self.tables = [t for t in self.tables if t.get("step") != step]
        self.tables.append({"step": int(step), "rows": rows})
        self.tables = self.tables[-KEPT_SAMPLE_TABLES:]
        self.ctx.set(samples=self.tables, force=True)


@dataclass(frozen=True)
class Method:
    build: Callable[[PolicyRound, Path, dict[str, Any]], Any]
    train: Callable[[Any, Any], Any]


def _ppo_config(round: PolicyRound, output: Path, config: dict[str, Any]) -> Any:
    from rlloop.ppo import PPOConfig

    gold = round_gold_reward_model(round)  # a version number in round.data, never a caller's path
    return PPOConfig.from_dict(
        {
            **config,
            "policy": str(policy_dir(round.policy)),
            "reference": str(policy_dir(round.reference)) if round.reference_id else None,
            "reward_model": str(version_model_dir(round.reward_model)),
            "reward_function": None,
            "gold_reward_model": str(version_model_dir(gold)) if gold is not None else None,
            "prompts": str(round_data_write(round, output)),
            "output_dir": str(output),
        }
    )


def _ppo_train(config: Any, hooks: Any) -> Any:
    from rlloop.ppo import train

    return train(config, hooks)


def _sft_config(round: PolicyRound, output: Path, config: dict[str, Any]) -> Any:
    from rlloop.sft import SFTConfig

    return SFTConfig.from_dict(
        {
            **config,
            "policy": str(policy_dir(round.policy)),
            "data": str(round_data_write(round, output)),
            "source": "demonstrations",  # the platform wrote the chosen responses as demonstrations
            "output_dir": str(output),
        }
    )


def _sft_train(config: Any, hooks: Any) -> Any:
    from rlloop.sft import train

    return train(config, hooks)


METHODS: dict[str, Method] = {
    RoundMethod.PPO: Method(_ppo_config, _ppo_train),
    RoundMethod.SFT: Method(_sft_config, _sft_train),
}


def remove_round_files(output_dir: str, root: Path | None = None) -> None:
    """Delete a round's (or sampling job's) directory, and its project's folder once empty; only ever under ``root``."""
    if not output_dir:
        return
    root = (root or conf.policies_root()).resolve()
    directory = resolve_path(output_dir).resolve()
    if directory == root or not directory.is_relative_to(root):
        return
    shutil.rmtree(directory, ignore_errors=True)
    if directory.parent != root:
        with contextlib.suppress(OSError):
            directory.parent.rmdir()


@receiver(post_delete, sender=PolicyRound)
def _files_go_with_the_round(sender: type[PolicyRound], instance: PolicyRound, **kwargs: Any) -> None:
    output_dir = instance.output_dir
    transaction.on_commit(lambda: remove_round_files(output_dir))


@receiver(post_delete, sender=SamplingJob)
def _files_go_with_the_sampling_job(sender: type[SamplingJob], instance: SamplingJob, **kwargs: Any) -> None:
    output_dir = instance.output_dir
    transaction.on_commit(lambda: remove_round_files(output_dir, conf.sampling_root()))


@job_kind("policy_round", model=PolicyRound, queue=conf.queue, retry=Retry.RESUME, title="policy round")
def policy_round_train(round: PolicyRound, ctx: JobContext) -> None:
    output = resolve_path(round.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    method = METHODS[round.method]
    config = dict(round.config)
    if config.get("device", "auto") == "auto":
        config["device"] = conf.device()
    ctx.log(f"{round.get_method_display()} round {round.number}: training {round.policy.display_name}")
    trainer_config = method.build(round, output, config)
    try:
        result = method.train(trainer_config, RoundHooks(ctx))
    except TrainingCancelled:
        ctx.check()
        raise RuntimeError("training stopped although no cancel was requested") from None
    with transaction.atomic():
        version = policy_from_round(round=round, metrics=result.metrics)
        fields: dict[str, Any] = {"metrics": version.metrics}
        resumed = getattr(result, "resumed_from_update", None) or getattr(result, "resumed_from_step", None)
        if resumed is not None:
            fields["resumed_from_step"] = int(resumed)
        ctx.log(f"registered as {version.label}")
        ctx.succeed(**fields)


def policy_round_execute(*, round_id: int, worker: str | None = None) -> PolicyVersion | None:
    """Claim, train and register one round in this process (``manage.py ppo_round --inline`` too)."""
    job_execute(kind="policy_round", job_id=round_id, worker=worker)
    return PolicyVersion.objects.filter(round_id=round_id).first()


# --- sampling ---------------------------------------------------------------------------------

SAMPLING_BATCH_PROMPTS = 8


@job_kind("sampling", model=SamplingJob, queue=conf.queue, retry=Retry.RESUME, title="sampling job")
def sampling_run(job: SamplingJob, ctx: JobContext) -> None:
    """Sample, score and create tasks batch by batch; a retried attempt skips the batches already in the queue."""
    from rlloop.generate import PolicySampler, load_model
    from rlloop.policy import Sampling
    from trainio.runtime import resolve_device

    output = resolve_path(job.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    records = sampling_prompts_write(job, output)
    done = done_prompt_ids(job)
    policies = sorted(job.policies.all(), key=lambda p: p.number)
    versions = [*policies, *([job.anchor] if job.anchor_id else [])]
    settings = dict(job.sampling)
    seed = int(settings.pop("seed", 0))
    sampling = Sampling(
        int(settings["max_new_tokens"]),
        float(settings["temperature"]),
        float(settings["top_p"]),
        tuple(settings["stop"]),
    )
    device = resolve_device(conf.device())
    reference = PolicyVersion.objects.filter(project=job.project, is_reference=True).first()
    ctx.log(
        f"sampling {len(records)} prompts from {', '.join(v.label for v in versions)} on {device.type}"
        + (f", {len(done)} done by an earlier attempt" if done else "")
    )
    # The reference is loaded once: as a sampler of its own when it is sampled, else on its own for KL.
    samplers: dict[int, PolicySampler] = {}
    reference_model = None
    if reference is not None and any(v.pk == reference.pk for v in versions):
        samplers[reference.pk] = PolicySampler(policy_dir(reference), device=device, is_reference=True)
        reference_model = samplers[reference.pk].model
    elif reference is not None:
        reference_model = load_model(policy_dir(reference), device)
    for v in versions:
        if v.pk not in samplers:
            samplers[v.pk] = PolicySampler(policy_dir(v), device=device, reference=reference_model)
    scorer = None
    if job.reward_model_id is not None:
        from rewardmodel.scoring import RewardScorer

        scorer = RewardScorer.from_pretrained(str(version_model_dir(job.reward_model)), device=device.type)
    summary = {
        key: int((job.summary or {}).get(key, 0)) for key in ("prompts", "responses", "duplicates", "tasks", "skipped")
    }
    batches = [records[i : i + SAMPLING_BATCH_PROMPTS] for i in range(0, len(records), SAMPLING_BATCH_PROMPTS)]
    ctx.progress(step=sum(1 for r in records if r["id"] in done), total=len(records), force=True)
    for number, batch in enumerate(batches):
        todo = [(number * SAMPLING_BATCH_PROMPTS + i, r) for i, r in enumerate(batch) if r["id"] not in done]
        if not todo:
            continue
        slots = {index: plan_slots(job, policies, index) for index, _ in todo}
        candidates: dict[int, list[dict[str, Any]]] = {index: [] for index, _ in todo}
        for version in versions:
            wanted = [(index, r) for index, r in todo for v in slots[index] if v.pk == version.pk]
            if not wanted:
                continue
            version_seed = batch_seed(seed, number, version)
            samples = samplers[version.pk].sample(
                [r["prompt"] for _, r in wanted], per_prompt=1, sampling=sampling, seed=version_seed
            )
            for (index, _), (sample,) in zip(wanted, samples, strict=True):
                candidates[index].append(
                    {
                        "version": version,
                        "text": sample.text,
                        "metadata": {
                            "policy_version": version.pk,
                            "policy": version.label,
                            "round": version.round.number if version.round_id else None,
                            "sampling_job": job.pk,
                            "sampling": {**settings, "seed": version_seed, "job_seed": seed},
                            "tokens": sample.tokens,
                            "finished": sample.finished,
                            "kl": sample.kl,
                            "reference": reference.label if reference is not None else None,
                            "prompt_truncated": sample.truncated_prompt,
                        },
                    }
                )
            ctx.check()
        if scorer is not None:
            flat = [(r["prompt"], c) for index, r in todo for c in candidates[index]]
            scores = scorer.score([(prompt, c["text"]) for prompt, c in flat])
            for (_, c), score in zip(flat, scores, strict=True):
                c["metadata"]["reward_model"] = job.reward_model.label
                c["metadata"]["reward_score"] = float(score)
        counts = tasks_from_samples(job, [(r, candidates[index]) for index, r in todo])
        for key, value in counts.items():
            summary[key] += value
        done.update(r["id"] for _, r in todo)
        ctx.set(summary=dict(summary), force=True)
        ctx.log(
            f"batch {number + 1}/{len(batches)}: {counts['tasks']} tasks, {counts['duplicates']} duplicate texts dropped"
        )
        ctx.progress(step=len(done), total=len(records), force=True)
    with transaction.atomic():
        ctx.log(f"{summary['tasks']} tasks in {job.target.name}'s queue")
        ctx.succeed(summary=summary)


def sampling_execute(*, job_id: int, worker: str | None = None) -> SamplingJob:
    """Claim and run one sampling job in this process (``manage.py sample_policies --inline`` too)."""
    job_execute(kind="sampling", job_id=job_id, worker=worker)
    return SamplingJob.objects.get(pk=job_id)
