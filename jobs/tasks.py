"""The Celery tasks of every job kind: one that runs a job, one that reaps lost ones.

They fetch by id and call the lifecycle; nothing more. ``run_job`` is sent to the queue
its kind names (``default``, ``imports`` or ``gpu``). Messages are acknowledged late: a worker that
dies mid-job gets its message redelivered where the broker can, and the row decides
whether anything is left to do; where it cannot, the reaper sends the job again.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="jobs.run", acks_late=True)
def run_job(kind: str, job_id: int) -> None:
    from jobs.lifecycle import job_execute

    job_execute(kind=kind, job_id=job_id)


# Run by Celery beat (arpad/celery.py) on the default queue, so that a GPU worker busy
# with one long job never holds up the reaper that watches it.
@shared_task(name="jobs.reap")
def reap_jobs() -> list[tuple[str, int, str]]:
    from jobs.lifecycle import jobs_reap

    return [(r.kind, r.job_id, r.outcome) for r in jobs_reap()]
