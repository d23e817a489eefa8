"""Case-insensitive substring search over a prompt's messages, on SQLite and PostgreSQL.

A prompt's ``messages`` is JSON (``[{role, content}, ...]``). Matching the serialized JSON
would also match the keys ("role", "user") and, on SQLite, where Django stores JSON with
non-ASCII characters escaped, miss "café". So each message's ``content`` is taken out of
the array by the database's own JSON functions and matched on its own, inside an EXISTS
that stays part of the caller's statement (no extra query).
"""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, Func, Value


def like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern for "contains", its wildcards escaped (``ESCAPE '\\'``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class MessagesContain(Func):
    """True when some message of a JSON messages column has ``text`` in its content, ignoring case.

    LIKE folds ASCII letters only on SQLite (as Django's ``icontains`` does there);
    PostgreSQL's ILIKE folds every letter.
    """

    output_field = BooleanField()

    def __init__(self, messages: Any, text: str) -> None:
        super().__init__(messages, Value(like_pattern(text)))

    def _parts(self, compiler: Any, connection: Any) -> tuple[str, list[Any], str, list[Any]]:
        column, pattern = self.get_source_expressions()
        column_sql, column_params = compiler.compile(column)
        pattern_sql, pattern_params = compiler.compile(pattern)
        return column_sql, list(column_params), pattern_sql, list(pattern_params)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, column_params, pattern, pattern_params = self._parts(compiler, connection)
        # A prompt stored as something else than an array (never written by the importers)
        # matches nothing instead of failing the whole page.
        # Only compiled column names and placeholders go into the text; the pattern is a parameter.
        sql = (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({column}) = 'array'"  # noqa: S608
            f" THEN {column} ELSE '[]'::jsonb END) AS m WHERE m ->> 'content' ILIKE {pattern} ESCAPE '\\')"
        )
        return sql, [*column_params, *column_params, *pattern_params]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, column_params, pattern, pattern_params = self._parts(compiler, connection)
        sql = (
            f"EXISTS (SELECT 1 FROM json_each(CASE WHEN json_type({column}) = 'array' THEN {column} ELSE '[]' END)"  # noqa: S608
            f" AS m WHERE json_extract(m.value, '$.content') LIKE {pattern} ESCAPE '\\')"
        )
        return sql, [*column_params, *column_params, *pattern_params]

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotImplementedError(
            f"text search over messages is written for SQLite and PostgreSQL, not {connection.vendor}"
        )
