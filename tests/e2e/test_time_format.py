"""Times look the same at load, after a live update and after a reload (issue 12, defect 5).

The run page of a running reward-model run shows its last heartbeat: the server writes it as
<time datetime=ISO>, jobs.js formats it at load, and rewardmodel.js rewrites it on every poll of
the job. All three must come out of the one locale-aware formatter (text.js), in the browser's
locale and time zone, never as the server's 24-hour fallback.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest

from annotation.models import Membership, Role
from jobs.models import JobState
from rewardmodel.models import RewardModelRun
from tests.e2e.conftest import CHROMIUM_ARGS, UI
from tests.factories import ProjectFactory, UserFactory
from tests.rewardmodel.test_services import rule_project, rule_snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

# en-US, timeStyle "medium": "11:14:11 PM" (Chromium may put a narrow no-break space before PM).
TIME_ONLY = re.compile(r"^\d{1,2}:\d{2}:\d{2}\s[AP]M$")
# en-US, dateStyle + timeStyle "medium": "Dec 6, 2026, 11:14:11 PM".
DATE_TIME = re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2}\s[AP]M$")


@pytest.fixture
def us_page(browser: Any, live_server: Any) -> Any:
    assert CHROMIUM_ARGS  # the session browser is the project's headless Chromium
    context = browser.new_context(base_url=live_server.url, locale="en-US", timezone_id="UTC")
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource: the server responded")
            else None
        ),
    )
    ui = UI(page=page, origin=live_server.url, test_name="time-format")
    ui.console_errors = errors
    yield ui
    context.close()


def heartbeat_text(ui: UI) -> str:
    return ui.page.inner_text("#run-heartbeat").strip()


def test_heartbeat_has_one_format_at_load_on_update_and_after_reload(us_page: UI) -> None:
    ui = us_page
    project = ProjectFactory(name="Times")
    rule_project(8, project=project)
    snapshot = rule_snapshot(project)
    manager = UserFactory(username="time-manager")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    first = dt.datetime(2026, 12, 6, 23, 14, 11, tzinfo=dt.UTC)
    run = RewardModelRun.objects.create(
        project=project,
        snapshot=snapshot,
        base_model="/models/base",
        state=JobState.RUNNING,
        heartbeat_at=first,
        worker="test-worker",
        owner_token="t" * 16,
    )

    ui.login(manager.username)
    ui.goto(f"/projects/{project.pk}/reward-models/runs/{run.pk}/")
    ui.page.wait_for_selector("#run-heartbeat time")
    at_load = heartbeat_text(ui)
    assert TIME_ONLY.match(at_load), at_load
    assert at_load.replace("\u202f", " ") == "11:14:11 PM"

    # The worker beats again; the page's poll rewrites the heartbeat.
    RewardModelRun.objects.filter(pk=run.pk).update(heartbeat_at=first + dt.timedelta(minutes=8, seconds=44))
    deadline = time.monotonic() + 15
    while heartbeat_text(ui) == at_load and time.monotonic() < deadline:
        time.sleep(0.2)
    live = heartbeat_text(ui)
    assert live.replace("\u202f", " ") == "11:22:55 PM", live
    assert TIME_ONLY.match(live)

    ui.page.reload()
    ui.page.wait_for_selector("#run-heartbeat time")
    assert heartbeat_text(ui) == live  # reload and live update look the same

    # Dates with times elsewhere use the same formatter: the project's run list.
    ui.goto(f"/projects/{project.pk}/reward-models/")
    ui.page.wait_for_selector("body")
    for text in ui.page.locator("time[datetime]").all_inner_texts():
        assert DATE_TIME.match(text.strip()) or TIME_ONLY.match(text.strip()), text
    assert ui.console_errors == []
