"""Named API tokens in the API: explicit fields; the key appears only in the answer that creates it."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import ApiToken
from arpad.api.serializers import NamedChoiceField


class ApiTokenSerializer(serializers.ModelSerializer):
    state = NamedChoiceField(
        enum_name="ApiTokenStateEnum",
        choices=["live", "expired", "revoked"],
        read_only=True,
        help_text="Whether the token still works.",
    )

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "state", "created_at", "last_used_at", "expires_at", "revoked_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="What the token is for, e.g. the script that uses it.")
    expires_in_days = serializers.IntegerField(
        required=False,
        help_text="Days until it stops working: 1 to ARPAD_API_TOKEN_MAX_AGE_DAYS, the most by default. "
        "A token made with a token expires no later than that one.",
    )


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    """A new token with its key, which is stored nowhere: pass it as ``context["key"]``."""

    key = serializers.SerializerMethodField(help_text="Send as `Authorization: Token <key>`. Shown this once.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]
        read_only_fields = fields

    @extend_schema_field(str)
    def get_key(self, token: ApiToken) -> str:
        return self.context["key"]
