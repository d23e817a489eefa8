"""Manager pages: the agreement dashboard and the export snapshots of a project.

Both are for the project's managers only: an outsider gets 404 (the project does not exist
for them), an annotator of the project 403. The figures come from
:func:`annotation.reports.agreement_report` (the same JSON as the API), the trend from
:mod:`annotation.trends` and the threshold preview from :mod:`annotation.preview`. The
pages carry their chart data in ``json_script`` blocks that ``dashboard.js`` /
``exports_page.js`` read and draw with ``plot.js``: no inline script, under the CSP.

The export page creates a snapshot with a plain form POST (CSRF-protected, works
without JavaScript) and polls ``project-exports-table`` (an HTML fragment) while a
snapshot is queued or running. Files download through the API's file view
(``api-export-file``), which checks the same permissions for a session.
"""

from __future__ import annotations

from dataclasses import fields
from math import comb
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from annotation.aggregate import TIE_POLICIES, WEIGHTINGS, MajorityConfig
from annotation.agreement_data import ProjectPairVotes, project_pair_votes
from annotation.models import Judgement, Project
from annotation.project_preview import project_preview
from annotation.reports import (
    DEFAULT_LOW_AGREEMENT_BELOW,
    DEFAULT_MIN_OVERLAP,
    DEFAULT_POSITION_BIAS_P,
    DEFAULT_TOO_FAST_MS,
    agreement_report,
)
from annotation.trends import DEFAULT_POINTS, TREND_BY, agreement_trend
from exports.models import ExportSnapshot, ExportState
from exports.params import BOUNDS, PAIR_WEIGHTS, SPLIT_SEED_MAX_CHARS, ExportParams, InvalidParams
from frontend.access import managed_project

DASHBOARD_BOOTSTRAP = 500
"""Bootstrap resamples behind the dashboard's intervals (the API's default is 1000)."""
EXPORTS_LISTED = 50

_DEFAULTS = {f.name: f.default for f in fields(ExportParams)}


def preview_curves(
    project: Project, base: MajorityConfig | None = None, data: ProjectPairVotes | None = None
) -> dict[str, Any]:
    """The threshold preview of ``project`` as JSON (the same as the API's preview endpoint)."""
    return project_preview(project, base, extra_thresholds=(project.agreement_threshold,), data=data)


# --- the agreement dashboard -------------------------------------------------------------------


