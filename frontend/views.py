from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from annotation import queue_sql
from annotation.api.serializers import SUBMIT_MAX_BODY_BYTES, SubmitSerializer
from annotation.models import Assignment, AssignmentState, Membership, Project, Role, TaskState
from annotation.project_services import can_create_projects
from annotation.services import QueueError, assignment_claim_next, judgement_submit_and_claim_next
from arpad.http import SMALL_BODY_MAX_BYTES, JSONInputError, body_limit, loads_json
from frontend.templatetags.arpad_markdown import render_markdown

_FAVICON = Path(__file__).resolve().parent / "static" / "frontend" / "favicon.svg"


@require_GET
@cache_control(public=True, max_age=24 * 3600)
def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, which browsers ask for on any page (the admin's, a JSON answer's): the app's icon.

    Served, not redirected: a permanent redirect to the hashed static name would outlive a
    deploy that changes the icon. The pages name the same file with ``<link rel="icon">``.
    """
    return HttpResponse(_FAVICON.read_bytes(), content_type="image/svg+xml")


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
    return render(
        request, "frontend/project_list.html", {"rows": rows, "can_create": can_create_projects(request.user)}
    )


def _progress(request: HttpRequest, project: Project) -> dict[str, int]:
    """The caller's submitted tasks in the project: today (server time zone) and in all."""
    today = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    counts = request.user.assignments.filter(project=project, state=AssignmentState.SUBMITTED).aggregate(
        done_project=Count("id"), done_today=Count("id", filter=Q(finished_at__gte=today))
    )
    return {"done_today": counts["done_today"], "done_project": counts["done_project"]}


@login_required
def annotate(request: HttpRequest, project_id: int) -> HttpResponse:
    """The labeling page: a server-rendered shell that ``annotate.js`` fills.

    It claims and submits through :func:`annotate_next` and :func:`annotate_submit_next`
    (one round trip per task) and skips through the API.
    """
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
    payload = _rendered_payload(request, assignment, project=assignment.project)
    response = JsonResponse(payload)
    response["Cache-Control"] = "no-store"
    return response


def _rendered_payload(
    request: HttpRequest, assignment: Assignment, *, project: Project, resumed: bool | None = None
) -> dict[str, Any]:
    """An assignment as the labeling page shows it: sanitized HTML in display order.

    ``text`` (the raw response) rides along for the ranking list's one-line excerpts,
    which the page only ever sets with ``textContent``.
    """
    order: list[int] = assignment.display_order
    messages, texts = queue_sql.task_texts(assignment.task_id, order)
    payload: dict[str, Any] = {
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
    if resumed is not None:
        # Claim-time fields, for the page's own claim endpoints.
        payload["display_order"] = order
        payload["expires_at"] = assignment.expires_at.isoformat()
        payload["resumed"] = resumed
        for item in payload["responses"]:
            item["text"] = texts[item["id"]]
    return payload


def _json_error(status: int, detail: str, *, code: str = "invalid", field: str | None = None) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code, "field": field}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _member_project(request: HttpRequest, project_id: int) -> Project:
    project = queue_sql.project_with_role(project_id, request.user.pk)
    if project is None:
        raise Http404("No such project.")
    return project


def _next_payload(request: HttpRequest, project: Project, claim: Any) -> dict[str, Any] | None:
    if claim is None:
        return None
    return _rendered_payload(request, claim.assignment, project=project, resumed=claim.resumed)


@login_required
@require_POST
@body_limit(SMALL_BODY_MAX_BYTES)
def annotate_next(request: HttpRequest, project_id: int) -> JsonResponse:
    """Lease the caller's next task (or hand back their live one) and return it rendered.

    One round trip instead of the API's claim followed by a render request. ``next`` is
    null when no work is left for the caller.
    """
    project = _member_project(request, project_id)
    try:
        claim = assignment_claim_next(project=project, annotator=request.user)
    except QueueError as exc:
        return _json_error(exc.status, exc.message, code=exc.code, field=exc.field)
    response = JsonResponse({"next": _next_payload(request, project, claim)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
@body_limit(SUBMIT_MAX_BODY_BYTES)
def annotate_submit_next(request: HttpRequest, project_id: int, assignment_id: int) -> JsonResponse:
    """Submit the caller's ranking and return their next task, rendered, in one round trip.

    Body: the API's submit fields (``ranking``, ``client_token``, optional ``confidence``,
    ``rationale``, ``time_taken_ms``). 200 with ``submitted`` (the judgement, or null when
    the queue refused it: ``refused`` says why, e.g. the lease went to somebody else) and
    ``next`` (null when no work is left). 400 for a malformed answer, which claims nothing.
    Anybody else's assignment is a 404. See
    :func:`annotation.services.judgement_submit_and_claim_next` for the queue rules.
    """
    assignment = queue_sql.own_assignment(assignment_id, request.user.pk)
    if assignment is None or assignment.project_id != project_id:
        raise Http404("No such assignment.")
    project = _member_project(request, project_id)
    try:
        body = loads_json(request.body or b"{}")
    except JSONInputError as exc:
        return _json_error(400, f"the request body is not valid JSON: {exc}")
    incoming = SubmitSerializer(data=body if isinstance(body, dict) else {})
    if not isinstance(body, dict) or not incoming.is_valid():
        errors = incoming.errors if isinstance(body, dict) else {"body": ["must be a JSON object"]}
        field, messages = next(iter(errors.items()))
        return _json_error(400, f"{field}: {' '.join(str(m) for m in messages)}", field=field)
    try:
        outcome = judgement_submit_and_claim_next(
            assignment=assignment, project=project, annotator=request.user, **incoming.validated_data
        )
    except QueueError as exc:
        return _json_error(exc.status, exc.message, code=exc.code, field=exc.field)
    submitted = None
    if outcome.submission is not None:
        judgement = outcome.submission.judgement
        submitted = {"judgement_id": judgement.pk, "created": outcome.submission.created, "tiers": judgement.tiers}
    refused = None
    if outcome.refused is not None:
        refused = {"code": outcome.refused.code, "detail": outcome.refused.message}
    response = JsonResponse(
        {"submitted": submitted, "refused": refused, "next": _next_payload(request, project, outcome.claim)}
    )
    response["Cache-Control"] = "no-store"
    return response
