"""The Loop page of a project: policy samples into the queue, the leaderboard, proxy beside human preference.

For the project's managers only (outsiders 404, annotators 403). The sampling form is a
plain POST (CSRF-protected, works without JavaScript) to the same service as the API
(``rlloop.sampling``); the jobs it starts show the shared progress component. The
leaderboard and the proxy-vs-human figures are computed by ``rlloop.standings`` when the
page is drawn; ``loop.js`` draws the interval bars, the win-rate heatmap and the two
charts from a ``json_script`` block. Response sources are shown here, to managers, and
nowhere an annotator looks.
"""

from __future__ import annotations

import statistics
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from annotation.models import Project
from arpad.forms import add_refusal
from frontend.access import managed_project
from jobs.models import JobState, JobTrigger
from rlloop.models import PolicyRound, PolicyVersion, RoundMethod, SamplingJob, SamplingMode
from rlloop.sampling import MAX_FILE_PROMPTS, sampling_job_create
from rlloop.services import PolicyError
from rlloop.standings import cached, project_leaderboard, proxy_vs_human

JOBS_LISTED = 20
BOOTSTRAP_ROUNDS = 1000
# Below this many votes a source's rating is marked as resting on too little data.
FEW_VOTES = 30
PROMPT_FILE_MAX_BYTES = 20 * 1024 * 1024


