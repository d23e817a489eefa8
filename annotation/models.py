"""The annotation data model: projects, prompts, responses, tasks, leases, judgements.

Integrity lives in the database. Unique and check constraints hold even against raw
ORM writes: one assignment and one judgement per (task, annotator), a task never holds
more judgements than it needs, pairwise projects have exactly two responses per task,
and every PairVote names its two responses in canonical (lower id first) order.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from jobs.models import Job, JobState

MAX_RESPONSES_PER_TASK = 9


class ProjectKind(models.TextChoices):
    PAIRWISE = "pairwise", "Pairwise"
    RANKING = "ranking", "K-way ranking"


class Role(models.TextChoices):
    ANNOTATOR = "annotator", "Annotator"
    MANAGER = "manager", "Manager"


class ProjectQuerySet(models.QuerySet["Project"]):
    def visible_to(self, user: Any) -> ProjectQuerySet:
        """Projects the user is a member of, in any role. Everything else is a 404."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)

    def managed_by(self, user: Any) -> ProjectQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user, memberships__role=Role.MANAGER)


class Project(models.Model):
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=ProjectKind.choices, default=ProjectKind.PAIRWISE)
    responses_per_task = models.PositiveSmallIntegerField(
        default=2, help_text="K: responses per task (2 for pairwise; the maximum for rankings, 2..9)."
    )
    annotations_per_task = models.PositiveSmallIntegerField(
        default=3, help_text="Overlap: how many annotators judge each task."
    )
    allow_ties = models.BooleanField(default=False)
    # Chatbot Arena's "tie (bothbad)": a full tie that also says no response is acceptable.
    allow_both_bad = models.BooleanField(
        default=False,
        help_text="Annotators may answer 'both are bad' ('all are bad' in a ranking): a full tie, flagged.",
    )
    allow_skip = models.BooleanField(default=True)
    lease_seconds = models.PositiveIntegerField(default=1800, help_text="How long a claimed task stays reserved.")
    agreement_threshold = models.FloatField(
        default=0.5, help_text="Share of votes a pair needs to survive the majority filter (0.5..1)."
    )
    guidelines = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(responses_per_task__gte=2, responses_per_task__lte=MAX_RESPONSES_PER_TASK),
                name="project_k_range",
            ),
            models.CheckConstraint(
                condition=~Q(kind=ProjectKind.PAIRWISE) | Q(responses_per_task=2),
                name="project_pairwise_k_is_2",
            ),
            models.CheckConstraint(condition=Q(kind__in=ProjectKind.values), name="project_kind_valid"),
            models.CheckConstraint(
                condition=Q(annotations_per_task__gte=1, annotations_per_task__lte=100), name="project_overlap_range"
            ),
            models.CheckConstraint(condition=Q(lease_seconds__gte=30), name="project_lease_min"),
            models.CheckConstraint(
                condition=Q(agreement_threshold__gte=0.5, agreement_threshold__lte=1.0),
                name="project_threshold_range",
            ),
            models.CheckConstraint(condition=~Q(name=""), name="project_name_nonempty"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_pairwise(self) -> bool:
        return self.kind == ProjectKind.PAIRWISE

    def role_of(self, user: Any) -> str | None:
        if not user.is_authenticated:
            return None
        return self.memberships.filter(user=user).values_list("role", flat=True).first()


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project_id", "user_id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


class ImportedAccount(models.Model):
    """Marks an account that an import created to hold judgements read from a file.

    Such an account stands for a labeler outside the platform (a data set's annotator, a
    consensus ranking): it is inactive and has no usable password, so it cannot log in,
    and imports are the only writers of its judgements. Imports write judgements only in
    the name of these accounts, or of a project's members when the importing manager
    opts in (``annotation.importers.writer``).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="imported_account"
    )
    # The project and file of the import that created it, for whoever meets the name later.
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    format = models.CharField(max_length=32, blank=True)
    file_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["user_id"]

    def __str__(self) -> str:
        return f"imported account {self.user_id}"


class Prompt(models.Model):
    """A conversation to respond to: ``messages`` is a list of ``{role, content}``."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=255)
    messages = models.JSONField()
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["project", "external_id"], name="prompt_external_id_unique")]

    def __str__(self) -> str:
        return f"prompt {self.external_id}"

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message.get("content", "")
        return ""


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    # Model name, "human", or a policy name; rlloop links its PolicyVersion in metadata.
    source = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "external_id"], condition=~Q(external_id=""), name="response_external_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"response {self.pk} ({self.source or 'unknown'})"


