"""API v1: the dashboard's data that the agreement report does not hold (managers only).

``GET /api/v1/projects/{id}/agreement/trend/?by=count|day|week&points=20`` answers
:func:`annotation.trends.agreement_trend`: the cumulative agreement figures at evenly
spaced judgement counts or at the end of each day / week of submissions.

``GET /api/v1/projects/{id}/exports/preview/?tie_policy=&weighting=&min_reliability=&exclude_annotators=``
answers :func:`annotation.preview.survival_curves`: how many response pairs an export with
these settings would keep at each majority threshold (0.5 .. 1 by 0.025) and each minimum
vote count, before any snapshot is made. The settings are resolved exactly as a snapshot's
(``exports.services.export_params_resolve``), so a name that has not judged here is a 400.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.aggregate import TIE_POLICIES, WEIGHTINGS, MajorityConfig
from annotation.agreement_data import ProjectPairVotes, project_pair_votes
from annotation.api.permissions import IsProjectManager
from annotation.api.views import ProjectScopedMixin
from annotation.models import Project
from annotation.preview import DEFAULT_THRESHOLDS, survival_curves
from annotation.trends import DEFAULT_POINTS, MAX_POINTS, TREND_BY, agreement_trend
from exports.params import InvalidParams
from exports.services import export_params_resolve

MAX_PREVIEW_CURVES = 20
DEFAULT_PREVIEW_CURVES = 10


def project_preview(
    project: Project,
    config: MajorityConfig | None = None,
    max_min_votes: int | None = None,
    extra_thresholds: tuple[float, ...] = (),
    data: ProjectPairVotes | None = None,
) -> dict:
    """The threshold preview of ``project`` as JSON.

    Curves for min_votes 1..``max_min_votes``; by default up to the project's overlap or
    the most votes on one pair, whichever is larger, at most ``DEFAULT_PREVIEW_CURVES``
    (the last curve then means "that many votes or more"). The grid is 0.5 .. 1 by 0.025
    plus ``extra_thresholds`` (the one a form has chosen, so that its count is exact).
    ``data``: the project's pair votes when the caller has read them already.
    """
    grid = sorted({*DEFAULT_THRESHOLDS, *(float(t) for t in extra_thresholds)})
    votes = (data if data is not None else project_pair_votes(project)).votes
    if max_min_votes is None:
        max_min_votes = int(project.annotations_per_task)
        if len(votes):
            max_min_votes = max(max_min_votes, int(np.unique(votes.unit, return_counts=True)[1].max()))
        max_min_votes = min(max_min_votes, DEFAULT_PREVIEW_CURVES)
    return survival_curves(votes, base=config, thresholds=grid, max_min_votes=max_min_votes).as_dict()


class TrendQuerySerializer(serializers.Serializer):
    by = serializers.ChoiceField(
        choices=TREND_BY,
        default="count",
        help_text="count: at evenly spaced judgement counts; day / week: at the end of each period with submissions.",
    )
    points = serializers.IntegerField(
        min_value=2, max_value=MAX_POINTS, default=DEFAULT_POINTS, help_text="Most checkpoints."
    )


class TrendView(ProjectScopedMixin, APIView):
    """Cumulative agreement over submission time (managers only)."""

    permission_classes = [IsAuthenticated, IsProjectManager]

    @extend_schema(
        parameters=[TrendQuerySerializer],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description=(
                    "by, judgements, statistics (names), labels, and points: one object per checkpoint with "
                    "judgements, pair_votes, units (response pairs with a vote) and each statistic (null where "
                    "undefined); count checkpoints carry `at` (submission time of the last judgement), day / week "
                    "ones `period`."
                ),
            ),
            400: OpenApiResponse(description="A query parameter is out of range; the body names it."),
            403: OpenApiResponse(description="Not a manager of this project."),
            404: OpenApiResponse(description="No such project, or you are not a member."),
        },
    )
    def get(self, request: Request, project_id: int) -> Response:
        incoming = TrendQuerySerializer(data=request.query_params)
        incoming.is_valid(raise_exception=True)
        return Response(agreement_trend(project=self.project, **incoming.validated_data))


class PreviewQuerySerializer(serializers.Serializer):
    threshold = serializers.FloatField(
        required=False,
        min_value=0.5,
        max_value=1.0,
        help_text="A threshold to add to the grid (0.5 .. 1 by 0.025), so that its count is exact.",
    )
    tie_policy = serializers.ChoiceField(choices=TIE_POLICIES, required=False)
    weighting = serializers.ChoiceField(choices=WEIGHTINGS, required=False)
    min_reliability = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    exclude_annotators = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        max_length=1000,
        help_text="Usernames; repeat the parameter for several.",
    )
    max_min_votes = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_PREVIEW_CURVES,
        help_text=(
            "Curves for min_votes 1..this (default: the project's overlap or the most votes on a pair, at most 10)."
        ),
    )


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
