"""Sending a new export snapshot to a worker: the API and the export page both call this."""

from __future__ import annotations

from jobs.lifecycle import deliver


def enqueue_export(snapshot_id: int) -> None:
    """Send the snapshot to a worker now; if the broker is unreachable, the snapshot fails saying so."""
    deliver("export", snapshot_id)
