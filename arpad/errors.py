"""The refusal the apps' services raise: what is wrong (``field``), why, and the HTTP answer.

Each app names its own subclass (``rewardmodel.services.RewardModelError``,
``rlloop.services.PolicyError``) so that a caller can catch one app's refusals; the API
answers any of them the same way (``arpad.api.views.RefusalMixin``).
"""

from __future__ import annotations


class ServiceError(Exception):
    """A refused request: ``field`` names what is wrong, ``status`` is the HTTP answer."""

    def __init__(self, field: str | None, message: str, *, code: str = "invalid", status: int = 400) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code
        self.status = status
