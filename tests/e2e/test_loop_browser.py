"""The loop in a real Chromium: a manager reads the Loop page's leaderboard and proxy charts; an annotator labels
sampled responses and never sees their source, policy or reward-model score."""

from __future__ import annotations

import random

import pytest

from annotation.models import Membership, Prompt, Response, Role, Task, TaskResponse
from rlloop.models import PolicyVersion
from tests.e2e.conftest import UI
from tests.factories import ProjectFactory, UserFactory
from tests.rlloop.test_standings import duel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

SECRET_SCORE = 0.987654321


def loop_world():
    project = ProjectFactory(name="Loop project", annotations_per_task=1)
    manager = UserFactory(username="loop-manager")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    ref = PolicyVersion.objects.create(project=project, number=1, model_dir="/x", base_model="/x", is_reference=True)
    new = PolicyVersion.objects.create(project=project, number=2, model_dir="/y", base_model="/x", parent=ref)
    rng = random.Random(3)
    for i in range(30):
        meta = {
            "policy p1": {"policy_version": ref.pk, "reward_score": 0.1 * (i % 4), "tokens": 10 + i % 4, "kl": 0.0},
            "policy p2": {"policy_version": new.pk, "reward_score": 0.5 + 0.1 * (i % 4), "tokens": 14 + i % 4,
                          "kl": 4.0},
        }  # fmt: skip
        duel(project, 1, "policy p2", "policy p1", 0.7, rng, meta)
    duel(project, 20, "policy p1", "imported-model", 0.6, rng)
    return project, manager


def test_the_loop_page_draws_intervals_heatmap_and_proxy_charts(ui: UI) -> None:
    from tests.frontend.test_rlloop_pages import finished_round, reward_model

    project, manager = loop_world()
    # A PPO round ran here at 30 s per update of 16 rollouts of 64 tokens: the cycle form's pace.
    round = finished_round(project, PolicyVersion.objects.get(project=project, number=1), reward_model(project), 1,
                           kl=2.0, score=0.5)  # fmt: skip
    round.config = {**round.config, "rollouts_per_update": 16, "max_new_tokens": 64}
    round.metrics_history = [{**p, "time/update": 30.0} for p in round.metrics_history]
    round.save()
    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/loop/")
    ui.page.wait_for_selector("#win-matrix svg")
    rows = ui.page.locator("#leaderboard tbody tr")
    assert rows.count() == 3
    assert ui.page.locator("#leaderboard .interval-bar").count() == 3
    assert ui.page.locator("#leaderboard tbody tr").first.get_attribute("data-source") == "policy p2"
    assert ui.page.locator("#proxy-chart svg.plot").count() == 1
    assert ui.page.locator("#human-chart svg.plot").count() == 1
    # Each bar lies inside its track and the estimate's tick inside its bar.
    for i in range(3):
        bar = ui.page.locator("#leaderboard .interval-bar").nth(i).bounding_box()
        track = ui.page.locator("#leaderboard .interval-track").nth(i).bounding_box()
        tick = ui.page.locator("#leaderboard .interval-tick").nth(i).bounding_box()
        assert track["x"] - 1 <= bar["x"] and bar["x"] + bar["width"] <= track["x"] + track["width"] + 1
        assert bar["x"] - 2 <= tick["x"] <= bar["x"] + bar["width"] + 2
    width = ui.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1440, f"the page is {width}px wide"
    # The form's defaults (8 updates of 16 rollouts of 64 tokens) take 8 × 30 s; 80 updates 40 minutes.
    estimate = "#cycle-estimate"
    assert ui.page.inner_text(estimate).startswith("PPO step: about 4 min at the pace of round 1 (30.0 s per update")
    ui.page.fill("#id_cycle-updates", "80")
    assert ui.page.inner_text(estimate).startswith("PPO step: about 40 min")
    ui.page.fill("#id_cycle-max_new_tokens", "32")
    assert ui.page.inner_text(estimate).startswith("PPO step: about 20 min")
    ui.shot("loop-page")
    ui.assert_clean()


def test_an_annotator_never_sees_source_policy_or_score(ui: UI) -> None:
    project = ProjectFactory(name="Sampled", annotations_per_task=1)
    annotator = UserFactory(username="loop-annotator")
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    prompt = Prompt.objects.create(project=project, external_id="q", messages=[{"role": "user", "content": "Hi?"}])
    responses = [
        Response.objects.create(
            prompt=prompt,
            text=f"answer {n}",
            source=f"policy p{n}",
            metadata={
                "policy": f"p{n}",
                "policy_version": n,
                "reward_score": SECRET_SCORE,
                "reward_model": "v7",
                "sampling": {"temperature": 0.7, "seed": 1234567},
                "kl": 3.25,
            },
        )  # fmt: skip
        for n in (1, 2)
    ]
    task = Task.objects.create(project=project, prompt=prompt, num_responses=2, required_annotations=1,
                               source="on-policy sampling", metadata={"sampling_job": 1})  # fmt: skip
    TaskResponse.objects.bulk_create(TaskResponse(task=task, response=r, position=i) for i, r in enumerate(responses))

    ui.login(annotator.username)
    ui.goto(f"/projects/{project.pk}/annotate/")
    ui.page.wait_for_selector("#task:not([hidden])[data-assignment]")
    html = ui.page.content()
    text = ui.page.inner_text("body")
    assert "answer 1" in text and "answer 2" in text
    for secret in ("policy p1", "policy p2", str(SECRET_SCORE)[:6], "1234567", "reward", "sampling", "3.25"):
        assert secret not in html, secret
    ui.shot("sampled-task")
    ui.page.keyboard.press("1")
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_selector("#empty:not([hidden])")
    assert Task.objects.get(pk=task.pk).judgement_count == 1
    ui.assert_clean()


def test_a_running_cycle_shows_its_steps_without_overflow(ui: UI) -> None:
    from exports.models import ExportSnapshot
    from jobs.lifecycle import job_create
    from jobs.models import JobState
    from rlloop.models import LoopCycle

    project, manager = loop_world()
    policy = PolicyVersion.objects.get(project=project, number=2)
    snapshot = job_create(ExportSnapshot, project=project, params={})
    from django.utils import timezone

    ExportSnapshot.objects.filter(pk=snapshot.pk).update(
        state=JobState.RUNNING, progress=0.4, heartbeat_at=timezone.now(), worker="w", owner_token="t", attempts=1
    )
    LoopCycle.objects.create(project=project, number=1, policy=policy, snapshot=snapshot)
    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/loop/")
    ui.page.wait_for_selector("#cycle-table .cycle-step.current progress")
    for width, height in ((1440, 900), (1280, 720), (1024, 768)):
        ui.page.set_viewport_size({"width": width, "height": height})
        steps = ui.page.locator("#cycle-table .cycle-step")
        for i in range(4):
            step = steps.nth(i).bounding_box()
            for inner in steps.nth(i).locator("progress, .state, .step-name").all():
                box = inner.bounding_box()
                inside = step["x"] - 1 <= box["x"] and box["x"] + box["width"] <= step["x"] + step["width"] + 1
                assert inside, (width, i, box, step)
        ui.shot(f"running-cycle-{width}")
    ui.assert_clean()
