"""Manager pages of the reward models: runs with live progress, versions, a run's curves, comparison.

For the project's managers only: outsiders get 404, annotators 403. Every change is a
plain form POST (CSRF-protected, works without JavaScript) that calls the same services
as the API. Progress bars are the shared job component (``{% job_progress %}``, followed by
``jobs.js`` through the generic job API); ``rewardmodel.js`` draws a run's curves and log
from the same updates with ``plot.js``. Data reaches the scripts through ``json_script``
blocks, never inline.

Users see a base model by its registered name (``base_model_label``), never its directory,
and absolute paths in a run's log and data are replaced (``frontend.text``).
"""

from __future__ import annotations

import math
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.models import Project
from arpad.forms import add_refusal
from exports.models import ExportSnapshot, ExportState
from frontend.access import managed_project
from frontend.text import scrub_paths, scrub_value
from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion, RunTrigger
from rewardmodel.options import LORA_RANK_BOUNDS, OPTION_BOUNDS
from rewardmodel.services import (
    RewardModelError,
    base_model_label,
    base_model_names,
    default_base_model,
    retrain_rule_set,
    reward_model_run_create,
    reward_model_score,
    reward_model_version_activate,
    reward_model_versions_compare,
    train_config_fields,
)

RUNS_LISTED = 30
# Metrics shown in the version table, in this order, when a version has them.
VERSION_METRICS = [
    ("accuracy", "Accuracy"),
    ("accuracy_unanimous", "Acc. unanimous"),
    ("accuracy_split", "Acc. split"),
    ("loss", "Loss"),
    ("margin", "Margin"),
    ("ece", "ECE"),
]


def _low(option: str) -> float:
    return OPTION_BOUNDS[option][0]


def _high(option: str) -> float:
    return OPTION_BOUNDS[option][1]


