"""Limits on what a request may send, for plain Django views and for DRF (``arpad.parsers``).

- :func:`body_limit` caps one view's request body. Django's DATA_UPLOAD_MAX_MEMORY_SIZE
  is a single global cap (10 MiB, sized for the manager's forms); the annotators'
  endpoints take a few hundred bytes, so they refuse more before anything reads or
  parses it (issue 13).
- :func:`loads_json` parses a JSON body with a nesting limit and without NaN/Infinity.
  Python's parser recurses once per level: thousands of ``[`` raise RecursionError (a
  500), and a structure just under the interpreter's limit can still overflow the stack
  of whatever walks it next.

Refusals use the platform's error shape, ``{"detail", "code", "field"}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

# The cap of endpoints that take no body or a short one (a claim; a skip's reason of at
# most 500 characters). A submit's cap is set beside its serializer.
SMALL_BODY_MAX_BYTES = 64 * 1024
# Deeper than any body the platform accepts (a submit is 3 levels), far below the
# interpreter's recursion limit.
MAX_JSON_DEPTH = 32


class JSONInputError(ValueError):
    """A body that is not JSON the platform accepts; the message says why."""


def reject_constant(name: str) -> Any:
    raise JSONInputError(f"{name} is not valid JSON")


def finite_float(text: str) -> float:
    # 1e400 is valid JSON that Python reads as infinity, which no database column stores.
    value = float(text)
    if not math.isfinite(value):
        raise JSONInputError(f"the number {text} is too large")
    return value


def has_non_finite(value: Any) -> bool:
    """Whether a parsed JSON value holds NaN or an infinity anywhere."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative: walking a deep structure recursively is the very thing being refused.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, keep_non_finite: bool = False) -> Any:
    """``json.loads`` that refuses NaN, infinities and nesting deeper than ``max_depth``.

    Raises :class:`JSONInputError` (a ValueError) for those and for malformed JSON.
    ``keep_non_finite`` reads NaN and infinities as floats instead, for a caller that
    names the field holding one (see :func:`has_non_finite`).
    """
    hooks = {} if keep_non_finite else {"parse_constant": reject_constant, "parse_float": finite_float}
    try:
        value = json.loads(text, **hooks)
    except RecursionError:
        raise JSONInputError(f"JSON nested deeper than {max_depth} levels") from None
    except JSONInputError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JSONInputError(str(exc)) from None
    if isinstance(value, dict | list) and _deeper_than(value, max_depth):
        raise JSONInputError(f"JSON nested deeper than {max_depth} levels")
    return value


def no_store(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorate a view whose answers must not be kept by a browser or proxy cache.

    For pages and responses that carry judgements, gold answers or tokens: a shared
    computer's back button or disk cache must not show them to the next person.
    """

    @wraps(view)
    def uncached(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        return response

    return uncached


def error_response(status: int, detail: str, *, code: str = "invalid", field: str | None = None) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code, "field": field}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def request_too_large(max_bytes: int) -> JsonResponse:
    return error_response(413, f"the request body is larger than {max_bytes:,} bytes", code="too_large")


def content_length(request: HttpRequest) -> int:
    """The declared body size. Django reads no more than this, and nothing without it."""
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def body_limit(max_bytes: int) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a view so that a body over ``max_bytes`` is a 413 before the view runs.

    For a DRF view, decorate its ``dispatch`` (``method_decorator(..., name="dispatch")``).
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if content_length(request) > max_bytes:
                return request_too_large(max_bytes)
            return view(request, *args, **kwargs)

        return limited

    return decorator


# --- error pages ------------------------------------------------------------------------------
# Django answers some refusals before any view runs (a body over DATA_UPLOAD_MAX_MEMORY_SIZE,
# too many fields, an unknown URL). Under /api/ they take the API's shape, like every other
# refusal there; pages keep Django's.


def _api_error(request: HttpRequest, status: int, detail: str, code: str) -> HttpResponse | None:
    if not request.path.startswith("/api/"):
        return None
    return JsonResponse({"detail": detail, "code": code, "field": None}, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from django.views import defaults

    return _api_error(request, 400, "the request is malformed or too large", "bad_request") or defaults.bad_request(
        request, exception
    )


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from django.views import defaults

    return _api_error(request, 404, "no such endpoint or object", "not_found") or defaults.page_not_found(
        request, exception
    )


def server_error(request: HttpRequest) -> HttpResponse:
    from django.views import defaults

    return _api_error(request, 500, "the server failed; the error was logged", "server_error") or defaults.server_error(
        request
    )
