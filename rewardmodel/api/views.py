"""API v1: reward-model runs, versions, comparison, scoring and downloads (managers of the project only).

Outsiders get 404 (the project does not exist for them), annotators 403. Refusals of the
services answer ``{detail, code, field}`` with their status, like the work queue's; so does a
missing run or version (404, code ``no_such_run``, ``no_such_version`` or ``no_active_version``).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from arpad.api.permissions import IsProjectManager
from arpad.api.serializers import ErrorSerializer
from arpad.api.views import DownloadNegotiation, ProjectScopedMixin, RefusalMixin
from arpad.archive import CONTENT_TYPE as ARCHIVE_CONTENT_TYPE
from arpad.archive import archive_response
from exports.models import ExportSnapshot, ExportState
from jobs.api.views import KindCancelView, cancel_schema
from rewardmodel.api import serializers as s
from rewardmodel.models import RewardModelRun, RewardModelVersion, RunTrigger
from rewardmodel.services import (
    RewardModelError,
    base_model_names,
    default_base_model,
    reward_model_run_create,
    reward_model_score,
    reward_model_version_activate,
    reward_model_version_files,
    reward_model_versions_compare,
    score_items_count_check,
)

_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request, with the field at fault."),
    403: OpenApiResponse(description="Not a manager of this project."),
    404: OpenApiResponse(
        ErrorSerializer,
        description="No such run or version in this project (code no_such_run, no_such_version, or"
        " no_active_version for ``active``); no such project (outsiders too): detail only.",
    ),
}


class ManagerScoped(RefusalMixin, ProjectScopedMixin):
    permission_classes = [IsAuthenticated, IsProjectManager]

    def runs(self) -> QuerySet[RewardModelRun]:
        if self.is_schema_request():
            return RewardModelRun.objects.none()
        return RewardModelRun.objects.filter(project=self.project).select_related(
            "created_by", "parent_version", "version"
        )

    def versions(self) -> QuerySet[RewardModelVersion]:
        if self.is_schema_request():
            return RewardModelVersion.objects.none()
        return RewardModelVersion.objects.filter(project=self.project).select_related("parent")

    def version(self, number: Any) -> RewardModelVersion:
        """The version of the URL, or a 404 refusal that says what to do (``number`` may be ``active``)."""
        versions = self.versions()
        if number == "active":
            found = versions.filter(is_active=True).first()
            if found is None:
                message = (
                    "the project has no active reward model: activate one of its versions"
                    if versions.exists()
                    else "the project has no active reward model yet: train one first"
                )
                raise RewardModelError(None, message, code="no_active_version", status=404)
            return found
        found = versions.filter(number=number).first()
        if found is None:
            raise RewardModelError(
                "number", f"no reward-model version {number} in this project", code="no_such_version", status=404
            )
        return found

    def run(self, run_id: Any) -> RewardModelRun:
        found = self.runs().filter(pk=run_id).first()
        if found is None:
            raise RewardModelError("run_id", f"no run {run_id} in this project", code="no_such_run", status=404)
        return found


def latest_snapshot(project: Any) -> ExportSnapshot:
    snapshot = ExportSnapshot.objects.filter(project=project, state=ExportState.SUCCEEDED).order_by("-id").first()
    if snapshot is None:
        raise RewardModelError("snapshot", "the project has no succeeded export yet: export its preferences first")
    return snapshot


def run_create_from_request(view: ManagerScoped, data: dict[str, Any], *, trigger: str) -> RewardModelRun:
    """Shared by the API and the web page: resolve ids inside the project, then create."""
    project = view.project
    if data.get("snapshot") is None:
        snapshot = latest_snapshot(project)
    else:
        snapshot = ExportSnapshot.objects.filter(project=project, pk=data["snapshot"]).first()
        if snapshot is None:
            raise RewardModelError("snapshot", f"no export {data['snapshot']} in this project")
    parent = None
    if data.get("parent_version") is not None:
        parent = RewardModelVersion.objects.filter(project=project, number=data["parent_version"]).first()
        if parent is None:
            raise RewardModelError("parent_version", f"no version {data['parent_version']} in this project")
    with transaction.atomic():
        return reward_model_run_create(
            project=project,
            snapshot=snapshot,
            config=data.get("config") or {},
            base_model=data.get("base_model") or None,
            parent_version=parent,
            user=view.request.user,
            trigger=trigger,
        )


class RunListView(ManagerScoped, generics.ListCreateAPIView):
    """Training runs of the project, newest first. POST queues a new run on the GPU queue (202)."""

    serializer_class = s.RunSerializer

    def get_queryset(self) -> QuerySet[RewardModelRun]:
        return self.runs()

    @extend_schema(request=s.RunCreateSerializer, responses={202: s.RunSerializer, **_ERRORS})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.RunCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        run = run_create_from_request(self, dict(incoming.validated_data), trigger=RunTrigger.API)
        return Response(s.RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class BaseModelListView(ManagerScoped, APIView):
    """The base models a run may start from, by name (the operator registers them; paths are not shown)."""

    @extend_schema(responses={200: s.BaseModelSerializer(many=True), **_ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        default = default_base_model()
        rows = [{"name": name, "default": name == default} for name in base_model_names()]
        return Response(s.BaseModelSerializer(rows, many=True).data)


class RunDetailView(ManagerScoped, generics.RetrieveAPIView):
    """One run with its metrics over time and its log tail (poll it for live progress)."""

    serializer_class = s.RunDetailSerializer

    def get_object(self) -> RewardModelRun:
        return self.run(self.kwargs["run_id"])


@cancel_schema(s.RunSerializer, "run")
class RunCancelView(KindCancelView):
    """Cancel a run: a queued run at once, a running one at its next training step."""

    model = RewardModelRun
    lookup_url_kwarg = "run_id"
    serializer_class = s.RunSerializer


class VersionListView(ManagerScoped, generics.ListAPIView):
    """Registered versions of the project, newest first, with lineage and validation metrics."""

    serializer_class = s.VersionSerializer

    def get_queryset(self) -> QuerySet[RewardModelVersion]:
        return self.versions()


class VersionDetailView(ManagerScoped, generics.RetrieveAPIView):
    serializer_class = s.VersionSerializer

    def get_object(self) -> RewardModelVersion:
        return self.version(self.kwargs["number"])


class VersionActivateView(ManagerScoped, APIView):
    """Make this version the project's active one (what PPO rounds score with)."""

    @extend_schema(request=None, responses={200: s.VersionSerializer, **_ERRORS})
    def post(self, request: Request, project_id: int, number: int) -> Response:
        version = reward_model_version_activate(version=self.version(number))
        return Response(s.VersionSerializer(self.versions().get(pk=version.pk)).data)


