from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from annotation import queue_sql
from annotation.api.serializers import SUBMIT_MAX_BODY_BYTES, AmendSerializer, SubmitSerializer
from annotation.models import Assignment, AssignmentState, Judgement, Membership, Project, Role, Task, TaskState
from annotation.project_services import can_create_projects
from annotation.services import (
    QueueError,
    assignment_claim_next,
    assignment_release,
    judgement_amend,
    judgement_last,
    judgement_submit_and_claim_next,
)
from arpad.http import SMALL_BODY_MAX_BYTES, JSONInputError, body_limit, loads_json
from frontend.access import managed_project
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
    (one round trip per task), skips through the API, releases through
    :func:`annotate_release_next` and reviews the last answer through :func:`annotate_last`
    and :func:`annotate_amend`. A manager opens it in preview (:func:`annotate_preview`:
    the open tasks, read-only, nothing claimed), unless they ask to label (``?label=1``):
    looking must not hold a task away from the annotators for a whole lease.
    """
    project = queue_sql.project_with_role(project_id, request.user.pk)
    if project is None:
        raise Http404("No such project.")
    is_manager = project.caller_role == Role.MANAGER
    context = {
        "project": project,
        "progress": _progress(request, project),
        "is_manager": is_manager,
        "preview": is_manager and request.GET.get("label") != "1",
    }
    return render(request, "frontend/annotate.html", context)


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


def _rendered_task(task_id: int, order: list[int], *, with_text: bool) -> dict[str, Any]:
    """A task's prompt turns and responses (in ``order``) as sanitized HTML; ``text`` too when asked."""
    messages, texts = queue_sql.task_texts(task_id, order)
    responses: list[dict[str, Any]] = [{"id": rid, "html": render_markdown(texts[rid])} for rid in order]
    if with_text:
        for item in responses:
            item["text"] = texts[item["id"]]
    return {
        "task_id": task_id,
        "prompt": [
            {"role": str(m.get("role", "user")), "html": render_markdown(m.get("content", ""))}
            for m in messages
            if isinstance(m, dict)
        ],
        "responses": responses,
    }


def _rendered_payload(
    request: HttpRequest, assignment: Assignment, *, project: Project, resumed: bool | None = None
) -> dict[str, Any]:
    """An assignment as the labeling page shows it: sanitized HTML in display order.

    ``text`` (the raw response) rides along for the ranking list's one-line excerpts,
    which the page only ever sets with ``textContent``.
    """
    order: list[int] = assignment.display_order
    rendered = _rendered_task(assignment.task_id, order, with_text=resumed is not None)
    payload: dict[str, Any] = {"id": assignment.pk, **rendered, "progress": _progress(request, project)}
    if resumed is not None:
        # Claim-time fields, for the page's own claim endpoints.
        payload["display_order"] = order
        payload["expires_at"] = assignment.expires_at.isoformat()
        payload["resumed"] = resumed
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


@login_required
@require_POST
@body_limit(SMALL_BODY_MAX_BYTES)
def annotate_release_next(request: HttpRequest, project_id: int, assignment_id: int) -> JsonResponse:
    """Release the caller's task (no answer, no reason) and return their next task, rendered.

    The released task goes back to the queue (see :func:`annotation.services.assignment_release`);
    the claim that follows in this request leaves it out, or it would come straight back, being
    first in the order. Later claims may offer it to the caller again. Anybody else's
    assignment is a 404; a submitted or skipped one a 409.
    """
    assignment = queue_sql.own_assignment(assignment_id, request.user.pk)
    if assignment is None or assignment.project_id != project_id:
        raise Http404("No such assignment.")
    project = _member_project(request, project_id)
    try:
        assignment_release(assignment=assignment)
        claim = assignment_claim_next(project=project, annotator=request.user, exclude=[assignment.task_id])
    except QueueError as exc:
        return _json_error(exc.status, exc.message, code=exc.code, field=exc.field)
    response = JsonResponse({"released": True, "next": _next_payload(request, project, claim)})
    response["Cache-Control"] = "no-store"
    return response


