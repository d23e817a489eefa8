"""Export snapshots: an immutable, content-hashed copy of a project's filtered preferences.

The row is the job (state, progress, errors, attempts, like an ImportJob) and the record
of what came out: the parameters it ran with, the state of the project it read (how many
judgements, the highest judgement id), the counts, and the content hash that names its
directory ``ARTIFACT_ROOT/exports/<hash>/``. Equal project state and parameters give the
same bytes and the same hash, so two such snapshots share one directory.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotation.models import Project


class ExportState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = (ExportState.SUCCEEDED, ExportState.FAILED, ExportState.CANCELLED)
"""States that never change again."""


class ExportSnapshot(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="export_snapshots")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # The canonical parameters (exports.params.ExportParams.to_dict()): every field, defaults filled in.
    params = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=ExportState.choices, default=ExportState.QUEUED)
    progress = models.FloatField(default=0.0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    errors = models.JSONField(default=list, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Names the current run: a run writes progress and its result only while the token is
    # still its own, so a run that was reaped (or cancelled) and started again by another
    # delivery can never finish the snapshot a second time.
    run_token = models.CharField(max_length=32, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    counts = models.JSONField(default=dict, blank=True)
    # sha256 over the manifest's hashed part (parameters, source state, counts, file hashes).
    content_hash = models.CharField(max_length=64, blank=True)
    # Relative to ARTIFACT_ROOT: exports/<content_hash>.
    path = models.CharField(max_length=255, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    source_judgements = models.PositiveIntegerField(null=True, blank=True)
    source_max_judgement_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "-id"], name="exportsnapshot_by_project")]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=ExportState.values), name="exportsnapshot_state_valid"),
            models.CheckConstraint(condition=Q(progress__gte=0.0, progress__lte=1.0), name="exportsnapshot_progress"),
            models.CheckConstraint(
                condition=~Q(state=ExportState.SUCCEEDED) | (~Q(content_hash="") & ~Q(path="")),
                name="exportsnapshot_succeeded_has_content",
            ),
        ]

    def __str__(self) -> str:
        return f"export {self.pk} of {self.project_id} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def file_names(self) -> list[str]:
        """Every downloadable file of a finished snapshot, manifest.json first."""
        if self.state != ExportState.SUCCEEDED:
            return []
        return ["manifest.json", *sorted(self.manifest.get("files", {}))]
