"""Settings of the rlloop app, read at call time from ``django.conf.settings`` or the environment."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from rewardmodel.conf import _get


def queue() -> str:
    """The Celery queue policy rounds go to (``gpu``, like reward-model runs; tests use a private one)."""
    return str(_get("RLLOOP_QUEUE", "gpu"))


def device() -> str:
    """Device of policy training in this process: auto, cpu or cuda (several GPUs: accelerate launch)."""
    return str(_get("RLLOOP_DEVICE", "auto"))


def max_prompts() -> int:
    """Most prompts a round reads from its project (a seeded sample beyond that)."""
    return int(_get("RLLOOP_MAX_PROMPTS", 50_000))


def policies_root() -> Path:
    """Where rounds write: ``ARTIFACT_ROOT/policies/project-<p>/round-<r>``."""
    return Path(settings.ARTIFACT_ROOT) / "policies"


def sampling_root() -> Path:
    """Where sampling jobs keep their prompt files: ``ARTIFACT_ROOT/sampling/project-<p>/job-<id>-<random>``."""
    return Path(settings.ARTIFACT_ROOT) / "sampling"
