"""The pages fit the window, in a real Chromium at 1440x900 and 1280x720, measured.

On the demo's data (``load_demo``: the PandaLM pairwise set and the OpenAssistant K-way
rankings from the data folder) plus a trained reward-model run: no page is wider than the
window; the project tab bar is at the same place on every project page; a confirmation
("Settings saved.", "Saved.") does not move the page; the labeling pages fit the window
with Submit in view without scrolling (pairwise, and a K=3 ranking with long answers that
scroll inside their cards); the ranking dashboard of the issue (agreement on a handful of
units after 211 imported single rankings) draws its trend across the chart, marks figures
on too few units and keeps its threshold-preview label inside the chart. Every page is
screenshotted at both sizes.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.urls import reverse

from annotation import services
from annotation.demo import OASST_NAME, PANDALM_NAME, load_demo
from annotation.models import Membership, Project, ProjectKind, Response, Role
from frontend.templatetags.arpad_nav import PROJECT_TABS
from tests.e2e.conftest import PASSWORD, UI
from tests.factories import ProjectFactory, UserFactory, make_task
from tests.rewardmodel.test_services import TINY, make_run, rule_project, rule_snapshot, tiny_base  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

SIZES = [(1440, 900), (1280, 720)]
TASK_ON_SCREEN = "#task:not([hidden])[data-assignment]"
# The tab pages of a project (the labeling page, its first tab, has no tab bar).
TAB_URL_NAMES = [name for _, name, _ in PROJECT_TABS if name != "annotate"]

# What sticks out of the window on the right: the outermost such elements, for the message.
OVERFLOW = """() => {
  const width = window.innerWidth;
  if (document.documentElement.scrollWidth <= width) return null;
  const out = [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > width + 0.5 && e.getClientRects().length)
    .map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${[...e.classList].join(".")} ends at ${Math.round(e.getBoundingClientRect().right)}`);
  return `scrollWidth ${document.documentElement.scrollWidth} > ${width}: ${out.slice(0, 5).join("; ")}`;
}"""

RECT = "(el) => { const b = el.getBoundingClientRect(); return {x: b.x, y: b.y, width: b.width, height: b.height, bottom: b.bottom, right: b.right}; }"


@pytest.fixture
def demo(shared_data, monkeypatch, job_messages, artifact_root, settings, tiny_base) -> dict[str, Any]:  # noqa: F811
    """The demo's two projects, a few overlapping rankings in the second, and a trained reward-model run."""
    monkeypatch.setenv("ARPAD_DATA_DIR", str(shared_data))
    results = {result.project.name: result.project for result in load_demo(password=PASSWORD)}
    pairwise, ranking = results[PANDALM_NAME], results[OASST_NAME]
    admin = Membership.objects.get(project=pairwise, role=Role.MANAGER).user
    # As in the issue: after the import's single consensus rankings, two people rank the same two tasks.
    rng = random.Random(0)
    for user in (UserFactory(username="first-ranker"), UserFactory(username="second-ranker")):
        Membership.objects.create(project=ranking, user=user, role=Role.ANNOTATOR)
        for _ in range(2):
            claim = services.assignment_claim_next(project=ranking, annotator=user, rng=rng)
            order = list(claim.assignment.display_order)
            rng.shuffle(order)
            services.judgement_submit(assignment=claim.assignment, ranking=[[r] for r in order], time_taken_ms=9000)
    # A reward model trained for real (a tiny GPT-2), for its run page.
    settings.REWARDMODEL_BASE_MODELS = {TINY: str(tiny_base)}
    rm_project = rule_project(24)
    rm_project.name = "Reward model project"
    rm_project.save()
    Membership.objects.create(project=rm_project, user=admin, role=Role.MANAGER)
    run = make_run(rm_project, rule_snapshot(rm_project), TINY)
    job_messages.run()
    run.refresh_from_db()
    return {"pairwise": pairwise, "ranking": ranking, "rm_project": rm_project, "run": run}


def long_ranking_project(annotator: Any) -> Project:
    """One task of three long answers (they must scroll inside their cards) under a two-turn prompt."""
    project = ProjectFactory(
        name="Three long answers",
        kind=ProjectKind.RANKING,
        responses_per_task=3,
        annotations_per_task=1,
        allow_ties=True,
    )
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    task = make_task(project)
    task.prompt.messages = [
        {"role": "user", "content": "How do I keep a sourdough starter alive while I travel for two weeks?"},
        {"role": "assistant", "content": "Feed it, refrigerate it, and feed it again when you are back."},
        {"role": "user", "content": "And if I will be away for a month?"},
    ]
    task.prompt.save()
    paragraph = (
        "Dry some of it on baking paper, break it into flakes and keep them in a jar; rehydrate with flour and water. "
    )
    for n, response in enumerate(Response.objects.filter(pk__in=task.response_ids()).order_by("pk")):
        response.text = "\n\n".join(f"{n + 1}.{i} {paragraph * 3}" for i in range(6))
        response.save()
    return project


def fits(ui: UI, where: str) -> None:
    assert ui.page.evaluate(OVERFLOW) is None, where


def rect(ui: UI, selector: str) -> dict[str, float]:
    return ui.page.eval_on_selector(selector, RECT)


def in_view_without_scrolling(ui: UI, selector: str, where: str) -> None:
    """``selector`` lies inside the window while the page is scrolled to the top, and the page itself does not scroll."""
    assert ui.page.evaluate("window.scrollY") == 0, where
    box = rect(ui, selector)
    height = ui.page.evaluate("window.innerHeight")
    assert box["y"] >= 0 and box["bottom"] <= height, (
        f"{where}: {selector} at {box['y']:.0f}-{box['bottom']:.0f} of {height}"
    )
    assert ui.page.evaluate("document.documentElement.scrollHeight") <= height, f"{where}: the page scrolls"


def test_pages_fit_the_window_and_the_tab_bar_stays_put(ui: UI, demo: dict[str, Any]) -> None:
    pairwise, ranking, rm_project, run = demo["pairwise"], demo["ranking"], demo["rm_project"], demo["run"]
    ui.login("admin")
    for width, height in SIZES:
        ui.page.set_viewport_size({"width": width, "height": height})
        size = f"{width}x{height}"

        ui.goto("/")
        ui.page.wait_for_selector("main table")
        fits(ui, f"project list at {size}")
        ui.shot(f"project-list-{size}")

        # The tab bar: one box on every tab page of every project, and the run page.
        boxes = {}
        for project in (pairwise, ranking, rm_project):
            for name in TAB_URL_NAMES:
                ui.goto(reverse(name, args=[project.pk]))
                ui.page.wait_for_selector(".subnav")
                fits(ui, f"{name} of {project.name} at {size}")
                boxes[f"{name} of {project.pk}"] = rect(ui, ".subnav")
        task = pairwise.tasks.order_by("pk").first()
        ui.goto(reverse("item-review", kwargs={"project_id": pairwise.pk, "task_id": task.pk}))
        ui.page.wait_for_selector("#judgements")
        fits(ui, f"item review at {size}")
        boxes["item review"] = rect(ui, ".subnav")
        ui.goto(f"/projects/{rm_project.pk}/reward-models/runs/{run.pk}/")
        ui.page.wait_for_selector("#loss-chart svg")
        fits(ui, f"reward-model run page at {size}")
        boxes["run"] = rect(ui, ".subnav")
        ui.shot(f"reward-model-run-{size}")
        first = boxes["run"]
        moved = {
            page: box
            for page, box in boxes.items()
            if (box["x"], box["y"], box["width"]) != (first["x"], first["y"], first["width"])
        }
        assert moved == {}, f"the tab bar is at {first} on the run page but elsewhere on {moved}"

        for project, name in ((pairwise, "dashboard-pairwise"), (ranking, "dashboard-ranking")):
            ui.goto(f"/projects/{project.pk}/dashboard/")
            ui.page.wait_for_selector("#dashboard[data-ready='true']")
            fits(ui, f"{name} at {size}")
            ui.page.evaluate("document.activeElement && document.activeElement.blur()")
            ui.shot(f"{name}-{size}")
            preview_label_inside_its_chart(ui, f"{name} at {size}")
            few = ui.page.locator(".card.stat.few").count()
            if project == pairwise:
                assert few == 0  # 999 response pairs with three votes each
                assert ui.page.locator("#trend-caution").count() == 0
            else:
                ranking_dashboard_on_few_units(ui, f"{name} at {size}")
    ui.assert_clean()


def preview_label_inside_its_chart(ui: UI, where: str) -> None:
    svg = rect(ui, "#preview-chart svg")
    label = rect(ui, "#preview-chart .plot-highlight-label")
    assert svg["y"] <= label["y"] and label["bottom"] <= svg["bottom"], f"{where}: the preview label is cut off"
    assert svg["x"] <= label["x"] and label["right"] <= svg["right"], where


def ranking_dashboard_on_few_units(ui: UI, where: str) -> None:
    """The issue's dashboard: 211 imported single rankings, then two people on the same two tasks."""
    # Every figure rests on a handful of response pairs: all seven cards muted, each saying so.
    cards = ui.page.locator(".card.stat")
    assert cards.count() == 7 and ui.page.locator(".card.stat.few").count() == 7, where
    for text in ui.page.locator(".card.stat.few .caution").all_inner_texts():
        assert text.startswith(("too few units (n=", "too few items (n=")), text
    assert ui.page.eval_on_selector(
        ".card.stat.few .value", "v => getComputedStyle(v).color"
    ) == ui.page.eval_on_selector(".dash-head .muted", "m => getComputedStyle(m).color")
    assert "Not enough data" in ui.page.inner_text("#trend-caution")
    # The trend's points spread over the chart instead of sitting in one cluster at its right edge.
    plot = rect(ui, "#trend-chart svg")
    xs = ui.page.eval_on_selector_all(
        "#trend-chart svg .plot-point", "ps => ps.map((p) => p.getBoundingClientRect().x)"
    )
    assert len(xs) >= 2 * 7, where  # two checkpoints or more, seven figures each
    assert max(xs) - min(xs) > plot["width"] / 2, f"{where}: the trend's points span {max(xs) - min(xs):.0f} px"


def test_labeling_pages_fit_with_submit_in_view(ui: UI, demo: dict[str, Any]) -> None:
    annotator = Membership.objects.get(project=demo["pairwise"], user__username="annotator").user
    long_ranking = long_ranking_project(annotator)
    ui.login(annotator.username)
    pages = [("pairwise", demo["pairwise"]), ("ranking", demo["ranking"]), ("ranking-k3-long", long_ranking)]
    for width, height in SIZES:
        ui.page.set_viewport_size({"width": width, "height": height})
        size = f"{width}x{height}"
        for name, project in pages:
            ui.goto(f"/projects/{project.pk}/annotate/")
            ui.page.wait_for_selector(TASK_ON_SCREEN)
            where = f"{name} at {size}"
            fits(ui, where)
            in_view_without_scrolling(ui, "#submit", where)
            for card in ui.page.query_selector_all("#responses > article"):
                box = card.evaluate(RECT)
                assert box["y"] >= 0 and box["bottom"] <= height, f"{where}: a response card leaves the window"
            if name != "pairwise":
                in_view_without_scrolling(ui, "#order", where)
            # The prompt's box opens at the last turn, the one the responses answer.
            turns, last = rect(ui, "#turns"), rect(ui, "#turns > :last-child")
            assert turns["y"] <= last["y"] < turns["bottom"] - 20, f"{where}: the last turn is out of sight"
            ui.shot(f"labeling-{name}-{size}")
    # The long answers scroll inside their cards, and placing them moves nothing.
    k = ui.page.locator("#responses > article").count()
    assert k == 3
    assert ui.page.eval_on_selector_all(
        "#responses > article", "cs => cs.every((c) => c.scrollHeight > c.clientHeight + 50)"
    )
    before = [rect(ui, f"#responses > article:nth-child({i})") for i in (1, 2, 3)]
    for key in "213":
        ui.page.keyboard.press(key)
    ui.page.wait_for_selector("#order li.row:nth-child(3)")
    after = [rect(ui, f"#responses > article:nth-child({i})") for i in (1, 2, 3)]
    assert after == before
    in_view_without_scrolling(ui, "#order li.row:nth-child(3)", "the placed ranking")
    in_view_without_scrolling(ui, "#submit", "after placing")
    ui.shot("labeling-ranking-k3-placed-1280x720")
    ui.assert_clean()


def test_confirmations_do_not_move_the_page(ui: UI, demo: dict[str, Any]) -> None:
    pairwise = demo["pairwise"]
    ui.login("admin")
    ui.goto(f"/projects/{pairwise.pk}/settings/")
    top = rect(ui, "main h1")["y"]
    ui.page.click("#save")
    ui.page.wait_for_selector(".flash >> text=Settings saved.")
    assert rect(ui, "main h1")["y"] == top
    ui.shot("settings-saved")

    # The labeling page: "Saved." after a submit floats over the task bar.
    ui.page.context.clear_cookies()
    ui.login("annotator")
    ui.goto(f"/projects/{pairwise.pk}/annotate/")
    ui.page.wait_for_selector(TASK_ON_SCREEN)
    first = ui.page.get_attribute("#task", "data-assignment")
    prompt, cards = rect(ui, "#turns"), rect(ui, "#responses")
    ui.page.keyboard.press("1")
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_selector(f'{TASK_ON_SCREEN}:not([data-assignment="{first}"])')
    ui.page.wait_for_selector("#message:not([hidden])")
    assert ui.page.inner_text("#message") == "Saved."
    assert rect(ui, "#turns")["y"] == prompt["y"] and rect(ui, "#responses")["y"] == cards["y"]
    in_view_without_scrolling(ui, "#submit", "while Saved. shows")
    ui.shot("labeling-saved")
    ui.assert_clean()