def _last_payload(judgement: Judgement) -> dict[str, Any]:
    """The caller's answer with its task as they were shown it, for the labeling page's review."""
    order: list[int] = judgement.assignment.display_order
    editable = judgement.task.state == TaskState.OPEN
    return {
        "id": judgement.pk,
        **_rendered_task(judgement.task_id, order, with_text=True),
        "display_order": order,
        "answer": {
            "tiers": judgement.tiers,
            "both_bad": judgement.both_bad,
            "confidence": judgement.confidence,
            "rationale": judgement.rationale,
        },
        "amended": judgement.amended_at is not None,
        "editable": editable,
        "closed": None if editable else f"This task is {judgement.task.state}: its answers are final.",
    }


@login_required
@require_GET
def annotate_last(request: HttpRequest, project_id: int) -> JsonResponse:
    """The caller's last answer in the project, with its task, and whether it can still change.

    ``last`` is null when they have answered nothing here (imported judgements do not count).
    """
    project = _member_project(request, project_id)
    judgement = judgement_last(project=project, annotator=request.user)
    response = JsonResponse({"last": None if judgement is None else _last_payload(judgement)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
@body_limit(SUBMIT_MAX_BODY_BYTES)
def annotate_amend(request: HttpRequest, project_id: int, judgement_id: int) -> JsonResponse:
    """Change the caller's answer while its task is open (the API's amend, with session and CSRF).

    Body: ``ranking`` and optional ``both_bad``, ``confidence``, ``rationale``: the whole
    answer. 200 with the stored answer and ``changed``; 409 ``task_complete`` once the
    task is complete; anybody else's judgement is a 404.
    """
    project = _member_project(request, project_id)
    judgement = (
        Judgement.objects.filter(pk=judgement_id, annotator=request.user, task__project=project)
        .select_related("task", "assignment")
        .first()
        if 0 < judgement_id <= queue_sql.ID_MAX
        else None
    )
    if judgement is None:
        raise Http404("No such judgement.")
    try:
        body = loads_json(request.body or b"{}")
    except JSONInputError as exc:
        return _json_error(400, f"the request body is not valid JSON: {exc}")
    incoming = AmendSerializer(data=body if isinstance(body, dict) else {})
    if not isinstance(body, dict) or not incoming.is_valid():
        errors = incoming.errors if isinstance(body, dict) else {"body": ["must be a JSON object"]}
        field, messages = next(iter(errors.items()))
        return _json_error(400, f"{field}: {' '.join(str(m) for m in messages)}", field=field)
    try:
        outcome = judgement_amend(judgement=judgement, **incoming.validated_data)
    except QueueError as exc:
        return _json_error(exc.status, exc.message, code=exc.code, field=exc.field)
    amended = outcome.judgement
    response = JsonResponse(
        {
            "changed": outcome.changed,
            "judgement": {"id": amended.pk, "tiers": amended.tiers, "both_bad": amended.both_bad},
        }
    )
    response["Cache-Control"] = "no-store"
    return response


# Open tasks as the claim serves them (the order of the task_claim_order index).
_PREVIEW_ORDER = ("-priority", "-judgement_count", "id")


@login_required
@require_GET
def annotate_preview(request: HttpRequest, project_id: int) -> JsonResponse:
    """A manager's look at the open tasks, in queue order, read-only: nothing is claimed.

    ``?n=`` is the task's place in the queue (0 first). Answers ``task`` (the labeling
    page's rendering, responses in stored order; null past the end), ``n`` and ``open``
    (how many open tasks there are). Managers only: an annotator gets 403, an outsider 404.
    """
    project = managed_project(request, project_id)
    try:
        index = max(0, min(int(request.GET.get("n", "0")), 10**9))
    except ValueError:
        return _json_error(400, "n: must be a whole number", field="n")
    open_tasks = Task.objects.filter(project=project, state=TaskState.OPEN)
    total = open_tasks.count()
    task_id = open_tasks.order_by(*_PREVIEW_ORDER).values_list("pk", flat=True)[index : index + 1].first()
    task = None
    if task_id is not None:
        order = queue_sql.task_response_ids(task_id)
        task = {**_rendered_task(task_id, order, with_text=True), "display_order": order}
    response = JsonResponse({"task": task, "n": index, "open": total})
    response["Cache-Control"] = "no-store"
    return response
