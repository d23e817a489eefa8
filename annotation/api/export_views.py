"""API v1: export snapshots of a project (managers only).

``POST /projects/{id}/exports/`` queues a snapshot (202) for a worker on the default queue;
``GET`` lists them, ``GET .../exports/{export_id}/`` shows one with its manifest, and
``GET .../exports/{export_id}/files/{name}`` streams one of its files as an attachment,
and ``POST .../exports/{export_id}/cancel/`` cancels a queued or running one (a running
worker stops at its next chunk; 409 when the snapshot had already finished).
Outsiders get 404 (the project does not exist for them), annotators 403.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.aggregate import TIE_POLICIES, WEIGHTINGS
from annotation.api.permissions import IsProjectManager
from annotation.api.serializers import ErrorSerializer, NamedChoiceField
from annotation.api.views import ProjectScopedMixin
from exports.models import ExportSnapshot, ExportState
from exports.params import MAX_BATCH_PAIRS, PAIR_WEIGHTS, InvalidParams
from exports.services import (
    export_snapshot_cancel,
    export_snapshot_create,
    export_snapshot_fail,
    snapshot_directory,
)
from exports.tasks import run_export_snapshot

logger = logging.getLogger(__name__)

_CONTENT_TYPES = {
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
}


# --- serializers ----------------------------------------------------------------------------


class ExportCreateSerializer(serializers.Serializer):
    """Parameters of a new snapshot; every one is optional (see exports.params.ExportParams)."""

    threshold = serializers.FloatField(
        required=False,
        min_value=0.5,
        max_value=1.0,
        help_text="Vote share a pair's winner needs (default: the project's).",
    )
    min_votes = serializers.IntegerField(required=False, min_value=1, max_value=10_000)
    tie_policy = serializers.ChoiceField(choices=TIE_POLICIES, required=False)
    weighting = serializers.ChoiceField(choices=WEIGHTINGS, required=False)
    min_reliability = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    exclude_annotators = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, max_length=1000, help_text="Usernames."
    )
    validation_fraction = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    split_seed = serializers.CharField(required=False, max_length=200, allow_blank=True)
    batch_pairs = serializers.IntegerField(required=False, min_value=1, max_value=MAX_BATCH_PAIRS)
    pair_weight = serializers.ChoiceField(choices=PAIR_WEIGHTS, required=False)


class ExportFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    url = serializers.CharField()
    bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField(allow_null=True)
    rows = serializers.IntegerField(allow_null=True)


class ExportErrorSerializer(serializers.Serializer):
    message = serializers.CharField()


class ExportSnapshotSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)
    state = NamedChoiceField(enum_name="ExportStateEnum", choices=ExportState.choices, read_only=True)
    params = serializers.DictField(read_only=True)
    counts = serializers.DictField(read_only=True)
    errors = ExportErrorSerializer(many=True, read_only=True)
    files = serializers.SerializerMethodField()

    class Meta:
        model = ExportSnapshot
        fields = [
            "id",
            "state",
            "progress",
            "params",
            "counts",
            "content_hash",
            "source_judgements",
            "source_max_judgement_id",
            "errors",
            "attempts",
            "files",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ExportFileSerializer(many=True))
    def get_files(self, snapshot: ExportSnapshot) -> list[dict[str, Any]]:
        listed = snapshot.manifest.get("files", {})
        base = f"/api/v1/projects/{snapshot.project_id}/exports/{snapshot.pk}/files/"
        request = self.context.get("request")
        out = []
        for name in snapshot.file_names:
            info = listed.get(name, {})
            url = base + name
            out.append(
                {
                    "name": name,
                    "url": request.build_absolute_uri(url) if request is not None else url,
                    "bytes": info.get("bytes"),
                    "sha256": info.get("sha256"),
                    "rows": info.get("rows"),
                }
            )
        return out


class ExportSnapshotDetailSerializer(ExportSnapshotSerializer):
    manifest = serializers.DictField(read_only=True, help_text="manifest.json of a finished snapshot; {} before.")

    class Meta(ExportSnapshotSerializer.Meta):
        fields = [*ExportSnapshotSerializer.Meta.fields, "manifest"]
        read_only_fields = fields


# --- views ----------------------------------------------------------------------------------


def enqueue_export(snapshot_id: int) -> None:
    """Send the snapshot to a worker; if the broker is unreachable, say so on the snapshot."""
    try:
        run_export_snapshot.delay(snapshot_id=snapshot_id)
    except Exception as exc:
        logger.exception("could not queue export snapshot %s", snapshot_id)
        message = f"could not reach the task queue ({type(exc).__name__}); create the export again later"
        export_snapshot_fail(snapshot_id=snapshot_id, errors=[{"message": message}])


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
                transaction.on_commit(partial(enqueue_export, snapshot.pk))
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


class ExportFileView(ProjectScopedMixin, APIView):
    """Download one file of a finished snapshot (streamed, as an attachment)."""

    permission_classes = [IsAuthenticated, IsProjectManager]

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such snapshot or file."),
            409: OpenApiResponse(ErrorSerializer, description="The snapshot has not succeeded (code not_ready)."),
        }
    )
    def get(self, request: Request, project_id: int, export_id: int, name: str) -> Any:
        snapshot = get_object_or_404(ExportSnapshot.objects.filter(project=self.project), pk=export_id)
        directory = snapshot_directory(snapshot)
        if directory is None:
            return Response(
                {"detail": f"This export is {snapshot.state}: it has no files.", "code": "not_ready", "field": None},
                status=status.HTTP_409_CONFLICT,
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


class ExportCancelView(ProjectScopedMixin, APIView):
    """Cancel a queued or running snapshot (managers only): it never publishes files."""

    permission_classes = [IsAuthenticated, IsProjectManager]

    @extend_schema(
        request=None,
        responses={
            200: ExportSnapshotSerializer,
            404: OpenApiResponse(description="No such snapshot in this project."),
            409: OpenApiResponse(ErrorSerializer, description="The snapshot had finished (code already_finished)."),
        },
    )
    def post(self, request: Request, project_id: int, export_id: int) -> Response:
        snapshot = get_object_or_404(ExportSnapshot.objects.filter(project=self.project), pk=export_id)
        if not export_snapshot_cancel(snapshot_id=snapshot.pk, user=request.user):
            snapshot.refresh_from_db()
            return Response(
                {
                    "detail": f"This export is {snapshot.state}: it can no longer be cancelled.",
                    "code": "already_finished",
                    "field": None,
                },
                status=status.HTTP_409_CONFLICT,
            )
        snapshot.refresh_from_db()
        context = {"request": request, "view": self}
        return Response(ExportSnapshotSerializer(snapshot, context=context).data, status=status.HTTP_200_OK)
