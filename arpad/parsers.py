"""The API's JSON parser: DRF's, reading with :func:`arpad.http.loads_json`.

Deep nesting is a 400 instead of a RecursionError (a 500) on every endpoint, the
anonymous token exchange included. (The body was already read and held to
DATA_UPLOAD_MAX_MEMORY_SIZE by Django before it gets here.)
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers

from arpad.http import JSONInputError, loads_json


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        encoding = parsers.get_encoding(parser_context or {})
        try:
            return loads_json(stream.read().decode(encoding))
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - the body is not valid {encoding}: {exc.reason}")
        except JSONInputError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}")
