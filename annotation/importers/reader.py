"""Reading import files: plain or gzip, line by line, within the size limits.

Gzip is recognised by its magic bytes, not by the file name, because uploads are stored
under generated names. Input is read as a stream so that a large file never sits in
memory whole (a JSON list is the exception: it is one document and is parsed at once,
within ``ARPAD_IMPORT_MAX_BYTES``). Limits:

- ``ARPAD_IMPORT_MAX_BYTES`` caps the decompressed bytes of one import, which also
  stops a gzip bomb while it expands;
- one line may hold at most ``LINE_FIELDS`` maximal text fields
  (``ARPAD_IMPORT_MAX_FIELD_CHARS`` each, as escaped JSON), so a file without line
  breaks cannot make us buffer it whole;
- each text field is checked against ``ARPAD_IMPORT_MAX_FIELD_CHARS`` by the parsers.

Every problem becomes an error with a line number; reading stops at the first one that
makes the rest unreadable (truncated gzip, a limit reached).
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from annotation.importers.base import ImportContext, RecordError

GZIP_MAGIC = b"\x1f\x8b"
# Compressions we recognise only to say clearly that they are not supported.
OTHER_MAGIC = {b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
# A JSON string escapes a character in up to 12 bytes (a surrogate pair as \uXXXX\uXXXX);
# 9 responses, a prompt and a rationale fit comfortably in 64 fields' worth of bytes.
LINE_FIELDS = 64
_CHUNK = 1024 * 1024


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python accepts them unless told otherwise.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON, but Python reads it as infinity, which no database column
    # (JSON included) stores: refused here, on its line, not by the database at the end.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large")
    return value


def parse_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class InputFile:
    """The bytes of one import file, decompressed when it is gzip."""

    def __init__(self, ctx: ImportContext, path: Any = None, *, display_name: str | None = None) -> None:
        self.ctx = ctx
        self.path = path or ctx.path
        self.name = display_name or ctx.display_name
        self.total = 0

    def _error(self, line: int | None, field: str | None, message: str) -> None:
        self.ctx.errors.fatal(line, field, message, file=self.name)

    def _open(self) -> tuple[BinaryIO, BinaryIO]:
        """Return (stream to read, raw file for progress)."""
        try:
            raw = open(self.path, "rb")  # noqa: SIM115 - closed by the callers' finally
        except OSError as exc:
            self._error(None, "file", f"cannot be opened ({exc.strerror or exc})")
        head = raw.read(6)
        raw.seek(0)
        if head.startswith(GZIP_MAGIC):
            return gzip.GzipFile(fileobj=raw, mode="rb"), raw
        for magic, name in OTHER_MAGIC.items():
            if head.startswith(magic):
                raw.close()
                self._error(None, "file", f"is {name}-compressed; only gzip (or uncompressed) files can be imported")
        return raw, raw

    def _read(self, stream: BinaryIO, size: int, line: int, *, whole_chunks: bool = False) -> bytes:
        try:
            return stream.read(size) if whole_chunks else stream.readline(size)
        except EOFError:
            self._error(line, "gzip", "the gzip data ends early: the file is truncated (was the upload complete?)")
        except (gzip.BadGzipFile, zlib.error) as exc:
            self._error(line, "gzip", f"the gzip data is corrupt ({exc})")
        except OSError as exc:
            self._error(line, "file", f"cannot be read ({exc})")
        return b""  # not reached: _error raises

    def _count(self, size: int, line: int) -> None:
        self.total += size
        if self.total > self.ctx.max_bytes:
            self._error(
                line,
                "file",
                f"the (decompressed) input is larger than {self.ctx.max_bytes:,} bytes (ARPAD_IMPORT_MAX_BYTES)",
            )

    def lines(self) -> Iterator[tuple[int, str]]:
        """Yield ``(line number, text)`` for every line that is not blank.

        Blank lines are not records, so they are passed over without a note. A line that is
        not valid UTF-8 becomes an error and is passed over; the import fails anyway.
        """
        max_line = self.ctx.max_field_chars * LINE_FIELDS
        stream, raw = self._open()
        size = max(1, self.path.stat().st_size)
        line_no = 0
        try:
            while True:
                data = self._read(stream, max_line + 1, line_no + 1)
                if not data:
                    return
                line_no += 1
                self._count(len(data), line_no)
                if len(data) > max_line:
                    self._error(line_no, "line", f"is longer than {max_line:,} bytes")
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self.ctx.errors.add(
                        line_no, "encoding", f"not valid UTF-8 at byte {exc.start + 1} of the line", file=self.name
                    )
                    continue
                if line_no == 1:
                    text = text.removeprefix("\ufeff")
                if text.strip():
                    yield line_no, text
                if line_no % 1000 == 0:
                    self.ctx.progress(min(1.0, raw.tell() / size))
        finally:
            stream.close()
            raw.close()

    def read_all(self) -> str:
        """The whole (decompressed) file as text, for formats that are one JSON document."""
        stream, raw = self._open()
        parts: list[bytes] = []
        line = 1
        try:
            while True:
                data = self._read(stream, _CHUNK, line, whole_chunks=True)
                if not data:
                    break
                parts.append(data)
                line += data.count(b"\n")
                self._count(len(data), line)
        finally:
            stream.close()
            raw.close()
        blob = b"".join(parts)
        try:
            return blob.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            line = blob.count(b"\n", 0, exc.start) + 1
            column = exc.start - (blob.rfind(b"\n", 0, exc.start) + 1) + 1
            self._error(line, "encoding", f"not valid UTF-8 at byte {column} of the line")
        return ""  # not reached


def json_list_items(ctx: ImportContext, text: str) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(line, index, item)`` for each element of a JSON list document.

    The list is decoded element by element so that every item, and every error, carries
    the line it starts on in the file, not only its index.
    """
    decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
    pos = _skip_ws(text, 0)
    if pos >= len(text):
        return
    if text[pos] != "[":
        raise RecordError("json", "the file must be a JSON list ([ {...}, {...} ])", line=_line_of(text, pos))
    pos = _skip_ws(text, pos + 1)
    index = 0
    line = _line_of(text, pos)
    counted = pos
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise RecordError(f"[{index}]", f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
        except RecursionError:
            raise RecordError(f"[{index}]", "invalid JSON: nested too deeply", line=line) from None
        except ValueError as exc:
            raise RecordError(f"[{index}]", f"invalid JSON: {exc}", line=line) from None
        yield line, index, item
        index += 1
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            rest = _skip_ws(text, pos + 1)
            if rest < len(text):
                raise RecordError("json", "unexpected text after the end of the list", line=_line_of(text, rest))
            return
        where = _line_of(text, pos)
        raise RecordError("json", f"expected ',' or ']' after item {index - 1}", line=where)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1
