"""Serializers of the annotation API: explicit fields only, so that no model field leaks by accident.

Project settings are bounded as the database's check constraints are (the bounds come from
``annotation.project_services``, which the settings form reads too), so that a bad PATCH
answers 400 with the field named instead of a 500 from an IntegrityError. The rules that
need the stored project (kind and K against existing tasks, who is a member, a project
keeps a manager) are the services' and reach the client through the views.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.importers import FORMATS, format_options
from annotation.models import (
    Assignment,
    AssignmentState,
    ImportJob,
    Judgement,
    Membership,
    Project,
    ProjectKind,
    Prompt,
    Response,
    Role,
    Task,
    TaskState,
)
from annotation.project_services import setting_bounds
from annotation.queue_sql import ID_MAX
from arpad.api.serializers import MessagesField, NamedChoiceField
from arpad.http import JSONInputError, has_non_finite, loads_json
from jobs.api.serializers import JOB_FIELDS, JobSerializer

# Columns the database stores as 32-bit integers; larger values would be a 500 on PostgreSQL.
_INT32_MAX = 2**31 - 1

_TIERS_SCHEMA = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "integer"}},
    "description": "Tiers of response ids, best first; ids in one tier are tied.",
    "example": [[3], [1, 2]],
}


@extend_schema_field(_TIERS_SCHEMA)
class TiersField(serializers.JSONField):
    """Shape and content are checked by the queue service, so all ranking errors share one code."""


# --- auth -----------------------------------------------------------------------------------


class TokenObtainSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})
    rotate = serializers.BooleanField(
        default=False, help_text="Issue a new token even if the current one is still valid; the old one stops working."
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField(help_text="After this the token is refused (401); ask for a new one.")


# --- projects -------------------------------------------------------------------------------


class ProjectProgressSerializer(serializers.Serializer):
    """Counts annotated onto the project queryset (see ``views.projects_with_progress``)."""

    tasks = serializers.IntegerField(source="n_tasks", read_only=True)
    tasks_open = serializers.IntegerField(source="n_tasks_open", read_only=True)
    tasks_complete = serializers.IntegerField(source="n_tasks_complete", read_only=True)
    judgements = serializers.IntegerField(source="n_judgements", read_only=True, help_text="On all tasks.")
    my_judgements = serializers.IntegerField(source="n_my_judgements", read_only=True, help_text="The caller's own.")


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.ChoiceField(
        source="caller_role", choices=Role.choices, read_only=True, help_text="The caller's role."
    )
    progress = ProjectProgressSerializer(source="*", read_only=True)
    kind = serializers.ChoiceField(choices=ProjectKind.choices, required=False)
    responses_per_task = serializers.IntegerField(
        **setting_bounds("responses_per_task"), required=False, help_text="K; always 2 for pairwise projects."
    )
    annotations_per_task = serializers.IntegerField(**setting_bounds("annotations_per_task"), required=False)
    lease_seconds = serializers.IntegerField(**setting_bounds("lease_seconds"), required=False)
    agreement_threshold = serializers.FloatField(**setting_bounds("agreement_threshold"), required=False)

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "kind",
            "responses_per_task",
            "annotations_per_task",
            "allow_ties",
            "allow_both_bad",
            "allow_skip",
            "lease_seconds",
            "agreement_threshold",
            "guidelines",
            "created_at",
            "updated_at",
            "role",
            "progress",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


# --- members --------------------------------------------------------------------------------


class MembershipSerializer(serializers.ModelSerializer):
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    imported = serializers.SerializerMethodField(
        help_text="An import account: it holds judgements an import wrote for a file's labeler, and cannot log in."
    )
    simulated = serializers.SerializerMethodField(
        help_text="A simulated annotator (rlloop.simulate): its judgements come from a model, and it cannot log in."
    )

    class Meta:
        model = Membership
        fields = ["user_id", "username", "imported", "simulated", "role", "created_at"]
        read_only_fields = ["created_at"]

    def get_imported(self, membership: Membership) -> bool:
        return hasattr(membership.user, "imported_account")

    def get_simulated(self, membership: Membership) -> bool:
        return hasattr(membership.user, "simulated_annotator")


class MembershipCreateSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="An active user; they must not be a member yet.")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.ANNOTATOR)


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


# --- work queue -----------------------------------------------------------------------------


class ResponseTextSerializer(serializers.ModelSerializer):
    class Meta:
        model = Response
        fields = ["id", "text"]


class ClaimedPromptSerializer(serializers.Serializer):
    messages = MessagesField()


class ClaimedAssignmentSerializer(serializers.Serializer):
    """A leased task with everything needed to show it: the prompt and the responses, in display order."""

    id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    resumed = serializers.BooleanField(help_text="True when this is the caller's own live lease, handed back.")
    display_order = serializers.ListField(child=serializers.IntegerField(), help_text="Response ids, as shown.")
    prompt = ClaimedPromptSerializer()
    responses = ResponseTextSerializer(many=True, help_text="In display order.")


class ClaimSerializer(serializers.Serializer):
    assignment = ClaimedAssignmentSerializer()


RATIONALE_MAX_CHARS = 20_000
# The largest body a valid submit needs: the rationale at 12 bytes a character (JSON may
# escape an astral character as two \uXXXX), and room for the ranking and the rest.
SUBMIT_MAX_BODY_BYTES = 12 * RATIONALE_MAX_CHARS + 16 * 1024


_BOTH_BAD_HELP = (
    "The 'both are bad' verdict ('all are bad' in a ranking; Chatbot Arena's 'tie (bothbad)'): only where "
    "the project's allow_both_bad is on, and only with a ranking of one tier holding every response."
)


class SubmitSerializer(serializers.Serializer):
    ranking = TiersField()
    client_token = serializers.UUIDField(help_text="Makes the submit idempotent: a retry returns the same judgement.")
    both_bad = serializers.BooleanField(default=False, help_text=_BOTH_BAD_HELP)
    confidence = serializers.IntegerField(min_value=1, max_value=5, required=False, allow_null=True)
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=RATIONALE_MAX_CHARS)
    time_taken_ms = serializers.IntegerField(min_value=0, max_value=_INT32_MAX, required=False, allow_null=True)


class AmendSerializer(serializers.Serializer):
    """A whole answer that replaces the stored one: fields left out take their defaults, not the old values."""

    ranking = TiersField()
    both_bad = serializers.BooleanField(default=False, help_text=_BOTH_BAD_HELP)
    confidence = serializers.IntegerField(min_value=1, max_value=5, required=False, allow_null=True, default=None)
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=RATIONALE_MAX_CHARS, default="")


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class AssignmentSerializer(serializers.ModelSerializer):
    task_id = serializers.IntegerField(read_only=True)
    state = NamedChoiceField(enum_name="AssignmentStateEnum", choices=AssignmentState.choices, read_only=True)

    class Meta:
        model = Assignment
        fields = ["id", "task_id", "state", "leased_at", "expires_at", "finished_at", "skip_reason"]
        read_only_fields = fields


class JudgementSerializer(serializers.ModelSerializer):
    task_id = serializers.IntegerField(read_only=True)
    assignment_id = serializers.IntegerField(read_only=True, allow_null=True)
    annotator_id = serializers.IntegerField(read_only=True)
    annotator = serializers.CharField(source="annotator.username", read_only=True)
    ranking = TiersField(source="tiers", read_only=True)

    class Meta:
        model = Judgement
        fields = [
            "id",
            "task_id",
            "assignment_id",
            "annotator_id",
            "annotator",
            "ranking",
            "both_bad",
            "confidence",
            "rationale",
            "time_taken_ms",
            "client_token",
            "source",
            "created_at",
            "amended_at",
        ]
        read_only_fields = fields


class JudgementFilterSerializer(serializers.Serializer):
    annotator = serializers.IntegerField(required=False, min_value=1, max_value=ID_MAX, help_text="User id.")
    task = serializers.IntegerField(required=False, min_value=1, max_value=ID_MAX, help_text="Task id.")


# --- tasks ----------------------------------------------------------------------------------


class TaskFilterSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=TaskState.choices, required=False)
    source = serializers.CharField(required=False, max_length=200)
    rl_round = serializers.IntegerField(required=False, min_value=0, max_value=_INT32_MAX)
    min_judgements = serializers.IntegerField(required=False, min_value=0, max_value=_INT32_MAX)
    max_judgements = serializers.IntegerField(required=False, min_value=0, max_value=_INT32_MAX)


class TaskSerializer(serializers.ModelSerializer):
    """What an annotator may see of a task: nothing of where it came from (its source names a
    data set or a file) and nothing of its gold status."""

    prompt_id = serializers.IntegerField(read_only=True)
    state = NamedChoiceField(enum_name="TaskStateEnum", choices=TaskState.choices, read_only=True)

    class Meta:
        model = Task
        fields = [
            "id",
            "prompt_id",
            "state",
            "rl_round",
            "priority",
            "num_responses",
            "required_annotations",
            "judgement_count",
            "created_at",
            "completed_at",
        ]
        read_only_fields = fields


class TaskManagerSerializer(TaskSerializer):
    """A manager's row of the task list adds the task's source."""

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "source"]
        read_only_fields = fields


class PromptSerializer(serializers.ModelSerializer):
    """An annotator's view of a prompt: its text only. The external id (a data set's item or
    message id, an HH id hashed over chosen then rejected) would point at the reference."""

    messages = MessagesField(read_only=True)

    class Meta:
        model = Prompt
        fields = ["id", "messages"]
        read_only_fields = fields


class PromptManagerSerializer(PromptSerializer):
    class Meta(PromptSerializer.Meta):
        fields = ["id", "external_id", "messages"]
        read_only_fields = fields


class TaskDetailSerializer(TaskSerializer):
    """An annotator's view: the prompt and the responses, blind to where they came from."""

    prompt = PromptSerializer(read_only=True)
    responses = ResponseTextSerializer(source="ordered_responses", many=True, read_only=True)

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "prompt", "responses"]
        read_only_fields = fields


