"""API v1: export snapshots of a project (managers only).

``POST /projects/{id}/exports/`` queues a snapshot (202) for a worker on the default queue;
``GET`` lists them, ``GET .../exports/{export_id}/`` shows one with its manifest, and
``GET .../exports/{export_id}/files/{name}`` streams one of its files as an attachment,
``GET .../exports/{export_id}/archive/`` all of them as one .tar.gz,
and ``POST .../exports/{export_id}/cancel/`` cancels a queued or running one (the cancel of
every job kind, ``jobs.api.views.KindCancelView``: 202; a running worker stops at its next
chunk; 409 when the snapshot had already finished).

``GET /projects/{id}/exports/preview/?tie_policy=&weighting=&min_reliability=&exclude_annotators=``
answers :func:`annotation.project_preview.project_preview`: how many response pairs an
export with these settings would keep at each majority threshold (0.5 .. 1 by 0.025) and
each minimum vote count, before any snapshot is made. The settings are resolved exactly as
a snapshot's (``exports.services.export_params_resolve``), so a name that has not judged
here is a 400.

Outsiders get 404 (the project does not exist for them), annotators 403.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.project_preview import project_preview
from arpad.api.permissions import IsProjectManager
from arpad.api.serializers import ErrorSerializer
from arpad.api.views import DownloadNegotiation, NoStoreMixin, ProjectScopedMixin, RefusalMixin, refusal_response
from arpad.archive import CONTENT_TYPE as ARCHIVE_CONTENT_TYPE
from arpad.archive import archive_response
from exports.api.serializers import (
    ExportCreateSerializer,
    ExportSnapshotDetailSerializer,
    ExportSnapshotSerializer,
    PreviewQuerySerializer,
)
from exports.models import ExportSnapshot
from exports.params import InvalidParams
from exports.services import (
    export_params_resolve,
    export_snapshot_create,
    export_snapshot_files,
    export_snapshot_send,
    snapshot_directory,
)
from jobs.api.views import KindCancelView, cancel_schema

_CONTENT_TYPES = {
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
}


class ExportListView(ProjectScopedMixin, generics.ListCreateAPIView):
    """Export snapshots of the project (managers only). POST queues a new one: 202, run by a worker."""

    serializer_class = ExportSnapshotSerializer
    permission_classes = [IsAuthenticated, IsProjectManager]

    def get_queryset(self) -> QuerySet[ExportSnapshot]:
        if self.is_schema_request():
            return ExportSnapshot.objects.none()
        return ExportSnapshot.objects.filter(project=self.project).select_related("created_by")

    @extend_schema(
        request=ExportCreateSerializer,
        responses={202: ExportSnapshotSerializer, 400: OpenApiResponse(description="Invalid parameters, by field.")},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = ExportCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                snapshot = export_snapshot_create(
                    project=self.project, params=dict(incoming.validated_data), user=request.user
                )
                # After commit: a worker must never look for a row that is not there yet.
                export_snapshot_send(snapshot)
        except InvalidParams as exc:
            raise serializers.ValidationError({exc.field: [exc.message]})
        data = ExportSnapshotSerializer(snapshot, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


class ExportDetailView(ProjectScopedMixin, generics.RetrieveAPIView):
    """One snapshot: state, progress, counts, errors, its files and its manifest."""

    serializer_class = ExportSnapshotDetailSerializer
    permission_classes = [IsAuthenticated, IsProjectManager]

    def get_queryset(self) -> QuerySet[ExportSnapshot]:
        if self.is_schema_request():
            return ExportSnapshot.objects.none()
        return ExportSnapshot.objects.filter(project=self.project).select_related("created_by")

    def get_object(self) -> ExportSnapshot:
        return get_object_or_404(self.get_queryset(), pk=self.kwargs["export_id"])


class ExportFileView(NoStoreMixin, ProjectScopedMixin, APIView):
    """Download one file of a finished snapshot (streamed, as an attachment)."""

    permission_classes = [IsAuthenticated, IsProjectManager]

    @extend_schema(
        responses={
            # The media type follows the file: JSON Lines, Parquet, or JSON (the manifest).
            (200, "application/x-ndjson"): OpenApiTypes.BINARY,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such snapshot or file."),
            409: OpenApiResponse(ErrorSerializer, description="The snapshot has not succeeded (code not_ready)."),
        }
    )
    def get(self, request: Request, project_id: int, export_id: int, name: str) -> Any:
        snapshot = get_object_or_404(ExportSnapshot.objects.filter(project=self.project), pk=export_id)
        directory = snapshot_directory(snapshot)
        if directory is None:
            return refusal_response(
                f"This export is {snapshot.state}: it has no files.", code="not_ready", status=status.HTTP_409_CONFLICT
            )
        # Only names the manifest lists: a name never becomes a path by itself.
        if name not in snapshot.file_names:
            raise Http404("No such file in this export.")
        path = directory / name
        try:
            handle = open(path, "rb")  # noqa: SIM115 (FileResponse closes it)
        except FileNotFoundError:
            raise Http404("This export's files are gone from the artifact store.")
        download_name = f"export-{snapshot.pk}-{name.replace('/', '-')}"
        return FileResponse(
            handle,
            as_attachment=True,
            filename=download_name,
            content_type=_CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"),
        )


class ExportArchiveView(NoStoreMixin, RefusalMixin, ProjectScopedMixin, APIView):
    """Download every file of a finished snapshot as one .tar.gz (streamed, as an attachment)."""

    permission_classes = [IsAuthenticated, IsProjectManager]
    content_negotiation_class = DownloadNegotiation

    @extend_schema(
        responses={
            (200, ARCHIVE_CONTENT_TYPE): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such snapshot."),
            409: OpenApiResponse(
                ErrorSerializer,
                description="The snapshot has not succeeded (code not_ready) or its files are gone (files_missing).",
            ),
        }
    )
    def get(self, request: Request, project_id: int, export_id: int) -> Any:
        snapshot = get_object_or_404(ExportSnapshot.objects.filter(project=self.project), pk=export_id)
        members = export_snapshot_files(snapshot=snapshot)
        return archive_response(members, filename=f"export-{snapshot.pk}.tar.gz")


@cancel_schema(ExportSnapshotSerializer, "snapshot")
class ExportCancelView(KindCancelView):
    """Cancel a queued or running snapshot (managers only): it never publishes files."""

    model = ExportSnapshot
    lookup_url_kwarg = "export_id"
    serializer_class = ExportSnapshotSerializer


class ExportPreviewView(ProjectScopedMixin, APIView):
    """Pairs an export would keep at each threshold and minimum vote count (managers only)."""

    permission_classes = [IsAuthenticated, IsProjectManager]

    @extend_schema(
        parameters=[PreviewQuerySerializer],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description=(
                    "thresholds (0.5 .. 1); curves: [{min_votes, kept: one count per threshold}]; units (pairs with "
                    "a vote); never (pairs no setting keeps, by reason); counted_histogram; excluded_raters."
                ),
            ),
            400: OpenApiResponse(description="A parameter is invalid; the body names it."),
            403: OpenApiResponse(description="Not a manager of this project."),
            404: OpenApiResponse(description="No such project, or you are not a member."),
        },
    )
    def get(self, request: Request, project_id: int) -> Response:
        query: dict[str, Any] = {key: request.query_params.get(key) for key in request.query_params}
        if "exclude_annotators" in request.query_params:
            query["exclude_annotators"] = request.query_params.getlist("exclude_annotators")
        incoming = PreviewQuerySerializer(data=query)
        incoming.is_valid(raise_exception=True)
        params = dict(incoming.validated_data)
        depth = params.pop("max_min_votes", None)
        extra = (params.pop("threshold"),) if "threshold" in params else ()
        try:
            config = export_params_resolve(project=self.project, params=params).majority_config()
        except InvalidParams as exc:
            raise serializers.ValidationError({exc.field: [exc.message]})
        preview = project_preview(self.project, config, depth, extra)
        preview["parameters"] = {
            "tie_policy": config.tie_policy,
            "weighting": config.weighting,
            "min_reliability": config.min_reliability,
            "exclude_annotators": list(config.exclude_raters),
        }
        return Response(preview)
