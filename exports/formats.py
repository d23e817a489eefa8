"""The files of an export snapshot, written as a stream: no Django here.

Conventions (what a consumer may rely on):

* **Rows are TRL's conversational preference format with an explicit prompt**, which
  both ``RewardTrainer`` and ``DPOTrainer`` take as-is: ``prompt`` is the conversation as
  a list of ``{"role", "content"}`` messages (a plain-text prompt is one user turn),
  ``chosen`` and ``rejected`` are one assistant message each,
  ``[{"role": "assistant", "content": ...}]``. Messages carry exactly those two keys.
* The other columns are extra: ``group_id`` (the task), ``prompt_id`` (the prompt's
  external id), ``chosen_id`` / ``rejected_id`` (response ids), ``split``, ``weight``,
  ``vote_share`` and the vote counts. There is deliberately no column named ``margin``:
  TRL's RewardTrainer would subtract it inside the loss (Llama 2's margin loss), which
  must be a choice, not an accident. ``vote_share`` is the winner's share of the counted
  votes, in (0.5, 1]: a soft label P(chosen preferred).
* ``votes_both_bad``: how many of the ``votes_tie`` came from "both are bad" answers
  ("all are bad" in a ranking; Chatbot Arena's ``tie (bothbad)``). Such an answer is a full
  tie of the task, so it adds one to this count on every pair of the group, and the group
  row carries the same count as ``both_bad``. A trainer can filter on it, e.g. leave out
  groups where ``both_bad`` is a large share of the votes (the chosen response was judged
  bad too), or use only pairs with ``votes_both_bad == 0``. ``dropped.jsonl`` has it too.
* ``weight``: ``group`` = 1 / C(K, 2), K the task's number of responses (InstructGPT:
  every prompt's comparisons together weigh at most one, so a 9-way task does not count
  36 times); ``uniform`` = 1; ``vote_margin`` = (2 * vote_share - 1) / C(K, 2), which
  weighs unanimous pairs fully and bare majorities little.
* **Split by prompt**, never by pair: sha256(seed, NUL, prompt external id), read as a
  number in [0, 1), below ``validation_fraction`` is validation. It depends on nothing
  but the prompt's own id and the seed, so a prompt keeps its split when prompts are added.
* **Batches** ``batches/<split>-00000.jsonl`` hold at most ``batch_pairs`` pair rows and
  never split a group: groups are packed in order, a new file starts when the next group
  would not fit. (A group larger than a batch, only possible when a task has more
  responses than its project allows now, gets a file of its own and is counted.)
* Byte-stable: JSON lines with fixed key order, no whitespace, UTF-8; Parquet with a
  fixed schema, zstd, fixed row-group size. The same input gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = "arpad-export/1"
SPLITS: tuple[str, ...] = ("train", "validation")
PARQUET_ROW_GROUP = 2_000
_WRITE_BUFFER = 1 << 20

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
PAIR_SCHEMA = pa.schema(
    [
        ("prompt", pa.list_(MESSAGE_TYPE)),
        ("chosen", pa.list_(MESSAGE_TYPE)),
        ("rejected", pa.list_(MESSAGE_TYPE)),
        ("group_id", pa.int64()),
        ("prompt_id", pa.string()),
        ("chosen_id", pa.int64()),
        ("rejected_id", pa.int64()),
        ("split", pa.string()),
        ("weight", pa.float64()),
        ("vote_share", pa.float64()),
        ("votes_chosen", pa.int64()),
        ("votes_rejected", pa.int64()),
        ("votes_tie", pa.int64()),
        ("votes_both_bad", pa.int64()),
    ]
)
PAIR_COLUMNS: tuple[str, ...] = tuple(PAIR_SCHEMA.names)


def split_of(key: str, *, seed: str, validation_fraction: float) -> str:
    """ "train" or "validation" for the prompt with external id ``key``; stable across snapshots."""
    digest = hashlib.sha256(seed.encode() + b"\x00" + key.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    return "validation" if position < validation_fraction else "train"


def pair_weight(kind: str, *, k: int, vote_share: float) -> float:
    """The ``weight`` column of a pair of a K-way group (see the module docstring)."""
    pairs = k * (k - 1) // 2
    if kind == "uniform":
        return 1.0
    if kind == "group":
        return 1.0 / pairs
    if kind == "vote_margin":
        return (2.0 * vote_share - 1.0) / pairs
    raise ValueError(f"unknown pair weight {kind!r}")


def chat(messages: Any) -> list[dict[str, str]]:
    """A stored conversation as TRL messages: exactly ``role`` and ``content``, both strings."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in messages]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def json_line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace: the bytes that content hashes are taken over."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def file_info(path: Path, *, rows: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size, "rows": rows}


