"""Start a throwaway copy of the demo and write PNGs of the main pages.

Run through ``make screenshots``. It uses its own state folder (``var/screenshots/demo``),
so a running ``make demo`` is not disturbed, loads the demo projects from the real data,
serves them with gunicorn on a free 127.0.0.1 port, and drives Debian's Chromium
(``/usr/bin/chromium``; never a downloaded browser) through Playwright at 1440x900 and
1280x720. The PNGs land in ``var/screenshots/pages``; the folder is printed at the end.
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
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    subprocess.run(manage + ["load_demo", "--password", password], cwd=ROOT, env=env, check=True)
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
                page = browser.new_page(viewport={"width": width, "height": height})
                size = f"{width}x{height}"

                def shot(name: str, page=page, size=size) -> None:
                    path = OUT / f"{name}-{size}.png"
                    page.screenshot(path=str(path))
                    written.append(path)

                page.goto(f"{base}/accounts/login/")
                shot("login")
                page.fill("#id_username", "annotator")
                page.fill("#id_password", password)
                page.keyboard.press("Enter")
                page.wait_for_url(f"{base}/")
                shot("project-list")
                for number, name in ((1, "pairwise"), (2, "ranking")):
                    page.goto(f"{base}/projects/{number}/annotate/")
                    page.wait_for_selector("#task:not([hidden])[data-assignment]")
                    shot(name)
                page.close()
            browser.close()
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=15)
    print(f"{len(written)} screenshots in {OUT}")


if __name__ == "__main__":
    main()
