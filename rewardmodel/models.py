"""The reward-model registry: training runs, the versions they produce, retrain rules.

A :class:`RewardModelRun` is a job of the shared lifecycle (``jobs``): the row, not the
broker, says what is left to do. A worker claims it, writes its progress, heartbeat,
metrics and log tail as it trains, and a run whose heartbeat stops is reaped and started
again (resuming from its last checkpoint) a bounded number of times.

A :class:`RewardModelVersion` is what a succeeded run leaves behind: a directory under
``ARTIFACT_ROOT`` with its lineage (export snapshot, base model, parent version) and its
validation metrics. Exactly one version per run, numbered per project, and at most one
active version per project: both are database constraints.
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from annotation.models import Project
from exports.models import ExportSnapshot
from jobs.models import Job, JobState, JobTrigger

# The lifecycle's own enums, under the names this app's code and tests grew up with.
RunState = JobState
RunTrigger = JobTrigger


class RewardModelRun(Job):
    """One training run: a job of the shared lifecycle (``jobs``), on the ``gpu`` queue."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_model_runs")
    # RESTRICT, not PROTECT: a snapshot that trained a model is its lineage and cannot be
    # deleted alone (that would orphan the version), but deleting the whole project takes
    # the snapshot, its runs and their versions together (the project cascades to each).
    snapshot = models.ForeignKey(ExportSnapshot, on_delete=models.RESTRICT, related_name="reward_model_runs")
    # rewardmodel.train.TrainConfig.to_dict() minus the three paths the platform sets
    # (base_model, data_dir, output_dir): every field, defaults filled in.
    config = models.JSONField(default=dict)
    base_model = models.CharField(max_length=1024, help_text="Path of the Hugging Face checkpoint trained from.")
    parent_version = models.ForeignKey(
        "RewardModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_runs"
    )
    # Final metrics of the model (validation), also copied onto the version.
    metrics = models.JSONField(default=dict, blank=True)
    # What training reported at start (parameter counts, truncation, device, ...).
    info = models.JSONField(default=dict, blank=True)
    # Relative to ARTIFACT_ROOT: rewardmodels/project-<p>/run-<r>; checkpoints/ and model/ inside.
    output_dir = models.CharField(max_length=512, blank=True)
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)

    class Meta(Job.Meta):
        indexes = [*Job.Meta.indexes, models.Index(fields=["project", "-id"], name="rmrun_by_project")]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(condition=~Q(base_model=""), name="rmrun_base_model_nonempty"),
        ]

    def __str__(self) -> str:
        return f"reward-model run {self.pk} of {self.project_id} ({self.state})"


class RewardModelVersionQuerySet(models.QuerySet["RewardModelVersion"]):
    def active(self) -> RewardModelVersionQuerySet:
        return self.filter(is_active=True)


class RewardModelVersion(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_model_versions")
    number = models.PositiveIntegerField(help_text="1, 2, ... per project.")
    # RESTRICT like the run's snapshot: lineage within a project, never a block on deleting it.
    run = models.OneToOneField(RewardModelRun, on_delete=models.RESTRICT, related_name="version")
    snapshot = models.ForeignKey(ExportSnapshot, on_delete=models.RESTRICT, related_name="reward_model_versions")
    base_model = models.CharField(max_length=1024)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    # Relative to ARTIFACT_ROOT; holds safetensors, tokenizer, metrics.json and README.md.
    model_dir = models.CharField(max_length=1024)
    metrics = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    objects = RewardModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="rmversion_number_unique"),
            models.UniqueConstraint(fields=["project"], condition=Q(is_active=True), name="rmversion_one_active"),
            models.CheckConstraint(condition=Q(number__gte=1), name="rmversion_number_min"),
            models.CheckConstraint(condition=~Q(model_dir=""), name="rmversion_model_dir_nonempty"),
            models.CheckConstraint(condition=~Q(parent=F("id")), name="rmversion_not_own_parent"),
        ]

    def __str__(self) -> str:
        return f"reward model v{self.number} of {self.project_id}"

    @property
    def label(self) -> str:
        return f"v{self.number}"


class RetrainRule(models.Model):
    """Retrain when ``min_new_pairs`` more pairs survive the majority filter than at the active version.

    Checked by a periodic task. The count uses the active version's export parameters,
    so the comparison is like for like; without an active version the baseline is 0.
    The rule starts an export job; a later check starts the run once the export succeeded.
    """

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="retrain_rule")
    enabled = models.BooleanField(default=True)
    min_new_pairs = models.PositiveIntegerField(default=1000)
    # A registered base model's name (rewardmodel.bases). Blank: the registered base the
    # active version was trained from (the platform default when no version is active).
    base_model = models.CharField(max_length=1024, blank=True)
    config = models.JSONField(default=dict, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=500, blank=True)
    last_run = models.ForeignKey(RewardModelRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The export job the rule started and whose success starts the run (at a later check).
    pending_snapshot = models.ForeignKey(
        ExportSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(min_new_pairs__gte=1), name="retrainrule_min_pairs")]

    def __str__(self) -> str:
        return f"retrain rule of {self.project_id}: {self.min_new_pairs} new pairs"
