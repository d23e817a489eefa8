"""Every job kind's generic endpoints, for managers of the job's project.

``GET /projects/{id}/jobs/?kind=&state=`` lists the project's jobs of every kind, newest
first; ``GET /projects/{id}/jobs/{kind}/{job_id}/`` shows one (the progress bar of the UI
polls it); ``POST .../cancel/`` cancels a queued job at once and asks a running one to stop
at its next step (202), or answers 409 when it already finished. A kind's own API may add
endpoints (creating its jobs, its results); these come with every kind for free.

Outsiders get 404 (the project does not exist for them), annotators 403.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from arpad.api.permissions import IsProjectManager
from arpad.api.serializers import ErrorSerializer
from arpad.api.views import ProjectScopedMixin, refusal_response
from jobs.api.serializers import JobDetailSerializer, JobSerializer
from jobs.lifecycle import JobAlreadyFinished, job_cancel
from jobs.models import JobState
from jobs.registry import JobKind, UnknownJobKind, all_kinds, get_kind

_LIST_LIMIT = 200

_KIND_PARAMETER = OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.PATH, description="The job kind.")


class _JobView(ProjectScopedMixin, APIView):
    permission_classes = [IsAuthenticated, IsProjectManager]

    def kind(self) -> JobKind:
        try:
            return get_kind(self.kwargs["kind"])
        except UnknownJobKind:
            raise Http404("No such job kind.") from None

    def job(self) -> Any:
        job = self.kind().model.objects.filter(project=self.project, pk=self.kwargs["job_id"]).first()
        if job is None:
            raise Http404("No such job.")
        return job


class KindCancelView(ProjectScopedMixin, APIView):
    """``POST .../{id}/cancel/`` of a kind's own API: the generic cancel, answered in the kind's shape.

    A subclass names the ``model``, the URL keyword of the job id and the kind's
    ``serializer_class`` (a subclass of ``JobSerializer``), and documents its response with
    :func:`cancel_schema`, which also sets ``what`` (the word a missing job's 404 uses).
    """

    permission_classes = [IsAuthenticated, IsProjectManager]
    model: Any = None
    lookup_url_kwarg = "job_id"
    serializer_class: Any = JobSerializer
    what = "job"

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        job_id = kwargs[self.lookup_url_kwarg]
        job = self.model.objects.filter(project=self.project, pk=job_id).first()
        if job is None:
            return refusal_response(
                f"no {self.what} {job_id} in this project",
                code=f"no_such_{self.what.replace(' ', '_')}",
                field=self.lookup_url_kwarg,
                status=404,
            )
        try:
            job = job_cancel(job=job, user=request.user)
        except JobAlreadyFinished as exc:
            return refusal_response(str(exc), code="already_finished", status=409)
        job = self.model.objects.get(pk=job.pk)
        data = self.serializer_class(job, context={"request": request, "view": self}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


def cancel_schema(serializer: Any, what: str) -> Any:
    """The OpenAPI description every kind's cancel endpoint shares; names the view's ``what``."""
    schema = extend_schema(
        request=None,
        description=f"Cancel: a queued {what} at once, a running one at its next step; 409 once it finished.",
        responses={
            202: serializer,
            404: OpenApiResponse(
                ErrorSerializer,
                description=f"No such {what} in this project (code no_such_{what.replace(' ', '_')}); no such project: detail only.",
            ),
            409: OpenApiResponse(ErrorSerializer, description="Already finished (code already_finished)."),
        },
    )

    def decorate(view: type[KindCancelView]) -> type[KindCancelView]:
        view.what = what
        return schema(view)

    return decorate


class JobListView(_JobView):
    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, description="Only jobs of this kind."),
            OpenApiParameter("state", OpenApiTypes.STR, enum=JobState.values, description="Only jobs in this state."),
        ],
        responses={200: JobSerializer(many=True), 400: ErrorSerializer},
    )
    def get(self, request: Request, project_id: int) -> Response:
        """The project's jobs of every kind, newest first (at most 200)."""
        label = request.query_params.get("kind")
        state = request.query_params.get("state")
        if state is not None and state not in JobState.values:
            return refusal_response(f"state must be one of {', '.join(JobState.values)}", code="invalid",
                                    status=400, field="state")  # fmt: skip
        try:
            kinds = [get_kind(label)] if label else all_kinds()
        except UnknownJobKind as exc:
            return refusal_response(str(exc), code="invalid", status=400, field="kind")
        rows: list[Any] = []
        for kind in kinds:
            qs = kind.model.objects.filter(project=self.project).select_related("created_by").order_by("-created_at")
            if state:
                qs = qs.filter(state=state)
            rows.extend(islice(qs, _LIST_LIMIT))
        rows.sort(key=lambda job: (job.created_at, job.pk), reverse=True)
        data = [JobSerializer(job, context={"request": request}).data for job in rows[:_LIST_LIMIT]]
        return Response(data)


class JobDetailView(_JobView):
    @extend_schema(parameters=[_KIND_PARAMETER], responses={200: JobDetailSerializer})
    def get(self, request: Request, project_id: int, kind: str, job_id: int) -> Response:
        """One job: state, progress, error, log tail and metric history."""
        job = self.job()
        return Response(JobDetailSerializer(job, context={"request": request}).data)


class JobCancelView(_JobView):
    @extend_schema(
        request=None,
        parameters=[_KIND_PARAMETER],
        responses={
            202: JobSerializer,
            409: OpenApiResponse(ErrorSerializer, description="The job had already finished."),
        },
    )
    def post(self, request: Request, project_id: int, kind: str, job_id: int) -> Response:
        """Cancel: a queued job at once, a running one at its next step."""
        try:
            job = job_cancel(job=self.job(), user=request.user)
        except JobAlreadyFinished as exc:
            return refusal_response(str(exc), code="already_finished", status=409)
        data = JobSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)
