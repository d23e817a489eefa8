from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.models import AssignmentState, Membership, TaskState


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
            "tasks_total": m.tasks_total,
            "tasks_complete": m.tasks_complete,
            "done_by_me": done_by_me.get(m.project_id, 0),
        }
        for m in memberships
    ]
    return render(request, "frontend/project_list.html", {"rows": rows})
