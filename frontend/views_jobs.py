"""Manager pages every job kind has: the project's jobs of all kinds, and cancel.

Each kind's own page shows its result; these two come with every kind, through the job
registry, so a new kind needs no page of its own to be followed and cancelled.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from frontend.access import managed_project
from jobs.lifecycle import JobAlreadyFinished, job_cancel
from jobs.models import JobState
from jobs.registry import UnknownJobKind, all_kinds, get_kind

_PAGE_ROWS = 100


@login_required
@require_GET
def project_jobs(request: HttpRequest, project_id: int) -> HttpResponse:
    """Every job of the project, newest first, each with its live progress bar."""
    project = managed_project(request, project_id)
    kinds = all_kinds()
    chosen = request.GET.get("kind", "")
    state = request.GET.get("state", "")
    rows = []
    for kind in kinds:
        if chosen and kind.label != chosen:
            continue
        qs = kind.model.objects.filter(project=project).select_related("created_by").order_by("-created_at")
        if state in JobState.values:
            qs = qs.filter(state=state)
        rows.extend(qs[:_PAGE_ROWS])
    rows.sort(key=lambda job: (job.created_at, job.pk), reverse=True)
    return render(
        request,
        "frontend/manage/jobs.html",
        {
            "project": project,
            "jobs": rows[:_PAGE_ROWS],
            "kinds": kinds,
            "chosen": chosen,
            "state": state,
            "states": JobState.values,
        },
    )


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, project_id: int, kind: str, job_id: int) -> HttpResponse:
    """Cancel a job of any kind; back to the page the button was on."""
    project = managed_project(request, project_id)
    try:
        job_kind = get_kind(kind)
    except UnknownJobKind:
        raise Http404("No such job kind.") from None
    job = job_kind.model.objects.filter(project=project, pk=job_id).first()
    if job is None:
        raise Http404("No such job in this project.")
    try:
        job = job_cancel(job=job, user=request.user)
    except JobAlreadyFinished:
        messages.error(request, f"{job_kind.title.capitalize()} {job.pk} had already finished; nothing changed.")
    else:
        if job.state == JobState.CANCELLED:
            messages.success(request, f"{job_kind.title.capitalize()} {job.pk} was cancelled before it started.")
        else:
            messages.success(request, f"{job_kind.title.capitalize()} {job.pk} stops at its next step.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = ""
    return redirect(target or "project-jobs", **({} if target else {"project_id": project.pk}))
