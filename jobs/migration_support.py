"""Data step of the migrations that moved imports, exports and reward-model runs onto ``jobs.models.Job``.

Rows written by the old per-app lifecycles are brought in line with the shared
constraints before those are created: a failed row says why in ``error``, a running row
has an owner token, a worker and a heartbeat, a finished row a finish time.
"""

from __future__ import annotations

import uuid
from typing import Any


def conform_job_rows(app_label: str, model_name: str) -> Any:
    def forward(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        for row in model.objects.all().iterator():
            changed = False
            messages = [e.get("message") for e in (row.errors or []) if isinstance(e, dict) and e.get("message")]
            if row.state == "failed" and not row.error:
                row.error = str(messages[0] if messages else "failed")[:10_000]
                changed = True
            if row.state == "failed" and not row.errors:
                row.errors = [{"message": row.error}]
                changed = True
            if row.state in ("succeeded", "failed", "cancelled") and row.finished_at is None:
                row.finished_at = row.started_at or row.created_at
                changed = True
            if row.state == "running":
                row.owner_token = row.owner_token or uuid.uuid4().hex
                row.worker = row.worker or "unknown (started before the upgrade)"
                row.heartbeat_at = row.heartbeat_at or row.started_at or row.created_at
                changed = True
            if row.attempts > row.max_attempts:
                row.max_attempts = row.attempts
                changed = True
            if changed:
                row.save()

    return forward
