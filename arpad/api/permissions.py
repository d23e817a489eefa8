"""Who may do what in the API, for every app's endpoints.

Two rules. A project the caller does not belong to does not exist for them: every
lookup goes through ``Project.objects.visible_to`` and answers 404, so an outsider
cannot even learn a project id is taken. Inside a project, the caller's role decides,
and a member who lacks the role gets 403.

Views that live under ``/projects/{project_id}/`` expose the resolved project as
``view.project``, carrying the caller's role as ``caller_role``; the permission
classes below read it.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from annotation import queue_sql
from annotation.models import Project, Role
from annotation.project_services import can_create_projects


def project_for_caller(user: Any, project_id: Any) -> Project:
    """The project with the caller's role annotated, or Http404 for anyone outside it."""
    # One query through the caller's own membership row, so the role comes with the
    # project; it runs on every request under /projects/{id}/, hence hand-written SQL.
    try:
        project_id = int(project_id)
    except (TypeError, ValueError):
        raise Http404("No such project.") from None
    project = queue_sql.project_with_role(project_id, user.pk) if user.is_authenticated else None
    if project is None:
        raise Http404("No such project.")
    return project


class IsProjectMember(BasePermission):
    """Any role in the URL's project; resolving ``view.project`` answers 404 for outsiders."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return view.project.caller_role in Role.values


class IsProjectManager(BasePermission):
    message = "Only a manager of this project can do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return view.project.caller_role == Role.MANAGER


class IsProjectManagerOrReadOnly(BasePermission):
    """Members read; managers change."""

    message = "Only a manager of this project can change it."

    def has_permission(self, request: Request, view: Any) -> bool:
        role = view.project.caller_role
        if request.method in SAFE_METHODS:
            return role in Role.values
        return role == Role.MANAGER


class CanCreateProjects(BasePermission):
    """Listing is for everyone signed in; creating needs staff or ``annotation.add_project``."""

    message = "You are not allowed to create projects."

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in SAFE_METHODS or can_create_projects(request.user)
