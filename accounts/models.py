"""Named API tokens for scripts, and the invitations that let a manager create accounts.

Neither model stores its secret: a token's key and an invitation's link are random
strings shown once, and only their SHA-256 digest is kept (``key_digest``). A 240-bit
random key needs no slow hash: nobody can guess one, so the digest only guards against
a leaked database or backup handing out working keys.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from annotation.models import Project, Role

# Named tokens start with this, so that the authentication tells them from DRF's
# 40-hex-digit tokens without a query, and a leaked key is easy to recognise.
API_TOKEN_KEY_PREFIX = "arpad_"  # noqa: S105 - a marker, not a secret
# Characters of the key shown in lists, to tell tokens apart: the marker and 8 random ones.
API_TOKEN_DISPLAY_CHARS = len(API_TOKEN_KEY_PREFIX) + 8


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_token_key() -> str:
    return API_TOKEN_KEY_PREFIX + secrets.token_urlsafe(30)


def new_invitation_key() -> str:
    return secrets.token_urlsafe(32)


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def live(self) -> ApiTokenQuerySet:
        """Neither revoked nor expired: tokens that still authenticate."""
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class ApiToken(models.Model):
    """A named token of one user, for scripts: ``Authorization: Token <key>``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_digest = models.CharField(max_length=64, unique=True)
    # The first characters of the key, for the user to recognise it in lists.
    prefix = models.CharField(max_length=API_TOKEN_DISPLAY_CHARS)
    created_at = models.DateTimeField(default=timezone.now)
    # Kept to the minute at most (arpad/authentication.py): one write per token and minute.
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("created_at")), name="apitoken_expires_after_creation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "live"


class InvitationState(models.TextChoices):
    PENDING = "pending", "pending"
    USED = "used", "used"
    EXPIRED = "expired", "expired"
    REPLACED = "replaced", "replaced by a newer link"


class Invitation(models.Model):
    """A one-time link for an account a manager created: its owner chooses a password there.

    The account is a member of ``project`` from the start (with ``role``); the link only
    sets its first password. A newer link for the same account replaces this one
    (``replaced_at``).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="invitations_sent"
    )
    key_digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    replaced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["created_by", "created_at"], name="invitation_sent_by_time")]

    def __str__(self) -> str:
        return f"{self.user} to {self.project} ({self.state})"

    @property
    def state(self) -> str:
        if self.used_at is not None:
            return InvitationState.USED
        if self.replaced_at is not None:
            return InvitationState.REPLACED
        if self.expires_at <= timezone.now():
            return InvitationState.EXPIRED
        return InvitationState.PENDING
