"""The accounts pages' forms. What they pass on is checked by ``accounts.services``, which
names the field at fault; the forms only parse."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation

from annotation.models import Role


class InviteForm(forms.Form):
    """A new account for the members page (prefix ``invite``: beside the form that adds an existing one)."""

    username = forms.CharField(max_length=150)
    email = forms.EmailField(label="Email (optional)", required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What the token is for, e.g. the script that will use it.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    expires_in_days = forms.IntegerField(label="Expires in (days)", widget=forms.NumberInput(attrs={"min": 1}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read when the form is made, so that a test's settings override shows.
        longest = settings.ARPAD_API_TOKEN_MAX_AGE_DAYS
        self.fields["expires_in_days"].initial = longest
        self.fields["expires_in_days"].widget.attrs["max"] = longest
        self.fields["expires_in_days"].help_text = f"At most {longest} days."


class ChoosePasswordForm(forms.Form):
    """The invitation page: the password twice. Its strength is ``invitation_accept``'s to judge."""

    new_password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password", "autofocus": True}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    new_password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_new_password2(self) -> str:
        first, second = self.cleaned_data.get("new_password1"), self.cleaned_data.get("new_password2", "")
        if first is not None and first != second:
            raise forms.ValidationError("The two passwords differ: type the same one twice.")
        return second