class JsonLines:
    """An append-only JSON-lines file that hashes what it writes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[bytes] = open(path, "xb", buffering=_WRITE_BUFFER)  # noqa: SIM115 (closed by close())
        self._digest = hashlib.sha256()
        self.rows = 0
        self.bytes = 0

    def write(self, obj: Any) -> None:
        self.write_line(json_line(obj))

    def write_line(self, data: bytes) -> None:
        """Write one line already encoded with :func:`json_line` (encode once, write twice)."""
        self._handle.write(data)
        self._digest.update(data)
        self.rows += 1
        self.bytes += len(data)

    def write_block(self, data: bytes, rows: int) -> None:
        """Write ``rows`` lines at once, already encoded as :func:`json_line` would (ending in a newline)."""
        self._handle.write(data)
        self._digest.update(data)
        self.rows += rows
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self._handle.close()
        return {"sha256": self._digest.hexdigest(), "bytes": self.bytes, "rows": self.rows}


class ParquetPairs:
    """``pairs.parquet``, written one row group at a time, so memory stays bounded."""

    def __init__(self, path: Path, *, row_group: int = PARQUET_ROW_GROUP) -> None:
        self.path = path
        self._writer = pq.ParquetWriter(path, PAIR_SCHEMA, compression="zstd")
        self._row_group = row_group
        self._buffer: dict[str, list[Any]] = {name: [] for name in PAIR_COLUMNS}
        self._tables: list[pa.Table] = []
        self._pending = 0
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        for name in PAIR_COLUMNS:
            self._buffer[name].append(row[name])
        self.rows += 1
        if self._pending + len(self._buffer["group_id"]) >= self._row_group:
            self._drain(final=False)

    def write_table(self, table: pa.Table) -> None:
        """Append many rows at once (schema ``PAIR_SCHEMA``); row groups stay ``row_group`` rows each.

        Rows are cut into the same row groups as row-by-row :meth:`write` would make, so the
        file's bytes do not depend on how the rows were handed in.
        """
        if table.num_rows == 0:
            return
        self._move_buffer()
        self._tables.append(table)
        self._pending += table.num_rows
        self.rows += table.num_rows
        if self._pending >= self._row_group:
            self._drain(final=False)

    def _move_buffer(self) -> None:
        """Turn rows given one by one into a pending table (keeping their order with tables)."""
        if self._buffer["group_id"]:
            self._tables.append(pa.Table.from_pydict(self._buffer, schema=PAIR_SCHEMA))
            self._pending += len(self._buffer["group_id"])
            self._buffer = {name: [] for name in PAIR_COLUMNS}

    def _drain(self, *, final: bool) -> None:
        """Write every full row group pending (and, when ``final``, the last short one)."""
        self._move_buffer()
        if not self._pending:
            return
        pending = pa.concat_tables(self._tables)
        end = self._pending if final else (self._pending // self._row_group) * self._row_group
        for start in range(0, end, self._row_group):
            piece = pending.slice(start, min(self._row_group, end - start))
            self._writer.write_table(piece.combine_chunks(), row_group_size=self._row_group)
        rest = pending.slice(end)
        self._tables = [rest] if rest.num_rows else []
        self._pending = rest.num_rows

    def close(self) -> dict[str, Any]:
        self._drain(final=True)
        self._writer.close()
        return file_info(self.path, rows=self.rows)


class Batches:
    """``batches/<split>-NNNNN.jsonl`` of at most ``max_pairs`` pair rows, never splitting a group."""

    def __init__(self, root: Path, split: str, max_pairs: int) -> None:
        self.root = root
        self.split = split
        self.max_pairs = max_pairs
        self.oversized = 0
        self._current: JsonLines | None = None
        self._index = 0
        self._files: dict[str, dict[str, Any]] = {}

    def _name(self) -> str:
        return f"batches/{self.split}-{self._index:05d}.jsonl"

    def add_group(self, rows: list[bytes]) -> None:
        """Add one group's pair rows, each encoded with :func:`json_line`."""
        if not rows:
            return
        if self._current is not None and self._current.rows + len(rows) > self.max_pairs:
            self._close_current()
        if self._current is None:
            self._current = JsonLines(self.root / self._name())
        if len(rows) > self.max_pairs:
            self.oversized += 1
        for row in rows:
            self._current.write_line(row)

    def add_block(self, data: bytes, rows: int) -> None:
        """Add one group's ``rows`` pair rows, already encoded and joined (the bytes of pairs.jsonl)."""
        if rows <= 0:
            return
        if self._current is not None and self._current.rows + rows > self.max_pairs:
            self._close_current()
        if self._current is None:
            self._current = JsonLines(self.root / self._name())
        if rows > self.max_pairs:
            self.oversized += 1
        self._current.write_block(data, rows)

    def _close_current(self) -> None:
        if self._current is not None:
            self._files[self._name()] = self._current.close()
            self._current = None
            self._index += 1

    def close(self) -> dict[str, dict[str, Any]]:
        self._close_current()
        return self._files
