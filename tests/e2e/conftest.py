"""Browser tests: Playwright (sync API) driving Debian's Chromium against ``live_server``.

Skipped, with the reason, when /usr/bin/chromium or the playwright package is missing;
never downloads a browser. Every page a test visits is screenshotted into
``var/screenshots/e2e`` (override with ARPAD_SCREENSHOT_DIR); the folder is printed at
the end of the run.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from annotation.models import Membership, Project, Role
from tests.conftest import REPO_ROOT
from tests.factories import ProjectFactory, UserFactory

# Playwright's sync API runs an event loop in this thread; Django then refuses ORM calls
# from it unless told that this is deliberate (the test's ORM calls do not overlap the loop).
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path(os.environ.get("ARPAD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SCREENSHOT_DIR = Path(os.environ.get("ARPAD_SCREENSHOT_DIR") or REPO_ROOT / "var" / "screenshots" / "e2e")
VIEWPORT = {"width": 1440, "height": 900}
PASSWORD = "pw-for-tests-only"  # tests.factories.UserFactory

_shots: list[Path] = []
_timings: dict[str, list[float]] = {}


def record_timing(what: str, seconds: float) -> None:
    """Keep a latency a user would feel; the run's summary prints the median of each."""
    _timings.setdefault(what, []).append(seconds)


def _skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"browser tests need Chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need the playwright package (pip install -e '.[dev]'); never `playwright install`"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _shots:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(_shots)} screenshots in {SCREENSHOT_DIR}")
    for what, values in sorted(_timings.items()):
        median = sorted(values)[len(values) // 2]
        terminalreporter.write_line(f"{what}: median {median * 1000:.0f} ms over {len(values)}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@dataclass
class UI:
    """One browser tab on the live server, recording what a page must never do."""

    page: Any
    origin: str
    test_name: str
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    shots: int = 0

    def url(self, path: str) -> str:
        return self.origin + path

    def goto(self, path: str) -> Any:
        return self.page.goto(self.url(path))

    def shot(self, name: str) -> Path:
        self.shots += 1
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{self.test_name}-{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        _shots.append(path)
        return path

    def login(self, username: str) -> None:
        self.goto("/accounts/login/")
        self.shot("login")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", PASSWORD)
        self.page.keyboard.press("Enter")
        self.page.wait_for_url(self.url("/"))

    def wait_until(self, expression: str, timeout: float) -> None:
        """Poll a page expression from Python: wait_for_function would eval in the page, which the CSP forbids."""
        from playwright.sync_api import Error as PlaywrightError

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.page.evaluate(expression):
                    return
            except PlaywrightError as exc:
                # The page reloads itself when its job ends (the job component's on_finish).
                if "context was destroyed" not in str(exc) and "navigation" not in str(exc):
                    raise
            time.sleep(0.2)
        self.shot("timeout")
        pytest.fail(f"timed out waiting for {expression}")

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not (u == self.origin or u.startswith(self.origin + "/"))]

    def assert_clean(self) -> None:
        """No dialog fired, no request left the live server, no CSP violation or JS error."""
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.foreign_requests() == [], f"requests left the app: {self.foreign_requests()}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


def managed_project(name: str, manager: str) -> tuple[Project, Any]:
    """A project and its manager, who logs in with ``UI.login(manager.username)``."""
    project = ProjectFactory(name=name)
    user = UserFactory(username=manager)
    Membership.objects.create(project=project, user=user, role=Role.MANAGER)
    return project, user


@pytest.fixture
def artifact_root(settings: Any, tmp_path: Path) -> Path:
    """The jobs' files (exports, models, rounds) in this test's own directory."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACT_ROOT


@pytest.fixture
def ui(browser: Any, live_server: Any, request: pytest.FixtureRequest) -> Iterator[UI]:
    context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")
    state = UI(page=page, origin=live_server.url, test_name=name)
    for stale in SCREENSHOT_DIR.glob(f"{name}-*.png"):
        stale.unlink()  # a test's screenshots are those of its latest run only

    def on_dialog(dialog: Any) -> None:
        state.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_route(route: Any) -> None:
        url = route.request.url
        state.requests.append(url)
        if url == state.origin or url.startswith(state.origin + "/"):
            route.continue_()
        else:
            route.abort()

    def on_console(message: Any) -> None:
        # HTTP refusals the test provokes are logged as errors too; CSP violations
        # ("Refused to ...") and script errors are what this is here for.
        if message.type == "error" and not message.text.startswith("Failed to load resource: the server responded"):
            state.console_errors.append(message.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: state.console_errors.append(f"page error: {exc}"))
    page.route("**/*", on_route)
    try:
        yield state
    finally:
        context.close()
