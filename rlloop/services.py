"""Policies and rounds: register a checkpoint, pick the reference, create, feed and finish rounds.

Everything a worker would trip over later is checked when a round is created: the policy,
reference and reward models (the one trained against and an optional gold that only watches)
belong to the project, the options pass the trainer's own validation, the data source holds
something to train on. The message goes to the ``gpu`` queue once the row is committed
(``jobs.lifecycle.job_send``). The round's data file (prompts for PPO, demonstrations for
SFT) is written once, by the first attempt, into the round's directory, so a resumed
attempt trains on exactly the same data.

A policy is chosen by its number in the project, and a checkpoint by its registered name
(``rlloop.bases``); never by a path a caller typed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max

from annotation.models import Project, Prompt, Response
from arpad.errors import ServiceError
from exports.models import ExportSnapshot, ExportState
from jobs.lifecycle import JobAlreadyFinished, job_cancel, job_create, job_send, json_safe
from jobs.models import JobTrigger
from rewardmodel.models import RewardModelVersion
from rewardmodel.services import resolve_path, version_model_dir
from rlloop import bases, conf
from rlloop.models import PolicyRound, PolicyVersion, RoundMethod
from rlloop.prompts import seeded_sample

# Set by the platform for each method, never by a caller.
PLATFORM_KEYS = {
    RoundMethod.PPO: (
        "policy",
        "prompts",
        "output_dir",
        "reward_model",
        "reward_function",
        "reference",
        "gold_reward_model",
    ),
    RoundMethod.SFT: ("policy", "data", "source", "output_dir"),
}
GENERATION_DEFAULTS = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 256, "stop": []}
SFT_SOURCES = ("consensus_best", "demonstrations")


class PolicyError(ServiceError):
    """A refused policy, round or sampling request (see :class:`arpad.errors.ServiceError`)."""


# --- policies -------------------------------------------------------------------------------


def policy_dir(version: PolicyVersion) -> Path:
    return resolve_path(version.model_dir)


def checkpoint_names() -> list[str]:
    return bases.registry.names()


def generation_resolve(generation: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generation defaults, checked: temperature, top_p, max_new_tokens, stop."""
    from rlloop.policy import Sampling

    if generation is None:
        generation = {}
    if not isinstance(generation, dict):
        raise PolicyError("generation", "must be an object of temperature, top_p, max_new_tokens, stop")
    unknown = sorted(set(generation) - set(GENERATION_DEFAULTS))
    if unknown:
        raise PolicyError(f"generation.{unknown[0]}", f"unknown; known: {', '.join(GENERATION_DEFAULTS)}")
    merged = {**GENERATION_DEFAULTS, **(base or {}), **generation}
    stop = merged["stop"]
    try:
        Sampling(merged["max_new_tokens"], merged["temperature"], merged["top_p"], tuple(stop)).validate()
    except (TypeError, ValueError) as exc:
        raise PolicyError("generation", str(exc)) from None
    return {**merged, "stop": list(stop)}


