"""Settings of the rewardmodel app, read from ``django.conf.settings`` with defaults.

Read at call time (not import time), so that tests can shorten the timeouts with the
``settings`` fixture and a worker subprocess can be given them through its environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _get(name: str, default: Any) -> Any:
    if hasattr(settings, name):
        return getattr(settings, name)
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean")
    if isinstance(default, int | float):
        try:
            value = type(default)(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
        if value < 0:
            raise ImproperlyConfigured(f"{name}={raw!r} must not be negative")
        return value
    return raw


def queue() -> str:
    """The Celery queue training messages go to (``gpu``; tests use a private one)."""
    return str(_get("REWARDMODEL_QUEUE", "gpu"))


def default_base_model() -> str:
    """Name of the registered base (``rewardmodel.bases``) a run gets when it names none and has no parent.

    Empty (the default): the bundled MiniLM encoder when it is installed.
    """
    return str(_get("REWARDMODEL_DEFAULT_BASE_MODEL", ""))


def scorer_cache_size() -> int:
    """Reward models kept loaded per process for the scoring API."""
    return int(_get("REWARDMODEL_SCORER_CACHE_SIZE", 2))


def score_max_items() -> int:
    return int(_get("REWARDMODEL_SCORE_MAX_ITEMS", 256))


def score_max_chars() -> int:
    """Most characters of one item of a scoring request: prompt (every turn, roles included) and response."""
    return int(_get("REWARDMODEL_SCORE_MAX_CHARS", 32_000))


def score_max_messages() -> int:
    """Most messages in the prompt of one item of a scoring request."""
    return int(_get("REWARDMODEL_SCORE_MAX_MESSAGES", 128))


def compare_max_pairs() -> int:
    """Validation pairs scored when two versions are compared (the first ones, in file order)."""
    return int(_get("REWARDMODEL_COMPARE_MAX_PAIRS", 2000))


def device() -> str:
    """Torch device of training and scoring in this process: auto, cpu, cuda, cuda:1, ..."""
    return str(_get("REWARDMODEL_DEVICE", "auto"))


def artifact_root() -> Path:
    return Path(settings.ARTIFACT_ROOT)


def rewardmodels_root() -> Path:
    return artifact_root() / "rewardmodels"
