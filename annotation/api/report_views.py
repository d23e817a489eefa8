"""API v1: the agreement report of a project and its trend (managers only).

``GET /api/v1/projects/{id}/agreement/?bootstrap=&seed=`` answers the JSON of
:func:`annotation.reports.agreement_report`. It is computed in the request (a fixed number
of queries plus numpy work; about 0.2 s for 1,000 items with 1,000 resamples), so
``bootstrap`` is capped. Reports on uploaded files are not offered here: the importers'
path options read the server's file system; use ``manage.py agreement_report --file``.

``GET /api/v1/projects/{id}/agreement/trend/?by=count|day|week&points=20`` answers
:func:`annotation.trends.agreement_trend`: the cumulative agreement figures at evenly
spaced judgement counts (from the first judgement that gave a response pair a second vote,
``first_overlap``, when the plain spacing would start before it) or at the end of each day
/ week of submissions; each point counts the response pairs with two or more votes it rests on.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.reports import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONTESTED_LIMIT,
    DEFAULT_LOW_AGREEMENT_BELOW,
    DEFAULT_MIN_OVERLAP,
    DEFAULT_POSITION_BIAS_P,
    DEFAULT_TOO_FAST_MS,
    agreement_report,
)
from annotation.trends import DEFAULT_POINTS, MAX_POINTS, TREND_BY, agreement_trend
from arpad.api.permissions import IsProjectManager
from arpad.api.views import ProjectScopedMixin

MAX_BOOTSTRAP = 10_000


class AgreementReportQuerySerializer(serializers.Serializer):
    bootstrap = serializers.IntegerField(
        min_value=0,
        max_value=MAX_BOOTSTRAP,
        default=DEFAULT_BOOTSTRAP,
        help_text="Bootstrap resamples of the items for the 95% intervals; 0 leaves the intervals out.",
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**32 - 1, default=0, help_text="Bootstrap seed.")
    min_overlap = serializers.IntegerField(
        min_value=1,
        max_value=1_000_000,
        default=DEFAULT_MIN_OVERLAP,
        help_text="Shared response pairs a pair of annotators needs for a Cohen's kappa.",
    )
    contested_threshold = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        required=False,
        help_text="Majority share below which a response pair is contested (default: the project's agreement_threshold).",
    )
    contested_limit = serializers.IntegerField(
        min_value=0, max_value=1000, default=DEFAULT_CONTESTED_LIMIT, help_text="Contested response pairs listed."
    )
    low_agreement_below = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        default=DEFAULT_LOW_AGREEMENT_BELOW,
        help_text="Flag low_agreement below this leave-one-out agreement.",
    )
    position_bias_p = serializers.FloatField(
        min_value=1e-300,
        max_value=1.0,
        default=DEFAULT_POSITION_BIAS_P,
        help_text="Flag position_bias below this binomial p-value.",
    )
    too_fast_ms = serializers.FloatField(
        min_value=0.0,
        max_value=86_400_000.0,
        default=DEFAULT_TOO_FAST_MS,
        help_text="Flag too_fast below this median time per judgement (ms).",
    )


_EXAMPLE = {
    "report_version": 1,
    "generated_at": "2026-01-01T12:00:00+00:00",
    "project": {"id": 7, "name": "PandaLM", "kind": "pairwise", "allow_ties": True, "temporary": False},
    "parameters": {"bootstrap": 1000, "seed": 0, "confidence_level": 0.95, "min_overlap": 10, "...": "..."},
    "counts": {"tasks": 999, "items": 999, "judgements": 2997, "annotators": 3, "...": "..."},
    "pairwise": {
        "percent_agreement": {
            "value": 0.9199,
            "reason": None,
            "ci": {"low": 0.9059, "high": 0.9333, "valid_resamples": 1000},
            "ci_reason": None,
            "agreeing_pairs": 2757,
            "pairs": 2997,
        },
        "cohen_kappa": {
            "min_overlap": 10,
            "pairs": [
                {"annotators": ["a1", "a2"], "kappa": 0.8531, "shared_units": 999, "reason": None},
            ],
            "pairs_below_min_overlap": 0,
            "summary": {"n": 3, "mean": 0.8642, "min": 0.8531, "max": 0.8792},
        },
        "...": "...",
    },
    "ranking": None,
    "verdicts": {"allow_both_bad": False, "both_bad": {"judgements": 0, "share": 0.0, "reason": None}},
    "annotators": [
        {
            "id": 12,
            "username": "a1",
            "judgements": 999,
            "loo_agreement": {"value": 0.959, "n": 931, "reason": None},
            "position_bias": {
                "first_shown_share": None,
                "n": 0,
                "p_value": None,
                "reason": "display order unknown (imported judgements were never displayed)",
            },
            "both_bad": {"n": 0, "share": 0.0},
            "flags": [],
            "...": "...",
        }
    ],
    "contested": {"threshold": 0.5, "units_with_overlap": 999, "total": 0, "limit": 20, "items": []},
}


class AgreementReportView(ProjectScopedMixin, APIView):
    """The project's agreement report (managers only): the JSON of ``manage.py agreement_report --json``."""

    permission_classes = [IsAuthenticated, IsProjectManager]

    @extend_schema(
        parameters=[AgreementReportQuerySerializer],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description=(
                    "The agreement report: counts; pairwise percent agreement with and without ties, Fleiss' "
                    "kappa, Krippendorff's alpha (nominal, ordinal) with bootstrap intervals over items, Cohen's "
                    "kappa per annotator pair; Kendall's W and tau-b for ranking projects (null for pairwise); "
                    "the annotator table with flags (low_agreement, position_bias, too_fast); the most contested "
                    "response pairs. Undefined values are null, with a reason. Strict JSON: no NaN."
                ),
                examples=[OpenApiExample("Abbreviated", value=_EXAMPLE, response_only=True)],
            ),
            400: OpenApiResponse(description="A query parameter is out of range; the body names it."),
            403: OpenApiResponse(description="Not a manager of this project."),
            404: OpenApiResponse(description="No such project, or you are not a member."),
        },
    )
    def get(self, request: Request, project_id: int) -> Response:
        incoming = AgreementReportQuerySerializer(data=request.query_params)
        incoming.is_valid(raise_exception=True)
        options: dict[str, Any] = dict(incoming.validated_data)
        return Response(agreement_report(project=self.project, **options))


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
