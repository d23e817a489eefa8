"""View pieces every app's API uses: the URL's project, and services' refusals as responses."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from annotation.models import Project
from arpad.api.permissions import project_for_caller
from arpad.errors import ServiceError


class ProjectScopedMixin:
    """For views under ``/projects/{project_id}/``: the project, resolved once per request.

    ``self.project`` carries the caller's role (``caller_role``) for the permission classes
    of :mod:`arpad.api.permissions`; an outsider gets 404 on first access.
    """

    kwargs: dict[str, Any]
    request: Request

    @cached_property
    def project(self) -> Project:
        return project_for_caller(self.request.user, self.kwargs["project_id"])

    def is_schema_request(self) -> bool:
        return getattr(self, "swagger_fake_view", False)


class NoStoreMixin:
    """For API views whose answers carry judgements, gold answers, tasks or tokens: ``Cache-Control: no-store``.

    Every answer of the view, refusals included, so that no browser or proxy keeps a copy.
    The same header as :func:`arpad.http.no_store` sets on plain Django views.
    """

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        response["Cache-Control"] = "no-store"
        return response


class DownloadNegotiation(BaseContentNegotiation):
    """For views that answer a file: any ``Accept`` is served (a client asking for the file's type
    would otherwise get 406, as the renderers only know JSON); refusals are JSON.
    """

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


def refusal_response(detail: str, *, code: str, status: int, field: str | None = None) -> Response:
    """A refusal as every app's API answers it: ``{detail, code, field}`` (``ErrorSerializer``)."""
    return Response({"detail": detail, "code": code, "field": field}, status=status)


class RefusalMixin:
    """Answers the services' refusals, the exception classes in ``refusals``, with ``refusal_response``.

    A refusal carries ``message``, ``code``, ``field`` and ``status``, as
    :class:`arpad.errors.ServiceError` (``RewardModelError``, ``PolicyError``) and
    ``annotation.services.QueueError`` do; by default the views answer every ``ServiceError``.
    """

    refusals: tuple[type[Exception], ...] = (ServiceError,)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, self.refusals):
            refusal: Any = exc
            return refusal_response(refusal.message, code=refusal.code, field=refusal.field, status=refusal.status)
        return super().handle_exception(exc)  # type: ignore[misc]
