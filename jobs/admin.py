"""What every job kind's admin shares: the lifecycle columns, read-only (the worker owns them)."""

from __future__ import annotations

JOB_LIST_DISPLAY = ["id", "project", "state", "progress", "attempts", "worker", "heartbeat_at", "created_at"]
JOB_READONLY_FIELDS = [
    "state",
    "progress",
    "step",
    "total_steps",
    "heartbeat_at",
    "attempts",
    "owner_token",
    "worker",
    "error",
    "errors",
    "traceback",
    "log_tail",
    "metrics_history",
    "checkpoint_path",
    "checkpoint_step",
    "started_at",
    "finished_at",
]
