"""Manager pages: project settings, members, imports, the task browser and item review.

Permissions, the same on every page: a project the caller is not a member of is a 404
(nobody learns which ids exist); a member who is not a manager gets 403. Every query
below is scoped to the project resolved that way. Forms post with Django's CSRF token.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from accounts.forms import InviteForm
from accounts.services import (
    AccountError,
    IssuedInvitation,
    UsernameTaken,
    invitation_create,
    invitation_reissue,
    invitations_awaiting,
)
from accounts.views import invitation_link
from annotation import project_services, queue_sql
from annotation.api.serializers import ImportCreateSerializer
from annotation.import_jobs import import_job_create, import_job_send
from annotation.importers import FORMATS, format_options
from annotation.models import (
    Assignment,
    AssignmentState,
    ImportJob,
    ImportJobState,
    Judgement,
    Membership,
    PairVote,
    Project,
    Role,
    Task,
    TaskResponse,
)
from annotation.project_services import ProjectRefused, can_create_projects
from arpad.forms import add_refusal
from arpad.http import no_store
from frontend.access import managed_project
from frontend.forms import MemberAddForm, MemberRemoveForm, MemberRoleForm, ProjectForm, TaskFilterForm, add_reasons

TASKS_PER_PAGE = 50


def _page(request: HttpRequest, template: str, project: Project, section: str, **context: Any) -> HttpResponse:
    return render(request, f"frontend/manage/{template}", {"project": project, "section": section, **context})


# --- projects ---------------------------------------------------------------------------


@login_required
def project_create(request: HttpRequest) -> HttpResponse:
    """A new project; its creator becomes its manager (the API's rule: staff or add_project)."""
    if not can_create_projects(request.user):
        raise PermissionDenied("You are not allowed to create projects. Ask an administrator.")
    form = ProjectForm(request.POST or None)
    preview = _guidelines_preview(request, form)
    if request.method == "POST" and "preview" not in request.POST and form.is_valid():
        try:
            project = project_services.project_create(created_by=request.user, settings=form.cleaned_data)
        except ProjectRefused as exc:
            add_reasons(form, exc.errors)
        else:
            messages.success(request, f"Project “{project.name}” created. Import tasks next.")
            return redirect("project-imports", project_id=project.pk)
    return render(request, "frontend/manage/project_form.html", {"form": form, "project": None, "preview": preview})


@login_required
def project_edit(request: HttpRequest, project_id: int) -> HttpResponse:
    """The project's settings. Kind and K cannot contradict tasks that already exist."""
    project = managed_project(request, project_id)
    form = ProjectForm(request.POST or None, instance=project)
    preview = _guidelines_preview(request, form)
    if request.method == "POST" and "preview" not in request.POST and form.is_valid():
        try:
            project_services.project_update(project=project, changes=form.cleaned_data)
        except ProjectRefused as exc:
            add_reasons(form, exc.errors)
        else:
            messages.success(request, "Settings saved.")
            return redirect("project-edit", project_id=project.pk)
    n_tasks = project.tasks.count()
    return _page(request, "project_form.html", project, "settings", form=form, preview=preview, n_tasks=n_tasks)


def _guidelines_preview(request: HttpRequest, form: ProjectForm) -> str:
    """Guidelines to preview (the template renders them with ``|markdown``, as annotators
    see them): the submitted text, else the saved one."""
    if request.method == "POST":
        text = request.POST.get("guidelines", "")
    else:
        text = form.instance.guidelines if form.instance.pk else ""
    return text if text.strip() else ""


# --- members ----------------------------------------------------------------------------


@login_required
@no_store  # an invitation link, shown once in the answer that made it
def project_members(request: HttpRequest, project_id: int) -> HttpResponse:
    """List members; add one by username or create an account with an invitation link, change a role,
    remove one. A project keeps a manager."""
    project = managed_project(request, project_id)
    add_form = MemberAddForm()
    invite_form = InviteForm(prefix="invite")
    invited: IssuedInvitation | None = None
    taken = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "invite":
            invite_form = InviteForm(request.POST, prefix="invite")
            if invite_form.is_valid():
                try:
                    invited = invitation_create(project=project, created_by=request.user, **invite_form.cleaned_data)
                except UsernameTaken as exc:
                    add_refusal(invite_form, exc.message, target=exc.field)
                    taken = exc.existing
                except AccountError as exc:
                    add_refusal(invite_form, exc.message, target=exc.field)
                else:
                    invite_form = InviteForm(prefix="invite")
        elif action == "reinvite":
            invited = _reinvite(request, project)
            if invited is None:
                return redirect("project-members", project_id=project.pk)
        elif action == "add":
            add_form = MemberAddForm(request.POST)
            if add_form.is_valid():
                try:
                    membership = project_services.membership_add(project=project, **add_form.cleaned_data)
                except ProjectRefused as exc:
                    add_reasons(add_form, exc.errors)
                else:
                    messages.success(request, f"Added {membership.user.username} as {membership.role}.")
                    return redirect("project-members", project_id=project.pk)
        elif action in ("role", "remove"):
            error = _change_member(request, project, action)
            if error:
                messages.error(request, error)
            elif not _still_manages(request, project):
                # The manager removed or demoted themselves: this page is no longer theirs.
                return redirect("project-list")
            return redirect("project-members", project_id=project.pk)
        else:
            messages.error(request, "Unknown action.")
            return redirect("project-members", project_id=project.pk)
    members = list(
        Membership.objects.filter(project=project)
        .select_related("user", "user__imported_account", "user__simulated_annotator")
        .order_by("role", "user__username")
    )
    awaiting = invitations_awaiting(project=project)
    for membership in members:
        membership.invitation = awaiting.get(membership.user_id)
    return _page(
        request,
        "members.html",
        project,
        "members",
        members=members,
        add_form=add_form,
        roles=Role.choices,
        invite_form=invite_form,
        invited=invited,
        invite_link=invitation_link(request, invited) if invited else None,
        taken=taken,
        taken_is_member=taken is not None and any(m.user_id == taken.pk for m in members),
    )


def _reinvite(request: HttpRequest, project: Project) -> IssuedInvitation | None:
    """A new invitation link for a member who never used theirs; None (with the reason as a message) if refused."""
    form = MemberRemoveForm(request.POST)  # the same single field: user_id
    if not form.is_valid():
        messages.error(request, "That request was malformed: user_id: a member's id is needed.")
        return None
    try:
        return invitation_reissue(project=project, created_by=request.user, user_id=form.cleaned_data["user_id"])
    except Membership.DoesNotExist:
        messages.error(request, "That user is not a member of this project.")
    except AccountError as exc:
        messages.error(request, exc.message)
    return None


def _still_manages(request: HttpRequest, project: Project) -> bool:
    again = queue_sql.project_with_role(project.pk, request.user.pk)
    return again is not None and again.caller_role == Role.MANAGER


def _change_member(request: HttpRequest, project: Project, action: str) -> str | None:
    form = MemberRoleForm(request.POST) if action == "role" else MemberRemoveForm(request.POST)
    if not form.is_valid():
        return "That request was malformed: " + "; ".join(
            f"{field}: {' '.join(errs)}" for field, errs in form.errors.items()
        )
    user_id = form.cleaned_data["user_id"]
    try:
        if action == "remove":
            membership = project_services.membership_remove(project=project, user_id=user_id)
            messages.success(request, f"Removed {membership.user.username} from the project.")
        else:
            membership = project_services.membership_set_role(
                project=project, user_id=user_id, role=form.cleaned_data["role"]
            )
            messages.success(request, f"{membership.user.username} is now {membership.get_role_display().lower()}.")
    except Membership.DoesNotExist:
        return "That user is not a member of this project."
    except ProjectRefused as exc:
        return " ".join(reason for reasons in exc.errors.values() for reason in reasons)
    return None


# --- imports ----------------------------------------------------------------------------


@login_required
def project_imports(request: HttpRequest, project_id: int) -> HttpResponse:
    """Upload a file; a worker imports it. The page follows the job's progress and errors."""
    project = managed_project(request, project_id)
    errors: dict[str, list[str]] = {}
    values = {"format": request.POST.get("format", "jsonl"), "options": request.POST.get("options", "{}")}
    if request.method == "POST":
        data: dict[str, Any] = {"format": values["format"], "options": values["options"] or "{}"}
        if "file" in request.FILES:
            data["file"] = request.FILES["file"]
        incoming = ImportCreateSerializer(data=data)
        if incoming.is_valid():
            job = import_job_create(
                project=project,
                user=request.user,
                uploaded_file=incoming.validated_data["file"],
                format=incoming.validated_data["format"],
                options=incoming.validated_data["options"],
            )
            # After commit: a worker must never look for a row that is not there yet.
            import_job_send(job)
            return redirect(reverse("project-imports", args=[project.pk]) + "?" + urlencode({"job": job.pk}))
        errors = {
            field: [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])]
            for field, msgs in incoming.errors.items()
        }
    jobs = ImportJob.objects.filter(project=project).select_related("created_by").order_by("-created_at", "-pk")
    focus = None
    job_param = request.GET.get("job")
    if job_param:
        if not job_param.isdigit():
            raise Http404("No such import.")
        focus = get_object_or_404(jobs, pk=int(job_param))
    formats = [
        {"name": name, "description": description, "options": format_options(name)}
        for name, description in sorted(FORMATS.items())
    ]
    return _page(
        request,
        "imports.html",
        project,
        "imports",
        jobs=jobs[:50],
        focus=focus,
        focus_running=focus is not None and focus.state in (ImportJobState.QUEUED, ImportJobState.RUNNING),
        formats=formats,
        errors=errors,
        values=values,
    )


