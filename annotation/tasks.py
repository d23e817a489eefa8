"""Celery tasks of the annotation app. They fetch by id and call a service; nothing more."""

from __future__ import annotations

from celery import shared_task

from annotation.import_jobs import import_job_run


# acks_late: a worker that dies mid-import gets the message redelivered; the job row
# decides whether there is anything left to do.
@shared_task(name="annotation.run_import_job", acks_late=True)
def run_import_job(job_id: int) -> None:
    import_job_run(job_id=job_id)
