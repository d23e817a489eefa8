"""How many password guesses get through before the block, against real gunicorn workers.

Issue 13, finding 3: with a per-process cache, the token endpoint's first 429 came after 113
requests instead of 60, and an X-Forwarded-For header written by the client reset the count.
This starts gunicorn with several workers on a throwaway SQLite database and the default
settings (the file cache under its own var folder), then counts, over HTTP:

- failed web logins for one account, each from a different forged X-Forwarded-For, before 429;
- failed web logins from one address, each for a different account, before 429;
- requests to the token endpoint from one address before the first 429.

It prints the figures and asserts nothing; a count that reaches ``--max-attempts`` means
no limit was met. Run from the repository root:

    .venv/bin/python bench/login_limits.py [--workers 4]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a login's 302 is its answer: report it, do not follow it


def post(url: str, data: dict, *, headers: dict | None = None, json_body: bool = False) -> int:
    """POST once with a fresh cookie jar (a fresh CSRF token for forms); the status code."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    headers = dict(headers or {})
    if json_body:
        body = json.dumps(data).encode()
        headers["Content-Type"] = "application/json"
    else:
        page = opener.open(url, timeout=30).read().decode()
        data = {**data, "csrfmiddlewaretoken": re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]}
        body = urllib.parse.urlencode(data).encode()
        headers["Referer"] = url
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - local URL
    try:
        with opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def count_until_429(attempt, limit: int) -> int:
    for n in range(limit):
        if attempt(n) == 429:
            return n
    return limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (processes)")
    parser.add_argument("--max-attempts", type=int, default=200, help="give up counting after this many")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arpad-login-limits-") as var:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ARPAD_", "DATABASE_URL", "CACHE_URL"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="arpad.settings",
            DJANGO_DEBUG="1",
            DJANGO_SECURE_HTTPS="0",
            DJANGO_SECRET_KEY="bench-" + "x" * 60,
            ARPAD_VAR_DIR=var,
        )
        manage = [str(BIN / "python"), "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        create = "from django.contrib.auth.models import User; User.objects.create_user('victim', password='right-pw')"
        subprocess.run([*manage, "shell", "-v0", "-c", create], cwd=ROOT, env=env, check=True)
        port = free_port()
        log = Path(var) / "gunicorn.log"
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "arpad.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers)],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"

        def clear_cache() -> None:
            script = "from django.core.cache import cache; cache.clear()"
            subprocess.run([*manage, "shell", "-v0", "-c", script], cwd=ROOT, env=env, check=True)

        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{base}/accounts/login/", timeout=2)  # noqa: S310 - local URL
                    break
                except OSError:
                    time.sleep(0.2)
            login = f"{base}/accounts/login/"
            per_account = count_until_429(
                lambda n: post(
                    login, {"username": "victim", "password": f"guess-{n}"}, headers={"X-Forwarded-For": f"10.0.{n}.1"}
                ),
                args.max_attempts,
            )
            right_after = post(login, {"username": "victim", "password": "right-pw"})
            clear_cache()
            per_address = count_until_429(
                lambda n: post(login, {"username": f"user-{n}", "password": "guess"}), args.max_attempts
            )
            clear_cache()
            token = f"{base}/api/v1/auth/token/"
            token_requests = count_until_429(
                lambda n: post(
                    token,
                    {"username": "nobody", "password": ""},
                    json_body=True,
                    headers={"X-Forwarded-For": f"10.1.{n}.1"},
                ),
                args.max_attempts,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"gunicorn workers: {args.workers}")
    print(f"failed web logins for one account before 429 (a new X-Forwarded-For each time): {per_account}")
    print(f"  then the right password: {right_after} (302: logged in)")
    print(f"failed web logins from one address (a new account each time) before 429: {per_address}")
    print(f"token endpoint requests from one address before the first 429: {token_requests}")


if __name__ == "__main__":
    main()
