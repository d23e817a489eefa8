"""Manager pages of the policies and their training rounds (PPO, SFT).

For the project's managers only: outsiders get 404, annotators 403. Every change is a
plain form POST (CSRF-protected, works without JavaScript) that calls the same services
as the API (``rlloop.services``): register a checkpoint, make a version the reference,
create a round. Progress bars and cancel are the shared job component
(``{% job_progress %}`` + ``jobs.js``); ``rlloop.js`` draws a round's curves from its
updates and the reward-vs-KL plot of the rounds with ``plot.js``. Data reaches the
scripts through ``json_script`` blocks, never inline.

Users see a policy's ``display_name``, never its directory: the checkpoint is chosen by
its registered name, and absolute paths in a round's log are replaced before display.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.models import Project, Response
from arpad.forms import add_refusal
from exports.models import ExportSnapshot, ExportState
from frontend.access import managed_project
from frontend.text import scrub_paths, scrub_value
from jobs.models import JobState, JobTrigger
from rewardmodel.models import RewardModelVersion
from rlloop.models import PolicyRound, PolicyVersion, RoundMethod
from rlloop.services import (
    SFT_SOURCES,
    PolicyError,
    checkpoint_names,
    policy_register,
    policy_round_create,
    policy_set_reference,
    round_config_fields,
    round_gold_reward_model,
)

ROUNDS_LISTED = 30
# Final metrics shown in the version table, in this order, when a version has them.
VERSION_METRICS = [
    ("objective/scores", "Score"),
    ("objective/kl", "KL"),
    ("eval/loss", "Eval loss"),
]
SFT_SOURCE_LABELS = {
    "consensus_best": "each group's consensus-best response, from an export snapshot",
    "demonstrations": "the responses of one source (e.g. human)",
}


def _problems(exc: PolicyError, prefix: str) -> list[tuple[str | None, str]]:
    """A service refusal as (option name or None, message) pairs.

    Option errors come as ``prefix.<name>`` or as ``prefix`` with the trainer's
    "name must ...; other must ..." list; each problem is filed under the name it starts with.
    """
    field = exc.field or ""
    if field.startswith(f"{prefix}."):
        return [(field.removeprefix(f"{prefix}."), exc.message)]
    if field != prefix:
        return [(None, exc.message)]
    found: list[tuple[str | None, str]] = []
    for problem in exc.message.split("; "):
        name, _, rest = problem.partition(" ")
        found.append((name, rest) if rest else (None, problem))
    return found


class RegisterForm(forms.Form):
    """Register a checkpoint the operator made available, by name, with its generation defaults."""

    prefix = "register"
    # A choice among the registered names, never a typed path (rlloop.bases).
    name = forms.ChoiceField(label="Checkpoint")
    is_reference = forms.BooleanField(required=False, label="Make it the project's reference")
    temperature = forms.FloatField(required=False, label="Temperature")
    top_p = forms.FloatField(required=False, label="Top-p")
    max_new_tokens = forms.IntegerField(required=False, label="Max new tokens")
    notes = forms.CharField(required=False, max_length=500, label="Notes")

    GENERATION_FIELDS = ("temperature", "top_p", "max_new_tokens")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].choices = [(n, n) for n in checkpoint_names()]
        for name in self.GENERATION_FIELDS:
            self.fields[name].help_text = "Empty: the checkpoint's default."
        self.fields["temperature"].widget.attrs.update(step="any", placeholder="0.7")
        self.fields["top_p"].widget.attrs.update(step="any", placeholder="1.0")
        self.fields["max_new_tokens"].widget.attrs.update(placeholder="256")

    def generation(self) -> dict[str, Any]:
        return {n: self.cleaned_data[n] for n in self.GENERATION_FIELDS if self.cleaned_data[n] is not None}

    def add_service_error(self, exc: PolicyError) -> None:
        for name, message in _problems(exc, "generation"):
            add_refusal(self, message, target="name" if exc.field == "name" else name, field=name)


def _bounds(method: str) -> dict[str, tuple[float, float]]:
    """The trainer's own bounds (read by its validation too): shown as the inputs' min and max."""
    if method == RoundMethod.PPO:
        from rlloop.ppo import BOUNDS
    else:
        from rlloop.sft import BOUNDS
    return BOUNDS


class RoundForm(forms.Form):
    """A new round: the method, what it trains and against what, and the options usually changed.

    The options of each method are named after the trainer's config (``rlloop.ppo.PPOConfig``,
    ``rlloop.sft.SFTConfig``); where both have one of a name, the form's field is prefixed.
    """

    method = forms.ChoiceField(choices=RoundMethod.choices, initial=RoundMethod.PPO, widget=forms.RadioSelect)
    policy = forms.TypedChoiceField(coerce=int, label="Policy to train")
    reward_model = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Reward model", help_text="PPO: scores the rollouts."
    )
    reference = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        label="KL reference",
        help_text="PPO: the model the KL penalty keeps the policy close to.",
    )
    gold_reward_model = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        label="Gold reward model",
        help_text="PPO: only watches. Its score of the same rollouts is drawn beside the reward model's; "
        "it is never trained on.",
    )
    snapshot = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        label="Export snapshot",
        help_text="PPO: its training prompts instead of all the project's prompts. SFT: the consensus-best responses.",
    )
    sft_source = forms.ChoiceField(
        choices=[(source, SFT_SOURCE_LABELS[source]) for source in SFT_SOURCES],
        required=False,
        initial="consensus_best",
        label="Demonstrations",
    )
    response_source = forms.ChoiceField(required=False, label="Response source")
    max_prompts = forms.IntegerField(
        required=False, min_value=1, label="Max prompts", help_text="Empty: all (a seeded sample above the limit)."
    )
    lora_r = forms.IntegerField(
        required=False, min_value=0, initial=0, label="LoRA rank", help_text="0: train every weight."
    )
    # PPO
    updates = forms.IntegerField(required=False, label="Updates")
    rollouts_per_update = forms.IntegerField(required=False, label="Rollouts per update")
    minibatch_size = forms.IntegerField(required=False, label="Minibatch size")
    ppo_epochs = forms.IntegerField(required=False, label="PPO epochs")
    ppo_learning_rate = forms.FloatField(required=False, label="Learning rate")
    kl_coef = forms.FloatField(required=False, label="KL coefficient (β)")
    adaptive_kl = forms.BooleanField(required=False, label="Adaptive KL controller")
    target_kl = forms.FloatField(required=False, label="Target KL", help_text="Nats per response (adaptive only).")
    max_new_tokens = forms.IntegerField(required=False, label="Max new tokens")
    temperature = forms.FloatField(required=False, label="Temperature")
    # SFT
    epochs = forms.IntegerField(required=False, label="Epochs")
    sft_learning_rate = forms.FloatField(required=False, label="Learning rate")
    batch_size = forms.IntegerField(required=False, label="Batch size")
    max_length = forms.IntegerField(required=False, label="Max tokens per example")

    # trainer option -> form field, per method
    OPTIONS = {
        RoundMethod.PPO: {
            "updates": "updates",
            "rollouts_per_update": "rollouts_per_update",
            "minibatch_size": "minibatch_size",
            "ppo_epochs": "ppo_epochs",
            "learning_rate": "ppo_learning_rate",
            "kl_coef": "kl_coef",
            "adaptive_kl": "adaptive_kl",
            "target_kl": "target_kl",
            "max_new_tokens": "max_new_tokens",
            "temperature": "temperature",
        },
        RoundMethod.SFT: {
            "epochs": "epochs",
            "learning_rate": "sft_learning_rate",
            "batch_size": "batch_size",
            "max_length": "max_length",
        },
    }
    # service field -> form field
    REFUSALS = {
        "method": "method",
        "policy": "policy",
        "reward_model": "reward_model",
        "reference": "reference",
        "gold_reward_model": "gold_reward_model",
        "snapshot": "snapshot",
        "data.source": "sft_source",
        "data.response_source": "response_source",
        "data.max_prompts": "max_prompts",
    }

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        versions = list(PolicyVersion.objects.filter(project=project).select_related("round").order_by("-number"))
        self.fields["policy"].choices = [(v.number, v.display_name) for v in versions]
        reference = next((v for v in versions if v.is_reference), None)
        self.fields["reference"].choices = [
            ("", f"the project's reference ({reference.display_name})" if reference else "the policy itself")
        ] + [(v.number, v.display_name) for v in versions]
        reward_models = list(RewardModelVersion.objects.filter(project=project).order_by("-number"))
        active = next((v for v in reward_models if v.is_active), None)
        self.fields["reward_model"].choices = [
            ("", f"the active one (v{active.number})" if active else "the active one (none yet)")
        ] + [(v.number, f"v{v.number}" + (" (active)" if v.is_active else "")) for v in reward_models]
        self.fields["gold_reward_model"].choices = [("", "none")] + [
            (v.number, f"v{v.number}" + (" (active)" if v.is_active else "")) for v in reward_models
        ]
        snapshots = ExportSnapshot.objects.filter(project=project, state=ExportState.SUCCEEDED).order_by("-id")[:50]
        self.fields["snapshot"].choices = [("", "none")] + [
            (s.pk, f"#{s.pk} · {_group_count(s)} groups · {s.created_at:%Y-%m-%d %H:%M}") for s in snapshots
        ]
        sources = (
            Response.objects.filter(prompt__project=project)
            .exclude(source="")
            .values_list("source", flat=True)
            .distinct()
            .order_by("source")[:100]
        )
        self.fields["response_source"].choices = [("", "choose a source")] + [(s, s) for s in sources]
        for method, options in self.OPTIONS.items():
            defaults = round_config_fields(method)
            bounds = _bounds(method)
            for option, name in options.items():
                field = self.fields[name]
                field.initial = defaults.get(option)
                if option in bounds:
                    low, high = bounds[option]
                    field.widget.attrs.update(min=low, max=high)
                if isinstance(field, forms.FloatField):
                    field.widget.attrs["step"] = "any"
        self.has_policy = bool(versions)

    # Fields only one method reads: the other method's are hidden, and their errors dropped.
    ONLY_FOR = {
        RoundMethod.PPO: {"reward_model", "reference", "gold_reward_model", *OPTIONS[RoundMethod.PPO].values()},
        RoundMethod.SFT: {"sft_source", "response_source", *OPTIONS[RoundMethod.SFT].values()},
    }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        method = cleaned.get("method")
        for other, names in self.ONLY_FOR.items():
            if method is not None and other != method:
                for name in names - self.ONLY_FOR[method]:
                    self._errors.pop(name, None)
                    cleaned.pop(name, None)
        return cleaned

    @property
    def chosen_method(self) -> str:
        """The method the form shows first: the one posted, else PPO."""
        value = self.data.get(self.add_prefix("method")) if self.is_bound else None
        return value if value in RoundMethod.values else RoundMethod.PPO

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        method = data["method"]
        config = {option: data[name] for option, name in self.OPTIONS[method].items() if data.get(name) is not None}
        if data.get("lora_r"):
            config["lora"] = {"r": data["lora_r"], "alpha": 2 * data["lora_r"]}
        return config

    def round_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        out: dict[str, Any] = {}
        if data.get("max_prompts") is not None:
            out["max_prompts"] = data["max_prompts"]
        if data["method"] == RoundMethod.SFT:
            # Empty: the service's default (consensus-best with a snapshot, else demonstrations).
            if data.get("sft_source"):
                out["source"] = data["sft_source"]
            if data.get("sft_source") != "consensus_best" and data.get("response_source"):
                out["response_source"] = data["response_source"]
            elif data.get("sft_source") == "demonstrations":
                out["response_source"] = ""
        return out

    def uses_snapshot(self) -> bool:
        data = self.cleaned_data
        return data["method"] == RoundMethod.PPO or data.get("sft_source") != "demonstrations"

    def add_service_error(self, exc: PolicyError, method: str) -> None:
        if exc.field in self.REFUSALS:
            add_refusal(self, exc.message, target=self.REFUSALS[exc.field])
            return
        options = self.OPTIONS.get(method, {})
        for option, message in _problems(exc, "config"):
            if option in ("lora", "lora.r"):
                add_refusal(self, message, target="lora_r")
            else:  # an option the form does not show: the form's own error, named
                add_refusal(self, message, target=options.get(option or ""), field=option)


def _group_count(snapshot: ExportSnapshot) -> int:
    groups = snapshot.counts.get("groups") or {}
    return int(sum(v for v in groups.values() if isinstance(v, int))) if isinstance(groups, dict) else 0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _final(round: PolicyRound, key: str) -> float | None:
    """A round's final value of ``key``: its result metrics, else the last recorded point."""
    value = _number(round.metrics.get(key))
    if value is not None:
        return value
    for point in reversed(round.metrics_history or []):
        value = _number(point.get(key))
        if value is not None:
            return value
    return None


