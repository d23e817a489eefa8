"""Celery tasks of the exports app, on the default queue. They fetch by id and call a service."""

from __future__ import annotations

from celery import shared_task

from exports.services import export_snapshot_run, export_snapshots_reap


# acks_late: a worker that dies mid-export gets the message redelivered; the snapshot row
# decides whether anything is left to do (see exports.services).
@shared_task(name="exports.run_export_snapshot", acks_late=True)
def run_export_snapshot(snapshot_id: int) -> None:
    export_snapshot_run(snapshot_id=snapshot_id)


# Run by Celery beat (arpad/celery.py): running snapshots whose heartbeat stopped.
@shared_task(name="exports.reap_export_snapshots")
def reap_export_snapshots() -> dict[str, list[int]]:
    return export_snapshots_reap()