class DashboardForm(forms.Form):
    """What the dashboard's GET parameters may change: the trend's checkpoints and the flag thresholds."""

    trend = forms.ChoiceField(
        choices=[("count", "by judgement count"), ("day", "per day"), ("week", "per week")],
        required=False,
        initial="count",
        label="Trend",
    )
    low_agreement_below = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        required=False,
        initial=DEFAULT_LOW_AGREEMENT_BELOW,
        label="Low agreement below",
        help_text="Leave-one-out agreement under which an annotator is flagged.",
    )
    position_bias_p = forms.FloatField(
        min_value=1e-12,
        max_value=1.0,
        required=False,
        initial=DEFAULT_POSITION_BIAS_P,
        label="Position bias p below",
        help_text="Binomial p-value of first-shown picks under which an annotator is flagged.",
    )
    too_fast_s = forms.FloatField(
        min_value=0.0,
        max_value=3600.0,
        required=False,
        initial=DEFAULT_TOO_FAST_MS / 1000,
        label="Too fast below (s)",
        help_text="Median seconds per judgement under which an annotator is flagged.",
    )
    min_overlap = forms.IntegerField(
        min_value=1,
        max_value=1_000_000,
        required=False,
        initial=DEFAULT_MIN_OVERLAP,
        label="Min. shared pairs",
        help_text="Shared response pairs two annotators need for a Cohen's kappa.",
    )

    def options(self) -> dict[str, Any]:
        """The report and trend options: the cleaned values, the defaults where left empty."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}

        def value(name: str) -> Any:
            given = data.get(name)
            return self.fields[name].initial if given in (None, "") else given

        return {
            "trend": value("trend"),
            "low_agreement_below": float(value("low_agreement_below")),
            "position_bias_p": float(value("position_bias_p")),
            "too_fast_ms": float(value("too_fast_s")) * 1000.0,
            "min_overlap": int(value("min_overlap")),
        }


def _statistic_cards(report: dict[str, Any]) -> list[dict[str, Any]]:
    pairwise = report["pairwise"]
    cards = [
        ("Percent agreement", "ties count as a category", pairwise["percent_agreement"], "pairs of votes", "pairs"),
        (
            "Percent agreement",
            "without ties (MT-Bench)",
            pairwise["percent_agreement_no_ties"],
            "pairs of votes",
            "pairs",
        ),
        ("Fleiss' kappa", "pair outcomes A / tie / B", pairwise["fleiss_kappa"], "units", "n_units"),
        (
            "Krippendorff's alpha",
            "nominal",
            pairwise["krippendorff_alpha"]["nominal"],
            "units",
            "n_units",
        ),
        (
            "Krippendorff's alpha",
            "ordinal (B < tie < A)",
            pairwise["krippendorff_alpha"]["ordinal"],
            "units",
            "n_units",
        ),
    ]
    ranking = report.get("ranking")
    if ranking is not None:
        cards += [
            ("Kendall's W", "mean over items", ranking["kendall_w"], "items", "n_items"),
            ("Kendall's tau-b", "mean over rater pairs and items", ranking["mean_tau_b"], "items", "n_items"),
        ]
    return [
        {"title": title, "subtitle": subtitle, "stat": stat, "over": f"{stat.get(key, 0):,} {unit}"}
        for title, subtitle, stat, unit, key in cards
    ]


def _trend_caution(trend: dict[str, Any]) -> str | None:
    """Why the trend cannot be read (yet), or None; the chart itself then says "Not enough data"."""
    points = trend["points"]
    if not points:
        return None  # no judgements: the chart says "No data yet"
    if trend["first_overlap"] is None:
        return (
            "Not enough data for a trend: no response pair has two votes yet "
            "(agreement needs items judged by two or more annotators)."
        )
    defined = [p for p in points if any(p.get(name) is not None for name in trend["statistics"])]
    if len(defined) < 2:
        where = f" (every judgement on a shared item falls in one {trend['by']})" if trend["by"] != "count" else ""
        return f"Not enough data for a trend: one checkpoint has a figure{where}."
    units, few = points[-1]["units_with_overlap"], trend["few_units_below"]
    if units < few:
        return (
            f"Not enough data for a trend to mean much: its figures rest on {units} response "
            f"pair{'s' if units != 1 else ''} with two or more votes (fewer than {few})."
        )
    return None


def _heatmap(report: dict[str, Any]) -> dict[str, Any]:
    """Cohen's kappa between every two annotators as a symmetric matrix (None: no kappa)."""
    labels = [row["username"] for row in report["annotators"]]
    index = {name: i for i, name in enumerate(labels)}
    n = len(labels)
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
    notes: list[list[str | None]] = [[None] * n for _ in range(n)]
    for pair in report["pairwise"]["cohen_kappa"]["pairs"]:
        first, second = (index.get(name) for name in pair["annotators"])
        if first is None or second is None:
            continue
        note = f"{pair['shared_units']} shared pairs" + (f"; {pair['reason']}" if pair["reason"] else "")
        for i, j in ((first, second), (second, first)):
            matrix[i][j] = pair["kappa"]
            notes[i][j] = note
    return {"labels": labels, "matrix": matrix, "notes": notes}


def _annotator_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for row in report["annotators"]:
        time_ms = row["median_time_ms"]["value"]
        rows.append({**row, "median_time_s": None if time_ms is None else time_ms / 1000.0})
    return rows


