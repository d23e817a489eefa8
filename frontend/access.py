"""Object-level access for the manager pages: one rule, used by every view that needs it."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from annotation import queue_sql
from annotation.models import Project, Role


def managed_project(request: HttpRequest, project_id: int) -> Project:
    """The project if the caller manages it; 404 for outsiders, 403 for its annotators."""
    project = queue_sql.project_with_role(project_id, request.user.pk)
    if project is None:
        raise Http404("No such project.")
    if project.caller_role != Role.MANAGER:
        raise PermissionDenied("Only a manager of this project can open this page.")
    return project
