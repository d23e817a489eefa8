"""The reward-model registry: training runs, the versions they produce, retrain rules.

A :class:`RewardModelRun` is a job row in the sense of DESIGN.md "Jobs (Celery)": the row,
not the broker, says what is left to do. A worker claims it, writes its progress, heartbeat,
metrics and log tail as it trains, and a run whose heartbeat stops is reaped and started
again (resuming from its last checkpoint) a bounded number of times.

A :class:`RewardModelVersion` is what a succeeded run leaves behind: a directory under
``ARTIFACT_ROOT`` with its lineage (export snapshot, base model, parent version) and its
validation metrics. Exactly one version per run, numbered per project, and at most one
active version per project: both are database constraints.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from annotation.models import Project
from exports.models import ExportSnapshot


class RunState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class RunTrigger(models.TextChoices):
    UI = "ui", "Web UI"
    API = "api", "REST API"
    CLI = "cli", "Command line"
    RULE = "rule", "Retrain rule"


class RewardModelRun(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_model_runs")
    # PROTECT: a snapshot that trained a model is its lineage; deleting it would orphan the version.
    snapshot = models.ForeignKey(ExportSnapshot, on_delete=models.PROTECT, related_name="reward_model_runs")
    # rewardmodel.train.TrainConfig.to_dict() minus the three paths the platform sets
    # (base_model, data_dir, output_dir): every field, defaults filled in.
    config = models.JSONField(default=dict)
    base_model = models.CharField(max_length=1024, help_text="Path of the Hugging Face checkpoint trained from.")
    parent_version = models.ForeignKey(
        "RewardModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_runs"
    )
    trigger = models.CharField(max_length=8, choices=RunTrigger.choices, default=RunTrigger.API)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.QUEUED)
    progress = models.FloatField(default=0.0)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # hostname:pid of the worker holding the run; only that worker's writes land.
    worker_id = models.CharField(max_length=255, blank=True)
    # [{"kind": "step"|"eval", "step": int, ...metrics}], thinned to a bounded length.
    metrics_history = models.JSONField(default=list, blank=True)
    # Final metrics of the model (validation), also copied onto the version.
    metrics = models.JSONField(default=dict, blank=True)
    # What training reported at start (parameter counts, truncation, device, ...).
    info = models.JSONField(default=dict, blank=True)
    log_tail = models.JSONField(default=list, blank=True)
    # Relative to ARTIFACT_ROOT: rewardmodels/project-<p>/run-<r>; checkpoints/ and model/ inside.
    output_dir = models.CharField(max_length=512, blank=True)
    checkpoint_path = models.CharField(max_length=1024, blank=True)
    checkpoint_step = models.PositiveIntegerField(null=True, blank=True)
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["project", "-id"], name="rmrun_by_project"),
            # The reaper's scan: running rows by heartbeat.
            models.Index(fields=["heartbeat_at"], name="rmrun_running_heartbeat", condition=Q(state="running")),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=RunState.values), name="rmrun_state_valid"),
            models.CheckConstraint(condition=Q(trigger__in=RunTrigger.values), name="rmrun_trigger_valid"),
            models.CheckConstraint(condition=Q(progress__gte=0.0, progress__lte=1.0), name="rmrun_progress_range"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="rmrun_max_attempts_min"),
            models.CheckConstraint(condition=Q(attempts__lte=F("max_attempts")), name="rmrun_attempts_bounded"),
            models.CheckConstraint(
                condition=Q(total_steps__isnull=True) | Q(step__lte=F("total_steps")), name="rmrun_step_bounded"
            ),
            models.CheckConstraint(
                condition=~Q(state__in=[s.value for s in FINISHED_STATES]) | Q(finished_at__isnull=False),
                name="rmrun_finished_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(state=RunState.RUNNING) | (Q(heartbeat_at__isnull=False) & ~Q(worker_id="")),
                name="rmrun_running_has_worker",
            ),
            models.CheckConstraint(condition=~Q(state=RunState.FAILED) | ~Q(error=""), name="rmrun_failed_says_why"),
            models.CheckConstraint(
                condition=~Q(state=RunState.SUCCEEDED) | Q(progress=1.0), name="rmrun_succeeded_complete"
            ),
            models.CheckConstraint(condition=~Q(base_model=""), name="rmrun_base_model_nonempty"),
        ]

    def __str__(self) -> str:
        return f"reward-model run {self.pk} of {self.project_id} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    def heartbeat_age_seconds(self, now=None) -> float | None:  # noqa: ANN001
        if self.heartbeat_at is None:
            return None
        return ((now or timezone.now()) - self.heartbeat_at).total_seconds()


class RewardModelVersionQuerySet(models.QuerySet["RewardModelVersion"]):
    def active(self) -> RewardModelVersionQuerySet:
        return self.filter(is_active=True)


class RewardModelVersion(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_model_versions")
    number = models.PositiveIntegerField(help_text="1, 2, ... per project.")
    run = models.OneToOneField(RewardModelRun, on_delete=models.PROTECT, related_name="version")
    snapshot = models.ForeignKey(ExportSnapshot, on_delete=models.PROTECT, related_name="reward_model_versions")
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
    """

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="retrain_rule")
    enabled = models.BooleanField(default=True)
    min_new_pairs = models.PositiveIntegerField(default=1000)
    # Blank: train from the active version's base model (or the platform default).
    base_model = models.CharField(max_length=1024, blank=True)
    config = models.JSONField(default=dict, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=500, blank=True)
    last_run = models.ForeignKey(RewardModelRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(min_new_pairs__gte=1), name="retrainrule_min_pairs")]

    def __str__(self) -> str:
        return f"retrain rule of {self.project_id}: {self.min_new_pairs} new pairs"
