"""``{% job_progress job %}``: the one progress component of every job kind.

It renders the job's bar, state, steps and error from the row, and a cancel button while
the job is live; ``frontend/static/frontend/jobs.js`` then follows the job through the
generic job API (``jobs.api``) until it ends. ``prefix`` names the element ids
(``<prefix>-progress``, ``<prefix>-state``, ...), ``on_finish="reload"`` reloads the page
when the job ends so that the server renders the kind's own result.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from jobs.models import JobState

register = template.Library()

LIVE_STATES = (JobState.QUEUED, JobState.RUNNING)


@register.inclusion_tag("frontend/_job_progress.html", takes_context=True)
def job_progress(
    context: dict[str, Any], job: Any, prefix: str = "", on_finish: str = "", label: str = "", cancel: bool = True
) -> dict[str, Any]:
    args = [job.project_id, job.kind, job.pk]
    live = job.state in LIVE_STATES
    return {
        "job": job,
        "prefix": prefix or f"job-{job.kind}-{job.pk}",
        "live": live,
        "percent": round(job.progress * 100),
        "api_url": reverse("api-job", args=args),
        "cancel_url": reverse("job-cancel", args=args) if cancel and live else "",
        "next": context["request"].get_full_path() if "request" in context else "",
        "on_finish": on_finish,
        "label": label or f"{job.kind.replace('_', ' ')} {job.pk} progress",
        "csrf_token": context.get("csrf_token"),
    }
