"""Sending a new import job to a worker: the API and the import page both call this."""

from __future__ import annotations

from jobs.lifecycle import deliver


def enqueue_import(job_id: int) -> None:
    """Send the job to a worker now; if the broker is unreachable, the job fails saying so."""
    deliver("import", job_id)
