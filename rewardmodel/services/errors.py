"""The refusal every reward-model service raises: the field, the message, the HTTP answer."""

from __future__ import annotations


class RewardModelError(Exception):
    """A refused request: ``field`` names what is wrong, ``status`` is the HTTP answer."""

    def __init__(self, field: str | None, message: str, *, code: str = "invalid", status: int = 400) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code
        self.status = status
