"""The annotator's flow in a real Chromium: "both are bad", release, the last answer again, a manager's
preview, keys for confidence, Esc and scrolling, the "more" cue, and the same-prompt note."""

from __future__ import annotations

from typing import Any

import pytest

from annotation.models import (
    Assignment,
    AssignmentState,
    Judgement,
    Membership,
    PairVote,
    ProjectKind,
    Prompt,
    Response,
    Role,
)
from annotation.services import assignment_claim_next, judgement_submit
from tests.e2e.conftest import UI
from tests.e2e.test_annotate_browser import member, press, wait_for_task
from tests.factories import ProjectFactory, make_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LONG = "\n\n".join(f"Paragraph {i}: " + "the starter keeps in the fridge for a week or two. " * 8 for i in range(14))


def project_with(n_tasks: int, **kwargs: Any) -> Any:
    fields = {"name": "Flow (pairwise)", "annotations_per_task": 1, "allow_ties": True, **kwargs}
    project = ProjectFactory(**fields)
    for _ in range(n_tasks):
        make_task(project)
    return project


def message(ui: UI) -> str | None:
    return ui.page.evaluate(
        "() => { const m = document.getElementById('message'); return m.hidden ? null : m.textContent; }"
    )


def card_badges(ui: UI) -> list[str]:
    return ui.page.eval_on_selector_all("#responses > article .badge", "bs => bs.map((b) => b.textContent)")


# --- both are bad ------------------------------------------------------------------------------


def test_both_are_bad_by_key_and_button_where_the_project_allows_it(ui: UI):
    project = project_with(2, allow_both_bad=True, allow_ties=False)
    ranking = ProjectFactory(
        name="Flow (ranking)",
        kind=ProjectKind.RANKING,
        responses_per_task=3,
        annotations_per_task=1,
        allow_both_bad=True,
    )
    make_task(ranking)
    plain = project_with(1)
    user = member(project, "bo")
    for other in (ranking, plain):
        Membership.objects.create(project=other, user=user, role=Role.ANNOTATOR)
    ui.login("bo")

    ui.goto(f"/projects/{project.pk}/annotate/")
    first, order = wait_for_task(ui)
    assert "both are bad" in ui.page.inner_text(".keys")
    press(ui, "b")
    assert card_badges(ui) == ["both bad", "both bad"]
    assert ui.page.get_attribute("#both-bad", "aria-pressed") == "true"
    assert ui.page.inner_text("#choice") == "Both are bad. Enter submits."
    ui.shot("both-bad-chosen")
    press(ui, "1")  # another choice ends the verdict
    assert ui.page.get_attribute("#both-bad", "aria-pressed") == "false" and card_badges(ui) == ["better", ""]
    press(ui, "z")  # and undo brings it back
    assert card_badges(ui) == ["both bad", "both bad"]
    press(ui, "Enter")
    second, _ = wait_for_task(ui, str(first))
    judgement = Judgement.objects.get(assignment_id=first)
    assert judgement.both_bad and judgement.tiers == [sorted(order)]
    ui.page.click("#both-bad")  # the button does the same
    press(ui, "Enter")
    ui.page.wait_for_selector("#empty:not([hidden])")
    assert Judgement.objects.get(assignment_id=second).both_bad

    ui.goto(f"/projects/{ranking.pk}/annotate/")
    third, order = wait_for_task(ui)
    assert ui.page.inner_text("#both-bad").startswith("All are bad")
    press(ui, "B")
    assert card_badges(ui) == ["all bad"] * 3
    ui.shot("all-bad-ranking")
    press(ui, "Enter")
    ui.page.wait_for_selector("#empty:not([hidden])")
    judgement = Judgement.objects.get(assignment_id=third)
    assert judgement.both_bad and judgement.tiers == [sorted(order)]
    assert set(PairVote.objects.filter(judgement=judgement).values_list("winner", flat=True)) == {0}

    # A project without the setting has no button, and the key does nothing.
    ui.goto(f"/projects/{plain.pk}/annotate/")
    wait_for_task(ui)
    assert ui.page.locator("#both-bad").count() == 0 and "both are bad" not in ui.page.inner_text(".keys")
    press(ui, "b")
    assert card_badges(ui) == ["", ""]
    ui.assert_clean()


# --- release -----------------------------------------------------------------------------------


def test_release_gives_the_task_back_without_skipping_it(ui: UI):
    project = project_with(2)
    user = member(project, "rita")
    ui.login("rita")
    ui.goto(f"/projects/{project.pk}/annotate/")
    first, _ = wait_for_task(ui)
    first_task = Assignment.objects.get(pk=first).task_id
    press(ui, "r")
    second, _ = wait_for_task(ui, str(first))
    assert message(ui) == "Released: the task is back in the queue."
    assert Assignment.objects.get(pk=first).state == AssignmentState.RELEASED
    assert Assignment.objects.get(pk=second).task_id != first_task  # not handed straight back
    ui.shot("released")
    press(ui, "1", "Enter")
    # The released task comes back to the same person later: it was not skipped.
    again, _ = wait_for_task(ui, str(second))
    assert again == first and Assignment.objects.get(pk=first).state == AssignmentState.LEASED
    ui.page.click("#release")
    ui.page.wait_for_selector("#empty:not([hidden])")
    assert Assignment.objects.get(pk=first).state == AssignmentState.RELEASED
    assert user.assignments.filter(state=AssignmentState.SKIPPED).count() == 0
    ui.assert_clean()


