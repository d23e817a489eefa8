"""A manager's dashboard and export page in a real Chromium, with a real Celery worker.

The dashboard must draw its three SVG charts from the served assets under the enforced
CSP, sort the annotator table, and show values on focus; the export page must follow the
form with its threshold preview, create a snapshot that a worker process runs, show its
progress until it finishes, and offer its files for download. Each page is screenshotted
at 1440x900 and 1280x720.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from annotation import services
from annotation.models import Judgement, Membership, Role
from exports.models import ExportSnapshot, ExportState
from tests.e2e.conftest import UI
from tests.factories import ProjectFactory, UserFactory, make_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

SMALL_VIEWPORT = {"width": 1280, "height": 720}
ANNOTATORS = ["alice", "bruno", "chen", "dana", "speedy"]


@pytest.fixture(autouse=True)
def artifacts(monkeypatch, settings, tmp_path):
    # Autouse fixtures start first: the worker process inherits this environment.
    root = tmp_path / "artifacts"
    monkeypatch.setenv("ARTIFACT_ROOT", str(root))
    settings.ARTIFACT_ROOT = root
    return root


def agreement_project() -> tuple[Any, Any]:
    """30 pairwise tasks, three votes each from five annotators over six days.

    Four annotators pick the truth 90% of the time; ``speedy`` picks at random and in
    under a second, so the dashboard has a low-agreement and a too-fast annotator.
    """
    project = ProjectFactory(name="Helpfulness v2", annotations_per_task=3, allow_ties=True, agreement_threshold=0.7)
    manager = UserFactory(username="mara")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    for _ in range(30):
        make_task(project)
    rng = random.Random(7)
    truth = [rng.choice("ab") for _ in range(30)]
    plan = {}
    for name in ANNOTATORS:
        answers = []
        for t in truth:
            if name == "speedy":
                answers.append(rng.choice("abt"))
            else:
                roll = rng.random()
                answers.append(t if roll < 0.85 else ("t" if roll < 0.9 else ("b" if t == "a" else "a")))
        plan[name] = answers
    annotate_round_robin(project, plan)
    start = datetime(2026, 5, 4, 9, tzinfo=UTC)
    for judgement in Judgement.objects.filter(task__project=project).select_related("annotator"):
        fields = {"created_at": start + timedelta(days=judgement.task_id % 6, minutes=judgement.pk)}
        if judgement.annotator.username == "speedy":
            fields["time_taken_ms"] = 700 + judgement.pk % 200
        Judgement.objects.filter(pk=judgement.pk).update(**fields)
    return project, manager


def annotate_round_robin(project: Any, plan: dict[str, list[str]]) -> None:
    """Like tests.annotation.test_trends.annotate, but one claim per annotator in turn, so all meet."""
    tasks = sorted(project.tasks.values_list("pk", flat=True))
    users = {name: UserFactory(username=name) for name in plan}
    for user in users.values():
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    rng = random.Random(3)
    busy = True
    while busy:
        busy = False
        for name, user in users.items():
            claim = services.assignment_claim_next(project=project, annotator=user, rng=rng)
            if claim is None:
                continue
            busy = True
            low, high = sorted(claim.assignment.display_order)
            answer = plan[name][tasks.index(claim.assignment.task_id)]
            tiers = {"a": [[low], [high]], "b": [[high], [low]], "t": [[low, high]]}[answer]
            services.judgement_submit(assignment=claim.assignment, ranking=tiers, time_taken_ms=6000)


def column(ui: UI, index: int) -> list[str]:
    return ui.page.eval_on_selector_all(
        f"#annotator-table tbody tr > :nth-child({index})", "cells => cells.map(c => c.dataset.sort)"
    )


def shoot_both(ui: UI, name: str) -> None:
    ui.page.evaluate("document.activeElement && document.activeElement.blur()")  # no tooltip over the charts
    ui.shot(f"{name}-1440x900")
    ui.page.set_viewport_size(SMALL_VIEWPORT)
    ui.page.wait_for_timeout(300)  # the charts redraw for the new width
    ui.shot(f"{name}-1280x720")
    ui.page.set_viewport_size({"width": 1440, "height": 900})


def test_manager_reads_the_dashboard_and_exports(ui: UI, celery_worker_process):
    project, manager = agreement_project()
    ui.login(manager.username)

    # --- the dashboard ---
    ui.goto(f"/projects/{project.pk}/dashboard/")
    ui.page.wait_for_selector("#dashboard[data-ready='true']")
    assert ui.page.locator("#trend-chart svg .plot-path").count() >= 5  # one line per statistic
    assert ui.page.locator("#kappa-heatmap svg .plot-cell").count() == len(ANNOTATORS) ** 2
    # Every pair has three votes: the curves for min votes 1, 2 and 3 are one, and say so.
    assert ui.page.locator("#preview-chart svg .plot-path").count() == 1
    assert "≥ 1 … 3 votes (same curve)" in ui.page.locator("#preview-chart .plot-legend").text_content()
    assert ui.page.locator("#preview-chart .plot-highlight").count() == 1
    # The trend has one checkpoint per day.
    assert ui.page.locator("#trend-chart .plot-series").first.locator(".plot-point").count() == 20

    # speedy is flagged too fast (and, picking at random, low agreement).
    speedy = ui.page.locator("#annotator-table tbody tr", has_text="speedy")
    assert speedy.locator(".flag-too_fast").count() == 1

    # Sort by median time: ascending, then descending; speedy first, then last.
    ui.page.click("#annotator-table th:nth-child(8) button")
    times = [float(v) for v in column(ui, 8)]
    assert times == sorted(times) and column(ui, 1)[0] == "speedy"
    assert ui.page.get_attribute("#annotator-table th:nth-child(8)", "aria-sort") == "ascending"
    ui.page.click("#annotator-table th:nth-child(8) button")
    assert [float(v) for v in column(ui, 8)] == sorted(times, reverse=True) and column(ui, 1)[-1] == "speedy"
    ui.page.click("#annotator-table th:nth-child(1) button")
    assert column(ui, 1) == sorted(ANNOTATORS)
    # A text column's second click reverses it.
    ui.page.click("#annotator-table th:nth-child(1) button")
    assert column(ui, 1) == sorted(ANNOTATORS, reverse=True)

    # Values on focus: a heatmap cell and a trend point, reachable from the keyboard.
    ui.page.focus("#kappa-heatmap .plot-cell[tabindex='0']")
    tip = ui.page.locator("#kappa-heatmap .plot-tooltip")
    assert tip.is_visible() and "Cohen's kappa" in tip.text_content()
    ui.page.focus("#trend-chart .plot-point")
    assert "Judgements submitted" in ui.page.locator("#trend-chart .plot-tooltip").text_content()

    # Contested pairs link to the item review page.
    first = ui.page.locator("#contested-table a").first
    assert first.get_attribute("href").startswith(f"/projects/{project.pk}/tasks/")
    shoot_both(ui, "dashboard")

    # Per-day checkpoints.
    ui.page.select_option("#trend-by", "day")
    ui.page.wait_for_url("**trend=day**")
    ui.page.wait_for_selector("#dashboard[data-ready='true']")
    assert ui.page.locator("#trend-chart .plot-series").first.locator(".plot-point").count() == 6
    ui.shot("dashboard-by-day")

    # --- the export page ---
    ui.page.click(".subnav a:has-text('Exports')")
    ui.page.wait_for_selector("#exports-page[data-ready='true']")
    summary = ui.page.locator("#preview-summary")
    assert "would keep" in summary.text_content()
    before = summary.locator("strong").text_content()
    with ui.page.expect_response(lambda r: "/exports/preview/" in r.url and r.status == 200):
        ui.page.check("input[name='exclude_annotators'][value='speedy']")
    ui.page.wait_for_function(
        "before => document.querySelector('#preview-summary strong')?.textContent !== before", arg=before
    )
    # Without speedy every pair keeps two or three votes: two curves now.
    assert ui.page.locator("#preview-chart svg .plot-path").count() == 2
    legend = ui.page.locator("#preview-chart .plot-legend").text_content()
    assert "≥ 1 … 2 votes (same curve)" in legend and "≥ 3 votes" in legend
    ui.page.fill("#id_min_votes", "2")
    ui.page.fill("#id_threshold", "0.75")
    ui.page.wait_for_timeout(500)  # the debounced exact count for 0.75
    assert "would keep" in summary.text_content()
    shoot_both(ui, "exports-form")

    ui.page.click("#create-export")
    ui.page.wait_for_selector("#snapshot-rows tr[data-state]")
    snapshot = ExportSnapshot.objects.get(project=project)
    assert snapshot.params["min_votes"] == 2 and snapshot.params["threshold"] == 0.75
    assert snapshot.params["exclude_annotators"] == [project.memberships.get(user__username="speedy").user_id]
    # The page polls until the worker has finished the snapshot.
    celery_worker_process(
        lambda: ExportSnapshot.objects.get(pk=snapshot.pk).is_finished, timeout=120, what="the export"
    )
    snapshot.refresh_from_db()
    assert snapshot.state == ExportState.SUCCEEDED, snapshot.errors
    ui.page.wait_for_selector(f"#export-{snapshot.pk}[data-state='succeeded']")
    assert ui.page.locator(f"#export-{snapshot.pk} .hash").text_content().startswith(snapshot.content_hash[:12])
    with ui.page.expect_download() as download:
        ui.page.click(f"#export-{snapshot.pk} a:text-is('pairs.jsonl')")
    path = download.value.path()
    with open(path, encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == snapshot.counts["pairs_kept"]
    shoot_both(ui, "exports-done")
    ui.assert_clean()


def test_empty_project_pages_and_the_annotators_refusal(ui: UI):
    project = ProjectFactory(name="Fresh project")
    manager = UserFactory(username="mona")
    annotator = UserFactory(username="andy")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/dashboard/")
    ui.page.wait_for_selector("#dashboard[data-ready='true']")
    assert "No data yet" in ui.page.locator("#trend-chart svg.plot-line").text_content()
    assert ui.page.locator("#kappa-heatmap").text_content() == "No annotators yet."
    ui.shot("empty-dashboard")
    ui.goto(f"/projects/{project.pk}/exports/")
    ui.page.wait_for_selector("#exports-page[data-ready='true']")
    assert "would keep" in ui.page.locator("#preview-summary").text_content()
    assert ui.page.locator("#snapshot-rows").text_content().strip() == "No exports yet."
    ui.assert_clean()

    ui.page.context.clear_cookies()
    ui.login(annotator.username)
    for path in (f"/projects/{project.pk}/dashboard/", f"/projects/{project.pk}/exports/"):
        assert ui.goto(path).status == 403


def test_plot_module_draws_long_curves_gaps_and_heatmaps(ui: UI):
    """lineChart as a reward-model page would use it: thousands of points, a gap, hover values."""
    project = ProjectFactory(name="Plot check")
    manager = UserFactory(username="pat")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/dashboard/")
    ui.page.wait_for_selector("#dashboard[data-ready='true']")
    result = ui.page.evaluate(
        """async () => {
          const { lineChart, heatmap } = await import('/static/frontend/plot.js');
          const host = document.createElement('div');
          host.id = 'plot-test';
          host.className = 'chart';
          document.querySelector('#dashboard').prepend(host);
          const loss = Array.from({ length: 5000 }, (_, i) => [i, 0.7 * Math.exp(-i / 1500) + 0.05]);
          const accuracy = Array.from({ length: 5000 }, (_, i) => [i, i === 2500 ? null : 0.5 + 0.4 * (1 - Math.exp(-i / 900))]);
          lineChart(host, { series: [{ name: 'rm/loss', points: loss }, { name: 'rm/accuracy', points: accuracy }],
                            xLabel: 'step', yLabel: 'value', yMin: 0, yMax: 1, title: 'Reward model training' });
          const paths = [...host.querySelectorAll('.plot-path')].map(p => (p.getAttribute('d').match(/M/g) || []).length);
          const focusable = host.querySelectorAll('.plot-point').length;
          const title = host.querySelector('svg > title').textContent;
          const labels = [...host.querySelectorAll('svg text')].map(t => t.textContent);
          const square = document.createElement('div');
          square.id = 'heat-test';
          document.querySelector('#dashboard').prepend(square);
          heatmap(square, { labels: ['a', 'b', 'c'], matrix: [[null, 0.5, -0.2], [0.5, null, 1], [-0.2, 1, null]], min: -1, max: 1 });
          return { paths, focusable, title, labels, cells: square.querySelectorAll('.plot-cell').length,
                   cellText: [...square.querySelectorAll('svg text')].map(t => t.textContent) };
        }"""
    )
    assert result["paths"] == [1, 2]  # the null at step 2500 breaks the accuracy line once
    assert result["focusable"] == 0  # too many points to tab through: a crosshair instead
    assert result["title"] == "Reward model training"
    assert "step" in result["labels"] and "value" in result["labels"]
    assert result["cells"] == 9 and "0.50" in result["cellText"] and "-0.20" in result["cellText"]
    box = ui.page.locator("#plot-test svg.plot-line").bounding_box()
    ui.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tip = ui.page.locator("#plot-test .plot-tooltip")
    assert tip.is_visible()
    text = tip.text_content()
    assert "rm/loss" in text and "rm/accuracy" in text and "step" in text
    ui.shot("plot-module")
    ui.assert_clean()
