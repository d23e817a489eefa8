"""Export snapshots: an immutable, content-hashed copy of a project's filtered preferences.

The row is a job of the shared lifecycle (``jobs``) and the record
of what came out: the parameters it ran with, the state of the project it read (how many
judgements, the highest judgement id), the counts, and the content hash that names its
directory ``ARTIFACT_ROOT/exports/<hash>/``. Equal project state and parameters give the
same bytes and the same hash, so two such snapshots share one directory.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from annotation.models import Project
from jobs.models import Job, JobState

# The lifecycle's own enum, under the name this app's code and tests grew up with.
ExportState = JobState


class ExportSnapshot(Job):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="export_snapshots")
    # The canonical parameters (exports.params.ExportParams.to_dict()): every field, defaults filled in.
    params = models.JSONField(default=dict)
    counts = models.JSONField(default=dict, blank=True)
    # sha256 over the manifest's hashed part (parameters, source state, counts, file hashes).
    content_hash = models.CharField(max_length=64, blank=True)
    # Relative to ARTIFACT_ROOT: exports/<content_hash>.
    path = models.CharField(max_length=255, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    source_judgements = models.PositiveIntegerField(null=True, blank=True)
    source_max_judgement_id = models.BigIntegerField(null=True, blank=True)

    class Meta(Job.Meta):
        indexes = [*Job.Meta.indexes, models.Index(fields=["project", "-id"], name="exportsnapshot_by_project")]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(
                condition=~Q(state=JobState.SUCCEEDED) | (~Q(content_hash="") & ~Q(path="")),
                name="exportsnapshot_succeeded_has_content",
            ),
        ]

    def __str__(self) -> str:
        return f"export {self.pk} of {self.project_id} ({self.state})"

    @property
    def file_names(self) -> list[str]:
        """Every downloadable file of a finished snapshot, manifest.json first."""
        if self.state != JobState.SUCCEEDED:
            return []
        return ["manifest.json", *sorted(self.manifest.get("files", {}))]