# --- the last answer, again --------------------------------------------------------------------


def test_back_to_the_last_answer_to_change_it_while_the_task_is_open(ui: UI):
    project = project_with(3, annotations_per_task=2)
    user = member(project, "lee")
    other = member(project, "kim")
    ui.login("lee")
    ui.goto(f"/projects/{project.pk}/annotate/")
    first, order = wait_for_task(ui)
    press(ui, "1")
    ui.page.focus("#rationale")
    ui.page.keyboard.type("left is clearer")
    press(ui, "Control+Enter")
    second, _ = wait_for_task(ui, str(first))
    press(ui, "2")  # an answer in progress on the current task, kept while reviewing

    press(ui, "l")
    ui.page.wait_for_selector("#review-bar:not([hidden])")
    assert "Your last answer" in ui.page.inner_text("#review-bar")
    assert card_badges(ui) == ["better", ""]  # the answer as given, the cards as shown then
    assert ui.page.input_value("#rationale") == "left is clearer"
    assert ui.page.inner_text("#submit").startswith("Save change")
    press(ui, "2")
    ui.shot("amend-view")
    press(ui, "Enter")
    ui.page.wait_for_selector("#review-bar", state="hidden")
    assert message(ui) == "Your last answer was changed."
    judgement = Judgement.objects.get(assignment_id=first)
    assert judgement.tiers == [[order[1]], [order[0]]] and judgement.amended_at is not None
    assert list(PairVote.objects.filter(judgement=judgement).values_list("winner", flat=True)) == [
        1 if order[1] < order[0] else -1
    ]
    # Back on the current task, with its answer in progress.
    assert ui.page.get_attribute("#task", "data-assignment") == str(second)
    assert card_badges(ui) == ["", "better"]

    # Esc leaves a review without changing anything.
    press(ui, "l")
    ui.page.wait_for_selector("#review-bar:not([hidden])")
    press(ui, "1", "Escape")
    ui.page.wait_for_selector("#review-bar", state="hidden")
    assert Judgement.objects.get(assignment_id=first).tiers == [[order[1]], [order[0]]]

    # Once another annotator completes the task, the answer is final and the page says so.
    lease = assignment_claim_next(project=project, annotator=other).assignment
    assert lease.task_id == Assignment.objects.get(pk=first).task_id
    judgement_submit(assignment=lease, ranking=[[r] for r in lease.display_order])
    press(ui, "Enter")  # submit the current task; then its answer is the last one
    third, _ = wait_for_task(ui, str(second))
    judgement_submit(
        assignment=assignment_claim_next(project=project, annotator=other).assignment,
        ranking=[sorted(Assignment.objects.get(pk=second).display_order)],
    )
    press(ui, "l")
    ui.page.wait_for_selector("#review-bar.closed:not([hidden])")
    assert "This task is complete: its answers are final." in ui.page.inner_text("#review-bar")
    assert ui.page.is_disabled("#submit")
    ui.shot("amend-closed")
    press(ui, "1")
    assert card_badges(ui) == ["", "better"]  # read-only
    press(ui, "Escape")
    ui.page.wait_for_selector("#review-bar", state="hidden")
    assert ui.page.get_attribute("#task", "data-assignment") == str(third)
    assert user.judgements.count() == 2
    ui.assert_clean()


# --- a manager's preview -----------------------------------------------------------------------


def test_a_manager_looks_at_the_tasks_without_taking_a_lease(ui: UI):
    project = project_with(3)
    member(project, "mona", Role.MANAGER)
    member(project, "ann")
    ui.login("mona")
    ui.goto(f"/projects/{project.pk}/annotate/")
    ui.page.wait_for_selector("#task[data-mode='preview']:not([hidden])")
    assert "nothing is claimed or saved" in ui.page.inner_text("#preview-bar")
    assert ui.page.inner_text("#preview-count") == "Task 1 of 3 open."
    assert ui.page.is_hidden(".finish")
    first = ui.page.get_attribute("#task", "data-task")
    press(ui, "1", "Enter")
    assert card_badges(ui) == ["", ""]  # read-only: keys choose nothing
    ui.shot("manager-preview")
    press(ui, "n")
    ui.page.wait_for_selector(f"#task[data-mode='preview']:not([data-task='{first}'])")
    assert ui.page.inner_text("#preview-count") == "Task 2 of 3 open."
    press(ui, "p")
    ui.page.wait_for_selector(f"#task[data-task='{first}']")
    assert Assignment.objects.count() == 0  # looking took nothing from the annotators

    # Labeling for real is one click away, and claims as before.
    ui.page.click("#label-yourself")
    wait_for_task(ui)
    assert Assignment.objects.filter(annotator__username="mona").count() == 1
    assert ui.page.locator("#preview-bar").count() == 0
    ui.assert_clean()

    # An annotator never sees the preview.
    ui.page.context.clear_cookies()
    ui.login("ann")
    ui.goto(f"/projects/{project.pk}/annotate/")
    wait_for_task(ui)
    assert ui.page.locator("#preview-bar").count() == 0
    assert Assignment.objects.filter(annotator__username="ann").count() == 1
    ui.assert_clean()