class TrainForm(forms.Form):
    """A new run: what to train on, from what, and the options a manager usually changes."""

    snapshot = forms.TypedChoiceField(coerce=int, label="Export snapshot")
    # A choice among the registered bases, never a typed path (rewardmodel.bases).
    base_model = forms.ChoiceField(
        required=False,
        label="Base model",
        help_text="Registered by the operator. Empty: the model of the version continued from, else the default.",
    )
    parent_version = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Continue from")
    epochs = forms.IntegerField(min_value=_low("epochs"), max_value=_high("epochs"), initial=1)
    learning_rate = forms.FloatField(
        min_value=_low("learning_rate"), max_value=_high("learning_rate"), initial=2e-5, label="Learning rate"
    )
    groups_per_batch = forms.IntegerField(
        min_value=_low("groups_per_batch"),
        max_value=_high("groups_per_batch"),
        initial=8,
        label="Prompt groups per batch",
    )
    max_length = forms.IntegerField(
        min_value=_low("max_length"), max_value=_high("max_length"), initial=512, label="Max tokens"
    )
    margin = forms.BooleanField(required=False, label="Margin from vote strength")
    soft_labels = forms.BooleanField(required=False, label="Soft labels from vote share")
    center_coefficient = forms.FloatField(
        min_value=_low("center_coefficient"),
        max_value=_high("center_coefficient"),
        initial=0.0,
        label="Reward centering",
    )
    lora_r = forms.IntegerField(
        min_value=LORA_RANK_BOUNDS[0],
        max_value=LORA_RANK_BOUNDS[1],
        required=False,
        label="LoRA rank",
        help_text="Empty: train every weight.",
    )
    seed = forms.IntegerField(min_value=_low("seed"), max_value=_high("seed"), initial=0)

    CONFIG_FIELDS = (
        "epochs",
        "learning_rate",
        "groups_per_batch",
        "max_length",
        "margin",
        "soft_labels",
        "center_coefficient",
        "seed",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        snapshots = ExportSnapshot.objects.filter(project=project, state=ExportState.SUCCEEDED).order_by("-id")[:50]
        self.fields["snapshot"].choices = [
            (s.pk, f"#{s.pk} · {s.counts.get('pairs_kept', 0)} pairs · {s.created_at:%Y-%m-%d %H:%M}")
            for s in snapshots
        ]
        versions = RewardModelVersion.objects.filter(project=project).order_by("-number")
        self.fields["parent_version"].choices = [("", "nothing (a fresh head on the base)")] + [
            (v.number, f"v{v.number}" + (" (active)" if v.is_active else "")) for v in versions
        ]
        default = default_base_model()
        self.fields["base_model"].choices = [("", f"default ({default})" if default else "default")] + [
            (name, name) for name in base_model_names()
        ]

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config = {name: data[name] for name in self.CONFIG_FIELDS}
        if data.get("lora_r"):
            config["lora"] = {"r": data["lora_r"], "alpha": 2 * data["lora_r"]}
        return config


class PlaygroundForm(forms.Form):
    """One prompt and 2..N responses to score with a version (the scoring API's service, ``reward_model_score``).

    The responses are fields ``response_1`` .. ``response_N``: as many as were posted (the
    page's script adds fields), at least ``PLAYGROUND_SHOWN`` and at most ``PLAYGROUND_MAX``.
    """

    prefix = "score"
    PLAYGROUND_SHOWN = 3
    PLAYGROUND_MAX = 12

    version = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Version")
    prompt = forms.CharField(strip=False, widget=forms.Textarea(attrs={"rows": 3}), label="Prompt")

    def __init__(self, *args: Any, versions: list[RewardModelVersion], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        active = next((v for v in versions if v.is_active), None)
        self.fields["version"].choices = [
            ("", f"the active version ({active.label})" if active else "the active version (none)")
        ] + [(v.number, v.label) for v in versions]
        posted = 0
        if self.is_bound:
            posted = sum(1 for key in self.data if key.startswith(f"{self.prefix}-response_"))
        for n in range(1, min(max(self.PLAYGROUND_SHOWN, posted), self.PLAYGROUND_MAX) + 1):
            self.fields[f"response_{n}"] = forms.CharField(
                required=False, strip=False, widget=forms.Textarea(attrs={"rows": 3}), label=f"Response {n}"
            )

    def response_fields(self) -> list[Any]:
        return [self[name] for name in self.fields if name.startswith("response_")]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        filled = [(name, data[name]) for name in self.fields if name.startswith("response_") and data.get(name)]
        if len(filled) < 2:
            empty = next(name for name in ("response_1", "response_2") if not data.get(name))
            self.add_error(empty, "Give at least two responses to compare.")
        self.filled = filled
        return data


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    return [w / sum(weights) for w in weights]


def _playground_score(form: PlaygroundForm, project: Project) -> dict[str, Any] | None:
    """Score a valid form's responses; errors go onto the form, named by field."""
    number = form.cleaned_data["version"]
    versions = RewardModelVersion.objects.filter(project=project)
    version = versions.filter(number=number).first() if number is not None else versions.filter(is_active=True).first()
    if version is None:
        form.add_error("version", "No active version: train one, activate one, or choose a version.")
        return None
    prompt = form.cleaned_data["prompt"]
    try:
        rewards = reward_model_score(version=version, items=[(prompt, text) for _, text in form.filled])
    except RewardModelError as exc:
        # items[i] is the i-th filled response.
        index = exc.field[len("items[") : -1] if exc.field and exc.field.startswith("items[") else ""
        target = form.filled[int(index)][0] if index.isdigit() else ("version" if exc.code == "model_missing" else None)
        form.add_error(target, exc.message[0].upper() + exc.message[1:] + ".")
        return None
    order = sorted(range(len(rewards)), key=lambda i: -rewards[i])
    first = _softmax(rewards)
    rows = [
        {
            "label": form.fields[name].label,
            "text": text,
            "score": rewards[i],
            "rank": order.index(i) + 1,
            "first": first[i],
        }
        for i, (name, text) in enumerate(form.filled)
    ]
    return {"version": version, "rows": rows}


class RetrainRuleForm(forms.Form):
    """The project's retrain rule (``RetrainRule``); ``retrain_rule_set`` checks it as a run's options are checked.

    Training options left empty take the trainer's defaults.
    """

    prefix = "rule"
    enabled = forms.BooleanField(required=False, initial=True, label="Retrain by itself")
    min_new_pairs = forms.IntegerField(min_value=1, initial=1000, label="New agreed pairs")
    base_model = forms.ChoiceField(required=False, label="Base model")
    epochs = forms.IntegerField(min_value=_low("epochs"), max_value=_high("epochs"), required=False)
    learning_rate = forms.FloatField(
        min_value=_low("learning_rate"), max_value=_high("learning_rate"), required=False, label="Learning rate"
    )
    max_length = forms.IntegerField(
        min_value=_low("max_length"), max_value=_high("max_length"), required=False, label="Max tokens"
    )
    lora_r = forms.IntegerField(
        min_value=LORA_RANK_BOUNDS[0], max_value=LORA_RANK_BOUNDS[1], required=False, label="LoRA rank"
    )
    CONFIG_FIELDS = ("epochs", "learning_rate", "max_length")

    def __init__(self, *args: Any, rule: RetrainRule | None, **kwargs: Any) -> None:
        if rule is not None and not args and "data" not in kwargs:
            config = rule.config if isinstance(rule.config, dict) else {}
            lora = config.get("lora")
            kwargs["initial"] = {
                "enabled": rule.enabled,
                "min_new_pairs": rule.min_new_pairs,
                "base_model": rule.base_model,
                **{name: config.get(name) for name in self.CONFIG_FIELDS},
                "lora_r": lora.get("r") if isinstance(lora, dict) else None,
            }
        super().__init__(*args, **kwargs)
        names = base_model_names()
        choices = [("", "the active version's")] + [(name, name) for name in names]
        if rule is not None and rule.base_model and rule.base_model not in names:
            choices.append((rule.base_model, f"{rule.base_model} (not registered any more)"))
        self.fields["base_model"].choices = choices
        defaults = train_config_fields()
        for name in self.CONFIG_FIELDS:
            self.fields[name].help_text = f"Empty: {defaults[name]:g}."
        self.fields["lora_r"].help_text = "Empty: train every weight."

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config = {name: data[name] for name in self.CONFIG_FIELDS if data.get(name) is not None}
        if data.get("lora_r"):
            config["lora"] = {"r": data["lora_r"], "alpha": 2 * data["lora_r"]}
        return config


def _run_rows(project: Project) -> list[dict[str, Any]]:
    runs = RewardModelRun.objects.filter(project=project).select_related("version", "created_by")[:RUNS_LISTED]
    return [{**run_json(project, run), "job": run} for run in runs]


def run_json(project: Project, run: RewardModelRun) -> dict[str, Any]:
    version = getattr(run, "version", None)
    return {
        "id": run.pk,
        "state": run.state,
        "progress": run.progress,
        "step": run.step,
        "total_steps": run.total_steps,
        "attempts": run.attempts,
        "max_attempts": run.max_attempts,
        "cancel_requested": run.cancel_requested,
        "error": run.error.splitlines()[0][:300] if run.error else "",
        "snapshot": run.snapshot_id,
        "trigger": run.get_trigger_display(),
        "version": version.number if version is not None else None,
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "created_display": timezone.localtime(run.created_at).strftime("%m-%d %H:%M"),
        "url": reverse("rewardmodel-run", args=[project.pk, run.pk]),
    }


def _version_rows(project: Project) -> list[dict[str, Any]]:
    rows = []
    for v in RewardModelVersion.objects.filter(project=project).select_related("parent").order_by("-number"):
        rows.append(
            {
                "version": v,
                # The registered name it started from (through its parents), never its directory.
                "base": base_model_label(v),
                "metrics": [
                    v.metrics.get(key) if isinstance(v.metrics.get(key), int | float) else None
                    for key, _ in VERSION_METRICS
                ],
            }
        )
    return rows


def _render_list(
    request: HttpRequest,
    project: Project,
    *,
    form: TrainForm | None = None,
    playground: PlaygroundForm | None = None,
    scored: dict[str, Any] | None = None,
    rule_form: RetrainRuleForm | None = None,
    status: int = 200,
) -> HttpResponse:
    versions = _version_rows(project)
    rule = RetrainRule.objects.filter(project=project).select_related("last_run", "pending_snapshot").first()
    form = form or TrainForm(project=project)
    context = {
        "project": project,
        "form": form,
        "runs": _run_rows(project),
        "versions": versions,
        "metric_labels": [label for _, label in VERSION_METRICS],
        "has_snapshot": bool(form.fields["snapshot"].choices),
        "playground": playground or PlaygroundForm(versions=[row["version"] for row in versions]),
        "scored": scored,
        "rule": rule,
        "rule_form": rule_form or RetrainRuleForm(rule=rule),
    }
    return render(request, "frontend/rewardmodel/list.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def reward_model_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project = managed_project(request, project_id)
    form = TrainForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        snapshot = ExportSnapshot.objects.get(project=project, pk=form.cleaned_data["snapshot"])
        parent = None
        if form.cleaned_data["parent_version"] is not None:
            parent = RewardModelVersion.objects.get(project=project, number=form.cleaned_data["parent_version"])
        try:
            with transaction.atomic():
                run = reward_model_run_create(
                    project=project,
                    snapshot=snapshot,
                    config=form.config(),
                    base_model=form.cleaned_data["base_model"] or None,
                    parent_version=parent,
                    user=request.user,
                    trigger=RunTrigger.UI,
                )
        except RewardModelError as exc:
            add_refusal(form, exc.message, target=(exc.field or "").removeprefix("config."), field=exc.field)
        else:
            messages.success(request, f"Run {run.pk} was created.")
            return redirect("rewardmodel-run", project_id=project.pk, run_id=run.pk)
    return _render_list(request, project, form=form, status=400 if form.errors else 200)


@login_required
@require_POST
def reward_model_score_view(request: HttpRequest, project_id: int) -> HttpResponse:
    """The playground: score the posted responses and show the list page with the scores (or the errors)."""
    project = managed_project(request, project_id)
    versions = list(RewardModelVersion.objects.filter(project=project).order_by("-number"))
    playground = PlaygroundForm(request.POST, versions=versions)
    scored = _playground_score(playground, project) if playground.is_valid() else None
    return _render_list(request, project, playground=playground, scored=scored, status=200 if scored else 400)


@login_required
@require_POST
def reward_model_rule_view(request: HttpRequest, project_id: int) -> HttpResponse:
    """Create, change or switch off the project's retrain rule."""
    project = managed_project(request, project_id)
    rule = RetrainRule.objects.filter(project=project).first()
    rule_form = RetrainRuleForm(request.POST, rule=rule)
    if rule_form.is_valid():
        data = rule_form.cleaned_data
        try:
            rule = retrain_rule_set(
                project=project,
                enabled=data["enabled"],
                min_new_pairs=data["min_new_pairs"],
                base_model=data["base_model"],
                config=rule_form.config(),
            )
        except RewardModelError as exc:
            name = (exc.field or "").removeprefix("config.")
            add_refusal(rule_form, exc.message, target="lora_r" if name == "lora" else name, field=exc.field)
        else:
            state = "on" if rule.enabled else "off"
            messages.success(request, f"The retrain rule is {state}: a run per {rule.min_new_pairs} new agreed pairs.")
            return redirect(reverse("rewardmodel-list", args=[project.pk]) + "#rule-h")
    return _render_list(request, project, rule_form=rule_form, status=400)


@login_required
@require_GET
def reward_model_run(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    project = managed_project(request, project_id)
    run = get_object_or_404(
        RewardModelRun.objects.filter(project=project).select_related("version", "parent_version", "snapshot"),
        pk=run_id,
    )
    context = {
        "project": project,
        "run": run,
        "version": getattr(run, "version", None),
        "base": base_model_label(run),
        "config_items": sorted((k, scrub_value(v)) for k, v in run.config.items()),
        "metric_items": sorted((k, v) for k, v in run.metrics.items() if isinstance(v, int | float) or v is None),
        "info_items": sorted((k, scrub_value(v)) for k, v in run.info.items() if not isinstance(v, dict | list)),
        "log_lines": [scrub_paths(str(line)) for line in run.log_tail],
        "page_data": {
            "finished": run.is_finished,
            "history": run.metrics_history,
            "state": run.state,
            "step": run.step,
            "total_steps": run.total_steps,
        },
    }
    return render(request, "frontend/rewardmodel/run.html", context)


@login_required
@require_POST
def reward_model_activate_view(request: HttpRequest, project_id: int, number: int) -> HttpResponse:
    project = managed_project(request, project_id)
    version = get_object_or_404(RewardModelVersion.objects.filter(project=project), number=number)
    reward_model_version_activate(version=version)
    messages.success(request, f"v{version.number} is now the active reward model.")
    return redirect("rewardmodel-list", project_id=project.pk)


@login_required
@require_GET
def reward_model_compare(request: HttpRequest, project_id: int) -> HttpResponse:
    project = managed_project(request, project_id)
    versions = list(RewardModelVersion.objects.filter(project=project).order_by("-number"))
    snapshots = ExportSnapshot.objects.filter(project=project, state=ExportState.SUCCEEDED).order_by("-id")[:50]
    chosen: dict[str, Any] = {"a": None, "b": None, "snapshot": None}
    result, error = None, None
    by_number = {v.number: v for v in versions}
    raw = {name: request.GET.get(name, "") for name in chosen}
    status = 200
    if raw["a"] or raw["b"]:
        try:
            for name in ("a", "b"):
                if not raw[name].isdigit() or int(raw[name]) not in by_number:
                    raise RewardModelError(name, f"choose version {name.upper()} among this project's versions")
                chosen[name] = int(raw[name])
            snapshot = None
            if raw["snapshot"]:
                snapshot = next((s for s in snapshots if str(s.pk) == raw["snapshot"]), None)
                if snapshot is None:
                    raise RewardModelError("snapshot", "choose one of this project's exports")
                chosen["snapshot"] = snapshot.pk
            result = reward_model_versions_compare(
                a=by_number[chosen["a"]], b=by_number[chosen["b"]], snapshot=snapshot
            )
        except RewardModelError as exc:
            error, status = exc.message, 400
    context = {
        "project": project,
        "versions": versions,
        "snapshots": snapshots,
        "chosen": chosen,
        "result": result,
        "error": error,
    }
    return render(request, "frontend/rewardmodel/compare.html", context, status=status)
