"""API tokens for scripts: checked in one hand-written query, issued, rotated and revoked.

DRF's TokenAuthentication fetches the token and its user through the ORM on every
request; on the annotation hot path that query's compilation cost more CPU than the
database spent on it. Same behaviour (unknown key or inactive user: 401), one raw query,
plus an expiry: a token stops working ``ARPAD_API_TOKEN_MAX_AGE_DAYS`` after it was issued
(401 with a message saying so). A user holds at most one token (DRF's model); asking for
one with the password hands back the live one, or a new one if it expired or if asked to
rotate, and the caller can delete theirs. Logging out of the web UI leaves it alone: it
belongs to scripts, not to the browser session.
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


def api_token_max_age() -> timedelta:
    return timedelta(days=settings.ARPAD_API_TOKEN_MAX_AGE_DAYS)


def api_token_expires_at(token: Token) -> datetime:
    return token.created + api_token_max_age()


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
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
