"""The web and admin login pages, with the brute-force limits of :mod:`arpad.throttling`.

Django's login forms with one change: the password check is counted, and refused once the
account or the client's address is over its limit. A refusal is the form's error (the page
says which limit and how long to wait) on a 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpRequest, HttpResponse

from arpad.throttling import LoginThrottled, login_attempt_start

THROTTLED_CODE = "throttled"


class ThrottledLoginMixin:
    """For a subclass of Django's ``AuthenticationForm``: its password check, counted and limited."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]
    retry_after: int | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()  # type: ignore[misc]  # nothing to check, nothing to count
        try:
            attempt = login_attempt_start(request=self.request, username=username)
        except LoginThrottled as refused:
            self.retry_after = refused.retry_after
            raise ValidationError(refused.message, code=THROTTLED_CODE) from None
        cleaned = super().clean()  # type: ignore[misc]  # a wrong password raises: the failure stays counted
        attempt.succeeded()
        return cleaned


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    """The web login (``/accounts/login/``)."""


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin login (``/admin/login/``): the same limits, and staff only as before."""


def throttled_status(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A login view whose refused attempt answers 429 with ``Retry-After`` instead of 200."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if isinstance(form, ThrottledLoginMixin) and isinstance(form, Form) and form.retry_after is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response

    return wrapped


web_login = throttled_status(auth_views.LoginView.as_view(authentication_form=LoginForm))


class AdminSite(admin.AdminSite):
    """The default admin site (``arpad.admin_site.AdminConfig``), its login limited like the web login."""

    login_form = AdminLoginForm

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return throttled_status(super().login)(request, extra_context)
