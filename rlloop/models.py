"""The policy registry and its training rounds.

A :class:`PolicyVersion` is a causal-LM checkpoint a project samples from and trains: a
registered checkpoint directory (``rlloop.bases``, chosen by name like a reward-model base),
or what a succeeded round left under ``ARTIFACT_ROOT``. It carries its lineage (parent, the
round that produced it, the reward model and the reference it was trained against), its
generation defaults and whether it is the project's **reference**: the SFT model later
rounds are leashed to by their KL penalty (at most one per project).

A :class:`PolicyRound` is a job of the shared lifecycle (``jobs``) on the ``gpu`` queue:
one training round of a ``method``. ``ppo`` (``rlloop.ppo``) and ``sft`` (``rlloop.sft``)
today; DPO, GRPO or best-of-N rounds are further methods of the same row and job kind,
with their own trainer module and options, and the same lineage, progress and result.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from annotation.models import Project
from exports.models import ExportSnapshot
from jobs.models import Job
from rewardmodel.models import RewardModelVersion


class RoundMethod(models.TextChoices):
    PPO = "ppo", "PPO"
    SFT = "sft", "SFT"


class PolicyRound(Job):
    """One training round of a policy: a job of the shared lifecycle, on the ``gpu`` queue."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="policy_rounds")
    method = models.CharField(max_length=16, choices=RoundMethod.choices)
    number = models.PositiveIntegerField(help_text="1, 2, ... per project: the RL round of its samples.")
    # RESTRICT: a round is lineage; deleting the project removes all of it together.
    policy = models.ForeignKey("PolicyVersion", on_delete=models.RESTRICT, related_name="child_rounds")
    reference = models.ForeignKey(
        "PolicyVersion", null=True, blank=True, on_delete=models.RESTRICT, related_name="leashed_rounds"
    )
    reward_model = models.ForeignKey(
        RewardModelVersion, null=True, blank=True, on_delete=models.RESTRICT, related_name="policy_rounds"
    )
    snapshot = models.ForeignKey(
        ExportSnapshot, null=True, blank=True, on_delete=models.RESTRICT, related_name="policy_rounds"
    )
    # Where the prompts (PPO) or demonstrations (SFT) come from; see rlloop.services.rounds.
    data = models.JSONField(default=dict, blank=True)
    # The trainer's options, defaults filled in, minus the paths the platform sets.
    config = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)
    info = models.JSONField(default=dict, blank=True)
    # The newest tables of sample generations: [{"step": n, "rows": [{prompt, response, score, kl}]}].
    samples = models.JSONField(default=list, blank=True)
    # Relative to ARTIFACT_ROOT: policies/project-<p>/round-<r>; checkpoints/ and model/ inside.
    output_dir = models.CharField(max_length=512, blank=True)
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)

    class Meta(Job.Meta):
        indexes = [*Job.Meta.indexes, models.Index(fields=["project", "-id"], name="policyround_by_project")]
        constraints = [
            *Job.Meta.constraints,
            models.UniqueConstraint(fields=["project", "number"], name="policyround_number_unique"),
            models.CheckConstraint(condition=Q(method__in=RoundMethod.values), name="policyround_method_known"),
            models.CheckConstraint(
                condition=~Q(method="ppo") | Q(reward_model__isnull=False), name="policyround_ppo_has_reward_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_method_display()} round {self.number} of {self.project_id} ({self.state})"


class PolicyVersion(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="policy_versions")
    number = models.PositiveIntegerField(help_text="1, 2, ... per project.")
    name = models.CharField(max_length=100, blank=True, help_text="The registered checkpoint's name, if any.")
    # The checkpoint's directory: absolute for a registered checkpoint, relative to
    # ARTIFACT_ROOT for a round's result.
    model_dir = models.CharField(max_length=1024)
    base_model = models.CharField(max_length=1024, help_text="Directory of the registered checkpoint at its root.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    round = models.OneToOneField(PolicyRound, null=True, blank=True, on_delete=models.RESTRICT, related_name="result")
    reward_model = models.ForeignKey(
        RewardModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reference = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    is_reference = models.BooleanField(default=False)
    # {"temperature", "top_p", "max_new_tokens", "stop"}: what sampling uses unless told otherwise.
    generation = models.JSONField(default=dict, blank=True)
    chat_template = models.CharField(
        max_length=32, default="checkpoint", help_text='"checkpoint" (its own chat template) or "plain" (HH format).'
    )
    metrics = models.JSONField(default=dict, blank=True)
    notes = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="policyversion_number_unique"),
            models.UniqueConstraint(
                fields=["project"], condition=Q(is_reference=True), name="policyversion_one_reference"
            ),
            models.CheckConstraint(condition=Q(number__gte=1), name="policyversion_number_min"),
            models.CheckConstraint(condition=~Q(model_dir=""), name="policyversion_model_dir_nonempty"),
            models.CheckConstraint(condition=~Q(parent=F("id")), name="policyversion_not_own_parent"),
        ]

    def __str__(self) -> str:
        return f"policy {self.label} of {self.project_id}"

    @property
    def label(self) -> str:
        return f"p{self.number}"

    @property
    def display_name(self) -> str:
        """What users see: the number and the registered name or the round it came from; never a path."""
        if self.name:
            return f"{self.label} ({self.name})"
        if self.round_id:
            return f"{self.label} (round {self.round.number}, {self.round.method})"
        return self.label


class SamplingMode(models.TextChoices):
    POOL = "pool", "K responses per prompt from the policies, in turn"
    HEAD_TO_HEAD = "head_to_head", "One response per policy"


class SamplingJob(Job):
    """Fresh on-policy responses turned into tasks: a job of the shared lifecycle, on the ``gpu`` queue.

    For each prompt it samples from ``policies`` (and one response from ``anchor``, when
    set), drops identical texts, scores each response with ``reward_model`` and creates one
    task in ``target`` with ``priority``. Tasks go into the queue batch by batch, so
    annotators see them arrive while the job runs; a retried attempt skips the prompts whose
    task is already there. Every response carries its lineage in ``Response.metadata``.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sampling_jobs")
    target = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    policies = models.ManyToManyField("PolicyVersion", related_name="sampling_jobs")
    anchor = models.ForeignKey("PolicyVersion", null=True, blank=True, on_delete=models.RESTRICT, related_name="+")
    reward_model = models.ForeignKey(
        RewardModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    mode = models.CharField(max_length=16, choices=SamplingMode.choices, default=SamplingMode.POOL)
    responses_per_prompt = models.PositiveSmallIntegerField(default=2)
    priority = models.IntegerField(default=10)
    # {"temperature", "top_p", "max_new_tokens", "stop", "seed"}
    sampling = models.JSONField(default=dict)
    # {"prompts": "unused" | "project" | "file", "max_prompts": n, "file_name": ...}
    data = models.JSONField(default=dict, blank=True)
    # {"prompts", "responses", "duplicates", "tasks", "skipped"}: filled in as it goes.
    summary = models.JSONField(default=dict, blank=True)
    # Relative to ARTIFACT_ROOT: sampling/project-<p>/job-<id>-<random>; prompts.jsonl inside.
    output_dir = models.CharField(max_length=512, blank=True)

    class Meta(Job.Meta):
        indexes = [*Job.Meta.indexes, models.Index(fields=["project", "-id"], name="samplingjob_by_project")]
        constraints = [
            *Job.Meta.constraints,
            models.CheckConstraint(condition=Q(mode__in=SamplingMode.values), name="samplingjob_mode_known"),
            models.CheckConstraint(
                condition=Q(responses_per_prompt__gte=2, responses_per_prompt__lte=9),
                name="samplingjob_k_range",
            ),
        ]

    def __str__(self) -> str:
        return f"sampling job {self.pk} of {self.project_id} ({self.state})"


class SimulatedAnnotator(models.Model):
    """Marks an account whose judgements a simulation wrote (``rlloop.simulate``), never a person.

    The account is active (it labels through the REST API with a token) but has no usable
    password, so nobody can log in as it. ``settings`` keeps how it chooses: the gold
    reward model or function, its temperature, position bias and share of random answers.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="simulated_annotator"
    )
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["user_id"]

    def __str__(self) -> str:
        return f"simulated annotator {self.user_id}"


class CycleStep(models.TextChoices):
    EXPORT = "export", "Export"
    REWARD_MODEL = "reward_model", "Reward model"
    POLICY_ROUND = "policy_round", "PPO round"
    SAMPLING = "sampling", "Sampling"
    DONE = "done", "Done"


class CycleState(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class LoopCycle(models.Model):
    """One turn of the loop: export → reward model → PPO round → sampling, each a job of the shared lifecycle.

    The cycle itself runs no code on a worker: ``rlloop.cycle`` starts each step's job when
    the one before it succeeded (told by the lifecycle the moment a job ends, and by a
    periodic check as a fallback), and stops with the reason where one did not.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="loop_cycles")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=CycleState.choices, default=CycleState.RUNNING)
    step = models.CharField(max_length=16, choices=CycleStep.choices, default=CycleStep.EXPORT)
    # The policy the round trains and the anchor its samples meet.
    policy = models.ForeignKey("PolicyVersion", on_delete=models.RESTRICT, related_name="+")
    snapshot = models.ForeignKey(ExportSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reward_model_run = models.ForeignKey(
        "rewardmodel.RewardModelRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    policy_round = models.ForeignKey(PolicyRound, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    sampling_job = models.ForeignKey(SamplingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # {"export": {...}, "reward_model": {...}, "ppo": {...}, "sampling": {...}}: see rlloop.cycle.
    options = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True, help_text="Why the cycle stopped, when it did not succeed.")
    trigger = models.CharField(max_length=8, default="api")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="loopcycle_number_unique"),
            models.CheckConstraint(condition=Q(state__in=CycleState.values), name="loopcycle_state_known"),
            models.CheckConstraint(condition=Q(step__in=CycleStep.values), name="loopcycle_step_known"),
            models.CheckConstraint(
                condition=Q(state="running") | Q(finished_at__isnull=False), name="loopcycle_finished_has_time"
            ),
            models.CheckConstraint(
                condition=~Q(state__in=["failed", "cancelled"]) | ~Q(reason=""), name="loopcycle_stop_has_reason"
            ),
            # One running cycle per project: two would train on each other's half-made data.
            models.UniqueConstraint(fields=["project"], condition=Q(state="running"), name="loopcycle_one_running"),
        ]

    def __str__(self) -> str:
        return f"cycle {self.number} of {self.project_id} ({self.state}, {self.step})"

    @property
    def is_finished(self) -> bool:
        return self.state != CycleState.RUNNING


class LoopRule(models.Model):
    """Start a cycle when ``min_new_pairs`` more pairs survive the majority filter than at the last cycle's export."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="loop_rule")
    enabled = models.BooleanField(default=True)
    min_new_pairs = models.PositiveIntegerField(default=200)
    options = models.JSONField(default=dict, blank=True)
    last_cycle = models.ForeignKey(LoopCycle, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(min_new_pairs__gte=1), name="looprule_min_pairs")]

    def __str__(self) -> str:
        return f"loop rule of {self.project_id}"
