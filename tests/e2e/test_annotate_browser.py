"""An annotator's session in a real Chromium: keyboard, drag and drop, XSS, CSRF, permissions."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Judgement, Membership, ProjectKind, Role
from tests.e2e.conftest import UI, record_timing
from tests.factories import ProjectFactory, UserFactory, make_task
from tests.frontend.test_markdown import XSS_PAYLOADS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def member(project: Any, username: str, role: str = Role.ANNOTATOR) -> Any:
    user = UserFactory(username=username)
    Membership.objects.create(project=project, user=user, role=role)
    return user


def pairwise_project(n_tasks: int, **kwargs: Any) -> Any:
    project = ProjectFactory(name="Helpfulness (pairwise)", annotations_per_task=1, allow_ties=True, **kwargs)
    for _ in range(n_tasks):
        make_task(project)
    return project


def ranking_project(n_tasks: int, k: int = 4, **kwargs: Any) -> Any:
    project = ProjectFactory(
        name="Ranking of four",
        kind=ProjectKind.RANKING,
        responses_per_task=k,
        annotations_per_task=1,
        allow_ties=True,
        **kwargs,
    )
    for _ in range(n_tasks):
        make_task(project)
    return project


def wait_for_task(ui: UI, previous: str | None = None) -> tuple[int, list[int]]:
    """Wait until a task other than ``previous`` is on screen; its assignment id and card order."""
    selector = "#task:not([hidden])[data-assignment]"
    if previous:
        selector += f':not([data-assignment="{previous}"])'
    ui.page.wait_for_selector(selector)
    assignment = int(ui.page.get_attribute("#task", "data-assignment"))
    order = [int(x) for x in ui.page.eval_on_selector_all("#responses > article", "els => els.map(e => e.dataset.id)")]
    return assignment, order


def judged_tiers(assignment_id: int) -> list[list[int]]:
    return Judgement.objects.get(assignment_id=assignment_id).tiers


def press(ui: UI, *keys: str) -> None:
    for key in keys:
        ui.page.keyboard.press(key)


def tab_to(ui: UI, selector: str, limit: int = 40) -> None:
    """Move the focus with the Tab key alone until ``selector`` holds it."""
    for _ in range(limit):
        if ui.page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
        ui.page.keyboard.press("Tab")
    pytest.fail(f"Tab never reached {selector}")


def test_annotator_completes_pairwise_and_ranking_tasks_with_the_keyboard(ui: UI):
    pairwise = pairwise_project(5)
    ranking = ranking_project(3)
    user = member(pairwise, "annie")
    Membership.objects.create(project=ranking, user=user, role=Role.ANNOTATOR)

    ui.login("annie")
    ui.shot("project-list")
    ui.page.click(f'a[href="/projects/{pairwise.pk}/annotate/"]')

    expected: dict[int, list[list[int]]] = {}
    # (keys pressed, tiers by display position: L = left, R = right)
    script = [
        (["1"], [["L"], ["R"]]),
        (["ArrowRight"], [["R"], ["L"]]),
        (["ArrowDown"], [["L", "R"]]),
        (["2", "z", "1"], [["L"], ["R"]]),  # undo the first choice
        (["ArrowLeft", "Backspace", "3"], [["L", "R"]]),
    ]
    previous = None
    for i, (keys, tiers) in enumerate(script):
        assignment, order = wait_for_task(ui, previous)
        pos = {"L": order[0], "R": order[1]}
        press(ui, *keys)
        if i == 0:
            first_assignment = assignment
            ui.shot("pairwise-chosen")
            # Confidence with the keyboard: Tab reaches the radios (on 1), an arrow picks the next.
            tab_to(ui, 'input[name="confidence"]')
            press(ui, "ArrowRight")
            assert ui.page.eval_on_selector('input[name="confidence"]:checked', "e => e.value") == "2"
            ui.page.focus("#rationale")
            ui.page.keyboard.type("Left answers the question; right rambles.")
            ui.shot("pairwise-confidence-rationale")
            press(ui, "Control+Enter")
        else:
            started = time.monotonic()
            press(ui, "Enter")
        expected[assignment] = [sorted(pos[x] for x in tier) for tier in tiers]
        previous = str(assignment)
        if 0 < i < len(script) - 1:
            wait_for_task(ui, previous)
            record_timing("Enter to next pairwise task on screen", time.monotonic() - started)
    ui.page.wait_for_selector("#empty:not([hidden])")
    assert ui.page.inner_text("#done-project") == "5"
    assert ui.page.inner_text("#done-today") == "5"
    ui.shot("pairwise-done")

    ui.goto(f"/projects/{ranking.pk}/annotate/")
    ranking_script = [
        # Keys name cards by their displayed number (1..4); moves are (focus target, key).
        (["3", "1", "4", "2"], [[3], [1], [4], [2]], []),
        (["2", "=", "4", "1"], [[2, 4], [1], [3]], []),  # Enter places the last one
        (
            ["1", "2", "4", "z", "3", "4"],
            [[1], [3], [4], [2]],
            # Row 3 (card 3) up one place, then the focused card 4 left (up) one place.
            [("#order li.row:nth-child(3)", "ArrowUp"), ("#responses > article:nth-child(4)", "ArrowLeft")],
        ),
    ]
    previous = None
    for i, (keys, tiers, moves) in enumerate(ranking_script):
        assignment, order = wait_for_task(ui, previous)
        press(ui, *keys)
        for selector, key in moves:
            tab_to(ui, selector)
            ui.shot("ranking-focused")
            press(ui, key)
        if i == 1:
            ui.shot("ranking-tie")
        expected[assignment] = [sorted(order[n - 1] for n in tier) for tier in tiers]
        started = time.monotonic()
        press(ui, "Enter")
        previous = str(assignment)
        if i < len(ranking_script) - 1:
            wait_for_task(ui, previous)
            record_timing("Enter to next ranking task on screen", time.monotonic() - started)
    ui.page.wait_for_selector("#empty:not([hidden])")
    ui.shot("ranking-done")

    # The database holds exactly the tiers that were entered, and nothing else.
    assert {j.assignment_id: j.tiers for j in Judgement.objects.filter(annotator=user)} == expected
    first = Judgement.objects.get(assignment_id=first_assignment)
    assert first.confidence == 2
    assert first.rationale == "Left answers the question; right rambles."
    assert all(j.time_taken_ms is not None and j.time_taken_ms > 0 for j in Judgement.objects.all())
    ui.assert_clean()


def test_ranking_by_drag_and_drop(ui: UI):
    project = ranking_project(1)
    member(project, "dora")
    ui.login("dora")
    ui.goto(f"/projects/{project.pk}/annotate/")
    assignment, order = wait_for_task(ui)
    ui.shot("ranking-empty")
    card = {n: ui.page.locator(f'#responses > article[data-id="{rid}"]') for n, rid in enumerate(order, 1)}
    row = {n: ui.page.locator(f'#order li.row[data-id="{rid}"]') for n, rid in enumerate(order, 1)}
    end = ui.page.locator("#order li.drop-end")

    card[2].drag_to(end)
    card[4].drag_to(end)
    card[1].drag_to(row[2])  # dropped on a row: goes before it
    card[3].drag_to(end)
    assert ui.page.eval_on_selector_all("#order li.row", "els => els.map(e => +e.dataset.id)") == [
        order[0],
        order[1],
        order[3],
        order[2],
    ]
    row[4].drag_to(row[2])  # reorder within the ranking
    ui.shot("ranking-dragged")
    ui.page.click("#submit")
    ui.page.wait_for_selector("#empty:not([hidden])")
    assert judged_tiers(assignment) == [[order[0]], [order[3]], [order[1]], [order[2]]]
    ui.assert_clean()


def test_xss_payloads_render_inert_in_the_browser(ui: UI):
    evil = "\n\n".join(XSS_PAYLOADS)
    project = pairwise_project(0, guidelines="# Guidelines\n\n" + evil)
    project.name = "<img src=x onerror=alert('name')>"
    project.save()
    task = make_task(project)
    task.prompt.messages = [
        {"role": "system", "content": evil},
        {"role": "user", "content": "<script>alert('prompt')</script> ![t](http://evil.example/t.png)"},
        {"role": "assistant", "content": '<svg onload="alert(1)">'},
        {"role": "user", "content": evil},
    ]
    task.prompt.save()
    for response in task.responses.all():
        response.text = evil + "\n\n<img src=http://evil.example/pixel.gif>"
        response.save()
    member(project, "xavier")

    ui.login("xavier")
    ui.shot("project-list-hostile-name")
    ui.goto(f"/projects/{project.pk}/annotate/")
    wait_for_task(ui)
    ui.page.wait_for_timeout(500)  # give any onerror/onload a chance to fire
    ui.shot("xss-annotate")
    # The payloads are shown as text, not run and not dropped silently.
    assert "<script>alert(1)</script>" in ui.page.inner_text("#responses")
    assert "<script>alert('prompt')</script>" in ui.page.inner_text("#turns")
    assert ui.page.locator("#responses script, #turns script, .side script").count() == 0
    assert ui.page.locator("img, svg, iframe, object, embed").count() == 0
    hrefs = ui.page.eval_on_selector_all("main a[href]", "els => els.map(e => e.getAttribute('href'))")
    assert all(h.startswith(("/", "http://", "https://", "mailto:")) for h in hrefs), hrefs
    assert not any(h.lower().startswith(("javascript", "data")) for h in hrefs)
    # Submitting still works on a hostile task.
    press(ui, "1", "Enter")
    ui.page.wait_for_selector("#empty:not([hidden])")
    assert ui.foreign_requests() == []
    ui.assert_clean()


def test_a_post_without_the_csrf_token_is_refused(ui: UI):
    project = pairwise_project(1)
    user = member(project, "carol")
    ui.login("carol")
    ui.goto(f"/projects/{project.pk}/annotate/")
    assignment, order = wait_for_task(ui)
    ui.shot("csrf-page")
    post = """async ([url, withToken]) => {
        const headers = {"Content-Type": "application/json"};
        if (withToken) headers["X-CSRFToken"] = document.querySelector('meta[name="csrf-token"]').content;
        const body = JSON.stringify({ranking: %s, client_token: "0d7b4c1e-3a2f-4b8e-9c6d-5e4f3a2b1c0d"});
        const res = await fetch(url, {method: "POST", headers, body, credentials: "same-origin"});
        return res.status;
    }""" % [[order[0]], [order[1]]]
    url = f"/api/v1/assignments/{assignment}/submit/"
    assert ui.page.evaluate(post, [url, False]) == 403
    assert not Judgement.objects.filter(annotator=user).exists()
    assert ui.page.evaluate(post, [url, True]) == 201
    assert judged_tiers(assignment) == [[order[0]], [order[1]]]
    ui.assert_clean()


def test_an_annotator_cannot_open_manager_pages(ui: UI):
    project = pairwise_project(1)
    member(project, "ann")
    ui.login("ann")
    response = ui.goto("/admin/")
    assert "/admin/login/" in ui.page.url
    assert "not authorized" in ui.page.inner_text("body")
    ui.shot("admin-refused")
    assert response is not None
    # The project's own manager pages answer 403 (tests/e2e/test_manage_browser.py visits them all).
    response = ui.goto(f"/projects/{project.pk}/settings/")
    assert response is not None and response.status == 403
    assert "Not allowed" in ui.page.inner_text("h1")
    ui.shot("settings-refused")
    # The manager's API is refused from the page too, with a valid CSRF token.
    ui.goto(f"/projects/{project.pk}/annotate/")
    wait_for_task(ui)
    status = ui.page.evaluate(
        """async (url) => (await fetch(url, {method: "PATCH", credentials: "same-origin",
            headers: {"Content-Type": "application/json",
                      "X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content},
            body: JSON.stringify({allow_ties: false})})).status""",
        f"/api/v1/projects/{project.pk}/",
    )
    assert status == 403
    project.refresh_from_db()
    assert project.allow_ties is True
    ui.assert_clean()


def test_an_outsider_gets_404_on_another_projects_annotate_page(ui: UI):
    project = pairwise_project(1)
    other = ProjectFactory(name="Someone else's project")
    member(other, "otto")
    ui.login("otto")
    response = ui.goto(f"/projects/{project.pk}/annotate/")
    assert response is not None and response.status == 404
    ui.shot("outsider-404")
    assert "Not found" in ui.page.inner_text("h1")
    assert not Assignment.objects.filter(project=project).exists()
    assert ui.dialogs == [] and ui.foreign_requests() == []


def test_lease_warning_resume_and_skip_with_a_reason(ui: UI):
    project = pairwise_project(2)
    user = member(project, "lee")
    ui.login("lee")
    ui.goto(f"/projects/{project.pk}/annotate/")
    assignment, _ = wait_for_task(ui)
    # The lease is about to run out: a reload resumes the same task and warns.
    Assignment.objects.filter(pk=assignment).update(expires_at=timezone.now() + timedelta(seconds=75))
    ui.page.reload()
    again, _ = wait_for_task(ui)
    assert again == assignment
    ui.page.wait_for_selector("#lease-warning:not([hidden])")
    assert "ends in 1:1" in ui.page.inner_text("#lease-warning")
    assert "Resumed" in ui.page.inner_text("#message")
    ui.shot("lease-warning")

    press(ui, "s")
    ui.page.wait_for_selector("#skip-dialog[open]")
    ui.page.keyboard.type("The prompt is unclear or broken")
    ui.shot("skip-dialog")
    press(ui, "Enter")
    nxt, _ = wait_for_task(ui, str(assignment))
    skipped = Assignment.objects.get(pk=assignment)
    assert skipped.state == AssignmentState.SKIPPED
    assert skipped.skip_reason == "The prompt is unclear or broken"
    assert nxt != assignment and Assignment.objects.get(pk=nxt).annotator == user
    ui.assert_clean()
