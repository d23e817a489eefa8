"""The one serializer shape of every job kind; each kind's API adds its own fields to it.

``JobSerializer`` is the lifecycle's part (state, progress, attempts, error, log, ...)
and the links to the job's generic endpoints; a kind's serializer subclasses it and
extends ``Meta.fields`` with ``JOB_FIELDS``.
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


class JobSerializer(serializers.ModelSerializer):
    kind = serializers.CharField(read_only=True, help_text="The job kind (jobs.registry).")
    state = NamedChoiceField(enum_name="JobStateEnum", choices=JobState.choices, read_only=True)
    trigger = NamedChoiceField(enum_name="JobTriggerEnum", choices=JobTrigger.choices, read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)
    errors = JobErrorSerializer(many=True, read_only=True)
    log_tail = serializers.ListField(child=serializers.CharField(), read_only=True)
    links = serializers.SerializerMethodField()

    class Meta:
        fields = JOB_FIELDS
        read_only_fields = JOB_FIELDS

    @extend_schema_field(JobLinksSerializer)
    def get_links(self, job: Any) -> dict[str, str]:
        args = [job.project_id, job.kind, job.pk]
        return {"self": reverse("api-job", args=args), "cancel": reverse("api-job-cancel", args=args)}


class JobDetailSerializer(JobSerializer):
    """One job with its metric history (curves) and, for staff, where it runs."""

    metrics_history = serializers.ListField(child=serializers.DictField(), read_only=True)
    worker = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JOB_FIELDS, "metrics_history", "worker"]
        read_only_fields = fields

    def get_worker(self, job: Any) -> str | None:
        request = self.context.get("request")
        return job.worker if request is not None and request.user.is_staff else None


def job_serializer_for(model: type, base: type[JobSerializer] = JobSerializer) -> type[JobSerializer]:
    """The generic serializer bound to one kind's model (the generic endpoints use it)."""
    meta = type("Meta", (base.Meta,), {"model": model})
    return type(f"{model.__name__}{base.__name__}", (base,), {"Meta": meta})
