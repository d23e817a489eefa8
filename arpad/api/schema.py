"""The refusals every operation can answer, added to the OpenAPI schema in one place.

Views document what is particular to them (a 409 when a job already finished, a 202 for
a queued job). What any operation may answer is added here, so the schema says the whole
truth without a copy in every view: 401 without credentials, 403 for a member without the
role, 404 for an object the caller may not see (outsiders get 404, never 403), 400 when
the request has a body or parameters, 413 for a body over its endpoint's cap, 414 for a
URI over the server's limit, 429 when a throttle says wait, and 503 while the database is
unreachable (``arpad.middleware``).
"""

from __future__ import annotations

from typing import Any

_PROBLEM = {
    "type": "object",
    "description": "A refusal: what went wrong (detail), and for programs a code and the field concerned.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string", "nullable": True},
    },
    "required": ["detail"],
}
_FIELD_ERRORS = {
    "type": "object",
    "description": "Validation errors by field: each a list of messages (or nested, for nested fields).",
    "additionalProperties": {},
}
_STANDARD = {
    "401": ("Not signed in, or the token is unknown or expired.", "Problem"),
    "403": ("Signed in, but without the role this needs.", "Problem"),
    "404": ("No such object, or not one the caller may see.", "Problem"),
    "414": ("The URI is longer than the server accepts.", None),
    "429": ("Too many requests: wait as Retry-After says.", "Problem"),
    "503": ("The database is unavailable for a moment: retry after Retry-After seconds.", "Problem"),
}
_WITH_BODY = {
    "400": ("The request is invalid: a refusal, or validation errors by field.", "Invalid"),
    "413": ("The body is larger than this endpoint accepts.", "Problem"),
}


def _response(description: str, schema: str | None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def add_standard_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Problem", _PROBLEM)
    schemas.setdefault("FieldErrors", _FIELD_ERRORS)
    schemas.setdefault(
        "Invalid", {"anyOf": [{"$ref": "#/components/schemas/Problem"}, {"$ref": "#/components/schemas/FieldErrors"}]}
    )
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            standard = dict(_STANDARD)
            if method in ("post", "put", "patch") or operation.get("parameters"):
                standard.update(_WITH_BODY)
            for status, (description, schema) in standard.items():
                if status in responses:
                    # A view's own description stays; a refusal body may be either shape.
                    if status == "400":
                        responses[status].setdefault("content", _response(description, schema)["content"])
                        responses[status]["content"]["application/json"] = {
                            "schema": {"$ref": "#/components/schemas/Invalid"}
                        }
                    continue
                responses[status] = _response(description, schema)
    # One serializer per role behind one name: a body may satisfy both, so "any of" them.
    for schema in schemas.values():
        if isinstance(schema, dict) and "oneOf" in schema and "discriminator" not in schema:
            schema["anyOf"] = schema.pop("oneOf")
    return result
