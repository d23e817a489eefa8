"""Forms of the manager pages. The bounds and the rules come from
``annotation.project_services``, which the REST API calls too, so the page and the API
refuse the same things with the same reasons."""

from __future__ import annotations

from typing import Any

from django import forms

from annotation.models import MAX_RESPONSES_PER_TASK, Project, Role, TaskState
from annotation.project_services import PROJECT_SETTINGS, project_settings_refusals, setting_bounds


def add_reasons(form: forms.BaseForm, errors: dict[str, list[str]]) -> None:
    """Show reasons by field (a :class:`~annotation.project_services.ProjectRefused`'s) at their fields."""
    for field, reasons in errors.items():
        for reason in reasons:
            form.add_error(field if field in form.fields else None, reason)


class ProjectForm(forms.ModelForm):
    """Create or edit a project. The view saves through ``project_create`` / ``project_update``,
    which also refuse settings that the project's existing tasks contradict."""

    responses_per_task = forms.IntegerField(
        label="Responses per task (K)",
        **setting_bounds("responses_per_task"),
        initial=2,
        help_text=f"2 for pairwise; for rankings, the most responses a task may have (2 to {MAX_RESPONSES_PER_TASK}).",
    )
    annotations_per_task = forms.IntegerField(
        label="Annotations per task (overlap)",
        **setting_bounds("annotations_per_task"),
        initial=3,
        help_text="How many annotators judge each task. Applies to tasks imported from now on.",
    )
    lease_seconds = forms.IntegerField(
        label="Lease length (seconds)",
        **setting_bounds("lease_seconds"),
        initial=1800,
        help_text="How long a claimed task stays reserved for its annotator.",
    )
    agreement_threshold = forms.FloatField(
        label="Agreement threshold",
        **setting_bounds("agreement_threshold"),
        initial=0.5,
        help_text="Share of votes a response pair needs to survive the majority filter (0.5 to 1).",
    )

    class Meta:
        model = Project
        fields = list(PROJECT_SETTINGS)
        labels = {
            "allow_ties": "Allow ties",
            "allow_both_bad": "Allow “both are bad” (“all are bad” in a ranking)",
            "allow_skip": "Allow skipping (with a reason)",
            "guidelines": "Guidelines for annotators (markdown)",
        }
        help_texts = {
            "guidelines": "Headings, lists, tables, code, links. Raw HTML is shown as text, never run.",
            "allow_both_bad": "A tie that also says no response is acceptable; kept apart in agreement and exports.",
        }
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 12, "spellcheck": "true"})}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind, k = data.get("kind"), data.get("responses_per_task")
        if kind and k is not None:
            # The service checks this too; asked here, the reason shows next to the other field errors.
            add_reasons(self, project_settings_refusals(kind=kind, k=k))
        return data


class MemberAddForm(forms.Form):
    """Who to add: whether they exist and are not a member yet is ``membership_add``'s to say."""

    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)


class MemberRoleForm(forms.Form):
    user_id = forms.IntegerField()
    role = forms.ChoiceField(choices=Role.choices)


class MemberRemoveForm(forms.Form):
    user_id = forms.IntegerField()


class TaskFilterForm(forms.Form):
    """Filters of the task browser; every field is optional, values outside the choices are errors."""

    # Matched against the prompt's messages and the responses (Task.objects.with_text).
    q = forms.CharField(
        label="Text",
        max_length=200,
        required=False,
        widget=forms.SearchInput(attrs={"placeholder": "in prompts and responses", "autocomplete": "off"}),
    )
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
