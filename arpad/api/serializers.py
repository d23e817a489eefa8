"""Serializer pieces every app's API uses: the refusal body, named enums, conversations."""

from __future__ import annotations

from collections.abc import Callable
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


# The roles a conversation holds: the ones the importers write, and the reward model's plain
# format names (rewardmodel/data.py).
MESSAGE_ROLES = ("system", "user", "assistant")


@extend_schema_field(_MESSAGES_SCHEMA)
class MessagesField(serializers.JSONField):
    """A conversation ``[{role, content}, ...]``: passed through as stored on output, checked on input.

    Input must be a non-empty list of at most ``max_messages`` messages (a number, or a
    function read at validation time so that settings apply), each exactly
    ``{role, content}`` with a role of ``MESSAGE_ROLES`` and string content. The length of
    the contents is the caller's to bound (:func:`conversation_chars`).
    """

    def __init__(self, *, max_messages: int | Callable[[], int] | None = None, **kwargs: Any) -> None:
        self.max_messages = max_messages
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, list) or not value:
            raise serializers.ValidationError("must be a non-empty list of {role, content} messages")
        limit = self.max_messages() if callable(self.max_messages) else self.max_messages
        # Counted first: a long list is refused without looking at its messages.
        if limit is not None and len(value) > limit:
            raise serializers.ValidationError(f"at most {limit} messages, got {len(value)}")
        for index, message in enumerate(value):
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                raise serializers.ValidationError(f"message {index}: must be exactly {{role, content}}")
            if not isinstance(message["content"], str):
                raise serializers.ValidationError(f"message {index}: content must be a string")
            if message["role"] not in MESSAGE_ROLES:
                raise serializers.ValidationError(f"message {index}: role must be one of {', '.join(MESSAGE_ROLES)}")
        return value


def conversation_chars(messages: list[dict[str, str]]) -> int:
    """Characters of a checked conversation, roles included: what its size limits count."""
    return sum(len(message["role"]) + len(message["content"]) for message in messages)


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
