"""Brute-force limits (issue 13, finding 3): the web login, the admin login and the token endpoint.

Counts per account and per address live in a cache every web process shares, and the
address is the peer's unless proxies are configured (a client-written X-Forwarded-For
changes nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from arpad.cache import FileCache
from arpad.throttling import address_bucket

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pw-for-tests-only"
WEB_LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
TOKEN = "/api/v1/auth/token/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):
    """Small limits, so that the tests stay short; the defaults are checked separately."""
    settings.ARPAD_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    settings.ARPAD_LOGIN_MAX_FAILURES_PER_ADDRESS = 5
    settings.ARPAD_LOGIN_WINDOW_SECONDS = 600
    return settings


def web_login(username: str, password: str, *, address: str = "10.0.0.1", **headers: str):
    return Client().post(WEB_LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address, **headers)


def admin_login(username: str, password: str, *, address: str = "10.0.0.1"):
    return Client().post(ADMIN_LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def token_login(username: str, password: str, *, address: str = "10.0.0.1", **headers: str):
    return APIClient().post(
        TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=address, **headers
    )


def logged_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


class TestWebLogin:
    def test_an_account_is_blocked_after_its_limit_even_with_the_right_password(self, limits, annotator):
        assert [web_login("annotator", "guess").status_code for _ in range(3)] == [200, 200, 200]
        refused = web_login("annotator", PASSWORD)
        assert refused.status_code == 429
        assert int(refused["Retry-After"]) == 600
        page = refused.content.decode()
        assert "Too many failed logins for this account" in page and "10 minutes" in page
        # From another address too: the account's count is not the address's.
        assert web_login("annotator", PASSWORD, address="10.9.9.9").status_code == 429

    def test_other_accounts_still_log_in_from_the_same_address(self, limits, annotator, manager):
        for _ in range(4):
            web_login("annotator", "guess")
        assert logged_in(web_login("manager", PASSWORD))

    def test_an_address_is_blocked_after_its_limit_across_accounts(self, limits, annotator, manager):
        for name in ["a", "b", "c", "d", "e"]:
            assert web_login(name, "guess").status_code == 200
        refused = web_login("manager", PASSWORD)
        assert refused.status_code == 429
        assert "from your network address" in refused.content.decode()
        # Somebody elsewhere is not affected.
        assert logged_in(web_login("manager", PASSWORD, address="10.0.0.2"))

    def test_successful_logins_do_not_count(self, limits, annotator):
        for _ in range(10):
            assert logged_in(web_login("annotator", PASSWORD))
        for _ in range(2):
            web_login("annotator", "guess")
        assert logged_in(web_login("annotator", PASSWORD))

    def test_the_account_count_ignores_case(self, limits, annotator):
        for name in ["Annotator", "ANNOTATOR", "annotator"]:
            web_login(name, "guess")
        assert web_login("annotator", PASSWORD).status_code == 429

    def test_the_block_ends_with_the_window(self, limits, annotator):
        limits.ARPAD_LOGIN_WINDOW_SECONDS = 1
        for _ in range(3):
            web_login("annotator", "guess")
        assert web_login("annotator", PASSWORD).status_code == 429
        time.sleep(1.2)
        assert logged_in(web_login("annotator", PASSWORD))

    def test_a_forwarded_for_header_is_ignored_without_proxies(self, limits, annotator):
        for i in range(5):
            web_login(f"user-{i}", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
        assert web_login("annotator", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200").status_code == 429

    def test_behind_a_proxy_the_address_it_appended_counts(self, limits, annotator, settings):
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
        proxy = "172.16.0.1"
        for i in range(5):
            # The client wrote the first address; the proxy appended the one it saw.
            web_login(f"user-{i}", "guess", address=proxy, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7")
        blocked = web_login("annotator", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
        assert blocked.status_code == 429
        other_client = web_login("annotator", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.8")
        assert logged_in(other_client)


class TestAdminLogin:
    def test_the_admin_login_has_the_same_limits(self, limits, manager):
        manager.is_staff = True
        manager.save()
        assert [admin_login("manager", "guess").status_code for _ in range(3)] == [200, 200, 200]
        refused = admin_login("manager", PASSWORD)
        assert refused.status_code == 429 and refused["Retry-After"] == "600"
        assert "Too many failed logins for this account" in refused.content.decode()
        assert "_auth_user_id" not in refused.client.session

    def test_staff_still_log_in(self, limits, manager):
        manager.is_staff = True
        manager.save()
        assert logged_in(admin_login("manager", PASSWORD))

    def test_web_and_admin_failures_share_the_account_count(self, limits, manager):
        web_login("manager", "guess")
        admin_login("manager", "guess")
        token_login("manager", "guess")
        assert admin_login("manager", PASSWORD).status_code == 429


class TestTokenEndpoint:
    def test_password_guesses_are_limited_per_account(self, limits, annotator):
        codes = [token_login("annotator", "guess", address=f"10.1.0.{i}").status_code for i in range(4)]
        assert codes == [400, 400, 400, 429]
        refused = token_login("annotator", PASSWORD, address="10.1.0.99")
        assert refused.status_code == 429 and refused["Retry-After"] == "600"
        assert "Too many failed logins for this account" in refused.json()["detail"]

    def test_the_request_rate_is_exact_and_ignores_forwarded_for(self, settings, annotator):
        from annotation.api import views

        # The rate itself, 60/minute by default: the 61st request of a minute is refused.
        assert views.TokenThrottle().num_requests == settings.ARPAD_TOKEN_REQUESTS_PER_MINUTE == 60
        codes = [token_login("nobody", "", address="10.2.0.1").status_code for _ in range(61)]
        assert codes == [400] * 60 + [429]
        # A forged X-Forwarded-For is no way around it.
        assert token_login("nobody", "", address="10.2.0.1", HTTP_X_FORWARDED_FOR="192.0.2.9").status_code == 429


class TestDefaults:
    def test_attempts_that_get_through_before_the_block(self, settings, annotator, capsys):
        """The measured figure of the README: with the default limits, per account and per address."""
        per_account = 0
        while web_login("annotator", "guess", address=f"10.3.0.{per_account % 250}").status_code == 200:
            per_account += 1
        cache.clear()
        per_address = 0
        while web_login(f"sprayed-{per_address}", "guess", address="10.4.0.1").status_code == 200:
            per_address += 1
        with capsys.disabled():
            print(f"\nfailed logins before the block: {per_account} per account, {per_address} per address")
        assert per_account == settings.ARPAD_LOGIN_MAX_FAILURES_PER_ACCOUNT == 10
        assert per_address == settings.ARPAD_LOGIN_MAX_FAILURES_PER_ADDRESS == 30
        assert settings.ARPAD_LOGIN_WINDOW_SECONDS == 900


class TestSharedCache:
    def test_the_configured_cache_is_shared_by_processes(self, settings):
        backend = settings.CACHES["default"]["BACKEND"]
        assert backend in {"arpad.cache.FileCache", "django.core.cache.backends.redis.RedisCache"}

    def test_counts_from_another_process_add_up_exactly(self, tmp_path):
        """Two processes counting at once into one file cache lose nothing (Django's own incr would)."""
        local = FileCache(str(tmp_path), {})
        local.add("n", 0, timeout=60)
        script = (
            "import sys; from django.conf import settings; settings.configure();"
            "from arpad.cache import FileCache; c = FileCache(sys.argv[1], {});"
            "[c.incr('n') for _ in range(200)]"
        )
        other = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=dict(os.environ))
        for _ in range(200):
            local.incr("n")
        assert other.wait(timeout=60) == 0
        assert local.get("n") == 400

    def test_incr_keeps_the_window(self, tmp_path):
        local = FileCache(str(tmp_path), {"TIMEOUT": 300})
        local.add("n", 0, timeout=1)
        local.incr("n")
        time.sleep(1.2)
        assert local.get("n") is None
        with pytest.raises(ValueError):
            local.incr("n")


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not an address", "not an address"),
    ],
)
def test_address_buckets(address, bucket):
    assert address_bucket(address) == bucket


def test_an_unknown_cache_url_refuses_to_start():
    from django.core.exceptions import ImproperlyConfigured

    from arpad.env import parse_cache_url

    assert parse_cache_url("redis://redis:6379/1")["BACKEND"].endswith("RedisCache")
    assert parse_cache_url("file:///var/cache/arpad")["LOCATION"] == "/var/cache/arpad"
    for bad in ("locmem://", "file://relative/dir", "memcached://x"):
        with pytest.raises(ImproperlyConfigured):
            parse_cache_url(bad)
