"""The one serializer shape of every job kind; each kind's API adds its own fields to it.

``JobSerializer`` is the lifecycle's part (state, progress, attempts, error, log, ...)
and the links to the job's generic endpoints. A kind's own ``ModelSerializer`` puts
``JOB_FIELDS`` in its ``Meta.fields`` and takes the declared fields by subclassing
``JobSerializer`` alongside, so every kind answers with the same lifecycle shape.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from arpad.api.serializers import NamedChoiceField
from jobs.models import JobState, JobTrigger

JOB_FIELDS = [
    "id",
    "kind",
    "state",
    "progress",
    "step",
    "total_steps",
    "attempts",
    "max_attempts",
    "heartbeat_at",
    "cancel_requested",
    "error",
    "errors",
    "log_tail",
    "trigger",
    "created_by",
    "cancelled_by",
    "created_at",
    "started_at",
    "finished_at",
    "links",
]


class JobErrorSerializer(serializers.Serializer):
    message = serializers.CharField()
    file = serializers.CharField(required=False, allow_null=True)
    line = serializers.IntegerField(required=False, allow_null=True)
    field = serializers.CharField(required=False, allow_null=True)


class JobLinksSerializer(serializers.Serializer):
    self = serializers.CharField(help_text="The job's generic endpoint.")
    cancel = serializers.CharField()


class JobSerializer(serializers.Serializer):
    """Read-only, declared field by field: it serves every kind's model."""

    id = serializers.IntegerField(read_only=True)
    kind = serializers.CharField(read_only=True, help_text="The job kind (jobs.registry).")
    state = NamedChoiceField(enum_name="JobStateEnum", choices=JobState.choices, read_only=True)
    progress = serializers.FloatField(read_only=True)
    step = serializers.IntegerField(read_only=True)
    total_steps = serializers.IntegerField(read_only=True, allow_null=True)
    attempts = serializers.IntegerField(read_only=True)
    max_attempts = serializers.IntegerField(read_only=True)
    heartbeat_at = serializers.DateTimeField(read_only=True, allow_null=True)
    cancel_requested = serializers.BooleanField(read_only=True)
    error = serializers.CharField(read_only=True)
    errors = JobErrorSerializer(many=True, read_only=True)
    log_tail = serializers.ListField(child=serializers.CharField(), read_only=True)
    trigger = NamedChoiceField(enum_name="JobTriggerEnum", choices=JobTrigger.choices, read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)
    cancelled_by = serializers.CharField(source="cancelled_by.username", read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)
    links = serializers.SerializerMethodField()

    @extend_schema_field(JobLinksSerializer)
    def get_links(self, job: Any) -> dict[str, str]:
        args = [job.project_id, job.kind, job.pk]
        return {"self": reverse("api-job", args=args), "cancel": reverse("api-job-cancel", args=args)}


class JobDetailSerializer(JobSerializer):
    """One job with its metric history (curves) and, for staff, where it runs."""

    metrics_history = serializers.ListField(child=serializers.DictField(), read_only=True)
    checkpoint_step = serializers.IntegerField(read_only=True, allow_null=True)
    worker = serializers.SerializerMethodField()

    def get_worker(self, job: Any) -> str | None:
        request = self.context.get("request")
        return job.worker if request is not None and request.user.is_staff else None
