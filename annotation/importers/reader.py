"""Reading import files: plain or gzip, as a stream, within the size limits.

Gzip is recognised by its magic bytes, not by the file name, because uploads are stored
under generated names. Input is always read as a stream, so a large file never sits in
memory whole: line formats a line at a time, a JSON list (PandaLM) an item at a time from
a buffer of at most one item plus one chunk. Limits, each refused with the setting's name:

- ``ARPAD_IMPORT_MAX_BYTES`` caps the decompressed bytes of one file, which also stops a
  gzip bomb while it expands;
- ``ARPAD_IMPORT_MAX_RECORDS`` caps the lines of a line format, blank lines included (a
  gzip of blank lines is a bomb too: 50 MB of them cost 25 s of Python loop without this
  cap, and 1 MB with it), and the items of a JSON list;
- one line, or one JSON list item, may hold at most ``LINE_FIELDS`` maximal text fields
  (``ARPAD_IMPORT_MAX_FIELD_CHARS`` each, as escaped JSON), so a file without line breaks
  cannot make us buffer it whole;
- each text field is checked against ``ARPAD_IMPORT_MAX_FIELD_CHARS`` by the parsers.

Every problem becomes an error with a line number; reading stops at the first one that
makes the rest unreadable (truncated gzip, a limit reached).
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from django.conf import settings

from annotation.importers.base import ImportContext, RecordError
from arpad.http import finite_float, reject_constant

GZIP_MAGIC = b"\x1f\x8b"
# Compressions we recognise only to say clearly that they are not supported.
OTHER_MAGIC = {b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
# A JSON string escapes a character in up to 12 bytes (a surrogate pair as \uXXXX\uXXXX);
# 9 responses, a prompt and a rationale fit comfortably in 64 fields' worth of bytes.
LINE_FIELDS = 64
_CHUNK = 1024 * 1024


def parse_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=reject_constant, parse_float=finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class InputFile:
    """The bytes of one import file, decompressed when it is gzip, read as a stream."""

    def __init__(self, ctx: ImportContext, path: Any = None, *, display_name: str | None = None) -> None:
        self.ctx = ctx
        self.path = path or ctx.path
        self.name = display_name or ctx.display_name
        self.total = 0
        self.max_records: int = settings.ARPAD_IMPORT_MAX_RECORDS
        # The longest line, or JSON list item, in bytes (characters for an item).
        self.max_line = ctx.max_field_chars * LINE_FIELDS

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

        Blank lines are not records, so they are passed over without a note, but they
        count against ``ARPAD_IMPORT_MAX_RECORDS`` like any line. A line that is not valid
        UTF-8 becomes an error and is passed over; the import fails anyway.
        """
        max_line = self.max_line
        stream, raw = self._open()
        size = max(1, self.path.stat().st_size)
        line_no = 0
        try:
            while True:
                data = self._read(stream, max_line + 1, line_no + 1)
                if not data:
                    return
                line_no += 1
                if line_no > self.max_records:
                    self._error(
                        line_no,
                        "file",
                        f"has more than {self.max_records:,} lines, blank ones included (ARPAD_IMPORT_MAX_RECORDS)",
                    )
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

    def text_chunks(self) -> Iterator[str]:
        """The (decompressed) file as text, decoded a chunk at a time; a byte-order mark is dropped.

        Invalid UTF-8 is an error on its line, with the byte of the line it is at.
        """
        stream, raw = self._open()
        size = max(1, self.path.stat().st_size)
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        newlines = 0  # line breaks in the bytes decoded so far
        column = 0  # bytes after the last line break in them
        first = True
        try:
            while True:
                data = self._read(stream, _CHUNK, newlines + 1, whole_chunks=True)
                self._count(len(data), newlines + 1)
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as exc:
                    # exc.object is the decoder's held-back bytes (an unfinished character) + data.
                    held = len(exc.object) - len(data)
                    before = exc.object[: exc.start]
                    at = before.rfind(b"\n")
                    byte = exc.start - at if at >= 0 else column - held + exc.start + 1
                    self._error(
                        newlines + before.count(b"\n") + 1, "encoding", f"not valid UTF-8 at byte {byte} of the line"
                    )
                newlines += data.count(b"\n")
                at = data.rfind(b"\n")
                column = len(data) - at - 1 if at >= 0 else column + len(data)
                if first and text:
                    text, first = text.removeprefix("\ufeff"), False
                if text:
                    yield text
                if not data:
                    return
                self.ctx.progress(min(1.0, raw.tell() / size))
        finally:
            stream.close()
            raw.close()

    def json_list(self) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(line, index, item)`` for each element of a file that is one JSON list.

        The list is decoded element by element from a buffer that holds the item being
        read and the rest of the last chunk, so every item, and every error, carries the
        line it starts on in the file, not only its index, and memory holds one item, not
        the file. An item may be as long as a line of a line format.
        """
        return _JsonListReader(self).items()


class _JsonListReader:
    """The streaming parse behind :meth:`InputFile.json_list`."""

    def __init__(self, source: InputFile) -> None:
        self.source = source
        self.chunks = source.text_chunks()
        self.decoder = json.JSONDecoder(parse_constant=reject_constant, parse_float=finite_float)
        self.buf = ""
        self.pos = 0
        self.line = 1  # line of buf[0] in the file
        self.column = 0  # characters before buf[0] on its line
        self.eof = False
        self._mark, self._mark_line = 0, 1  # line_at's last answer: a position in buf, its line

    def more(self) -> bool:
        """Drop what was consumed, append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        if self.pos:
            consumed = self.buf[: self.pos]
            breaks = consumed.count("\n")
            self.line += breaks
            self.column = len(consumed) - consumed.rfind("\n") - 1 if breaks else self.column + len(consumed)
            self.buf, self.pos = self.buf[self.pos :], 0
        self._mark, self._mark_line = 0, self.line
        chunk = next(self.chunks, "")
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def line_at(self, pos: int) -> int:
        # Counted on from the last position asked about: items are read in order, and
        # counting from the start of the buffer for each would scan a chunk per item.
        if pos < self._mark:
            self._mark, self._mark_line = 0, self.line
        self._mark_line += self.buf.count("\n", self._mark, pos)
        self._mark = pos
        return self._mark_line

    def skip_ws(self) -> bool:
        """Move past white space; False when the file ends first."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return True
            if not self.more():
                return False

    def items(self) -> Iterator[tuple[int, int, Any]]:
        try:
            yield from self._items()
        finally:
            self.chunks.close()

    def _items(self) -> Iterator[tuple[int, int, Any]]:
        if not self.skip_ws():
            return
        if self.buf[self.pos] != "[":
            raise RecordError("json", "the file must be a JSON list ([ {...}, {...} ])", line=self.line_at(self.pos))
        self.pos += 1
        if not self.skip_ws():
            raise RecordError("json", "the list is not closed with ']'", line=self.line_at(self.pos))
        if self.buf[self.pos] == "]":
            return
        index = 0
        while True:
            if index >= self.source.max_records:
                self.source._error(
                    self.line_at(self.pos),
                    "file",
                    f"holds more than {self.source.max_records:,} items (ARPAD_IMPORT_MAX_RECORDS)",
                )
            item, line = self._item(index)
            yield line, index, item
            index += 1
            if not self.skip_ws():
                raise RecordError("json", f"expected ',' or ']' after item {index - 1}", line=self.line_at(self.pos))
            if self.buf[self.pos] == ",":
                self.pos += 1
                if not self.skip_ws():
                    raise RecordError("json", f"expected an item after item {index - 1}", line=self.line_at(self.pos))
                continue
            if self.buf[self.pos] == "]":
                self.pos += 1
                if self.skip_ws():
                    raise RecordError("json", "unexpected text after the end of the list", line=self.line_at(self.pos))
                return
            raise RecordError("json", f"expected ',' or ']' after item {index - 1}", line=self.line_at(self.pos))

    def _item(self, index: int) -> tuple[Any, int]:
        """The item that starts at ``pos``, and its line; reads more input until it is whole."""
        limit = self.source.max_line
        while True:
            start = self.pos
            try:
                item, end = self.decoder.raw_decode(self.buf, start)
            except json.JSONDecodeError as exc:
                # At the end of the buffer the item may only be cut off by the chunk: a
                # string not closed yet, or an error within a few characters of the end
                # (a number or literal split in two). Read on, up to the item limit.
                cut_off = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 16
                if cut_off and len(self.buf) - start <= limit and not self.eof:
                    self.more()  # and decode again: at the end of the file, the error is final
                    continue
                if cut_off and len(self.buf) - start > limit:
                    raise RecordError(
                        f"[{index}]", f"is longer than {limit:,} characters", line=self.line_at(start)
                    ) from None
                column = exc.colno + (self.column if exc.lineno == 1 else 0)
                line = self.line + exc.lineno - 1
                raise RecordError(f"[{index}]", f"invalid JSON: {exc.msg} (column {column})", line=line) from None
            except RecursionError:
                raise RecordError(f"[{index}]", "invalid JSON: nested too deeply", line=self.line_at(start)) from None
            except ValueError as exc:
                raise RecordError(f"[{index}]", f"invalid JSON: {exc}", line=self.line_at(start)) from None
            if end - start > limit:
                raise RecordError(f"[{index}]", f"is longer than {limit:,} characters", line=self.line_at(start))
            # A number or literal that ends the buffer may go on in the next chunk.
            if end == len(self.buf) and not self.eof:
                self.more()
                continue
            line = self.line_at(start)
            self.pos = end
            return item, line
