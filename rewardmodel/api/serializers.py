"""Serializers of the reward-model API: explicit fields only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from arpad.api.serializers import MessagesField
from jobs.api.serializers import JOB_FIELDS, JobSerializer
from rewardmodel import conf
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rewardmodel.services import base_model_name_of

# Names, never directories: the stored paths are the server's (administrators see them in the admin).
_BASE_MODEL_NAME = serializers.CharField(
    allow_null=True,
    help_text="The registered base model it was trained from, through its parent versions; null when the "
    "checkpoint is not registered (any more).",
)


class RunSerializer(JobSerializer, serializers.ModelSerializer):
    """A run as listed: the job shape of every kind (``jobs.api``) and its lineage, without its history."""

    snapshot = serializers.IntegerField(source="snapshot_id", read_only=True)
    parent_version = serializers.SerializerMethodField()
    version = serializers.SerializerMethodField()
    base_model_name = serializers.SerializerMethodField()
    config = serializers.DictField(read_only=True)
    metrics = serializers.DictField(read_only=True)

    class Meta:
        model = RewardModelRun
        fields = [
            *JOB_FIELDS,
            "snapshot",
            "base_model_name",
            "parent_version",
            "version",
            "config",
            "metrics",
            "checkpoint_step",
            "resumed_from_step",
        ]
        read_only_fields = fields

    @extend_schema_field(_BASE_MODEL_NAME)
    def get_base_model_name(self, run: RewardModelRun) -> str | None:
        return base_model_name_of(run)

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Number of the parent version."))
    def get_parent_version(self, run: RewardModelRun) -> int | None:
        return run.parent_version.number if run.parent_version_id else None

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Number of the version it produced."))
    def get_version(self, run: RewardModelRun) -> int | None:
        version = getattr(run, "version", None)
        return version.number if version is not None else None


class RunDetailSerializer(RunSerializer):
    metrics_history = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text='Points {"kind": "step"|"eval", "step": n, ...metrics}; older step points thinned.',
    )
    info = serializers.DictField(read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "info", "metrics_history"]
        read_only_fields = fields


class RunCreateSerializer(serializers.Serializer):
    snapshot = serializers.IntegerField(
        required=False, allow_null=True, help_text="Export snapshot id; default: the project's latest succeeded one."
    )
    base_model = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=1024,
        help_text="Name of a registered base model (GET .../reward-models/bases/ lists them); default: the "
        "parent version's model, else the platform's default base. Paths are not accepted.",
    )
    parent_version = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Version number this run continues from."
    )
    config = serializers.DictField(required=False, help_text="Training options (rewardmodel.train.TrainConfig).")


class BaseModelSerializer(serializers.Serializer):
    name = serializers.CharField()
    default = serializers.BooleanField(help_text="The base a run without base_model and parent_version gets.")


class VersionSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(source="run_id", read_only=True)
    snapshot = serializers.IntegerField(source="snapshot_id", read_only=True)
    base_model_name = serializers.SerializerMethodField()
    parent = serializers.SerializerMethodField()
    metrics = serializers.DictField(read_only=True)

    class Meta:
        model = RewardModelVersion
        fields = [
            "number",
            "is_active",
            "run",
            "snapshot",
            "base_model_name",
            "parent",
            "metrics",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(_BASE_MODEL_NAME)
    def get_base_model_name(self, version: RewardModelVersion) -> str | None:
        return base_model_name_of(version)

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_parent(self, version: RewardModelVersion) -> int | None:
        return version.parent.number if version.parent_id else None


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                    "required": ["role", "content"],
                },
            },
        ]
    }
)
class PromptField(MessagesField):
    """A prompt: plain text (one user turn) or a conversation ``[{role, content}, ...]``."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        return super().to_internal_value(data)


class ScoreItemSerializer(serializers.Serializer):
    prompt = PromptField(max_messages=conf.score_max_messages)
    response = serializers.CharField(allow_blank=True, trim_whitespace=False)


class ScoreRequestSerializer(serializers.Serializer):
    items = ScoreItemSerializer(many=True, allow_empty=False)


class ScoreResponseSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    rewards = serializers.ListField(child=serializers.FloatField(), help_text="One per item, in order.")


class CompareSideSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    accuracy = serializers.FloatField()
    mean_margin = serializers.FloatField()
    reward_mean = serializers.FloatField()
    reward_std = serializers.FloatField()


class CompareSerializer(serializers.Serializer):
    snapshot = serializers.IntegerField(help_text="The export whose validation pairs were scored.")
    pairs = serializers.IntegerField(help_text="Pairs scored.")
    pairs_available = serializers.IntegerField(help_text="Validation pairs in the export (scored: the first ones).")
    responses = serializers.IntegerField(help_text="Distinct responses scored per version.")
    a = CompareSideSerializer()
    b = CompareSideSerializer()
    agreement = serializers.FloatField(help_text="Share of pairs both versions order the same way.")
    pearson = serializers.FloatField(allow_null=True, help_text="Correlation of the two versions' rewards.")
    spearman = serializers.FloatField(allow_null=True)
