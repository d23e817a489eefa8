"""The refusal every reward-model service raises: the field, the message, the HTTP answer."""

from __future__ import annotations

from arpad.errors import ServiceError


class RewardModelError(ServiceError):
    """A refused reward-model request (see :class:`arpad.errors.ServiceError`)."""
