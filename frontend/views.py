from __future__ import annotations

from datetime import datetime, time

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from annotation import queue_sql
from annotation.models import AssignmentState, Membership, Project, Role, TaskState
from frontend.templatetags.arpad_markdown import render_markdown


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    """The projects the user belongs to, with their role and progress."""
    memberships = (
        Membership.objects.filter(user=request.user)
        .select_related("project")
        .annotate(
            tasks_total=Count("project__tasks", distinct=True),
            tasks_complete=Count("project__tasks", filter=Q(project__tasks__state=TaskState.COMPLETE), distinct=True),
        )
        .order_by("project__name")
    )
    done_by_me = dict(
        request.user.assignments.filter(state=AssignmentState.SUBMITTED)
        .values_list("project_id")
        .annotate(n=Count("id"))
        .values_list("project_id", "n")
    )
    rows = [
        {
            "project": m.project,
            "role": m.get_role_display(),
            "is_manager": m.role == Role.MANAGER,
            "tasks_total": m.tasks_total,
            "tasks_complete": m.tasks_complete,
            "done_by_me": done_by_me.get(m.project_id, 0),
        }
        for m in memberships
    ]
    return render(request, "frontend/project_list.html", {"rows": rows})


def _progress(request: HttpRequest, project: Project) -> dict[str, int]:
    """The caller's submitted tasks in the project: today (server time zone) and in all."""
    today = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    counts = request.user.assignments.filter(project=project, state=AssignmentState.SUBMITTED).aggregate(
        done_project=Count("id"), done_today=Count("id", filter=Q(finished_at__gte=today))
    )
    return {"done_today": counts["done_today"], "done_project": counts["done_project"]}


@login_required
def annotate(request: HttpRequest, project_id: int) -> HttpResponse:
    """The labeling page: a server-rendered shell that ``annotate.js`` fills through the API."""
    project = get_object_or_404(Project.objects.visible_to(request.user), pk=project_id)
    return render(request, "frontend/annotate.html", {"project": project, "progress": _progress(request, project)})


@login_required
@require_GET
def assignment_rendered(request: HttpRequest, project_id: int, assignment_id: int) -> JsonResponse:
    """Sanitized HTML of the caller's own assignment: its prompt turns and its responses.

    The browser never turns raw model text into markup: it asks here for HTML that went
    through :func:`render_markdown` (markdown-it without raw HTML, then nh3). Anybody
    else's assignment, or one in a project the caller has left, is a 404.
    """
    assignment = queue_sql.own_assignment(assignment_id, request.user.pk)
    if assignment is None or assignment.project_id != project_id:
        raise Http404("No such assignment.")
    order: list[int] = assignment.display_order
    messages, texts = queue_sql.task_texts(assignment.task_id, order)
    project = assignment.project
    payload = {
        "id": assignment.pk,
        "task_id": assignment.task_id,
        "prompt": [
            {"role": str(m.get("role", "user")), "html": render_markdown(m.get("content", ""))}
            for m in messages
            if isinstance(m, dict)
        ],
        "responses": [{"id": rid, "html": render_markdown(texts[rid])} for rid in order],
        "progress": _progress(request, project),
    }
    response = JsonResponse(payload)
    response["Cache-Control"] = "no-store"
    return response