@login_required
@require_GET
def project_dashboard(request: HttpRequest, project_id: int) -> HttpResponse:
    """The agreement dashboard: figures with intervals, trend, annotators, kappa heatmap, contested, preview."""
    project = managed_project(request, project_id)
    form = DashboardForm(request.GET or None)
    valid = form.is_valid() if form.is_bound else True
    options = form.options()
    trend_by = options.pop("trend")
    report = agreement_report(project=project, bootstrap=DASHBOARD_BOOTSTRAP, seed=0, **options)
    # One read of the pair votes serves both the trend and the preview.
    votes = project_pair_votes(project)
    trend = agreement_trend(project=project, by=trend_by, points=DEFAULT_POINTS, data=votes)
    preview = preview_curves(project, data=votes)
    contested = [
        {
            **item,
            "review_url": reverse("item-review", kwargs={"project_id": project.pk, "task_id": item["task_id"]}),
        }
        for item in report["contested"]["items"]
    ]
    chart_data = {
        "trend": trend,
        "heatmap": _heatmap(report),
        "preview": preview,
        "project": {
            "threshold": project.agreement_threshold,
            "overlap": project.annotations_per_task,
            # The ring sits where a snapshot with the default parameters would cut.
            "min_votes": _DEFAULTS["min_votes"],
            "kind": project.kind,
        },
    }
    context = {
        "project": project,
        "form": form,
        "report": report,
        "cards": _statistic_cards(report),
        "annotators": _annotator_rows(report),
        "contested": contested,
        "export_min_votes": _DEFAULTS["min_votes"],
        "chart_data": chart_data,
        "trend_caution": _trend_caution(trend),
        "trend_by": trend_by,
        "trend_choices": TREND_BY,
    }
    return render(request, "frontend/dashboard/dashboard.html", context, status=200 if valid else 400)


# --- export snapshots --------------------------------------------------------------------------


def _judged_usernames(project: Project) -> list[str]:
    # order_by() first: Judgement's default ordering would put its id into the DISTINCT.
    return list(
        Judgement.objects.filter(task__project=project)
        .order_by("annotator__username")
        .values_list("annotator__username", flat=True)
        .distinct()
    )