class VersionArchiveView(ManagerScoped, APIView):
    """The version's model directory (safetensors, tokenizer, metrics.json, model card) as one .tar.gz, streamed."""

    content_negotiation_class = DownloadNegotiation

    @extend_schema(
        responses={
            (200, ARCHIVE_CONTENT_TYPE): OpenApiTypes.BINARY,
            409: OpenApiResponse(ErrorSerializer, description="The model's files are missing (code model_missing)."),
            **_ERRORS,
        },
    )
    def get(self, request: Request, project_id: int, number: int) -> Any:
        version = self.version(number)
        members = reward_model_version_files(version=version)
        return archive_response(members, filename=f"reward-model-{self.project.pk}-v{version.number}.tar.gz")


class VersionScoreView(ManagerScoped, APIView):
    """Rewards of a batch of (prompt, response) items under one version (``active`` for the active one)."""

    @extend_schema(
        request=s.ScoreRequestSerializer,
        responses={
            200: s.ScoreResponseSerializer,
            409: OpenApiResponse(ErrorSerializer, description="The model's files are missing."),
            **_ERRORS,
        },
    )
    def post(self, request: Request, project_id: int, number: Any = "active") -> Response:
        version = self.version(number)
        items = request.data.get("items") if isinstance(request.data, dict) else None
        if isinstance(items, list):
            score_items_count_check(len(items))  # before the serializer reads each of them
        incoming = s.ScoreRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        pairs = [(item["prompt"], item["response"]) for item in incoming.validated_data["items"]]
        rewards = reward_model_score(version=version, items=pairs)
        return Response({"version": version.number, "rewards": rewards})


class VersionCompareView(ManagerScoped, APIView):
    """Score one validation set with two versions: accuracy of each, agreement, reward correlation."""

    @extend_schema(
        parameters=[
            OpenApiParameter("a", OpenApiTypes.INT, required=True, description="Version number."),
            OpenApiParameter("b", OpenApiTypes.INT, required=True, description="Version number."),
            OpenApiParameter(
                "snapshot", OpenApiTypes.INT, description="Export whose validation pairs to use (default: newer's)."
            ),
        ],
        responses={200: s.CompareSerializer, **_ERRORS},
    )
    def get(self, request: Request, project_id: int) -> Response:
        numbers = {}
        for name in ("a", "b"):
            raw = request.query_params.get(name)
            if raw is None or not raw.isdigit():
                raise RewardModelError(name, "give a version number")
            numbers[name] = int(raw)
        a = self.versions().filter(number=numbers["a"]).first()
        b = self.versions().filter(number=numbers["b"]).first()
        for name, version in (("a", a), ("b", b)):
            if version is None:
                raise RewardModelError(name, f"no version {numbers[name]} in this project")
        snapshot = None
        raw = request.query_params.get("snapshot")
        if raw:
            snapshot = ExportSnapshot.objects.filter(project=self.project, pk=raw if raw.isdigit() else -1).first()
            if snapshot is None:
                raise RewardModelError("snapshot", f"no export {raw} in this project")
        return Response(reward_model_versions_compare(a=a, b=b, snapshot=snapshot))
