"""Account pages: the invitation link where an invited person chooses a password, and your API tokens.

Secrets (a new token's key, an invitation link) are shown in the answer to the POST that
made them and stored nowhere, not even in the session: reloading the page does not bring
them back. Both pages are sent with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from rest_framework.authtoken.models import Token

from accounts.forms import ChoosePasswordForm, TokenCreateForm
from accounts.models import ApiToken
from accounts.services import (
    AccountError,
    InvitationRefused,
    IssuedInvitation,
    invitation_accept,
    invitation_open,
    named_token_create,
    named_token_revoke,
)
from arpad.authentication import api_token_expires_at, api_token_revoke
from arpad.forms import add_refusal
from arpad.http import no_store


def invitation_link(request: HttpRequest, issued: IssuedInvitation) -> str:
    """The absolute URL of an invitation, for the manager to pass on."""
    return request.build_absolute_uri(reverse("account-invite", kwargs={"key": issued.key}))


@no_store
def invite_accept(request: HttpRequest, key: str) -> HttpResponse:
    """An invitation link: choose the account's first password, then you are logged in."""
    try:
        invitation = invitation_open(key=key)
    except InvitationRefused as refused:
        return render(request, "accounts/invite_refused.html", {"reason": refused.message}, status=refused.status)
    form = ChoosePasswordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = invitation_accept(key=key, password=form.cleaned_data["new_password1"])
        except InvitationRefused as refused:
            return render(request, "accounts/invite_refused.html", {"reason": refused.message}, status=refused.status)
        except AccountError as refused:
            add_refusal(form, refused.message, target=refused.field)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("project-list")
    return render(request, "accounts/invite.html", {"invitation": invitation, "form": form})


@login_required
@no_store
def api_tokens(request: HttpRequest) -> HttpResponse:
    """Your named API tokens: create one (its key shown once), list them, revoke one."""
    form = TokenCreateForm()
    issued = None
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            form = TokenCreateForm(request.POST)
            if form.is_valid():
                try:
                    issued = named_token_create(
                        user=request.user,
                        name=form.cleaned_data["name"],
                        expires_in_days=form.cleaned_data["expires_in_days"],
                    )
                except AccountError as refused:
                    add_refusal(form, refused.message, target=refused.field)
                else:
                    form = TokenCreateForm()
                    status = 201
        elif action == "revoke":
            try:
                token = named_token_revoke(user=request.user, token_id=int(request.POST.get("token_id", "")))
            except (ValueError, ApiToken.DoesNotExist):
                messages.error(request, "You hold no such token.")
            else:
                messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
            return redirect("account-tokens")
        elif action == "revoke-password-token":
            if api_token_revoke(user=request.user):
                messages.success(request, "The token issued with your password was revoked.")
            else:
                messages.error(request, "You hold no token issued with your password.")
            return redirect("account-tokens")
        else:
            messages.error(request, "Unknown action.")
            return redirect("account-tokens")
    password_token = Token.objects.filter(user=request.user).first()
    context = {
        "form": form,
        "issued": issued,
        "tokens": ApiToken.objects.filter(user=request.user),
        "password_token": password_token,
        "password_token_expires_at": api_token_expires_at(password_token) if password_token else None,
    }
    return render(request, "accounts/tokens.html", context, status=status)