class ExportForm(forms.Form):
    """The parameters of a new snapshot (exports.params.ExportParams); the service validates them again."""

    threshold = forms.FloatField(
        min_value=BOUNDS["threshold"][0],
        max_value=BOUNDS["threshold"][1],
        label="Majority threshold",
        help_text="Vote share the winner of a pair needs (0.5 = strict majority; give 2/3 as 0.6667).",
    )
    min_votes = forms.IntegerField(
        min_value=BOUNDS["min_votes"][0],
        max_value=BOUNDS["min_votes"][1],
        initial=_DEFAULTS["min_votes"],
        label="Minimum votes per pair",
    )
    tie_policy = forms.ChoiceField(
        choices=[(p, p) for p in TIE_POLICIES],
        initial=_DEFAULTS["tie_policy"],
        label="Tie votes",
        help_text=(
            "neither: dilute the winner; abstain: not counted; half: half a vote each; "
            "drop: tie plurality drops the pair."
        ),
    )
    weighting = forms.ChoiceField(
        choices=[(w, w) for w in WEIGHTINGS],
        initial=_DEFAULTS["weighting"],
        label="Vote weights",
        help_text="reliability: Dawid–Skene log-odds weight of each annotator.",
    )
    min_reliability = forms.FloatField(
        min_value=BOUNDS["min_reliability"][0],
        max_value=BOUNDS["min_reliability"][1],
        initial=_DEFAULTS["min_reliability"],
        label="Minimum annotator reliability",
        help_text="Leave out annotators whose estimated accuracy is below this (0: nobody).",
    )
    exclude_annotators = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Leave out annotators"
    )
    validation_fraction = forms.FloatField(
        min_value=BOUNDS["validation_fraction"][0],
        max_value=BOUNDS["validation_fraction"][1],
        initial=_DEFAULTS["validation_fraction"],
        label="Validation fraction (of prompts)",
    )
    split_seed = forms.CharField(
        max_length=SPLIT_SEED_MAX_CHARS,
        required=False,
        initial=_DEFAULTS["split_seed"],
        label="Split seed",
        help_text="Keep it to keep every prompt in its split across snapshots.",
    )
    batch_pairs = forms.IntegerField(
        min_value=BOUNDS["batch_pairs"][0], max_value=BOUNDS["batch_pairs"][1], label="Pairs per batch file"
    )
    pair_weight = forms.ChoiceField(
        choices=[(w, w) for w in PAIR_WEIGHTS],
        initial=_DEFAULTS["pair_weight"],
        label="Pair weight",
        help_text="group: 1/C(K,2) (InstructGPT); uniform: 1; vote_margin: (2 share - 1)/C(K,2).",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["threshold"].initial = project.agreement_threshold
        self.fields["batch_pairs"].initial = max(_DEFAULTS["batch_pairs"], comb(project.responses_per_task, 2))
        self.fields["exclude_annotators"].choices = [(name, name) for name in _judged_usernames(project)]

    def params(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["exclude_annotators"] = list(data.get("exclude_annotators") or [])
        if not data.get("split_seed"):
            data["split_seed"] = _DEFAULTS["split_seed"]
        return data


def _snapshot_rows(project: Project) -> list[dict[str, Any]]:
    snapshots = list(ExportSnapshot.objects.filter(project=project).select_related("created_by")[:EXPORTS_LISTED])
    rows = []
    for snapshot in snapshots:
        listed = snapshot.manifest.get("files", {}) if isinstance(snapshot.manifest, dict) else {}
        files = [
            {
                "name": name,
                "url": reverse("api-export-file", args=[project.pk, snapshot.pk, name]),
                "bytes": (listed.get(name) or {}).get("bytes"),
                "rows": (listed.get(name) or {}).get("rows"),
            }
            for name in snapshot.file_names
        ]
        counts = snapshot.counts or {}
        rows.append(
            {
                "snapshot": snapshot,
                "active": snapshot.state in (ExportState.QUEUED, ExportState.RUNNING),
                "percent": round(100 * snapshot.progress),
                "params": snapshot.params,
                "counts": counts,
                "files": files,
                "main_files": [f for f in files if "/" not in f["name"]],
                "batch_files": [f for f in files if "/" in f["name"]],
            }
        )
    return rows


def _export_context(project: Project, form: ExportForm) -> dict[str, Any]:
    rows = _snapshot_rows(project)
    return {
        "project": project,
        "form": form,
        "rows": rows,
        "any_active": any(row["active"] for row in rows),
        "chart_data": {
            "preview": preview_curves(project),
            "preview_url": reverse("api-export-preview", args=[project.pk]),
            "project": {"threshold": project.agreement_threshold, "overlap": project.annotations_per_task},
        },
    }


@login_required
@require_http_methods(["GET", "POST"])
def project_exports(request: HttpRequest, project_id: int) -> HttpResponse:
    """The project's export snapshots, with downloads, and the form that creates one."""
    project = managed_project(request, project_id)
    if request.method == "POST":
        form = ExportForm(request.POST, project=project)
        if form.is_valid():
            from exports.services import export_snapshot_create, export_snapshot_send

            try:
                with transaction.atomic():
                    snapshot = export_snapshot_create(project=project, params=form.params(), user=request.user)
                    # After commit: a worker must never look for a row that is not there yet.
                    export_snapshot_send(snapshot)
            except InvalidParams as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, f"Export {snapshot.pk} was created.")
                return redirect("project-exports", project_id=project.pk)
        return render(request, "frontend/dashboard/exports.html", _export_context(project, form), status=400)
    form = ExportForm(project=project)
    return render(request, "frontend/dashboard/exports.html", _export_context(project, form))
