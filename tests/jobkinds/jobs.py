from __future__ import annotations

import time

from jobs.lifecycle import JobContext
from jobs.registry import job_kind
from tests.jobkinds.models import CountdownJob


@job_kind("countdown", model=CountdownJob)
def countdown(job: CountdownJob, ctx: JobContext) -> None:
    for step in range(1, job.steps + 1):
        time.sleep(job.pause_seconds)
        ctx.progress(step=step, total=job.steps)
    ctx.succeed(result=job.steps)
