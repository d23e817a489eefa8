"""Forms of the manager pages. The rules match the REST API's serializers, so the page and
the API refuse the same things with the same reasons."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model

from annotation.models import MAX_RESPONSES_PER_TASK, Membership, Project, ProjectKind, Role, TaskState

_INT32_MAX = 2**31 - 1


class ProjectForm(forms.ModelForm):
    """Create or edit a project. Settings that existing tasks depend on cannot change."""

    responses_per_task = forms.IntegerField(
        label="Responses per task (K)",
        min_value=2,
        max_value=MAX_RESPONSES_PER_TASK,
        initial=2,
        help_text=f"2 for pairwise; for rankings, the most responses a task may have (2 to {MAX_RESPONSES_PER_TASK}).",
    )
    annotations_per_task = forms.IntegerField(
        label="Annotations per task (overlap)",
        min_value=1,
        max_value=100,
        initial=3,
        help_text="How many annotators judge each task. Applies to tasks imported from now on.",
    )
    lease_seconds = forms.IntegerField(
        label="Lease length (seconds)",
        min_value=30,
        max_value=_INT32_MAX,
        initial=1800,
        help_text="How long a claimed task stays reserved for its annotator.",
    )
    agreement_threshold = forms.FloatField(
        label="Agreement threshold",
        min_value=0.5,
        max_value=1.0,
        initial=0.5,
        help_text="Share of votes a response pair needs to survive the majority filter (0.5 to 1).",
    )

    class Meta:
        model = Project
        fields = [
            "name",
            "kind",
            "responses_per_task",
            "annotations_per_task",
            "allow_ties",
            "allow_skip",
            "lease_seconds",
            "agreement_threshold",
            "guidelines",
        ]
        labels = {
            "allow_ties": "Allow ties",
            "allow_skip": "Allow skipping (with a reason)",
            "guidelines": "Guidelines for annotators (markdown)",
        }
        help_texts = {"guidelines": "Headings, lists, tables, code, links. Raw HTML is shown as text, never run."}
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 12, "spellcheck": "true"})}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = data.get("kind")
        k = data.get("responses_per_task")
        if kind == ProjectKind.PAIRWISE and k is not None and k != 2:
            self.add_error("responses_per_task", "A pairwise project has exactly 2 responses per task.")
        if self.instance.pk and kind and k is not None:
            self._check_existing_tasks(kind=kind, k=k)
        return data

    def _check_existing_tasks(self, *, kind: str, k: int) -> None:
        # Tasks already imported keep their responses: the settings may not contradict them.
        project = self.instance
        widest = project.tasks.order_by("-num_responses").values_list("num_responses", flat=True).first()
        if widest is None:
            return
        n_tasks = project.tasks.count()
        if kind != project.kind:
            self.add_error(
                "kind",
                f"The kind cannot change: the project already has {n_tasks} task(s) "
                f"built as {project.get_kind_display().lower()}.",
            )
        if k < widest:
            self.add_error(
                "responses_per_task",
                f"K cannot go below {widest}: the project already has tasks with {widest} responses.",
            )


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project

    def clean_username(self) -> Any:
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"No active user is called “{username}”.")
        if Membership.objects.filter(project=self.project, user=user).exists():
            raise forms.ValidationError(f"{username} is already a member of this project.")
        return user


class MemberRoleForm(forms.Form):
    user_id = forms.IntegerField()
    role = forms.ChoiceField(choices=Role.choices)


class MemberRemoveForm(forms.Form):
    user_id = forms.IntegerField()


class TaskFilterForm(forms.Form):
    """Filters of the task browser; every field is optional, values outside the choices are errors."""

    state = forms.ChoiceField(choices=[("", "any state"), *TaskState.choices], required=False)
    source = forms.CharField(
        max_length=200, required=False, widget=forms.TextInput(attrs={"list": "sources", "autocomplete": "off"})
    )
    rl_round = forms.IntegerField(label="Round", min_value=0, required=False)
    judgements = forms.IntegerField(label="Judgements =", min_value=0, required=False)
    judgements_min = forms.IntegerField(label="Judgements ≥", min_value=0, required=False)
    judgements_max = forms.IntegerField(label="Judgements ≤", min_value=0, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        low, high = data.get("judgements_min"), data.get("judgements_max")
        if low is not None and high is not None and low > high:
            self.add_error("judgements_max", "The maximum is below the minimum.")
        return data