def _next_number(model: type, project: Project) -> int:
    Project.objects.select_for_update().filter(pk=project.pk).first()
    return (model.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1


@transaction.atomic
def policy_register(
    *,
    project: Project,
    name: str,
    is_reference: bool = False,
    generation: dict[str, Any] | None = None,
    notes: str = "",
    user: Any = None,
) -> PolicyVersion:
    """Register the checkpoint named ``name`` as the project's next policy version."""
    try:
        checkpoint = bases.registry.get(name)
    except bases.UnknownCheckpoint as exc:
        raise PolicyError("name", str(exc)) from None
    if not checkpoint.is_checkpoint_dir():
        raise PolicyError("name", f"{name!r} is not a Hugging Face checkpoint directory (no config.json)")
    from rlloop.policy import read_sidecar

    try:
        sidecar = read_sidecar(checkpoint.path)
    except ValueError:
        sidecar = {}
    resolved = generation_resolve(generation, base=sidecar.get("generation") or None)
    number = _next_number(PolicyVersion, project)
    if is_reference:
        PolicyVersion.objects.filter(project=project, is_reference=True).update(is_reference=False)
    return PolicyVersion.objects.create(
        project=project,
        number=number,
        name=name,
        model_dir=str(checkpoint.path),
        base_model=str(checkpoint.path),
        is_reference=is_reference,
        generation=resolved,
        chat_template="checkpoint" if _has_chat_template(checkpoint.path) else "plain",
        notes=notes[:500],
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )


def _has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file():
        return True
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template"))


@transaction.atomic
def policy_set_reference(*, version: PolicyVersion) -> PolicyVersion:
    """Make ``version`` the project's reference: the model later PPO rounds are leashed to."""
    Project.objects.select_for_update().filter(pk=version.project_id).first()
    PolicyVersion.objects.filter(project_id=version.project_id, is_reference=True).exclude(pk=version.pk).update(
        is_reference=False
    )
    PolicyVersion.objects.filter(pk=version.pk).update(is_reference=True)
    version.is_reference = True
    return version


def policy_from_round(*, round: PolicyRound, metrics: dict[str, Any]) -> PolicyVersion:
    """The version a succeeded round produced; created once, inside the transaction that finishes the round."""
    existing = PolicyVersion.objects.filter(round=round).first()
    if existing is not None:
        return existing
    parent = round.policy
    number = _next_number(PolicyVersion, round.project)
    return PolicyVersion.objects.create(
        project_id=round.project_id,
        number=number,
        model_dir=f"{round.output_dir}/model",
        base_model=parent.base_model,
        parent=parent,
        round=round,
        reward_model=round.reward_model,
        reference=round.reference,
        # An SFT result is the natural reference of the rounds after it; it becomes one when
        # the project has none yet.
        is_reference=round.method == RoundMethod.SFT
        and not PolicyVersion.objects.filter(project_id=round.project_id, is_reference=True).exists(),
        generation=dict(parent.generation),
        chat_template=parent.chat_template,
        metrics=json_safe(metrics),
        created_by=round.created_by,
    )


# --- rounds ---------------------------------------------------------------------------------


def _trainer_config_class(method: str) -> type:
    if method == RoundMethod.PPO:
        from rlloop.ppo import PPOConfig

        return PPOConfig
    from rlloop.sft import SFTConfig

    return SFTConfig


def round_config_fields(method: str) -> dict[str, Any]:
    """Every option a caller may set for ``method``, with its default."""
    cls = _trainer_config_class(method)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in PLATFORM_KEYS[method]:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def round_config_resolve(method: str, config: Any) -> dict[str, Any]:
    """Caller options checked by the trainer's own validation; defaults filled in, platform keys left out."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise PolicyError("config", "must be an object of training options")
    defaults = round_config_fields(method)
    for key in config:
        if key in PLATFORM_KEYS[method]:
            raise PolicyError(f"config.{key}", "is set by the platform from the round's policy, data and models")
        if key not in defaults:
            raise PolicyError(f"config.{key}", f"unknown option; known: {', '.join(sorted(defaults))}")
    placeholders = {key: "-" for key in PLATFORM_KEYS[method]}
    if method == RoundMethod.PPO:
        placeholders.update(reward_model="-", reward_function=None, reference=None, gold_reward_model=None)
    else:
        placeholders.update(source="demonstrations")
    try:
        resolved = _trainer_config_class(method).from_dict({**config, **placeholders})
    except (TypeError, ValueError) as exc:
        raise PolicyError("config", str(exc)) from None
    out = resolved.to_dict()
    for key in PLATFORM_KEYS[method]:
        out.pop(key, None)
    return out


def _data_resolve(method: str, project: Project, data: Any, snapshot: ExportSnapshot | None) -> dict[str, Any]:
    """Where a round's examples come from, checked to hold at least one."""
    data = dict(data or {})
    limit = data.get("max_prompts", conf.max_prompts())
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= conf.max_prompts():
        raise PolicyError("data.max_prompts", f"must be an integer in [1, {conf.max_prompts()}]")
    if method == RoundMethod.PPO:
        if "gold_reward_model" in data:
            raise PolicyError("data.gold_reward_model", "is set from the round's gold_reward_model field")
        unknown = sorted(set(data) - {"max_prompts"})
        if unknown:
            raise PolicyError(f"data.{unknown[0]}", "unknown; a PPO round takes max_prompts (and an optional snapshot)")
        count = _snapshot_count(snapshot) if snapshot is not None else Prompt.objects.filter(project=project).count()
        if not count:
            raise PolicyError("data", "no prompts: import prompts into the project (or pick an export) first")
        return {"prompts": "snapshot" if snapshot is not None else "project", "max_prompts": limit}
    source = data.get("source", "consensus_best" if snapshot is not None else "demonstrations")
    unknown = sorted(set(data) - {"max_prompts", "source", "response_source"})
    if unknown:
        raise PolicyError(f"data.{unknown[0]}", "unknown; an SFT round takes source, response_source, max_prompts")
    if source not in SFT_SOURCES:
        raise PolicyError("data.source", f"must be one of {', '.join(SFT_SOURCES)}")
    if source == "consensus_best":
        if snapshot is None:
            raise PolicyError("snapshot", "consensus_best fine-tuning needs an export snapshot")
        if not _snapshot_count(snapshot):
            raise PolicyError("snapshot", f"export {snapshot.pk} has no groups")
        return {"source": source, "max_prompts": limit}
    response_source = data.get("response_source", "")
    if not isinstance(response_source, str) or not response_source.strip() or len(response_source) > 200:
        raise PolicyError("data.response_source", "name the source of the demonstrations (e.g. human)")
    count = Response.objects.filter(prompt__project=project, source=response_source).count()
    if not count:
        raise PolicyError("data.response_source", f"the project has no responses of source {response_source!r}")
    return {"source": source, "response_source": response_source, "max_prompts": limit}


def _snapshot_count(snapshot: ExportSnapshot) -> int:
    counts = snapshot.counts.get("groups") or {}
    return int(sum(v for v in counts.values() if isinstance(v, int)))


def _same_project(project: Project, obj: Any, field: str) -> None:
    if obj is not None and obj.project_id != project.pk:
        raise PolicyError(field, "belongs to another project")


@transaction.atomic
def policy_round_create(
    *,
    project: Project,
    method: str,
    policy: PolicyVersion,
    reward_model: RewardModelVersion | None = None,
    reference: PolicyVersion | None = None,
    gold_reward_model: RewardModelVersion | None = None,
    snapshot: ExportSnapshot | None = None,
    data: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    user: Any = None,
    trigger: str = JobTrigger.API,
    send: bool = True,
) -> PolicyRound:
    """Record a queued round; its message goes to the GPU queue once the transaction commits.

    PPO: ``reward_model`` defaults to the project's active version, ``reference`` to the
    project's reference policy, else the policy itself. An optional ``gold_reward_model``
    only watches: it scores the same rollouts (``objective/gold_scores``) and is never
    trained on; its number is kept in the round's ``data``. The proxy's own version is
    allowed as the gold, though it can only agree with itself. SFT: demonstrations of a
    response source, or the consensus-best response of each group of ``snapshot``.
    """
    if method not in RoundMethod.values:
        raise PolicyError("method", f"must be one of {', '.join(RoundMethod.values)}")
    for obj, field in (
        (policy, "policy"),
        (reward_model, "reward_model"),
        (reference, "reference"),
        (gold_reward_model, "gold_reward_model"),
    ):
        _same_project(project, obj, field)
    if snapshot is not None:
        _same_project(project, snapshot, "snapshot")
        if snapshot.state != ExportState.SUCCEEDED:
            raise PolicyError("snapshot", f"export {snapshot.pk} is {snapshot.state}: only a succeeded export is read")
    if not (policy_dir(policy) / "config.json").is_file():
        raise PolicyError("policy", f"the checkpoint of {policy.label} is missing on this server")
    if method == RoundMethod.PPO:
        if reward_model is None:
            reward_model = RewardModelVersion.objects.filter(project=project, is_active=True).first()
            if reward_model is None:
                raise PolicyError("reward_model", "the project has no reward model yet: train one first")
        if reference is None:
            reference = PolicyVersion.objects.filter(project=project, is_reference=True).first() or policy
        if gold_reward_model is not None and not (version_model_dir(gold_reward_model) / "config.json").is_file():
            raise PolicyError(
                "gold_reward_model", f"the files of reward model {gold_reward_model.label} are missing on this server"
            )
    else:
        if gold_reward_model is not None:
            raise PolicyError("gold_reward_model", "only a PPO round watches a gold reward model")
        reward_model = None
    resolved_data = _data_resolve(method, project, data, snapshot)
    if gold_reward_model is not None:
        resolved_data["gold_reward_model"] = gold_reward_model.number
    resolved = round_config_resolve(method, config)
    number = _next_number(PolicyRound, project)
    round = job_create(
        PolicyRound,
        project=project,
        method=method,
        number=number,
        policy=policy,
        reference=reference,
        reward_model=reward_model,
        snapshot=snapshot,
        data=resolved_data,
        config=resolved,
        trigger=trigger,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    round.output_dir = f"policies/project-{project.pk}/round-{round.pk}"
    round.save(update_fields=["output_dir"])
    if send:
        job_send(round)
    return round


def round_gold_reward_model(round: PolicyRound) -> RewardModelVersion | None:
    """The version a PPO round's gold score comes from (its number is in ``round.data``), if any.

    Raises PolicyError when the round names one that is gone (a deleted reward model).
    """
    number = (round.data or {}).get("gold_reward_model")
    if number is None:
        return None
    found = RewardModelVersion.objects.filter(project_id=round.project_id, number=number).first()
    if found is None:
        raise PolicyError("gold_reward_model", f"reward model v{number} no longer exists in the project")
    return found


def policy_round_cancel(*, round: PolicyRound, user: Any = None) -> PolicyRound:
    try:
        return job_cancel(job=round, user=user)
    except JobAlreadyFinished as exc:
        raise PolicyError(None, f"round {round.number} already {exc.job.state}", code="already_finished", status=409)


# --- the data a round trains on --------------------------------------------------------------


def _snapshot_groups(snapshot: ExportSnapshot) -> list[dict[str, Any]]:
    from exports.services import snapshot_directory

    directory = snapshot_directory(snapshot)
    if directory is None:
        raise RuntimeError(f"export {snapshot.pk} has no files")
    from rewardmodel.data import read_groups

    return read_groups(directory)


def _clean(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in messages]


def _answerable(messages: Any) -> bool:
    return isinstance(messages, list) and bool(messages) and messages[-1].get("role") != "assistant"


def round_data_write(round: PolicyRound, directory: Path) -> Path:
    """The round's data file in ``directory``, written once (a retried attempt reads the same file)."""
    from rlloop.prompts import write_records

    target = directory / ("prompts.jsonl" if round.method == RoundMethod.PPO else "demonstrations.jsonl")
    if target.is_file():
        return target
    seed = int(round.config.get("seed", 0))
    limit = int(round.data.get("max_prompts", conf.max_prompts()))
    if round.method == RoundMethod.PPO:
        if round.snapshot_id is not None:
            records = [
                {"prompt": _clean(g["prompt"]), "id": str(g.get("prompt_id", g.get("group_id")))}
                for g in _snapshot_groups(round.snapshot)
                if g["split"] == "train" and _answerable(g["prompt"])
            ]
        else:
            records = [
                {"prompt": _clean(p.messages), "id": p.external_id}
                for p in Prompt.objects.filter(project=round.project).order_by("pk").only("messages", "external_id")
                if _answerable(p.messages)
            ]
    elif round.data.get("source") == "consensus_best":
        records = []
        for g in _snapshot_groups(round.snapshot):
            if g["split"] != "train" or not g.get("consensus"):
                continue
            texts = {r["id"]: r["text"] for r in g["responses"]}
            best = texts.get(g["consensus"][0])
            if best and _answerable(g["prompt"]):
                records.append({"prompt": _clean(g["prompt"]), "response": best, "id": str(g.get("group_id"))})
    else:
        rows = Response.objects.filter(
            prompt__project=round.project, source=round.data["response_source"]
        ).select_related("prompt")
        records = [
            {"prompt": _clean(r.prompt.messages), "response": r.text, "id": r.pk}
            for r in rows.order_by("pk")
            if r.text.strip() and _answerable(r.prompt.messages)
        ]
    records = seeded_sample(records, limit, seed)
    if not records:
        raise RuntimeError("the round's data source holds nothing to train on any more")
    return write_records(target, records)
