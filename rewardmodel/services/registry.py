"""Reward-model versions: created with the run that trained them, one active per project."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max

from annotation.models import Project
from arpad.archive import ArchiveRefused, Member, directory_members
from jobs.lifecycle import json_safe
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rewardmodel.services.errors import RewardModelError
from rewardmodel.services.runs import version_model_dir


def reward_model_version_create(*, run: RewardModelRun, metrics: dict[str, Any]) -> RewardModelVersion:
    """The version of a run whose model is complete on disk; created at most once.

    Called inside the transaction in which the run's job succeeds (``rewardmodel.jobs``),
    so the version and the run's final state commit together or not at all.
    """
    with transaction.atomic():
        existing = RewardModelVersion.objects.filter(run=run).first()
        if existing is not None:
            return existing
        # The project row lock serialises numbering (and activation) within a project.
        Project.objects.select_for_update().filter(pk=run.project_id).first()
        number = (RewardModelVersion.objects.filter(project_id=run.project_id).aggregate(n=Max("number"))["n"] or 0) + 1
        first = not RewardModelVersion.objects.filter(project_id=run.project_id, is_active=True).exists()
        return RewardModelVersion.objects.create(
            project_id=run.project_id,
            number=number,
            run=run,
            snapshot_id=run.snapshot_id,
            base_model=run.base_model,
            parent_id=run.parent_version_id,
            model_dir=f"{run.output_dir}/model",
            metrics=json_safe(metrics),
            # The project's first model is active at once; later ones wait to be compared.
            is_active=first,
        )


@transaction.atomic
def reward_model_version_activate(*, version: RewardModelVersion) -> RewardModelVersion:
    """Make this the project's active version (the one PPO rounds score with)."""
    Project.objects.select_for_update().filter(pk=version.project_id).first()
    RewardModelVersion.objects.filter(project_id=version.project_id, is_active=True).exclude(pk=version.pk).update(
        is_active=False
    )
    RewardModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    return version


def reward_model_version_files(*, version: RewardModelVersion) -> list[Member]:
    """The files of a version's model directory (weights, tokenizer, metrics, model card), to download as one archive.

    Only regular files inside the artifact store, never through a link (``arpad.archive``).
    A version whose directory is gone or incomplete (no ``config.json``) is refused with 409,
    as scoring refuses it.
    """
    missing = RewardModelError(
        None, f"the files of {version.label} are missing from the artifact store", code="model_missing", status=409
    )
    try:
        members = directory_members(version_model_dir(version))
    except ArchiveRefused:
        raise missing from None
    if not any(member.name == "config.json" for member in members):
        raise missing
    return members