def _reward_vs_kl(project: Project) -> list[dict[str, Any]]:
    """Each succeeded PPO round's final KL and score; one series per reward model (scores of two differ in scale)."""
    series: dict[int, dict[str, Any]] = {}
    rounds = (
        PolicyRound.objects.filter(project=project, method=RoundMethod.PPO, state=JobState.SUCCEEDED)
        .select_related("reward_model")
        .defer("log_tail", "samples")
        .order_by("number")
    )
    for r in rounds:
        kl, score = _final(r, "objective/kl"), _final(r, "objective/scores")
        if kl is None or score is None:
            continue
        number = r.reward_model.number if r.reward_model_id else 0
        entry = series.setdefault(number, {"name": f"scored by reward model v{number}", "points": [], "labels": []})
        entry["points"].append([kl, score])
        entry["labels"].append(f"round {r.number}")
    return [series[n] for n in sorted(series)]


def _generation_text(generation: dict[str, Any]) -> str:
    parts = []
    if "temperature" in generation:
        parts.append(f"T {generation['temperature']:g}")
    if "top_p" in generation:
        parts.append(f"top-p {generation['top_p']:g}")
    if "max_new_tokens" in generation:
        parts.append(f"{generation['max_new_tokens']} tokens")
    return " · ".join(parts)


