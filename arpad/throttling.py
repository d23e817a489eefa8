"""Brute-force limits on password checks, and the client address every throttle counts by.

Every password check (the web login, the admin login, the API token endpoint) goes through
:func:`login_attempt_start`, which counts the attempt against the account and against the
client's address *before* the password is checked, and refuses it once either count is
over its limit (``ARPAD_LOGIN_MAX_FAILURES_PER_ACCOUNT`` / ``_PER_ADDRESS`` within
``ARPAD_LOGIN_WINDOW_SECONDS``). A login that succeeds takes its count back, so only
failures stay counted. Counting first means parallel guesses cannot all slip past a check
that none of them has counted yet; refusing before the check means the answer to a
refused guess says nothing about the password.

Both limits, because each alone has a gap: per address only, a password can be guessed
from many addresses; per account only, one address can try a few passwords on every
account. A locked account is locked from every address (the price of the first: anyone can
lock an account for one window by failing on it), but other accounts log in as usual,
from the same address too while it is under its own limit.

The counts live in the shared cache (``CACHES``, ``arpad.cache``) and each window starts
at its first failure. The address is the peer's unless ``ARPAD_NUM_PROXIES`` says that many
proxies append to ``X-Forwarded-For`` (:func:`client_address`, DRF's rule, so the token
endpoint's request throttle counts the same address); IPv6 addresses count per /64, the
block one subscriber usually holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import AnonRateThrottle, BaseThrottle


def client_address(request: Any) -> str:
    """The client's address: the peer's, or the one the outermost of ``ARPAD_NUM_PROXIES`` proxies saw."""
    # DRF's rule, fed by REST_FRAMEWORK["NUM_PROXIES"] = ARPAD_NUM_PROXIES; it reads only the
    # request's headers and META, so a plain Django request serves as well as DRF's.
    return BaseThrottle().get_ident(request) or ""


def address_bucket(address: str) -> str:
    """What one client's failures are counted under: the address, or its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a proxy wrote something else): counted as written
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class AddressRateThrottle(AnonRateThrottle):
    """DRF's anonymous request rate, counted per :func:`address_bucket` of :func:`client_address`."""

    def get_ident(self, request: Any) -> str:
        return address_bucket(client_address(request))


class LoginThrottled(Exception):
    """Too many failed logins for the account or from the address; ``message`` says which."""

    def __init__(self, *, by: str, retry_after: int) -> None:
        self.by = by
        self.retry_after = retry_after
        minutes = max(1, math.ceil(retry_after / 60))
        whom = "for this account" if by == "account" else "from your network address"
        self.message = (
            f"Too many failed logins {whom}. Wait up to {minutes} minute{'s' if minutes != 1 else ''} and try again."
        )
        super().__init__(self.message)


def _key(kind: str, value: str) -> str:
    # Hashed: a username or address may hold anything, a cache key may not.
    return f"login-failures:{kind}:{hashlib.sha256(value.encode()).hexdigest()}"


def _count(key: str, window: int) -> int:
    cache.add(key, 0, timeout=window)  # starts the window at the first attempt; a no-op after
    try:
        return cache.incr(key)
    except ValueError:  # the window ended between the two calls: a new one
        cache.add(key, 0, timeout=window)
        return cache.incr(key)


def _uncount(key: str) -> None:
    with contextlib.suppress(ValueError):  # the window ended meanwhile: nothing to take back
        cache.decr(key)


@dataclass
class LoginAttempt:
    """An attempt that was counted; :meth:`succeeded` takes it back."""

    keys: list[str] = field(default_factory=list)

    def succeeded(self) -> None:
        while self.keys:
            _uncount(self.keys.pop())


def login_attempt_start(*, request: Any, username: str) -> LoginAttempt:
    """Count a password check for ``username`` from the request's client, or refuse it.

    Raises :class:`LoginThrottled` when the account or the address is over its limit; the
    refused attempt is not counted. Call :meth:`LoginAttempt.succeeded` when the password
    was right; a failure needs nothing more.
    """
    window = settings.ARPAD_LOGIN_WINDOW_SECONDS
    # Case-folded: "Admin" and "admin" share a count whatever the database's collation.
    limits = [
        ("account", _key("account", username.strip().casefold()), settings.ARPAD_LOGIN_MAX_FAILURES_PER_ACCOUNT),
        (
            "address",
            _key("address", address_bucket(client_address(request))),
            settings.ARPAD_LOGIN_MAX_FAILURES_PER_ADDRESS,
        ),
    ]
    attempt = LoginAttempt()
    for by, key, limit in limits:
        attempt.keys.append(key)
        if _count(key, window) > limit:
            # No password is checked, so nothing was tried: take back what this attempt counted.
            attempt.succeeded()
            raise LoginThrottled(by=by, retry_after=window)
    return attempt
