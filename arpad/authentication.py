"""API tokens for scripts: checked in one hand-written query, issued, rotated and revoked.

DRF's TokenAuthentication fetches the token and its user through the ORM on every
request; on the annotation hot path that query's compilation cost more CPU than the
database spent on it. Same behaviour (unknown key or inactive user: 401), one raw query,
plus an expiry: a token stops working ``ARPAD_API_TOKEN_MAX_AGE_DAYS`` after it was issued
(401 with a message saying so). A user holds at most one token (DRF's model); asking for
one with the password hands back the live one, or a new one if it expired or if asked to
rotate, and the caller can delete theirs. Logging out of the web UI leaves it alone: it
belongs to scripts, not to the browser session.

Named tokens (``accounts.models.ApiToken``, made on /accounts/tokens/) go through the same
header. Their keys start with ``arpad_``, which picks the table without a query; the key
is looked up by its SHA-256 digest, in one raw query too, and refused with 401 saying why
once revoked or expired. Their ``last_used_at`` is written at most once a minute per
token, so a script's burst of requests costs one write, not one per request.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from accounts.models import API_TOKEN_KEY_PREFIX, ApiToken, key_digest

# How stale a named token's last_used_at may get before a request writes it again.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_max_age() -> timedelta:
    return timedelta(days=settings.ARPAD_API_TOKEN_MAX_AGE_DAYS)


def api_token_expires_at(token: Token) -> datetime:
    return token.created + api_token_max_age()


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token | ApiToken]:
        if key.startswith(API_TOKEN_KEY_PREFIX):
            return self.authenticate_named(key)
        user_model = get_user_model()
        # Bound the way the ORM binds a DateTimeField (on SQLite, the stored text format).
        cutoff = connection.ops.adapt_datetimefield_value(timezone.now() - api_token_max_age())
        users = list(
            user_model.objects.raw(
                f"SELECT u.*, t.created < %s AS token_expired FROM {user_model._meta.db_table} u"  # noqa: S608 - table names from model metadata
                f" JOIN {Token._meta.db_table} t ON t.user_id = u.{user_model._meta.pk.column} WHERE t.key = %s",
                [cutoff, key],
            )
        )
        if not users:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = users[0]
        if user.token_expired:
            raise exceptions.AuthenticationFailed("Token expired: ask /api/v1/auth/token/ for a new one.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, Token(key=key, user=user)

    def authenticate_named(self, key: str) -> tuple[Any, ApiToken]:
        user_model = get_user_model()
        now = timezone.now()
        adapt = connection.ops.adapt_datetimefield_value
        users = list(
            user_model.objects.raw(
                # Expired by its own expiry, or by the setting as it is now (in case it was lowered since).
                "SELECT u.*, t.id AS api_token_id, t.revoked_at IS NOT NULL AS token_revoked,"  # noqa: S608 - table names from model metadata
                " (t.expires_at <= %s OR t.created_at < %s) AS token_expired,"
                " (t.last_used_at IS NOT NULL AND t.last_used_at >= %s) AS token_seen_recently"
                f" FROM {user_model._meta.db_table} u"
                f" JOIN {ApiToken._meta.db_table} t ON t.user_id = u.{user_model._meta.pk.column}"
                " WHERE t.key_digest = %s",
                [adapt(now), adapt(now - api_token_max_age()), adapt(now - LAST_USED_RESOLUTION), key_digest(key)],
            )
        )
        if not users:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = users[0]
        if user.token_revoked:
            raise exceptions.AuthenticationFailed("Token revoked: create a new one at /accounts/tokens/.")
        if user.token_expired:
            raise exceptions.AuthenticationFailed("Token expired: create a new one at /accounts/tokens/.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if not user.token_seen_recently:
            ApiToken.objects.filter(pk=user.api_token_id).update(last_used_at=now)
        return user, ApiToken(pk=user.api_token_id, user=user)


@transaction.atomic
def api_token_issue(*, user: Any, rotate: bool = False) -> Token:
    """The user's live token; a new one (the old one deleted) if it expired, if there was none, or if ``rotate``."""
    # The user's row lock serialises two issues for one user: both would otherwise delete
    # the same old token and insert a new one each, and the second insert breaks the
    # one-token-per-user constraint.
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    token = Token.objects.filter(user=user).first()
    if token is not None and not rotate and api_token_expires_at(token) > timezone.now():
        return token
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


def api_token_revoke(*, user: Any) -> bool:
    """Delete the user's token; whether there was one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return deleted > 0
