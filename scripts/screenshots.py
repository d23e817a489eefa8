"""Start a throwaway copy of the demo and write PNGs of the main pages.

Run through ``make screenshots``. It uses its own state folder (``var/screenshots/demo``),
so a running ``make demo`` is not disturbed, loads the demo projects from the real data,
serves them with gunicorn on a free 127.0.0.1 port, and drives Debian's Chromium
(``/usr/bin/chromium``; never a downloaded browser) through Playwright at 1440x900 and
1280x720. The PNGs land in ``var/screenshots/pages``; the folder is printed at the end.

The pages are data: add a :class:`Page` to ``PAGES`` to get one more PNG per viewport.
The demo has two projects: 1 is the PandaLM pairwise set (three imported judgements per
task), 2 the OpenAssistant K-way rankings; ``admin`` manages both, ``annotator`` labels.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = ROOT / "var" / "screenshots" / "pages"
STATE = ROOT / "var" / "screenshots" / "demo"
CHROMIUM = Path(os.environ.get("ARPAD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
VIEWPORTS = [(1440, 900), (1280, 720)]
TASK_ON_SCREEN = "#task:not([hidden])[data-assignment]"


@dataclass(frozen=True)
class Page:
    """One screenshot: who looks, at which URL, and when the page counts as drawn."""

    name: str  # the PNG is ``{name}-{width}x{height}.png``
    path: str
    user: str | None = "annotator"  # None: logged out
    ready: str = "main"  # a selector that appears once the page is drawn
    follow: str | None = None  # a link to click first, for pages whose URL depends on the data
    full_page: bool = False  # the whole page rather than the first screen
    focus: str | None = None  # reached with the keyboard before the shot, to show the focus ring


PAGES = [
    Page("login", "/accounts/login/", user=None, ready="#id_username"),
    Page("project-list", "/"),
    Page("pairwise", "/projects/1/annotate/", ready=TASK_ON_SCREEN),
    Page("ranking", "/projects/2/annotate/", ready=TASK_ON_SCREEN),
    Page("manager-project-list", "/", user="admin"),
    Page(
        "item-review",
        "/projects/1/tasks/?judgements_min=3",
        user="admin",
        follow="#tasks tbody tr:first-child a",
        ready="#judgements",
    ),
    Page(
        "item-review-ranking",
        "/projects/2/tasks/?judgements_min=1",
        user="admin",
        follow="#tasks tbody tr:first-child a",
        ready="#judgements",
    ),
    Page("task-browser", "/projects/1/tasks/", user="admin", ready="#tasks"),
    Page(
        "task-browser-filtered",
        "/projects/2/tasks/?state=open&judgements_max=0",
        user="admin",
        ready="#tasks",
        focus="#apply-filters",
    ),
    Page("project-settings", "/projects/2/settings/", user="admin", ready="#id_guidelines"),
    Page("project-new", "/projects/new/", user="admin", ready="#id_name"),
    Page("members", "/projects/1/members/", user="admin", ready="#members"),
    Page("imports", "/projects/1/imports/", user="admin", ready="#upload-form"),
    Page("dashboard", "/projects/1/dashboard/", user="admin", ready="#dashboard[data-ready='true']", full_page=True),
    Page("dashboard-ranking", "/projects/2/dashboard/", user="admin", ready="#dashboard[data-ready='true']"),
    Page("exports", "/projects/1/exports/", user="admin", ready="#exports-page[data-ready='true']"),
    Page("reward-models", "/projects/1/reward-models/", user="admin", ready="#rm-list-page"),
    Page("policies", "/projects/1/policies/", user="admin", ready="#rl-list-page"),
    Page("jobs", "/projects/1/jobs/", user="admin", ready="#jobs"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_in(page: Any, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


def main() -> None:
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    OUT.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="arpad.settings",
        DJANGO_DEBUG="1",
        DJANGO_SECURE_HTTPS="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        ARPAD_VAR_DIR=str(STATE),
    )
    env.pop("DATABASE_URL", None)  # always the embedded SQLite file of this throwaway copy
    manage = [str(BIN / "python"), "manage.py"]
    for args in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
        subprocess.run(manage + args, cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "load_demo", f"--password={password}"], cwd=ROOT, env=env, check=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = subprocess.Popen(
        [str(BIN / "gunicorn"), "arpad.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    written: list[Path] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/accounts/login/", timeout=2)  # noqa: S310 - local URL
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise SystemExit("the web server did not start") from None
                time.sleep(0.3)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            for width, height in VIEWPORTS:
                size = f"{width}x{height}"
                pages: dict[str | None, Any] = {}  # one logged-in tab per user and viewport
                for spec in PAGES:
                    if spec.user not in pages:
                        context = browser.new_context(viewport={"width": width, "height": height})
                        pages[spec.user] = page = context.new_page()
                        if spec.user is not None:
                            log_in(page, base, spec.user, password)
                    page = pages[spec.user]
                    page.goto(base + spec.path)
                    if spec.follow:
                        page.click(spec.follow)
                    page.wait_for_selector(spec.ready)
                    if spec.focus:
                        page.focus(spec.focus)
                        page.keyboard.press("Shift+Tab")  # keyboard focus moves: :focus-visible applies
                        page.keyboard.press("Tab")
                    path = OUT / f"{spec.name}-{size}.png"
                    page.screenshot(path=str(path), full_page=spec.full_page)
                    written.append(path)
                for page in pages.values():
                    page.context.close()
            browser.close()
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=15)
    print(f"{len(written)} screenshots in {OUT}")


if __name__ == "__main__":
    main()
