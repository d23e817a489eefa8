"""Answers a request that found the database or the cache unreachable with 503 and ``Retry-After``, not a 500.

While PostgreSQL restarts (or a connection drops mid-request), every view fails with
``OperationalError`` / ``InterfaceError``; while Redis is away, the views that count in
the cache (the login and token throttles) fail with Redis's ``ConnectionError``. That is
the server's moment, not a bug and not the client's fault: a 503 tells scripts and the
labeling page to try again, and the work queue's idempotent submit (client token) makes
the retry safe. A login is refused rather than let through uncounted. Everything else
still reaches Django's 500 handling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
_MESSAGE = "a service the platform needs is unavailable for a moment; retry shortly"


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
    try:
        import redis.exceptions
    except ImportError:  # no Redis client installed: no Redis cache either
        return errors
    return (*errors, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


_UNAVAILABLE = _unavailable_errors()


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, _UNAVAILABLE):
            return None
        logger.warning("service unavailable during %s %s: %s", request.method, request.path, exception)
        if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
            response: HttpResponse = JsonResponse(
                {"detail": _MESSAGE, "code": "unavailable", "field": None}, status=503
            )
        else:
            response = HttpResponse(f"503: {_MESSAGE}.", status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
        return response