class SamplingForm(forms.Form):
    """Sample policy versions into new tasks: which policies, how, which prompts, where."""

    policies = forms.TypedMultipleChoiceField(coerce=int, widget=forms.CheckboxSelectMultiple, label="Policies")
    anchor = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        label="Anchor",
        help_text="Answers one slot of every task: the previous policy or the reference.",
    )
    mode = forms.ChoiceField(choices=SamplingMode.choices, initial=SamplingMode.POOL, widget=forms.RadioSelect)
    responses_per_prompt = forms.IntegerField(
        required=False, min_value=2, max_value=9, label="Responses per task", help_text="Empty: the target's K."
    )
    prompts = forms.ChoiceField(
        choices=[
            ("unused", "the project's prompts no round trained on"),
            ("project", "all the project's prompts"),
            ("file", "a prompt file (below)"),
        ],
        initial="unused",
        label="Prompts",
    )
    prompt_file = forms.FileField(
        required=False, label="Prompt file", help_text='JSONL, one {"prompt": ..., "id": ...} per line.'
    )
    max_prompts = forms.IntegerField(min_value=1, initial=50, label="Max prompts")
    temperature = forms.FloatField(required=False, label="Temperature")
    top_p = forms.FloatField(required=False, label="Top-p")
    max_new_tokens = forms.IntegerField(required=False, label="Max new tokens")
    seed = forms.IntegerField(required=False, min_value=0, initial=0, label="Seed")
    priority = forms.IntegerField(initial=10, label="Priority", help_text="Higher is served first.")
    target = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Tasks go to")

    REFUSALS = {
        "policies": "policies",
        "anchor": "anchor",
        "mode": "mode",
        "responses_per_prompt": "responses_per_prompt",
        "prompts": "prompts",
        "max_prompts": "max_prompts",
        "priority": "priority",
        "target": "target",
        "sampling.temperature": "temperature",
        "sampling.top_p": "top_p",
        "sampling.max_new_tokens": "max_new_tokens",
        "sampling.seed": "seed",
    }

    def __init__(self, *args: Any, project: Project, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        versions = list(PolicyVersion.objects.filter(project=project).select_related("round").order_by("-number"))
        self.fields["policies"].choices = [(v.number, v.display_name) for v in versions]
        if versions and not self.is_bound:
            self.fields["policies"].initial = [versions[0].number]
        reference = next((v for v in versions if v.is_reference), None)
        self.fields["anchor"].choices = [("", "none")] + [
            (v.number, v.display_name + (" · reference" if v.is_reference else "")) for v in versions
        ]
        if reference is not None and len(versions) > 1 and not self.is_bound:
            self.fields["anchor"].initial = reference.number
        managed = Project.objects.managed_by(user).exclude(pk=project.pk).order_by("name")[:100]
        self.fields["target"].choices = [("", f"this project ({project.name})")] + [(p.pk, p.name) for p in managed]
        self.has_policy = bool(versions)
        self.lines: list[int] = []  # the file line of each prompt record, for errors

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("prompts") == "file" and not cleaned.get("prompt_file"):
            self.add_error("prompt_file", "Choose a prompt file, or another source of prompts.")
        return cleaned

    def sampling(self) -> dict[str, Any]:
        data = self.cleaned_data
        out = {k: data[k] for k in ("temperature", "top_p", "max_new_tokens") if data.get(k) is not None}
        out["seed"] = data.get("seed") or 0
        return out

    def records(self) -> list[Any] | None:
        """The uploaded prompt file's records, or None; a line that is not JSON is a form error naming it."""
        import json

        upload = self.cleaned_data.get("prompt_file")
        if self.cleaned_data.get("prompts") != "file" or upload is None:
            return None
        if upload.size > PROMPT_FILE_MAX_BYTES:
            self.add_error("prompt_file", f"At most {PROMPT_FILE_MAX_BYTES // (1024 * 1024)} MiB.")
            return None
        records: list[Any] = []
        self.lines = []
        for number, raw in enumerate(upload.read().decode("utf-8", errors="replace").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                records.append(json.loads(raw))
                self.lines.append(number)
            except ValueError as exc:
                self.add_error("prompt_file", f"line {number}: not JSON ({exc.msg})")
                return None
            if len(records) > MAX_FILE_PROMPTS:
                self.add_error("prompt_file", f"At most {MAX_FILE_PROMPTS} prompts.")
                return None
        return records

    def add_service_error(self, exc: PolicyError) -> None:
        field = exc.field or ""
        name = self.REFUSALS.get(field)
        if name is None and field.startswith("prompts["):
            index = int(field[len("prompts[") :].split("]")[0])
            line = self.lines[index] if index < len(self.lines) else index + 1
            rest = field.split("]", 1)[1].lstrip(".")
            self.add_error("prompt_file", f"line {line}{': ' + rest if rest else ''}: {exc.message}")
            return
        add_refusal(self, exc.message, target=name, field=field)


def _sampling_jobs(project: Project) -> list[SamplingJob]:
    return list(
        SamplingJob.objects.filter(project=project)
        .select_related("anchor", "target", "created_by", "reward_model")
        .prefetch_related("policies")
        .defer("metrics_history", "log_tail")
        .order_by("-id")[:JOBS_LISTED]
    )


def _standings(project: Project) -> dict[str, Any]:
    board = cached(project_leaderboard, project, rounds=BOOTSTRAP_ROUNDS)
    proxy = cached(proxy_vs_human, project, rounds=BOOTSTRAP_ROUNDS)
    for row in board["rows"]:
        row["few_votes"] = row["votes"] < FEW_VOTES
    return {"leaderboard": board, "proxy": proxy}


@login_required
@require_http_methods(["GET", "POST"])
def loop_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Sampling jobs and their form, the leaderboard, proxy vs human; POST starts a sampling job."""
    project = managed_project(request, project_id)
    form = SamplingForm(request.POST or None, request.FILES or None, project=project, user=request.user)
    if request.method == "POST" and form.is_valid():
        records = form.records()
        if not form.errors:
            data = form.cleaned_data
            versions = {v.number: v for v in PolicyVersion.objects.filter(project=project)}
            target = None
            if data.get("target") is not None:
                target = Project.objects.managed_by(request.user).filter(pk=data["target"]).first()
            try:
                with transaction.atomic():
                    job = sampling_job_create(
                        project=project,
                        policies=[versions[n] for n in data["policies"]],
                        target=target,
                        anchor=versions.get(data["anchor"]) if data.get("anchor") is not None else None,
                        mode=data["mode"],
                        responses_per_prompt=data.get("responses_per_prompt"),
                        prompts=data["prompts"],
                        prompt_records=records,
                        max_prompts=data["max_prompts"],
                        sampling=form.sampling(),
                        priority=data["priority"],
                        user=request.user,
                        trigger=JobTrigger.UI,
                    )
            except PolicyError as exc:
                form.add_service_error(exc)
            else:
                messages.success(request, f"Sampling job {job.pk} was created.")
                return redirect(reverse("loop", args=[project.pk]) + "#sampling")
    return _render(request, project, form=form, status=400 if form.errors else 200)


def _ppo_pace(project: Project) -> dict[str, Any] | None:
    """How fast PPO ran here: the newest succeeded PPO round's median seconds per update, and per
    rollout token (the cost of an update grows with rollouts × new tokens), for the cycle form's
    estimate. None before the project's first PPO round: a duration is not known before then."""
    rounds = PolicyRound.objects.filter(project=project, method=RoundMethod.PPO, state=JobState.SUCCEEDED)
    for round in rounds.order_by("-finished_at").only("number", "config", "metrics_history")[:5]:
        seconds = [
            p["time/update"] for p in round.metrics_history or [] if isinstance(p.get("time/update"), int | float)
        ]
        rollouts, tokens = round.config.get("rollouts_per_update"), round.config.get("max_new_tokens")
        if not seconds or not isinstance(rollouts, int) or not isinstance(tokens, int) or rollouts * tokens <= 0:
            continue
        median = statistics.median(seconds)
        return {
            "round": round.number,
            "seconds_per_update": median,
            "rollouts": rollouts,
            "tokens": tokens,
            "seconds_per_rollout_token": median / (rollouts * tokens),
        }
    return None


def _render(
    request: HttpRequest,
    project: Project,
    *,
    form: SamplingForm | None = None,
    cycle_form: Any = None,
    rule_form: Any = None,
    status: int = 200,
) -> HttpResponse:
    from rlloop.models import LoopRule

    standings = _standings(project)
    rule = LoopRule.objects.filter(project=project).select_related("last_cycle").first()
    if rule_form is None:
        initial = {"enabled": rule.enabled, "min_new_pairs": rule.min_new_pairs} if rule else None
        rule_form = RuleForm(initial=initial)
    context = {
        "project": project,
        "form": form or SamplingForm(project=project, user=request.user),
        "jobs": _sampling_jobs(project),
        "cycle_form": cycle_form or CycleForm(project=project),
        "cycles": _cycle_rows(project),
        "rule": rule,
        "rule_form": rule_form,
        "board": standings["leaderboard"],
        "proxy": standings["proxy"],
        "few_votes": FEW_VOTES,
        "page_data": {**standings, "ppo_pace": _ppo_pace(project)},
    }
    return render(request, "frontend/rlloop/loop.html", context, status=status)


# --- cycles -------------------------------------------------------------------------------------


class CycleForm(forms.Form):
    """Run one cycle: which policy, and the options usually changed; the rest are the steps' defaults."""

    prefix = "cycle"
    policy = forms.TypedChoiceField(coerce=int, label="Policy to train")
    # Initial values sized for a CPU (a few minutes with the 135M demo policy); a GPU takes far more.
    updates = forms.IntegerField(required=False, min_value=1, initial=8, label="PPO updates")
    rollouts = forms.IntegerField(required=False, min_value=1, initial=16, label="Rollouts per update")
    lora_r = forms.IntegerField(
        required=False, min_value=0, initial=16, label="LoRA rank", help_text="0: every weight."
    )
    max_new_tokens = forms.IntegerField(required=False, min_value=1, initial=64, label="Max new tokens")
    ppo_prompts = forms.IntegerField(required=False, min_value=1, label="PPO prompts", help_text="Empty: all.")
    sample_prompts = forms.IntegerField(min_value=1, initial=50, label="Prompts to sample")
    priority = forms.IntegerField(initial=10, label="Task priority")

    REFUSALS = {
        "policy": "policy",
        "options.ppo.config": "updates",
        "options.ppo.max_prompts": "ppo_prompts",
        "options.sampling.max_prompts": "sample_prompts",
        "options.sampling.priority": "priority",
    }

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        versions = list(PolicyVersion.objects.filter(project=project).select_related("round").order_by("-number"))
        self.fields["policy"].choices = [(v.number, v.display_name) for v in versions]

    def options(self) -> dict[str, Any]:
        data = self.cleaned_data
        ppo: dict[str, Any] = {}
        config: dict[str, Any] = {}
        if data.get("updates"):
            config["updates"] = data["updates"]
        if data.get("rollouts"):
            config["rollouts_per_update"] = data["rollouts"]
            config["minibatch_size"] = min(data["rollouts"], 8)
        if data.get("lora_r"):
            config["lora"] = {"r": data["lora_r"], "alpha": 2 * data["lora_r"]}
        if data.get("max_new_tokens"):
            config["max_new_tokens"] = data["max_new_tokens"]
        if config:
            ppo["config"] = config
        if data.get("ppo_prompts"):
            ppo["max_prompts"] = data["ppo_prompts"]
        options: dict[str, Any] = {"sampling": {"max_prompts": data["sample_prompts"], "priority": data["priority"]}}
        if ppo:
            options["ppo"] = ppo
        return options

    def add_service_error(self, exc: PolicyError) -> None:
        field = exc.field or ""
        name = next((n for prefix, n in self.REFUSALS.items() if field.startswith(prefix)), None)
        add_refusal(self, exc.message, target=name, field=field)


class RuleForm(forms.Form):
    prefix = "rule"
    enabled = forms.BooleanField(required=False, initial=False, label="Start cycles by themselves")
    min_new_pairs = forms.IntegerField(min_value=1, initial=200, label="New agreed pairs per cycle")


def _cycles(project: Project) -> list[Any]:
    from rlloop.models import LoopCycle

    return list(
        LoopCycle.objects.filter(project=project)
        .select_related(
            "policy",
            "snapshot",
            "reward_model_run",
            "policy_round",
            "policy_round__result",
            "sampling_job",
            "created_by",
        )
        .order_by("-number")[:JOBS_LISTED]
    )


def _cycle_rows(project: Project) -> list[dict[str, Any]]:
    from rlloop.cycle import STEP_JOBS
    from rlloop.models import CycleStep

    rows = []
    for cycle in _cycles(project):
        steps = [
            {"label": CycleStep(step).label, "job": getattr(cycle, field), "current": cycle.step == step}
            for step, field in STEP_JOBS.items()
        ]
        rows.append({"cycle": cycle, "steps": steps})
    return rows


@login_required
@require_http_methods(["POST"])
def loop_cycle_start(request: HttpRequest, project_id: int) -> HttpResponse:
    from rlloop.cycle import cycle_start

    project = managed_project(request, project_id)
    form = CycleForm(request.POST, project=project)
    if form.is_valid():
        policy = PolicyVersion.objects.get(project=project, number=form.cleaned_data["policy"])
        try:
            cycle = cycle_start(
                project=project, policy=policy, options=form.options(), user=request.user, trigger=JobTrigger.UI
            )
        except PolicyError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Cycle {cycle.number} was started: its export is queued.")
            return redirect(reverse("loop", args=[project.pk]) + "#cycles")
    return _render(request, project, cycle_form=form, status=400)


@login_required
@require_http_methods(["POST"])
def loop_cycle_cancel(request: HttpRequest, project_id: int, cycle_id: int) -> HttpResponse:
    from django.shortcuts import get_object_or_404

    from rlloop.cycle import cycle_cancel
    from rlloop.models import LoopCycle

    project = managed_project(request, project_id)
    cycle = get_object_or_404(LoopCycle, project=project, pk=cycle_id)
    try:
        cycle_cancel(cycle=cycle, user=request.user)
    except PolicyError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Cycle {cycle.number} was cancelled.")
    return redirect(reverse("loop", args=[project.pk]) + "#cycles")


@login_required
@require_http_methods(["POST"])
def loop_rule_view(request: HttpRequest, project_id: int) -> HttpResponse:
    from rlloop.cycle import loop_rule_set

    project = managed_project(request, project_id)
    form = RuleForm(request.POST)
    if not form.is_valid():
        return _render(request, project, rule_form=form, status=400)
    try:
        loop_rule_set(project=project, enabled=form.cleaned_data["enabled"],
                      min_new_pairs=form.cleaned_data["min_new_pairs"])  # fmt: skip
    except PolicyError as exc:
        form.add_error(None, exc.message)
        return _render(request, project, rule_form=form, status=400)
    state = "on" if form.cleaned_data["enabled"] else "off"
    messages.success(
        request, f"The loop rule is {state}: a cycle per {form.cleaned_data['min_new_pairs']} new agreed pairs."
    )
    return redirect(reverse("loop", args=[project.pk]) + "#cycles")
