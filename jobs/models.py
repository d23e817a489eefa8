"""The one run lifecycle every long job shares: an abstract row, its states and its invariants.

A job kind is a concrete subclass of :class:`Job` (an import, an export snapshot, a
reward-model run, ...) plus a function and a registry line (``jobs.registry``). The row,
not the broker, is the source of truth: ``jobs.lifecycle`` claims it, writes its progress
and heartbeat while it runs, and finishes it exactly once.

The invariants live in check constraints, named per concrete table:

* a running row has a heartbeat, a worker and an owner token (only the owner's writes land);
* a finished row has a finish time; a failed one says why; a succeeded one is complete;
* attempts never exceed their bound, and the step never its total.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
"""States that never change again."""


class JobTrigger(models.TextChoices):
    UI = "ui", "Web UI"
    API = "api", "REST API"
    CLI = "cli", "Command line"
    RULE = "rule", "Rule"


def _finished() -> list[str]:
    return [state.value for state in FINISHED_STATES]


class Job(models.Model):
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    progress = models.FloatField(default=0.0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # Names the current attempt. Every write of a running job is conditional on it, so a
    # worker whose job was reaped and handed to another one can never write again.
    owner_token = models.CharField(max_length=32, blank=True)
    # hostname:pid of the worker holding the job, for people; ownership is the token.
    worker = models.CharField(max_length=255, blank=True)
    cancel_requested = models.BooleanField(default=False)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # One line for people; ``errors`` holds the details ({file, line, field, message}),
    # at least one entry when the job failed; ``traceback`` the end of a crash's traceback.
    error = models.TextField(blank=True)
    errors = models.JSONField(default=list, blank=True)
    traceback = models.TextField(blank=True)
    log_tail = models.JSONField(default=list, blank=True)
    # [{"kind": "step"|"eval"|..., "step": int, ...metrics}], thinned to a bounded length.
    metrics_history = models.JSONField(default=list, blank=True)
    # The last checkpoint a retried attempt resumes from (kinds that checkpoint).
    checkpoint_path = models.CharField(max_length=1024, blank=True)
    checkpoint_step = models.PositiveIntegerField(null=True, blank=True)
    trigger = models.CharField(max_length=8, choices=JobTrigger.choices, default=JobTrigger.API)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-id"]
        indexes = [
            # The reaper's scan: running rows by heartbeat.
            models.Index(
                fields=["heartbeat_at"], name="%(app_label)s_%(class)s_hb", condition=Q(state=JobState.RUNNING)
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="%(app_label)s_%(class)s_state"),
            models.CheckConstraint(condition=Q(trigger__in=JobTrigger.values), name="%(app_label)s_%(class)s_trigger"),
            models.CheckConstraint(
                condition=Q(progress__gte=0.0, progress__lte=1.0), name="%(app_label)s_%(class)s_progress"
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="%(app_label)s_%(class)s_max_attempts"),
            models.CheckConstraint(
                condition=Q(attempts__lte=F("max_attempts")), name="%(app_label)s_%(class)s_attempts"
            ),
            models.CheckConstraint(
                condition=Q(total_steps__isnull=True) | Q(step__lte=F("total_steps")),
                name="%(app_label)s_%(class)s_step",
            ),
            models.CheckConstraint(
                condition=~Q(state__in=_finished()) | Q(finished_at__isnull=False),
                name="%(app_label)s_%(class)s_finished_at",
            ),
            models.CheckConstraint(
                condition=~Q(state=JobState.RUNNING)
                | (Q(heartbeat_at__isnull=False) & ~Q(worker="") & ~Q(owner_token="")),
                name="%(app_label)s_%(class)s_running_owned",
            ),
            models.CheckConstraint(
                condition=~Q(state=JobState.FAILED) | ~Q(error=""), name="%(app_label)s_%(class)s_failed_why"
            ),
            models.CheckConstraint(
                condition=~Q(state=JobState.SUCCEEDED) | Q(progress=1.0), name="%(app_label)s_%(class)s_complete"
            ),
        ]

    # Set by ``jobs.registry.job_kind`` on the concrete class.
    job_kind_label: str = ""

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def kind(self) -> str:
        return type(self).job_kind_label

    @property
    def kind_title(self) -> str:
        """The kind in words ("export snapshot", "reward-model run"), for people."""
        from jobs.registry import kind_of

        return kind_of(self).title

    def heartbeat_age_seconds(self, now: datetime | None = None) -> float | None:
        if self.heartbeat_at is None:
            return None
        return ((now or timezone.now()) - self.heartbeat_at).total_seconds()