class TaskState(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"
    RETIRED = "retired", "Retired"


class TaskQuerySet(models.QuerySet["Task"]):
    def visible_to(self, user: Any) -> TaskQuerySet:
        """Managers see every task of their projects; annotators the tasks they were given."""
        if not user.is_authenticated:
            return self.none()
        managed = Q(project__memberships__user=user, project__memberships__role=Role.MANAGER)
        own = Q(assignments__annotator=user, project__memberships__user=user)
        return self.filter(managed | own).distinct()

    def visible_in(self, project: Project, *, user: Any, role: str | None) -> TaskQuerySet:
        """``visible_to`` for one project whose role the caller already resolved.

        No DISTINCT: a manager's filter is the project alone, and an annotator has at most
        one assignment per task. Pages of a large project stay cheap.
        """
        if role == Role.MANAGER:
            return self.filter(project=project)
        if role == Role.ANNOTATOR:
            return self.filter(project=project, assignments__annotator=user)
        return self.none()

    def with_text(self, text: str) -> TaskQuerySet:
        """Tasks whose prompt (any message) or one of whose responses contains ``text``, ignoring case.

        Both tests are EXISTS clauses of the same statement, so filtering adds no query to
        a page (``annotation.text_search`` says how the prompt's JSON is searched).
        """
        from django.db.models import Exists, OuterRef

        from annotation.text_search import MessagesContain

        responses = TaskResponse.objects.filter(task=OuterRef("pk"), response__text__icontains=text)
        return self.filter(MessagesContain(F("prompt__messages"), text) | Exists(responses))


class Task(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    responses = models.ManyToManyField(Response, through="TaskResponse", related_name="tasks")
    num_responses = models.PositiveSmallIntegerField()
    priority = models.IntegerField(default=0, help_text="Higher is served first.")
    required_annotations = models.PositiveSmallIntegerField()
    judgement_count = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(max_length=16, choices=TaskState.choices, default=TaskState.OPEN)
    # Where the task came from: an import label ("hh-rlhf", "pandalm", a file name) or a round.
    source = models.CharField(max_length=200, blank=True)
    rl_round = models.PositiveIntegerField(null=True, blank=True, help_text="RL round that produced the task.")
    is_gold = models.BooleanField(default=False)
    # Gold answer as tiers of response ids, best first, like a judgement.
    gold_tiers = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            # The claim query walks this index in order: open tasks of one project, highest
            # priority first, partly annotated before fresh.
            models.Index(
                F("project"),
                F("priority").desc(),
                F("judgement_count").desc(),
                F("id"),
                name="task_claim_order",
                condition=Q(state="open"),
            ),
            models.Index(fields=["project", "state"], name="task_project_state"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(num_responses__gte=2, num_responses__lte=MAX_RESPONSES_PER_TASK),
                name="task_k_range",
            ),
            models.CheckConstraint(condition=Q(required_annotations__gte=1), name="task_required_min"),
            models.CheckConstraint(
                condition=Q(judgement_count__lte=F("required_annotations")), name="task_not_over_judged"
            ),
            models.CheckConstraint(condition=Q(state__in=TaskState.values), name="task_state_valid"),
            models.CheckConstraint(
                condition=~Q(state=TaskState.COMPLETE) | Q(judgement_count__gte=F("required_annotations")),
                name="task_complete_means_full",
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_tiers__isnull=False), name="task_gold_has_answer"
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.pk}"

    @property
    def is_complete(self) -> bool:
        return self.judgement_count >= self.required_annotations

    def response_ids(self) -> list[int]:
        """Response ids in the task's stored order (imports shuffle it, see ``importers.writer``)."""
        return list(self.task_responses.order_by("position").values_list("response_id", flat=True))


class TaskResponse(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="task_responses")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="task_links")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["task_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "response"], name="taskresponse_unique_response"),
            models.UniqueConstraint(fields=["task", "position"], name="taskresponse_unique_position"),
            models.CheckConstraint(condition=Q(position__lt=MAX_RESPONSES_PER_TASK), name="taskresponse_position"),
        ]


class AssignmentState(models.TextChoices):
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    # The lease ran out and the slot went to someone else (set when the late submit is refused).
    EXPIRED = "expired", "Expired"
    # Given back without an answer and without a reason: the task is back in the queue, for this
    # annotator too (a later claim of the task reuses the row, see ``services.assignment_release``).
    RELEASED = "released", "Released"


class AssignmentQuerySet(models.QuerySet["Assignment"]):
    def live(self, now: Any = None) -> AssignmentQuerySet:
        return self.filter(state=AssignmentState.LEASED, expires_at__gt=now or timezone.now())