# --- keys: confidence, Esc, scrolling; the "more" cue -------------------------------------------


def test_keys_for_confidence_esc_and_scrolling_a_long_response(ui: UI):
    project = project_with(1)
    task = project.tasks.get()
    Response.objects.filter(pk__in=task.response_ids()).update(text=LONG)
    member(project, "kai")
    ui.login("kai")
    ui.goto(f"/projects/{project.pk}/annotate/")
    wait_for_task(ui)
    keys = ui.page.inner_text(".keys")
    assert "confidence" in keys and "scroll" in keys and "leave the rationale box" in keys

    checked = "() => { const c = document.querySelector('input[name=confidence]:checked'); return c && c.value; }"
    press(ui, "Shift+Digit3")
    assert ui.page.evaluate(checked) == "3"
    press(ui, "Shift+Digit5")
    assert ui.page.evaluate(checked) == "5"
    press(ui, "Shift+Digit5")
    assert ui.page.evaluate(checked) is None

    ui.page.focus("#rationale")
    ui.page.keyboard.type("12")
    press(ui, "Escape")
    assert ui.page.evaluate("document.activeElement.id") == "workspace"
    press(ui, "1")  # the keys work again at once
    assert card_badges(ui) == ["better", ""]
    assert ui.page.input_value("#rationale") == "12"

    # Both cards overflow: the cue shows on each until the text's end is in view.
    cards = "#responses > article"
    assert ui.page.eval_on_selector_all(cards, "cs => cs.every((c) => c.scrollHeight > c.clientHeight + 100)")
    ui.page.wait_for_selector(f"{cards}.more-below >> nth=1")
    cue = ui.page.locator(f"{cards}:first-child .more span")
    assert cue.is_visible() and cue.inner_text() == "more ↓"
    cue_box, card_box = cue.bounding_box(), ui.page.locator(f"{cards}:first-child").bounding_box()
    assert abs((cue_box["y"] + cue_box["height"]) - (card_box["y"] + card_box["height"])) < 4  # at its bottom edge
    ui.shot("more-cue")
    top = "(s) => [...document.querySelectorAll(s)].map((c) => c.scrollTop)"
    # Hovering the right card, J scrolls it alone; K scrolls it back.
    right_box = ui.page.locator(f"{cards}:nth-child(2)").bounding_box()  # (hover() would scroll the card)
    ui.page.mouse.move(right_box["x"] + right_box["width"] / 2, right_box["y"] + right_box["height"] / 2)
    press(ui, "j")
    left, right = ui.page.evaluate(top, cards)
    assert left == 0 and right > 100
    press(ui, "k")
    assert ui.page.evaluate(top, cards) == [0, 0]
    # With the pointer elsewhere, J scrolls both, down to the end, where the cue goes.
    ui.page.mouse.move(5, 5)
    for _ in range(40):
        press(ui, "j")
    assert all(t > 100 for t in ui.page.evaluate(top, cards))
    ui.page.wait_for_selector(f"{cards}:first-child:not(.more-below)")
    assert not cue.is_visible()
    ui.shot("scrolled-to-the-end")
    ui.assert_clean()


# --- the same prompt twice in a row ------------------------------------------------------------


def test_the_same_prompt_again_is_said_to_be_so(ui: UI):
    project = project_with(0)
    messages = [{"role": "user", "content": "Name three rivers of Europe."}]
    for _ in range(2):
        task = make_task(project)
        Prompt.objects.filter(pk=task.prompt_id).update(messages=messages)
    make_task(project)  # another prompt
    member(project, "sam")
    ui.login("sam")
    ui.goto(f"/projects/{project.pk}/annotate/")
    first, _ = wait_for_task(ui)
    assert ui.page.is_hidden("#same-prompt")
    turns = ui.page.locator("#turns").bounding_box()
    press(ui, "1", "Enter")
    second, _ = wait_for_task(ui, str(first))
    assert ui.page.is_visible("#same-prompt")
    assert ui.page.locator("#turns").bounding_box() == turns  # the note moves nothing
    assert ui.page.inner_text("#same-prompt") == "Same prompt as the last task, different responses"
    ui.shot("same-prompt-note")
    press(ui, "2", "Enter")
    wait_for_task(ui, str(second))
    assert ui.page.is_hidden("#same-prompt")
    ui.assert_clean()
