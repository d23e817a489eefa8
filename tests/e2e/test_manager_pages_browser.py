"""Manager pages in a real Chromium: the task browser's search, the scoring playground and the
retrain rule on the reward-model page, and a running run's speed, time left and fitted loss axis.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.utils import timezone

from annotation.models import Task, TaskState
from jobs.models import JobState
from rewardmodel import jobs
from rewardmodel.models import RetrainRule, RewardModelRun
from tests.e2e.conftest import UI, managed_project
from tests.factories import make_task
from tests.rewardmodel.test_services import make_run, rule_project, rule_snapshot
from tests.rewardmodel.tiny import build_gpt2

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def listed(ui: UI) -> list[int]:
    return [int(x) for x in ui.page.eval_on_selector_all("#tasks tbody tr", "rows => rows.map(r => r.dataset.task)")]


def test_the_task_browser_searches_prompts_and_responses_with_the_filters(ui: UI) -> None:
    project, manager = managed_project("Search me", "search-manager")
    eye = []
    for n in range(55):
        task = make_task(project)
        task.prompt.messages = [{"role": "user", "content": f"Tips for Eye strain, case {n}?\n1. The 20/20/20 rule"}]
        task.prompt.save(update_fields=["messages"])
        eye.append(task.pk)
    other = make_task(project)
    link = other.task_responses.order_by("position").first()
    link.response.text = "An answer about <b>café</b> culture"
    link.response.save(update_fields=["text"])
    Task.objects.filter(pk=eye[0]).update(state=TaskState.RETIRED)

    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/tasks/")
    assert ui.page.inner_text("#task-count").startswith("56 tasks")
    ui.page.fill("#id_q", "eye STRAIN")
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_url("**/tasks/?q=eye+STRAIN*")
    assert ui.page.inner_text("#task-count") == "55 tasks match the filters."
    assert other.pk not in listed(ui) and len(listed(ui)) == 50
    ui.shot("searched")
    # The search stays on the next page and in the box.
    ui.page.click("a[rel=next]")
    ui.page.wait_for_url("**page=2")
    assert len(listed(ui)) == 5 and ui.page.input_value("#id_q") == "eye STRAIN"
    # Combined with a filter.
    ui.page.select_option("#id_state", "retired")
    ui.page.click("#apply-filters")
    ui.page.wait_for_url("**state=retired*")
    assert listed(ui) == [eye[0]]
    # A response's text, with markup typed into the box: shown as text, matched as text.
    ui.goto(f"/projects/{project.pk}/tasks/")
    ui.page.fill("#id_q", "<b>CAFÉ</b>".lower())
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_url("**q=*")
    assert listed(ui) == [other.pk]
    assert ui.page.inner_text("#task-count") == "1 task matches the filters."
    assert ui.page.input_value("#id_q") == "<b>café</b>"
    assert ui.page.locator("#task-filters b").count() == 0
    ui.shot("response-text")
    ui.assert_clean()


@pytest.fixture
def trained(tmp_path, settings, artifact_root) -> tuple[Any, Any]:
    """A project with an active v1, trained here in a few seconds from a tiny base."""
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    settings.REWARDMODEL_BASE_MODELS = {"tiny-gpt2": str(build_gpt2(tmp_path / "base"))}
    project, manager = managed_project("Playground", "playground-manager")
    rule_project(24, project=project)
    run = make_run(project, rule_snapshot(project), "tiny-gpt2")
    assert jobs.reward_model_run_execute(run_id=run.pk, worker="w").number == 1
    return project, manager


def test_the_playground_scores_responses_and_the_rule_is_managed_on_the_reward_model_page(
    ui: UI, trained: tuple[Any, Any]
) -> None:
    project, manager = trained
    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/reward-models/")
    ui.page.wait_for_selector("#playground-form")
    assert ui.page.locator("#playground-responses textarea").count() == 3

    # Too few responses: the field says so, nothing is scored.
    ui.page.fill("#id_score-prompt", "Which is better?")
    ui.page.fill("#id_score-response_1", "good good good")
    ui.page.click("#score-run")
    ui.page.wait_for_selector("#playground .field-error")
    assert "Give at least two responses" in ui.page.inner_text("#playground .field.invalid")
    assert ui.page.locator("#playground-result").count() == 0
    assert ui.page.input_value("#id_score-response_1") == "good good good"  # kept

    ui.page.fill("#id_score-response_2", "bad bad\nbad")
    # The script adds fields beyond the three shown.
    ui.page.click("#add-response")
    ui.page.click("#add-response")
    assert ui.page.locator("#playground-responses textarea").count() == 5
    assert ui.page.evaluate("document.activeElement.id") == "id_score-response_5"
    ui.page.fill("#id_score-response_4", "<img src=x onerror=alert(1)> good")
    ui.page.click("#score-run")
    ui.page.wait_for_selector("#playground-result")
    rows = ui.page.locator("#playground-result tbody tr")
    assert rows.count() == 3  # the empty third and fifth fields are left out
    assert "Scored by v1 (active)" in ui.page.inner_text("#playground-result caption")
    ranks = sorted(int(rows.nth(i).locator("[data-field=rank]").inner_text()) for i in range(3))
    assert ranks == [1, 2, 3]
    scores = [float(rows.nth(i).locator("[data-field=score]").inner_text()) for i in range(3)]
    assert len(set(scores)) == 3
    assert "<img src=x onerror=alert(1)> good" in ui.page.inner_text("#playground-result")
    assert ui.page.locator("#playground-result img").count() == 0
    box = ui.page.locator("#playground-result").bounding_box()
    assert box["x"] + box["width"] <= 1440
    ui.page.locator("#playground").scroll_into_view_if_needed()
    ui.shot("playground")

    # The retrain rule: created, then switched off, from the same page.
    assert "No rule yet" in ui.page.inner_text("#rule-status")
    ui.page.fill("#id_rule-min_new_pairs", "0")
    ui.page.click("#save-rule")
    ui.page.wait_for_selector("#rule .field-error")
    assert "greater than or equal to 1" in ui.page.inner_text("#rule .field.invalid")
    ui.page.fill("#id_rule-min_new_pairs", "40")
    ui.page.select_option("#id_rule-base_model", "tiny-gpt2")
    ui.page.fill("#id_rule-epochs", "2")
    ui.page.click("#save-rule")
    ui.page.wait_for_selector("text=The retrain rule is on: a run per 40 new agreed pairs.")
    rule = RetrainRule.objects.get(project=project)
    assert (rule.enabled, rule.min_new_pairs, rule.base_model, rule.config) == (True, 40, "tiny-gpt2", {"epochs": 2})
    assert ui.page.inner_text("#rule-status").strip().startswith("On")
    ui.page.uncheck("#id_rule-enabled")
    ui.page.click("#save-rule")
    ui.page.wait_for_selector("text=The retrain rule is off")
    assert RetrainRule.objects.get(project=project).enabled is False
    ui.shot("reward-models")
    ui.assert_clean()


def loss_history(steps: int, start: float = 0.693, end: float = 0.664) -> list[dict[str, Any]]:
    return [
        {
            "kind": "step",
            "step": s,
            "loss": start + (end - start) * s / steps,
            "accuracy": 0.5 + 0.1 * s / steps,
            "steps_per_second": 3.1,
        }  # fmt: skip
        for s in range(1, steps + 1)
    ]


def test_a_running_run_shows_its_speed_time_left_and_a_loss_axis_fitted_to_the_data(ui: UI) -> None:
    project, manager = managed_project("Run page", "run-page-manager")
    rule_project(8, project=project)
    snapshot = rule_snapshot(project)
    now = timezone.now()
    run = RewardModelRun.objects.create(
        project=project, snapshot=snapshot, base_model="/models/base", config={"epochs": 1}, state=JobState.RUNNING,
        attempts=1, worker="gpu-1", owner_token=uuid.uuid4().hex, heartbeat_at=now, started_at=now, step=120,
        total_steps=400, progress=0.3, metrics_history=loss_history(120),
        log_tail=["step 100/400, loss 0.670, 3.1 steps/s, 1 min 37 s left"],
    )  # fmt: skip
    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/reward-models/runs/{run.pk}/")
    ui.page.wait_for_selector("#loss-chart svg.plot")
    assert ui.page.inner_text("#run-speed") == "3.1 steps/s"
    assert ui.page.inner_text("#run-eta") == "1 min 30 s"  # 280 steps at 3.1 steps/s

    # The loss axis spans the data: every tick lies near 0.66-0.70, none at 0, and the curve
    # uses most of the plot's height instead of a flat line at the top.
    ticks = ui.page.eval_on_selector_all(
        "#loss-chart svg.plot text[dominant-baseline=middle]", "els => els.map(e => e.textContent)"
    )
    values = [float(t) for t in ticks]
    assert values and min(values) >= 0.66 and max(values) <= 0.70, ticks
    plot = ui.page.eval_on_selector(
        "#loss-chart svg.plot",
        """svg => {
            const path = svg.querySelector('.plot-path').getBBox();
            const axis = [...svg.querySelectorAll('line')].map(l => [+l.getAttribute('y1'), +l.getAttribute('y2')]);
            const ys = axis.flat();
            return {curve: path.height, plot: Math.max(...ys) - Math.min(...ys)};
        }""",
    )
    assert plot["curve"] > 0.6 * plot["plot"], plot
    accuracy_ticks = ui.page.eval_on_selector_all(
        "#accuracy-chart svg.plot text[dominant-baseline=middle]", "els => els.map(e => e.textContent)"
    )
    assert accuracy_ticks[0] == "0" and accuracy_ticks[-1] == "1"  # accuracy keeps its 0..1 scale
    ui.shot("running")

    # The worker moves on: speed and time left follow the job's updates.
    RewardModelRun.objects.filter(pk=run.pk).update(
        step=200, progress=0.5, heartbeat_at=timezone.now(),
        metrics_history=[{**p, "steps_per_second": 4.0} for p in loss_history(200, end=0.61)],
    )  # fmt: skip
    ui.wait_until("document.getElementById('run-speed').textContent === '4.0 steps/s'", 30)
    assert ui.page.inner_text("#run-eta") == "50 s"
    ticks = ui.page.eval_on_selector_all(
        "#loss-chart svg.plot text[dominant-baseline=middle]", "els => els.map(e => e.textContent)"
    )
    assert min(float(t) for t in ticks) >= 0.6
    ui.shot("updated")
    ui.assert_clean()