def _version_rows(project: Project) -> list[dict[str, Any]]:
    versions = PolicyVersion.objects.filter(project=project).select_related(
        "parent", "parent__round", "round", "reward_model", "reference", "reference__round"
    )
    return [
        {
            "version": v,
            "generation": _generation_text(v.generation or {}),
            "metrics": [_number(v.metrics.get(key)) for key, _ in VERSION_METRICS],
        }
        for v in versions.order_by("-number")
    ]


def _round_rows(project: Project) -> list[PolicyRound]:
    return list(
        PolicyRound.objects.filter(project=project)
        .select_related("policy", "policy__round", "reward_model", "reference", "result", "created_by")
        .defer("metrics_history", "log_tail", "samples", "info")
        .order_by("-number")[:ROUNDS_LISTED]
    )


def _render_list(
    request: HttpRequest,
    project: Project,
    *,
    round_form: RoundForm | None = None,
    register_form: RegisterForm | None = None,
    status: int = 200,
) -> HttpResponse:
    round_form = round_form or RoundForm(project=project)
    register_form = register_form or RegisterForm()
    context = {
        "project": project,
        "versions": _version_rows(project),
        "metric_labels": [label for _, label in VERSION_METRICS],
        "rounds": _round_rows(project),
        "form": round_form,
        "register_form": register_form,
        "has_checkpoints": bool(register_form.fields["name"].choices),
        "page_data": {"rewardVsKl": _reward_vs_kl(project)},
    }
    return render(request, "frontend/rlloop/list.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def policy_list(request: HttpRequest, project_id: int) -> HttpResponse:
    """The policy versions, the rounds, the reward-vs-KL plot; POST creates a round."""
    project = managed_project(request, project_id)
    form = RoundForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        method = data["method"]
        policy = PolicyVersion.objects.get(project=project, number=data["policy"])
        is_ppo = method == RoundMethod.PPO
        reward_model = reference = gold_reward_model = snapshot = None
        if is_ppo and data["reward_model"] is not None:
            reward_model = RewardModelVersion.objects.get(project=project, number=data["reward_model"])
        if is_ppo and data["gold_reward_model"] is not None:
            gold_reward_model = RewardModelVersion.objects.get(project=project, number=data["gold_reward_model"])
        if is_ppo and data["reference"] is not None:
            reference = PolicyVersion.objects.get(project=project, number=data["reference"])
        if data["snapshot"] is not None and form.uses_snapshot():
            snapshot = ExportSnapshot.objects.get(project=project, pk=data["snapshot"])
        try:
            with transaction.atomic():
                round = policy_round_create(
                    project=project,
                    method=method,
                    policy=policy,
                    reward_model=reward_model,
                    reference=reference,
                    gold_reward_model=gold_reward_model,
                    snapshot=snapshot,
                    data=form.round_data(),
                    config=form.config(),
                    user=request.user,
                    trigger=JobTrigger.UI,
                )
        except PolicyError as exc:
            form.add_service_error(exc, method)
        else:
            # No state in the message: the page's progress component shows it, live.
            messages.success(request, f"{round.get_method_display()} round {round.number} was created.")
            return redirect("policy-round", project_id=project.pk, round_id=round.pk)
    return _render_list(request, project, round_form=form, status=400 if form.errors else 200)


@login_required
@require_POST
def policy_register_view(request: HttpRequest, project_id: int) -> HttpResponse:
    project = managed_project(request, project_id)
    form = RegisterForm(request.POST)
    if form.is_valid():
        try:
            version = policy_register(
                project=project,
                name=form.cleaned_data["name"],
                is_reference=form.cleaned_data["is_reference"],
                generation=form.generation(),
                notes=form.cleaned_data["notes"],
                user=request.user,
            )
        except PolicyError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"{version.display_name} is registered.")
            return redirect(reverse("policy-list", args=[project.pk]) + "#versions")
    return _render_list(request, project, register_form=form, status=400)


