"""A new manager invites an annotator, who sets a password, makes an API token and labels through the API.

Real Chromium against the live server for the pages; plain HTTP (urllib, no cookies) for the
REST API, so the token alone is what lets the script in.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from accounts.models import ApiToken, Invitation
from annotation.demo import GUIDELINES_PAIRWISE, PANDALM_NAME
from annotation.importers import import_file
from annotation.models import Judgement, Membership, Role
from tests.e2e.conftest import UI, managed_project

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "tulip-harbour-7301"


def api(ui: UI, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    """A script's request: the token header, no browser cookies."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(ui.url(path), data=data, method=method)  # noqa: S310 - the live server
    request.add_header("Authorization", f"Token {key}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def assert_fits_the_viewport(ui: UI) -> None:
    width = ui.page.evaluate("document.documentElement.scrollWidth")
    assert width <= ui.page.viewport_size["width"], f"the page is {width}px wide"


def demo_like_project(tmp_path: Path) -> Any:
    """The demo's pairwise project (its name, guidelines, settings) with a few imported tasks."""
    project, manager = managed_project(PANDALM_NAME, "new-manager")
    project.guidelines = GUIDELINES_PAIRWISE
    project.allow_ties = True
    project.save()
    rows = [
        {"prompt": f"Rewrite sentence {i} in the passive voice.", "responses": [f"Answer A{i}", f"Answer B{i}"]}
        for i in range(3)
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_file(project=project, path=path, format="jsonl")
    return project


def test_a_manager_invites_an_annotator_who_labels_through_the_api_with_a_token(ui: UI, tmp_path: Path):
    project = demo_like_project(tmp_path)
    ui.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui.origin)

    # The manager creates the account on the members page and copies the link, shown once.
    ui.login("new-manager")
    ui.goto(f"/projects/{project.pk}/members/")
    ui.page.wait_for_selector("h2:has-text('Add a person')")
    assert_fits_the_viewport(ui)
    ui.shot("members")
    ui.page.fill("#id_invite-username", "ana")
    ui.page.fill("#id_invite-email", "ana@example.org")
    ui.page.select_option("#id_invite-role", "annotator")
    ui.page.click("#invite-new button[type=submit]")
    ui.page.wait_for_selector("#invitation")
    link = ui.page.input_value("#invitation-link")
    assert link.startswith(ui.url("/accounts/invite/"))
    ui.page.click("#invitation button[data-copy]")
    ui.wait_until("document.querySelector('#invitation .copy-status').textContent === 'Copied.'", timeout=5)
    assert ui.page.evaluate("navigator.clipboard.readText()") == link
    assert_fits_the_viewport(ui)
    ui.shot("invitation-link")
    assert Membership.objects.get(project=project, user__username="ana").role == Role.ANNOTATOR
    ui.goto(f"/projects/{project.pk}/members/")
    assert link not in ui.page.content()
    assert "(invited: link not used yet)" in ui.page.inner_text("tr[data-username='ana']")
    ui.page.click("header.topbar button:has-text('Log out')")
    ui.page.wait_for_url(ui.url("/accounts/login/"))

    # The annotator opens the link, chooses a password and is logged in.
    ui.page.goto(link)
    ui.page.wait_for_selector("h1:has-text('Welcome, ana')")
    assert PANDALM_NAME in ui.page.inner_text("#invited-to")
    ui.shot("invite-page")
    ui.page.fill("#id_new_password1", NEW_PASSWORD)
    ui.page.fill("#id_new_password2", NEW_PASSWORD)
    ui.page.click("button:has-text('Set password and log in')")
    ui.page.wait_for_url(ui.url("/"))
    assert ui.page.inner_text("header.topbar .who") == "ana"
    assert PANDALM_NAME in ui.page.inner_text("main")
    ui.shot("logged-in")
    assert Invitation.objects.get(user__username="ana").used_at is not None

    # On their tokens page (linked from the top bar) they make a token and read its key once.
    ui.page.click("header.topbar a:has-text('API tokens')")
    ui.page.wait_for_selector("h1:has-text('API tokens')")
    assert ui.page.is_visible("#no-tokens")
    ui.page.fill("#id_name", "labeling script")
    ui.page.click("#token-form button[type=submit]")
    ui.page.wait_for_selector("#new-token")
    key = ui.page.input_value("#new-token-key")
    assert key.startswith("arpad_")
    assert_fits_the_viewport(ui)
    ui.shot("token-created")
    ui.goto("/accounts/tokens/")
    assert key not in ui.page.content()
    row = ui.page.inner_text("#tokens tbody tr")
    assert "labeling script" in row and key[:14] in row and "live" in row

    # A script labels a task with the key alone: claim, then submit a ranking.
    status, claim = api(ui, "POST", f"/api/v1/projects/{project.pk}/claim/", key)
    assert status == 200, claim
    assignment = claim["assignment"]
    first, second = (response["id"] for response in assignment["responses"])
    status, judgement = api(
        ui,
        "POST",
        f"/api/v1/assignments/{assignment['id']}/submit/",
        key,
        {"ranking": [[second], [first]], "client_token": str(uuid.uuid4())},
    )
    assert status == 201, judgement
    saved = Judgement.objects.get(pk=judgement["id"])
    assert saved.annotator.username == "ana" and saved.task_id == assignment["task_id"]
    assert ApiToken.objects.get(user__username="ana").last_used_at is not None

    # Revoked on the page, the key is refused by the API, saying why.
    ui.goto("/accounts/tokens/")
    ui.page.click("button[aria-label='Revoke labeling script']")
    ui.page.wait_for_selector(".banner.ok:has-text('revoked')")
    assert "revoked" in ui.page.inner_text("#tokens tbody tr")
    ui.shot("token-revoked")
    status, refused = api(ui, "POST", f"/api/v1/projects/{project.pk}/claim/", key)
    assert status == 401 and "revoked" in refused["detail"]
    ui.assert_clean()
