"""A manager reads the policy pages in a real Chromium: a round's curves and samples, live and finished, and the
reward-vs-KL plot of the rounds.

The rounds are rows written through the ORM as the worker leaves them (``tests.frontend.test_rlloop_pages``):
these tests are about what the pages draw, not about training, which ``tests/rlloop`` covers.
"""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from jobs.models import JobState
from rlloop.models import PolicyRound, PolicyVersion
from tests.e2e.conftest import UI, managed_project
from tests.factories import PromptFactory
from tests.frontend.test_rlloop_pages import XSS, finished_round, history, reward_model

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture
def world(artifact_root, settings, tmp_path):
    checkpoint = tmp_path / "checkpoints" / "smollm2-135m-instruct"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    settings.POLICY_BASE_MODELS = {checkpoint.name: str(checkpoint)}  # the register form offers it by name
    project, manager = managed_project("Helpful policy", "rl-browser-manager")
    PromptFactory(project=project)
    policy = PolicyVersion.objects.create(
        project=project, number=1, name=checkpoint.name, model_dir=str(checkpoint), base_model=str(checkpoint),
        is_reference=True,
        generation={"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 256, "stop": []},
    )  # fmt: skip
    return project, manager, policy, reward_model(project)


def chart_count(ui: UI) -> int:
    return ui.page.locator("#round-charts .chart svg.plot").count()


def test_a_finished_round_and_the_policies_page_draw_their_plots(ui: UI, world, tmp_path) -> None:
    project, manager, policy, rm = world
    first = finished_round(project, policy, rm, 1, kl=2.0, score=0.8)
    finished_round(project, policy, rm, 2, kl=5.0, score=1.4)
    ui.login(manager.username)

    ui.goto(f"/projects/{project.pk}/policies/rounds/{first.pk}/")
    ui.page.wait_for_selector("#round-charts .chart svg.plot")
    # Score, KL, entropy, clip fraction, value loss, response length: one small chart each.
    assert chart_count(ui) == 6
    titles = ui.page.locator("#round-charts .chart-panel h3").all_inner_texts()
    assert titles == ["Score", "KL to the reference", "Entropy", "Clip fraction", "Value loss", "Response length"]
    assert ui.page.locator("#round-charts [data-chart='kl'] .plot-point").count() == 4
    # The newest sample table: text as the model wrote it, line breaks kept, markup shown as text.
    rows = ui.page.locator("#samples-table tbody tr")
    assert rows.count() == 2
    assert ui.page.inner_text("#samples-table tbody tr:first-child td:nth-child(2)") == (
        "Once upon a time\nthere was a river (update 4)"
    )
    assert ui.page.inner_text("#samples-table tbody tr:nth-child(2) td:nth-child(2)") == XSS
    assert ui.page.eval_on_selector("#samples-table td.text", "el => getComputedStyle(el).whiteSpace") == "pre-wrap"
    assert "[server path]" in ui.page.inner_text("#round-log")
    assert "/srv/" not in ui.page.content() and str(tmp_path) not in ui.page.content()
    assert "cuda:0" in ui.page.inner_text("#round-info")
    ui.shot("round")
    ui.page.select_option("#samples-select", "1")
    assert "(update 1)" in ui.page.inner_text("#samples-table")
    assert ui.page.inner_text("#samples-step") == "at update 1"

    # An SFT round: a chart per recorded metric, its validation points with the training curve.
    sft = PolicyRound.objects.create(
        project=project, method="sft", number=3, policy=policy, data={"source": "demonstrations"}, config={},
        state=JobState.SUCCEEDED, progress=1.0, step=4, total_steps=4, attempts=1, finished_at=timezone.now(),
        metrics_history=[
            *({"kind": "step", "step": n, "epoch": 1, "loss": 2.0 / n, "grad_norm": 1.0} for n in range(1, 5)),
            {"kind": "eval", "step": 4, "epoch": 1, "eval/loss": 0.9, "eval/token_accuracy": 0.6},
        ],
    )  # fmt: skip
    ui.goto(f"/projects/{project.pk}/policies/rounds/{sft.pk}/")
    ui.page.wait_for_selector("#round-charts .chart svg.plot")
    titles = ui.page.locator("#round-charts .chart-panel h3").all_inner_texts()
    assert titles == ["loss", "grad_norm", "eval/token_accuracy"]
    assert ui.page.locator("[data-chart='loss'] .plot-legend li").all_inner_texts() == [" training", " validation"]
    assert "No sample table yet" in ui.page.inner_text("#samples")
    ui.shot("sft-round")

    ui.goto(f"/projects/{project.pk}/policies/")
    ui.page.wait_for_selector("#reward-kl-chart svg.plot")
    assert ui.page.locator("#reward-kl-chart .plot-point").count() == 2
    assert ui.page.locator("#reward-kl-chart .plot-label").all_text_contents() == ["round 1", "round 2"]
    # The new-round form shows the chosen method's options only.
    assert ui.page.is_visible("fieldset[data-for='ppo']") and not ui.page.is_visible("fieldset[data-for='sft']")
    ui.shot("policies")
    ui.page.check("#id_method_1")
    assert ui.page.is_visible("fieldset[data-for='sft']") and not ui.page.is_visible("fieldset[data-for='ppo']")
    assert not ui.page.is_visible("#id_response_source")  # for demonstrations of one source only
    ui.page.select_option("#id_sft_source", "demonstrations")
    assert ui.page.is_visible("#id_response_source")
    ui.shot("sft-form")

    # A refused option comes back under its field, with the chosen method's options shown.
    ui.page.check("#id_method_0")
    ui.page.select_option("#id_policy", "1")
    ui.page.fill("#id_updates", "0")
    ui.page.click("#start-round")
    ui.page.wait_for_selector("#round-form .banner.error")
    ui.page.wait_for_load_state()  # the module scripts have run
    assert "must be an integer in [1, 100000]" in ui.page.inner_text("#round-form .field.invalid")
    assert ui.page.is_visible("#id_updates") and not ui.page.is_visible("fieldset[data-for='sft']")
    assert PolicyRound.objects.count() == 3  # nothing was started
    ui.shot("form-error")
    ui.assert_clean()


def test_a_running_round_draws_its_curves_and_samples_as_they_arrive(ui: UI, world) -> None:
    project, manager, policy, rm = world
    now = timezone.now()
    points = history(8, kl_end=4.0, score_end=1.0)
    round = PolicyRound.objects.create(
        project=project, method="ppo", number=1, policy=policy, reference=policy, reward_model=rm,
        data={"prompts": "project"}, config={"updates": 8}, state=JobState.RUNNING, attempts=1, worker="gpu-1",
        owner_token=uuid.uuid4().hex, heartbeat_at=now, started_at=now, step=2, total_steps=8, progress=0.25,
        metrics_history=points[:2], log_tail=["update 2/8"],
    )  # fmt: skip
    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/policies/rounds/{round.pk}/")
    ui.page.wait_for_selector("#round-charts .chart svg.plot")
    assert ui.page.locator("#round-charts [data-chart='kl'] .plot-point").count() == 2
    assert "No sample table yet" in ui.page.inner_text("#samples")
    ui.shot("running")

    # The worker records two more updates, a sample table and the setup.
    PolicyRound.objects.filter(pk=round.pk).update(
        metrics_history=points[:4], step=4, progress=0.5, heartbeat_at=timezone.now(), log_tail=["update 4/8"],
        samples=[{"step": 4, "rows": [{"prompt": "Hi", "response": "Hello\nthere", "score": 0.5, "kl": 1.0}]}],
        info={"device": "cuda:0", "processes": 1},
    )  # fmt: skip
    ui.wait_until("document.querySelectorAll(\"#round-charts [data-chart='kl'] .plot-point\").length === 4", 30)
    ui.wait_until("!!document.getElementById('samples-table')", 30)
    assert ui.page.inner_text("#samples-table tbody td.text >> nth=1") == "Hello\nthere"
    assert "cuda:0" in ui.page.inner_text("#round-info")
    assert ui.page.inner_text("#round-log").strip() == "update 4/8"
    ui.shot("updated")

    # It succeeds: the page reloads and shows the end state.
    PolicyRound.objects.filter(pk=round.pk).update(
        state=JobState.SUCCEEDED, progress=1.0, step=8, metrics_history=points, finished_at=timezone.now()
    )
    ui.wait_until("document.getElementById('round-state').textContent.startsWith('Succeeded')", 30)
    ui.page.wait_for_selector("#round-charts [data-chart='kl'] svg.plot")
    assert ui.page.locator("#round-charts [data-chart='kl'] .plot-point").count() == 8
    ui.shot("succeeded")
    ui.assert_clean()


def test_a_round_that_watched_a_gold_reward_model_draws_the_gold_score_beside_the_proxy(ui: UI, world) -> None:
    project, manager, policy, rm = world
    plain = finished_round(project, policy, rm, 1, kl=2.0, score=0.8)
    watched = finished_round(project, policy, rm, 2, kl=5.0, score=1.4)
    golds = [0.3, 0.5, 0.4, 0.1]
    watched.metrics_history = [
        {**p, "objective/gold_scores": g} for p, g in zip(watched.metrics_history, golds, strict=True)
    ]
    watched.data = {**watched.data, "gold_reward_model": 2}
    rm.metrics = {"reward_std": 0.5}
    rm.save()
    gold = reward_model(project, number=2, active=False)
    gold.metrics = {"reward_std": 0.25}
    gold.save()
    for table in watched.samples:
        for row in table["rows"]:
            row["gold"] = -0.75
    watched.save()
    ui.login(manager.username)

    legend = "#round-charts [data-chart='score'] .plot-legend li"
    ui.goto(f"/projects/{project.pk}/policies/rounds/{watched.pk}/")
    ui.page.wait_for_selector(legend)
    assert [t.strip() for t in ui.page.locator(legend).all_inner_texts()] == ["score", "gold score", "score − β·KL"]
    assert ui.page.locator("#round-charts [data-chart='score'] .plot-point").count() == 12
    headers = ui.page.locator("#samples-table thead th").all_inner_texts()
    assert headers == ["Prompt", "Response", "Score", "Shaped", "Gold", "KL"]
    assert ui.page.inner_text("#samples-table tbody tr:first-child td:nth-child(5)") == "-0.750"
    # Both models' gains against KL, in their own held-out sd: the proxy (sd 0.5) rises by
    # 0.9 = 1.8 sd over the round, the gold (sd 0.25) falls back.
    overopt = "#overopt-chart .plot-legend li"
    ui.page.wait_for_selector(overopt)
    assert [t.strip() for t in ui.page.locator(overopt).all_inner_texts()] == [
        "proxy (the reward model trained against)",
        "gold (watching)",
    ]
    assert ui.page.locator("#overopt-chart .plot-point").count() == 8
    ui.shot("gold")

    # A round without a gold reward model: no empty gold series, no gold column.
    ui.goto(f"/projects/{project.pk}/policies/rounds/{plain.pk}/")
    ui.page.wait_for_selector(legend)
    assert [t.strip() for t in ui.page.locator(legend).all_inner_texts()] == ["score", "score − β·KL"]
    assert "Gold" not in ui.page.locator("#samples-table thead th").all_inner_texts()
    ui.assert_clean()