@login_required
@require_POST
def policy_reference_view(request: HttpRequest, project_id: int, number: int) -> HttpResponse:
    project = managed_project(request, project_id)
    version = get_object_or_404(PolicyVersion.objects.filter(project=project).select_related("round"), number=number)
    policy_set_reference(version=version)
    messages.success(request, f"{version.display_name} is now the project's reference.")
    return redirect(reverse("policy-list", args=[project.pk]) + "#versions")


def _flat_info(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """Scalars of a round's info, one level of objects flattened; paths hidden."""
    items: list[tuple[str, Any]] = []
    for key, value in info.items():
        if isinstance(value, dict):
            items += [(f"{key}.{k}", v) for k, v in value.items() if not isinstance(v, dict | list)]
        elif not isinstance(value, list):
            items.append((key, value))
    return sorted((k, scrub_value(v)) for k, v in items)


def _data_text(round: PolicyRound) -> str:
    data = round.data or {}
    limit = data.get("max_prompts")
    if round.method == RoundMethod.PPO:
        text = f"the training prompts of export #{round.snapshot_id}" if round.snapshot_id else "the project's prompts"
    elif data.get("source") == "consensus_best":
        text = f"the consensus-best responses of export #{round.snapshot_id}"
    else:
        text = f"the responses of source “{data.get('response_source', '')}”"
    return f"{text} (at most {limit})" if limit else text


def _score_sd(round: PolicyRound) -> dict[str, float] | None:
    """The held-out score spread of a PPO round's reward model and of its gold, when it watches one.

    The two score on their own scales; the page compares their gains in these units.
    """
    try:
        gold = round_gold_reward_model(round) if round.method == RoundMethod.PPO else None
    except PolicyError:
        return None
    if gold is None or round.reward_model is None:
        return None
    spreads = {
        "proxy": (round.reward_model.metrics or {}).get("reward_std"),
        "gold": (gold.metrics or {}).get("reward_std"),
    }
    if not all(isinstance(v, int | float) and v > 0 for v in spreads.values()):
        return None
    return {k: float(v) for k, v in spreads.items()}


@login_required
@require_GET
def policy_round_view(request: HttpRequest, project_id: int, round_id: int) -> HttpResponse:
    project = managed_project(request, project_id)
    round = get_object_or_404(
        PolicyRound.objects.filter(project=project).select_related(
            "policy", "policy__round", "reference", "reference__round", "reward_model", "result", "created_by"
        ),
        pk=round_id,
    )
    tables = [t for t in (round.samples or []) if isinstance(t, dict) and isinstance(t.get("rows"), list)]
    chosen = tables[-1] if tables else None
    wanted = request.GET.get("samples", "")
    if wanted.isdigit():
        chosen = next((t for t in tables if str(t.get("step")) == wanted), chosen)
    context = {
        "project": project,
        "round": round,
        "result": getattr(round, "result", None),
        "data_text": _data_text(round),
        "gold_reward_model": (round.data or {}).get("gold_reward_model"),
        "config_items": sorted(round.config.items()),
        "metric_items": sorted((k, v) for k, v in round.metrics.items() if _number(v) is not None),
        "info_items": _flat_info(round.info or {}),
        "log_lines": [scrub_paths(str(line)) for line in round.log_tail],
        "tables": tables,
        "samples": chosen,
        "page_data": {
            "method": round.method,
            "finished": round.is_finished,
            "total": round.total_steps,
            "history": round.metrics_history,
            "score_sd": _score_sd(round),
            "samples": tables,
            "api": reverse("api-rl-round", args=[project.pk, round.pk]),
        },
    }
    return render(request, "frontend/rlloop/round.html", context)
