"""Settings of the job lifecycle, read at call time so that tests and workers can shorten them.

Each value comes from ``django.conf.settings`` when set there, else from the environment,
else the default. A job kind may override the stale limit and the attempts for itself.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _number(name: str, default: float, *, minimum: float) -> float:
    value: Any = getattr(settings, name, None)
    if value is None:
        raw = os.environ.get(name, "")
        if raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} must be at least {minimum:g}")
    return float(value)


def heartbeat_stale_seconds() -> float:
    """A running job whose heartbeat is older than this lost its worker: the reaper takes it back."""
    return _number("JOB_HEARTBEAT_STALE_SECONDS", 300.0, minimum=0.5)


def progress_interval_seconds() -> float:
    """Least time between two writes of a job's progress (and polls of its cancel flag)."""
    return _number("JOB_PROGRESS_INTERVAL_SECONDS", 2.0, minimum=0.0)


def max_attempts() -> int:
    """Starts of one job before a lost worker fails it for good."""
    return int(_number("JOB_MAX_ATTEMPTS", 3, minimum=1))


def log_tail_lines() -> int:
    return int(_number("JOB_LOG_TAIL_LINES", 200, minimum=1))


def history_max_points() -> int:
    """Metric points kept per job; older step points are thinned beyond this."""
    return int(_number("JOB_HISTORY_MAX_POINTS", 2000, minimum=10))
