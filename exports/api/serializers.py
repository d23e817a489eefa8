"""Serializers of the export API: explicit fields only, so that no model field leaks by accident."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.aggregate import TIE_POLICIES, WEIGHTINGS
from annotation.project_preview import MAX_PREVIEW_CURVES
from exports.models import ExportSnapshot
from exports.params import BOUNDS, PAIR_WEIGHTS, SPLIT_SEED_MAX_CHARS
from jobs.api.serializers import JOB_FIELDS, JobSerializer


class ExportCreateSerializer(serializers.Serializer):
    """Parameters of a new snapshot; every one is optional (see exports.params.ExportParams)."""

    threshold = serializers.FloatField(
        required=False,
        min_value=BOUNDS["threshold"][0],
        max_value=BOUNDS["threshold"][1],
        help_text="Vote share a pair's winner needs (default: the project's).",
    )
    min_votes = serializers.IntegerField(
        required=False, min_value=BOUNDS["min_votes"][0], max_value=BOUNDS["min_votes"][1]
    )
    tie_policy = serializers.ChoiceField(choices=TIE_POLICIES, required=False)
    weighting = serializers.ChoiceField(choices=WEIGHTINGS, required=False)
    min_reliability = serializers.FloatField(
        required=False, min_value=BOUNDS["min_reliability"][0], max_value=BOUNDS["min_reliability"][1]
    )
    exclude_annotators = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, max_length=1000, help_text="Usernames."
    )
    validation_fraction = serializers.FloatField(
        required=False, min_value=BOUNDS["validation_fraction"][0], max_value=BOUNDS["validation_fraction"][1]
    )
    split_seed = serializers.CharField(required=False, max_length=SPLIT_SEED_MAX_CHARS, allow_blank=True)
    batch_pairs = serializers.IntegerField(
        required=False, min_value=BOUNDS["batch_pairs"][0], max_value=BOUNDS["batch_pairs"][1]
    )
    pair_weight = serializers.ChoiceField(choices=PAIR_WEIGHTS, required=False)


class ExportFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    url = serializers.CharField()
    bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField(allow_null=True)
    rows = serializers.IntegerField(allow_null=True)


class ExportSnapshotSerializer(JobSerializer, serializers.ModelSerializer):
    """A snapshot: the job shape of every kind (``jobs.api``), its parameters, counts and files."""

    params = serializers.DictField(read_only=True)
    counts = serializers.DictField(read_only=True)
    files = serializers.SerializerMethodField()

    class Meta:
        model = ExportSnapshot
        fields = [
            *JOB_FIELDS,
            "params",
            "counts",
            "content_hash",
            "source_judgements",
            "source_max_judgement_id",
            "files",
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


class PreviewQuerySerializer(serializers.Serializer):
    threshold = serializers.FloatField(
        required=False,
        min_value=BOUNDS["threshold"][0],
        max_value=BOUNDS["threshold"][1],
        help_text="A threshold to add to the grid (0.5 .. 1 by 0.025), so that its count is exact.",
    )
    tie_policy = serializers.ChoiceField(choices=TIE_POLICIES, required=False)
    weighting = serializers.ChoiceField(choices=WEIGHTINGS, required=False)
    min_reliability = serializers.FloatField(
        required=False, min_value=BOUNDS["min_reliability"][0], max_value=BOUNDS["min_reliability"][1]
    )
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
