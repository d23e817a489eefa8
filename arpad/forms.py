"""What every app's forms share."""

from __future__ import annotations

from django import forms


def add_refusal(form: forms.BaseForm, message: str, *, target: str | None = None, field: str | None = None) -> None:
    """Show a service's refusal (an ``arpad.errors.ServiceError``) on a form.

    Under the form's field ``target`` when the form has one by that name; else as the
    form's own error, prefixed by ``field`` (the service's name for what it refused) when
    given, so a refusal of an option the form does not show still says which one.
    """
    if target is not None and target in form.fields:
        form.add_error(target, message)
        return
    form.add_error(None, f"{field}: {message}" if field else message)