# --- tasks ------------------------------------------------------------------------------


def _filtered_tasks(project: Project, form: TaskFilterForm) -> QuerySet[Task]:
    tasks = Task.objects.filter(project=project)
    if not form.is_valid():
        return tasks.none()
    data = form.cleaned_data
    if data["q"]:
        tasks = tasks.with_text(data["q"])
    if data["state"]:
        tasks = tasks.filter(state=data["state"])
    if data["source"]:
        tasks = tasks.filter(source=data["source"])
    if data["rl_round"] is not None:
        tasks = tasks.filter(rl_round=data["rl_round"])
    if data["judgements"] is not None:
        tasks = tasks.filter(judgement_count=data["judgements"])
    if data["judgements_min"] is not None:
        tasks = tasks.filter(judgement_count__gte=data["judgements_min"])
    if data["judgements_max"] is not None:
        tasks = tasks.filter(judgement_count__lte=data["judgements_max"])
    return tasks


@login_required
def task_browser(request: HttpRequest, project_id: int) -> HttpResponse:
    """Every task of the project, filtered by text, state, source, round and judgement count."""
    project = managed_project(request, project_id)
    form = TaskFilterForm(request.GET or None)
    tasks = _filtered_tasks(project, form) if request.GET else Task.objects.filter(project=project)
    tasks = tasks.select_related("prompt").order_by("-priority", "id")
    page = Paginator(tasks, TASKS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [{"task": task, "excerpt": _excerpt(task.prompt.last_user_text, 110)} for task in page.object_list]
    query = request.GET.copy()
    query.pop("page", None)
    sources = (
        Task.objects.filter(project=project)
        .exclude(source="")
        .values_list("source", flat=True)
        .distinct()
        .order_by("source")
    )
    return _page(
        request,
        "tasks.html",
        project,
        "tasks",
        form=form,
        page=page,
        rows=rows,
        query=query.urlencode(),
        sources=list(sources[:200]),
    )


def _excerpt(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _letter(position: int) -> str:
    return chr(ord("A") + position)


@login_required
def item_review(request: HttpRequest, project_id: int, task_id: int) -> HttpResponse:
    """One task for review: prompt, responses, every judgement, the pair votes and the leases."""
    project = managed_project(request, project_id)
    task = get_object_or_404(Task.objects.filter(project=project).select_related("prompt"), pk=task_id)
    links = TaskResponse.objects.filter(task=task).select_related("response").order_by("position")
    letters: dict[int, str] = {}
    responses = []
    for link in links:
        response = link.response
        letters[response.pk] = _letter(link.position)
        responses.append(
            {
                "letter": letters[response.pk],
                "response": response,
                "chars": len(response.text),
            }
        )

    judgements = (
        Judgement.objects.filter(task=task).select_related("annotator", "assignment").order_by("created_at", "pk")
    )
    judgement_rows = [
        {
            "judgement": j,
            "ordering": _ordering(j.tiers, letters),
            "time": _duration(j.time_taken_ms),
            "agrees_with_gold": (j.tiers == task.gold_tiers) if task.is_gold and task.gold_tiers else None,
        }
        for j in judgements
    ]

    pair_rows = _pair_summary(task, letters)
    now = timezone.now()
    assignments = [
        {"assignment": a, "live": a.state == AssignmentState.LEASED and a.expires_at > now}
        for a in Assignment.objects.filter(task=task).select_related("annotator").order_by("leased_at", "pk")
    ]
    messages_ = task.prompt.messages if isinstance(task.prompt.messages, list) else []
    turns = [
        {"role": str(m.get("role", "user")), "content": str(m.get("content", ""))}
        for m in messages_
        if isinstance(m, dict)
    ]
    return _page(
        request,
        "item.html",
        project,
        "tasks",
        task=task,
        turns=turns,
        responses=responses,
        judgements=judgement_rows,
        pairs=pair_rows,
        assignments=assignments,
        gold=_ordering(task.gold_tiers, letters) if task.gold_tiers else None,
        metadata=json.dumps(task.metadata, indent=2, ensure_ascii=False, sort_keys=True) if task.metadata else "",
    )


def _ordering(tiers: Any, letters: dict[int, str]) -> list[list[str]]:
    """Tiers of response ids as tiers of letters, best first: [["B"], ["A", "C"]] reads B > A = C."""
    if not isinstance(tiers, list):
        return []
    return [[letters.get(rid, f"#{rid}") for rid in tier] for tier in tiers if isinstance(tier, list)]


def _duration(ms: int | None) -> str:
    if ms is None:
        return "–"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def _pair_summary(task: Task, letters: dict[int, str]) -> list[dict[str, Any]]:
    """Per response pair: how often each side won, ties, and the majority share."""
    counts: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: {"a": 0, "b": 0, "tie": 0})
    for a, b, winner in PairVote.objects.filter(task=task).values_list("response_a_id", "response_b_id", "winner"):
        key = "a" if winner == 1 else "b" if winner == -1 else "tie"
        counts[(a, b)][key] += 1
    rows = []
    for (a, b), c in sorted(
        counts.items(), key=lambda item: (letters.get(item[0][0], ""), letters.get(item[0][1], ""))
    ):
        total = c["a"] + c["b"] + c["tie"]
        top = max(c.values())
        leaders = [k for k, v in c.items() if v == top]
        names = {"a": f"{letters.get(a)} preferred", "b": f"{letters.get(b)} preferred", "tie": "tie"}
        verdict = "split" if len(leaders) > 1 else names[leaders[0]]
        rows.append(
            {
                "a": letters.get(a, f"#{a}"),
                "b": letters.get(b, f"#{b}"),
                "a_wins": c["a"],
                "b_wins": c["b"],
                "ties": c["tie"],
                "total": total,
                "share": top / total if total else 0.0,
                "verdict": verdict,
            }
        )
    return rows
