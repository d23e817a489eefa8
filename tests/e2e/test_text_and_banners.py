"""Text as written and banners that tell the truth, in a real Chromium.

Line breaks: a single newline in a prompt or a response is a visual line break on the
labeling page (drawn by ``annotate.js`` from the server's sanitized HTML) and on the
item review page (rendered by the template). Banners: "Choose a response first." goes
as soon as a choice is made; a skip is confirmed on the next task until the next action.
"""

from __future__ import annotations

from typing import Any

import pytest

from annotation.models import Role
from tests.e2e.conftest import UI
from tests.e2e.test_annotate_browser import member, pairwise_project, press, ranking_project, wait_for_task
from tests.factories import make_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The top of each phrase on screen, found through a Range over the text node holding it.
LINE_TOPS = """([selector, phrases]) => {
  const root = document.querySelector(selector);
  const tops = {};
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    for (const p of phrases) {
      const i = n.data.indexOf(p);
      if (i < 0) continue;
      const r = document.createRange();
      r.setStart(n, i);
      r.setEnd(n, i + p.length);
      tops[p] = r.getBoundingClientRect().top;
    }
  }
  return tops;
}"""


def task_with_line_breaks(project: Any) -> Any:
    task = make_task(project)
    task.prompt.messages = [{"role": "user", "content": "prompt first\nprompt second"}]
    task.prompt.save()
    first = task.responses.order_by("task_links__position").first()
    first.text = "line one\nline two\n\n<script>alert(1)</script>"
    first.save()
    return task


def assert_on_separate_lines(ui: UI, selector: str, upper: str, lower: str) -> None:
    tops = ui.page.evaluate(LINE_TOPS, [selector, [upper, lower]])
    assert set(tops) == {upper, lower}, f"{selector}: {tops}"
    assert tops[lower] > tops[upper] + 5, f"{upper!r} and {lower!r} share a line in {selector}: {tops}"
    assert f"{upper}\n{lower}" in ui.page.inner_text(selector)


def test_single_newlines_show_as_line_breaks_on_labeling_and_review_pages(ui: UI):
    project = pairwise_project(0)
    task = task_with_line_breaks(project)
    member(project, "nel")
    member(project, "meg", Role.MANAGER)

    ui.login("nel")
    ui.goto(f"/projects/{project.pk}/annotate/")
    wait_for_task(ui)
    ui.shot("labeling-line-breaks")
    assert_on_separate_lines(ui, "#responses", "line one", "line two")
    assert_on_separate_lines(ui, "#turns", "prompt first", "prompt second")
    assert "<script>alert(1)</script>" in ui.page.inner_text("#responses")  # still shown as text
    assert ui.page.locator("#responses script").count() == 0
    ui.assert_clean()

    ui.page.context.clear_cookies()
    ui.login("meg")
    ui.goto(f"/projects/{project.pk}/tasks/{task.pk}/")
    ui.page.wait_for_selector(".responses.review")
    ui.shot("review-line-breaks")
    assert_on_separate_lines(ui, ".responses.review", "line one", "line two")
    assert_on_separate_lines(ui, ".turns", "prompt first", "prompt second")
    assert ui.page.locator(".responses.review script").count() == 0
    ui.assert_clean()


def message(ui: UI) -> str | None:
    """The banner's text, or None while it is hidden."""
    return ui.page.evaluate(
        "() => { const m = document.getElementById('message'); return m.hidden ? null : m.textContent; }"
    )


def test_choose_first_goes_on_choice_and_a_skip_is_confirmed_until_the_next_action(ui: UI):
    project = pairwise_project(3)
    member(project, "ben")
    ui.login("ben")
    ui.goto(f"/projects/{project.pk}/annotate/")
    first, _ = wait_for_task(ui)
    assert message(ui) is None

    press(ui, "Enter")
    assert message(ui) == "Choose a response first."
    press(ui, "1")
    assert message(ui) is None  # the choice answers it at once

    press(ui, "s")
    ui.page.wait_for_selector("#skip-dialog[open]")
    ui.page.keyboard.type("Needs domain knowledge I lack")
    press(ui, "Enter")
    wait_for_task(ui, str(first))
    ui.page.wait_for_function("() => !document.getElementById('message').hidden")
    assert message(ui) == "Skipped."
    ui.shot("skipped-confirmation")
    ui.page.wait_for_timeout(3000)  # longer than an ordinary confirmation lasts
    assert message(ui) == "Skipped."
    press(ui, "2")
    assert message(ui) is None
    ui.assert_clean()


def test_place_every_response_first_goes_when_a_response_is_placed(ui: UI):
    project = ranking_project(1)
    member(project, "rae")
    ui.login("rae")
    ui.goto(f"/projects/{project.pk}/annotate/")
    wait_for_task(ui)
    press(ui, "Enter")
    assert message(ui) == "Place every response first."
    press(ui, "3")
    assert message(ui) is None
    ui.assert_clean()