class Assignment(models.Model):
    """A lease of one task to one annotator, with the order the responses were shown in."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    state = models.CharField(max_length=16, choices=AssignmentState.choices, default=AssignmentState.LEASED)
    # Response ids in the order this annotator sees them (shuffled per annotator), so that
    # position bias can be measured afterwards.
    display_order = models.JSONField()
    leased_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=500, blank=True)

    objects = AssignmentQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["task"], name="assignment_live_by_task", condition=Q(state="leased")),
            models.Index(fields=["project", "annotator", "state"], name="assignment_by_annotator"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="assignment_unique_task_annotator"),
            models.CheckConstraint(condition=Q(state__in=AssignmentState.values), name="assignment_state_valid"),
            models.CheckConstraint(condition=Q(expires_at__gt=F("leased_at")), name="assignment_expiry_after_lease"),
            models.CheckConstraint(
                condition=~Q(state=AssignmentState.SKIPPED) | ~Q(skip_reason=""), name="assignment_skip_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} of task {self.task_id} to {self.annotator_id}"

    def is_live(self, now: Any = None) -> bool:
        return self.state == AssignmentState.LEASED and self.expires_at > (now or timezone.now())


class JudgementSource(models.TextChoices):
    ANNOTATION = "annotation", "Annotated on the platform"
    IMPORT = "import", "Imported"


class JudgementQuerySet(models.QuerySet["Judgement"]):
    def visible_to(self, user: Any) -> JudgementQuerySet:
        """Managers see every judgement of their projects; annotators their own."""
        if not user.is_authenticated:
            return self.none()
        managed = Q(task__project__memberships__user=user, task__project__memberships__role=Role.MANAGER)
        own = Q(annotator=user, task__project__memberships__user=user)
        return self.filter(managed | own).distinct()

    def visible_in(self, project: Project, *, user: Any, role: str | None) -> JudgementQuerySet:
        """``visible_to`` for one project whose role the caller already resolved (no DISTINCT)."""
        if role == Role.MANAGER:
            return self.filter(task__project=project)
        if role == Role.ANNOTATOR:
            return self.filter(task__project=project, annotator=user)
        return self.none()


class Judgement(models.Model):
    """An annotator's answer: ordered tiers of response ids, best first.

    ``[[r3], [r1, r2], [r4]]`` means r3 is best, r1 and r2 are tied, r4 is worst.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="judgements")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="judgements")
    # Null for imported judgements, which were never leased.
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.CASCADE, related_name="judgement"
    )
    tiers = models.JSONField()
    # "Both are bad" (Chatbot Arena's "tie (bothbad)"; "all are bad" in a ranking): always a
    # single tier of every response, so its PairVotes are ties and pair statistics count it
    # as one; the flag keeps it apart for the agreement report and the exports.
    both_bad = models.BooleanField(default=False)
    confidence = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 (unsure) .. 5 (certain).")
    rationale = models.TextField(blank=True)
    time_taken_ms = models.PositiveIntegerField(null=True, blank=True)
    client_token = models.UUIDField(default=uuid.uuid4)
    source = models.CharField(max_length=16, choices=JudgementSource.choices, default=JudgementSource.ANNOTATION)
    created_at = models.DateTimeField(default=timezone.now)
    # Set when its annotator changed the answer while the task was still open (services.judgement_amend).
    amended_at = models.DateTimeField(null=True, blank=True)

    objects = JudgementQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="judgement_unique_task_annotator"),
            models.UniqueConstraint(fields=["annotator", "client_token"], name="judgement_unique_client_token"),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=1, confidence__lte=5),
                name="judgement_confidence_range",
            ),
            models.CheckConstraint(
                condition=Q(source=JudgementSource.IMPORT) | Q(assignment__isnull=False),
                name="judgement_annotation_has_assignment",
            ),
            models.CheckConstraint(condition=Q(source__in=JudgementSource.values), name="judgement_source_valid"),
        ]

    def __str__(self) -> str:
        return f"judgement {self.pk} of task {self.task_id} by {self.annotator_id}"


class PairVote(models.Model):
    """One of the C(K,2) pairwise outcomes of a judgement; written in the same transaction.

    ``response_a`` always has the lower id. ``winner`` is +1 when A is preferred, -1 when
    B is, 0 for a tie. ``a_shown_first`` records which of the two the annotator saw
    first, so that position bias is an SQL aggregate.
    """

    judgement = models.ForeignKey(Judgement, on_delete=models.CASCADE, related_name="pair_votes")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="pair_votes")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pair_votes")
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    winner = models.SmallIntegerField()
    a_shown_first = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["task", "response_a", "response_b"], name="pairvote_by_pair")]
        constraints = [
            models.UniqueConstraint(
                fields=["judgement", "response_a", "response_b"], name="pairvote_unique_pair_per_judgement"
            ),
            models.CheckConstraint(condition=Q(response_a__lt=F("response_b")), name="pairvote_canonical_order"),
            models.CheckConstraint(condition=Q(winner__in=[-1, 0, 1]), name="pairvote_winner_valid"),
        ]


# The lifecycle's own enum, under the name this app's code and tests grew up with.
ImportJobState = JobState


class ImportJob(Job):
    """An uploaded import file and what became of it: a job of the shared lifecycle on the default queue."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    format = models.CharField(max_length=32)
    options = models.JSONField(default=dict, blank=True)
    file_name = models.CharField(max_length=255)
    file_path = models.CharField(max_length=1024)
    summary = models.JSONField(default=dict, blank=True)

    class Meta(Job.Meta):
        pass
