from __future__ import annotations

import os
import time

from django.apps import AppConfig


class JobKindsTestConfig(AppConfig):
    """A test-only app: a trivial job kind, and a brake that makes every job slow enough to kill mid-run."""

    name = "tests.jobkinds"
    label = "jobkinds"

    def ready(self) -> None:
        delay = float(os.environ.get("ARPAD_TEST_JOB_PROGRESS_DELAY") or 0)
        if delay > 0:
            from jobs.lifecycle import JobContext

            real = JobContext.progress

            def slow_progress(self: JobContext, *args: object, **kwargs: object) -> None:
                time.sleep(delay)
                real(self, *args, **kwargs)

            JobContext.progress = slow_progress  # type: ignore[method-assign]
