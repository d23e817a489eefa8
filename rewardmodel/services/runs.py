"""Reward-model runs: where their files live, what they train from, their options, create and cancel.

A run is a job of the shared lifecycle (``jobs``; kind ``reward_model`` in
``rewardmodel.jobs``), which claims, heartbeats, reaps, retries and cancels it.
``reward_model_run_create`` validates everything a worker would trip over later (the
config through ``TrainConfig.from_dict``, the snapshot, the base model) and sends the
message only after the row is committed.

A run starts from a base model chosen by its registered name (``rewardmodel.bases``), or
from one of its project's own versions chosen by number; never from a path a caller
typed. The run row stores the directory that name stood for, which is its lineage.
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
from rewardmodel import bases, conf
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


def project_models_dir(project: Project) -> Path:
    """Where the project's runs write (``rewardmodels/project-<id>``): its own models, and no one else's."""
    return conf.rewardmodels_root() / f"project-{project.pk}"


# --- base models ----------------------------------------------------------------------------


def default_base_model() -> str:
    """Name of the base a run gets when it names none and has no parent; "" when none is registered."""
    configured = conf.default_base_model()
    if configured:
        return configured
    return bases.BUNDLED_NAME if bases.BUNDLED_NAME in bases.registry.all() else ""


def base_model_names() -> list[str]:
    """The registered base models, by name: what the API, the page and the CLI offer."""
    return bases.registry.names()


def base_model_resolve(*, project: Project, name: str | None, parent_version: RewardModelVersion | None) -> str:
    """The checkpoint directory a run starts from, as the run row stores it.

    A registered base by ``name``; else ``parent_version``'s model (one of the project's
    own versions); else the default base. A path is not a name, and is refused as one.
    """
    if name:
        try:
            checkpoint = bases.registry.get(name)
        except bases.UnknownCheckpoint as exc:
            raise RewardModelError("base_model", str(exc)) from None
        _check_base_model(checkpoint.path, project=project, label=f"registered base model {name!r}")
        return str(checkpoint.path)
    if parent_version is not None:
        _check_base_model(
            resolve_path(parent_version.model_dir),
            project=project,
            label=f"the model of v{parent_version.number}",
            field="parent_version",
        )
        return parent_version.model_dir
    default = default_base_model()
    if not default:
        raise RewardModelError(
            "base_model",
            "no base model given and none registered (the operator registers them with REWARDMODEL_BASE_MODELS "
            "or REWARDMODEL_MODELS_DIR)",
        )
    try:
        checkpoint = bases.registry.get(default)
    except bases.UnknownCheckpoint as exc:
        raise RewardModelError("base_model", f"the default (REWARDMODEL_DEFAULT_BASE_MODEL): {exc}") from None
    _check_base_model(checkpoint.path, project=project, label=f"registered base model {default!r}")
    return str(checkpoint.path)


def _check_base_model(path: Path, *, project: Project, label: str, field: str = "base_model") -> None:
    """The last gate before a worker loads ``path``: a registered base's directory, or inside the
    project's own models, and a Hugging Face checkpoint there.

    Its messages name what the caller chose (a registered name, a version), never a path,
    so a refusal tells nothing about the server's file system.
    """
    real = path.resolve()
    registered = {checkpoint.path.resolve() for checkpoint in bases.registry.all().values()}
    if real not in registered and not real.is_relative_to(project_models_dir(project).resolve()):
        # Only a symlink inside a registered directory, or a hand-written row, gets here.
        raise RewardModelError(field, f"{label} is neither a registered base model nor this project's own")
    if not (real / "config.json").is_file():
        raise RewardModelError(field, f"{label} is not a Hugging Face checkpoint directory (no config.json)")


def base_model_name_of(version: RewardModelVersion | RewardModelRun) -> str | None:
    """The registered name of the base a version (or run) was trained from, through its parents; None when unregistered.

    What users see instead of the directory the run row stores (``base_model_label`` words the None).
    """
    if isinstance(version, RewardModelRun):
        name = bases.registry.name_of(resolve_path(version.base_model))
        if name is not None or version.parent_version_id is None:
            return name
        version = version.parent_version
    seen: set[int] = set()
    current: RewardModelVersion | None = version
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        name = bases.registry.name_of(resolve_path(current.base_model))
        if name is not None:
            return name
        current = current.parent
    return None


OUTSIDE_REGISTRY = "a checkpoint outside the registry"


def base_model_label(item: RewardModelVersion | RewardModelRun) -> str:
    """The base as a page shows it: its registered name, else the version it continued, never a directory."""
    name = base_model_name_of(item)
    if name is not None:
        return name
    parent = item.parent_version if isinstance(item, RewardModelRun) else item.parent
    return f"the model of {parent.label}" if parent is not None else OUTSIDE_REGISTRY


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

    ``base_model`` is a registered name (``rewardmodel.bases``). Without it a run continues
    from ``parent_version``'s model when one is given, else from the default base.
    ``send=False`` leaves the message out, for a caller that runs the job itself
    (``manage.py train_reward_model --inline``).
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
    base_path = base_model_resolve(project=project, name=base_model, parent_version=parent_version)
    resolved = train_config_resolve(config)
    run = job_create(
        RewardModelRun,
        project=project,
        snapshot=snapshot,
        config=resolved,
        base_model=base_path,
        parent_version=parent_version,
        trigger=trigger,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    # Inside project_models_dir(project): the only place its parent versions may come from.
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
