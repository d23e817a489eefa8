"""Accounts a manager creates by invitation, and named API tokens: the flows the pages and the API share.

An invitation creates the account at once (active, no usable password, a member of the
project with the chosen role) and hands back a link whose key is shown once; whoever opens
it sets the account's first password and is logged in. The link works once, until
``ARPAD_INVITATION_MAX_AGE_HOURS`` after it was made, and never for an account that has a
password already, so a manager cannot take over an existing account with one. A manager
creates at most ``ARPAD_INVITATIONS_PER_DAY`` links in 24 hours.

A named token authenticates like the password-issued one (arpad/authentication.py) until it
is revoked or expires (at most ``ARPAD_API_TOKEN_MAX_AGE_DAYS`` after it was made; one made
with a token never outlives that token, so a stolen token cannot renew itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import (
    API_TOKEN_DISPLAY_CHARS,
    ApiToken,
    Invitation,
    InvitationState,
    key_digest,
    new_api_token_key,
    new_invitation_key,
)
from annotation.models import Membership, Project, Role
from arpad.errors import ServiceError


class AccountError(ServiceError):
    """A refused account or token request; ``field`` names what is wrong."""


class UsernameTaken(AccountError):
    """The username belongs to an account already: ``existing`` is that account."""

    def __init__(self, existing: Any) -> None:
        super().__init__(
            "username", f"“{existing.username}” is taken: an account with this name exists already.", code="taken"
        )
        self.existing = existing


# --- named API tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    key: str  # shown once, never stored


@transaction.atomic
def named_token_create(
    *, user: Any, name: str, expires_in_days: int | None = None, not_after: datetime | None = None
) -> IssuedToken:
    """A new named token of ``user``, expiring in ``expires_in_days`` (the longest allowed by default).

    ``not_after`` caps its expiry: the expiry of the token the request came with, if any.
    """
    name = name.strip()
    if not name:
        raise AccountError("name", "Give the token a name, e.g. the script that will use it.", code="required")
    if len(name) > ApiToken._meta.get_field("name").max_length:
        raise AccountError("name", "At most 100 characters.", code="max_length")
    longest = settings.ARPAD_API_TOKEN_MAX_AGE_DAYS
    days = longest if expires_in_days is None else expires_in_days
    if not 1 <= days <= longest:
        raise AccountError("expires_in_days", f"Between 1 and {longest} days (ARPAD_API_TOKEN_MAX_AGE_DAYS).")
    now = timezone.now()
    expires_at = now + timedelta(days=days)
    if not_after is not None:
        if not_after <= now:
            raise AccountError(None, "The token this request came with has expired.", status=401)
        expires_at = min(expires_at, not_after)
    # The user's row lock serialises two creations, so that both cannot pass the count.
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    limit = settings.ARPAD_API_TOKENS_PER_USER
    if ApiToken.objects.filter(user=user).live().count() >= limit:
        raise AccountError(
            None,
            f"You hold {limit} live tokens, the most allowed (ARPAD_API_TOKENS_PER_USER): revoke one first.",
            code="too_many",
            status=409,
        )
    key = new_api_token_key()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        key_digest=key_digest(key),
        prefix=key[:API_TOKEN_DISPLAY_CHARS],
        created_at=now,
        expires_at=expires_at,
    )
    return IssuedToken(token=token, key=key)


@transaction.atomic
def named_token_revoke(*, user: Any, token_id: int) -> ApiToken:
    """Revoke one of ``user``'s tokens (again: no change); :class:`ApiToken.DoesNotExist` for anybody else's."""
    token = ApiToken.objects.select_for_update().get(pk=token_id, user=user)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


# --- invitations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    key: str  # the link's secret: shown once, never stored


def _check_invitation_quota(created_by: Any) -> None:
    # The creator's row lock serialises one manager's concurrent invitations.
    get_user_model().objects.select_for_update().filter(pk=created_by.pk).first()
    limit = settings.ARPAD_INVITATIONS_PER_DAY
    since = timezone.now() - timedelta(hours=24)
    if Invitation.objects.filter(created_by=created_by, created_at__gte=since).count() >= limit:
        raise AccountError(
            None,
            f"You created {limit} invitation links in the last 24 hours, the most allowed "
            "(ARPAD_INVITATIONS_PER_DAY): try again later.",
            code="throttled",
            status=429,
        )


def _issue(*, user: Any, project: Project, role: str, created_by: Any) -> IssuedInvitation:
    now = timezone.now()
    Invitation.objects.filter(user=user, used_at__isnull=True, replaced_at__isnull=True).update(replaced_at=now)
    key = new_invitation_key()
    invitation = Invitation.objects.create(
        user=user,
        project=project,
        role=role,
        created_by=created_by,
        key_digest=key_digest(key),
        created_at=now,
        expires_at=now + timedelta(hours=settings.ARPAD_INVITATION_MAX_AGE_HOURS),
    )
    return IssuedInvitation(invitation=invitation, key=key)


def _clean_username(username: str) -> str:
    username = username.strip()
    if not username:
        raise AccountError("username", "Choose a username.", code="required")
    user_model = get_user_model()
    max_length = user_model._meta.get_field(user_model.USERNAME_FIELD).max_length
    if len(username) > max_length:
        raise AccountError("username", f"At most {max_length} characters.", code="max_length")
    try:
        user_model.username_validator(username)
    except ValidationError as exc:
        raise AccountError("username", " ".join(exc.messages)) from None
    return username


@transaction.atomic
def invitation_create(
    *, project: Project, created_by: Any, username: str, email: str = "", role: str
) -> IssuedInvitation:
    """A new account, a member of ``project`` with ``role``, and its one-time link.

    Refuses a username that exists already, whatever its case (:class:`UsernameTaken`
    carries that account, for the caller to offer adding it instead).
    """
    if role not in Role.values:
        raise AccountError("role", f"One of: {', '.join(Role.values)}.")
    username = _clean_username(username)
    email = email.strip()
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise AccountError("email", "Enter a valid email address, or leave it empty.") from None
    user_model = get_user_model()
    existing = user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__iexact": username}).first()
    if existing is not None:
        raise UsernameTaken(existing)
    _check_invitation_quota(created_by)
    user = user_model(**{user_model.USERNAME_FIELD: username}, email=email)
    user.set_unusable_password()
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        # Created by a concurrent request between the check and the insert.
        raise UsernameTaken(user_model.objects.get(**{user_model.USERNAME_FIELD: username})) from None
    Membership.objects.create(project=project, user=user, role=role)
    return _issue(user=user, project=project, role=role, created_by=created_by)


@transaction.atomic
def invitation_reissue(*, project: Project, created_by: Any, user_id: int) -> IssuedInvitation:
    """A new link for a member invited to ``project`` who never set a password; older links stop working.

    :class:`Membership.DoesNotExist` when ``user_id`` is not a member of ``project``.
    """
    membership = Membership.objects.select_related("user").get(project=project, user_id=user_id)
    user = membership.user
    if not Invitation.objects.filter(project=project, user=user).exists():
        raise AccountError("user_id", f"{user.username} was not invited to this project: they log in as they do.")
    if user.has_usable_password() or Invitation.objects.filter(user=user, used_at__isnull=False).exists():
        raise AccountError("user_id", f"{user.username} has chosen a password already: they log in with it.")
    _check_invitation_quota(created_by)
    return _issue(user=user, project=project, role=membership.role, created_by=created_by)


def invitations_awaiting(*, project: Project) -> dict[int, Invitation]:
    """The latest link of each member of ``project`` who was invited and never opened one, by user id."""
    found = Invitation.objects.filter(project=project, used_at__isnull=True, replaced_at__isnull=True).select_related(
        "user"
    )
    return {inv.user_id: inv for inv in found if not inv.user.has_usable_password()}


class InvitationRefused(AccountError):
    """A link that does not work (any more): the page says why, with 404 or 410."""


def invitation_open(*, key: str, for_update: bool = False) -> Invitation:
    """The invitation of a link that still works, else :class:`InvitationRefused` saying why."""
    found = Invitation.objects.select_related("user", "project")
    if for_update:
        found = found.select_for_update()
    invitation = found.filter(key_digest=key_digest(key)).first()
    if invitation is None:
        raise InvitationRefused(None, "This invitation link is not valid: check that you copied all of it.", status=404)
    state = invitation.state
    if state == InvitationState.USED or invitation.user.has_usable_password():
        raise InvitationRefused(None, "This invitation link was used already: log in with your password.", status=410)
    if state == InvitationState.REPLACED:
        raise InvitationRefused(None, "This invitation link was replaced by a newer one: use the latest.", status=410)
    if state == InvitationState.EXPIRED:
        raise InvitationRefused(
            None, "This invitation link has expired: ask your project manager for a new one.", status=410
        )
    if not invitation.user.is_active:
        raise InvitationRefused(None, "This account is disabled: ask an administrator.", status=410)
    if not Membership.objects.filter(project_id=invitation.project_id, user_id=invitation.user_id).exists():
        raise InvitationRefused(
            None, "This invitation was withdrawn: you are no longer a member of the project.", status=410
        )
    return invitation


@transaction.atomic
def invitation_accept(*, key: str, password: str) -> Any:
    """Set the invited account's first password with the link's key; the account. The link is then used up."""
    invitation = invitation_open(key=key, for_update=True)
    user = invitation.user
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise AccountError("new_password1", " ".join(exc.messages), code="password") from None
    # Guarded by its state: of two requests with one link, only the first sets a password.
    used = Invitation.objects.filter(pk=invitation.pk, used_at__isnull=True).update(used_at=timezone.now())
    if used != 1:
        raise InvitationRefused(None, "This invitation link was used already: log in with your password.", status=410)
    user.set_password(password)
    user.save(update_fields=["password"])
    return user
