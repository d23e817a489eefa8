"""Serializer pieces every app's API uses: the refusal body, named enums, conversations."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_choice_description_list
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

_MESSAGES_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
        "required": ["role", "content"],
    },
}


class ErrorSerializer(serializers.Serializer):
    """The body of a refusal (400, 403, 409): what went wrong, a code for programs, the field at fault."""

    detail = serializers.CharField()
    code = serializers.CharField(
        help_text="For programs, e.g. invalid, invalid_ranking, not_allowed, lease_lost, already_finished, not_ready."
    )
    field = serializers.CharField(allow_null=True, help_text="The request field at fault, if any.")


@extend_schema_field(_MESSAGES_SCHEMA)
class MessagesField(serializers.JSONField):
    """A conversation, passed through as stored (``[{role, content}, ...]``)."""


class NamedChoiceField(serializers.ChoiceField):
    """A choice field whose enum is a schema component with a name of our choosing.

    Tasks, assignments, import jobs, export snapshots and reward-model runs each have a
    ``state`` with its own choices; left to itself, drf-spectacular cannot name the enums
    apart and warns.
    """

    def __init__(self, *, enum_name: str, **kwargs: Any) -> None:
        self.enum_name = enum_name
        super().__init__(**kwargs)


class NamedChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = NamedChoiceField

    def get_name(self) -> str:
        return self.target.enum_name

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "type": "string",
            "enum": list(self.target.choices),
            "description": build_choice_description_list(self.target.choices.items()),
        }