class ResponseDetailSerializer(serializers.ModelSerializer):
    class Meta:
        model = Response
        fields = ["id", "text", "source", "external_id", "metadata"]
        read_only_fields = fields


class TaskManagerDetailSerializer(TaskDetailSerializer):
    """A manager's view adds the origin of the task, its prompt and responses, gold status and every judgement."""

    prompt = PromptManagerSerializer(read_only=True)
    responses = ResponseDetailSerializer(source="ordered_responses", many=True, read_only=True)
    gold_tiers = TiersField(read_only=True, allow_null=True)
    judgements = JudgementSerializer(source="visible_judgements", many=True, read_only=True)

    class Meta(TaskDetailSerializer.Meta):
        fields = [*TaskDetailSerializer.Meta.fields, "source", "is_gold", "gold_tiers", "metadata", "judgements"]
        read_only_fields = fields


# --- imports --------------------------------------------------------------------------------


class ImportJobSerializer(JobSerializer, serializers.ModelSerializer):
    """An import: the job shape of every kind (``jobs.api``), the file, its options and the summary."""

    summary = serializers.DictField(read_only=True)
    options = serializers.DictField(read_only=True)

    class Meta:
        model = ImportJob
        fields = [*JOB_FIELDS, "format", "options", "file_name", "summary"]
        read_only_fields = fields


class ImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=False)
    format = serializers.ChoiceField(choices=sorted(FORMATS.items()))
    options = serializers.CharField(
        required=False, default="{}", help_text='Importer options as a JSON object, e.g. {"empty_responses": "skip"}.'
    )

    def validate_options(self, value: str) -> dict[str, Any]:
        try:
            # NaN and infinities are read, so that the refusal can name the option.
            options = loads_json(value or "{}", keep_non_finite=True)
        except JSONInputError as exc:
            raise serializers.ValidationError(f"Not valid JSON: {exc}.")
        if not isinstance(options, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        not_finite = sorted(name for name, option in options.items() if has_non_finite(option))
        if not_finite:
            raise serializers.ValidationError(
                f"{', '.join(not_finite)}: NaN, Infinity and numbers too large for a float are not valid JSON."
            )
        return options

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Path options name files on the server: a web client must not point the importer
        # at the server's file system.
        paths = {option["name"] for option in format_options(attrs["format"]) if option["kind"] == "path"}
        refused = sorted(paths & set(attrs["options"]))
        if refused:
            raise serializers.ValidationError(
                {"options": [f"{', '.join(refused)}: file paths on the server cannot be set through the API."]}
            )
        return attrs

    def validate_file(self, value: Any) -> Any:
        limit = settings.ARPAD_IMPORT_MAX_BYTES
        if value.size > limit:
            raise serializers.ValidationError(f"The file is larger than the import limit of {limit} bytes.")
        return value
