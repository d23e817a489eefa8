"""The Django side of agreement: a project's rows as the arrays ``annotation.agreement`` takes.

``agreement.py`` knows nothing of models. This module reads a project's PairVotes and
Judgements with a fixed number of ``values_list`` queries (no query per row) and returns
them as :class:`~annotation.agreement.PairVotes` and
:class:`~annotation.agreement.RankingData`, together with what is needed to name the rows
again (usernames, the (task, response_a, response_b) of each unit).

Conventions carried over from the data model:

* A pairwise unit is one PairVote pair ``(task, response_a, response_b)`` with
  ``response_a < response_b``; outcome +1 means response_a was preferred.
* Ranks are tier indexes (0 = best tier) over the task's response positions
  (``TaskResponse.position``, import order: position 0 = the file's first response).
* ``a_shown_first`` is unknown (-1) for imported judgements, which were never displayed.
* Lengths are characters of the response text, unknown (-1) for placeholder responses
  whose text was not imported (``metadata.text_available`` false, e.g. MT-Bench).
"""

from __future__ import annotations

import ctypes
import functools
import json
import sys
from dataclasses import dataclass

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import Length

from annotation.agreement import PairVotes, RankingData
from annotation.models import Judgement, PairVote, Project, Response, Task, TaskResponse
from annotation.services import pair_votes_for


def release_free_memory() -> None:
    """Hand memory freed by large temporaries back to the operating system (glibc only; else nothing).

    glibc serves arrays below its (self-raising, up to 32 MB) mmap threshold from the
    heap and keeps what they free for later; after reading a million judgements that is
    hundreds of MB of resident memory that nothing uses. ``malloc_trim`` returns it.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_LARGE_ALLOCATION = 1 << 20


@functools.cache
def map_large_allocations() -> bool:
    """Make glibc serve every allocation of 1 MB or more with its own mapping (once per process).

    By default glibc raises its mmap threshold up to 32 MB as large blocks are freed, so
    the per-unit and per-item arrays of a large project land in the heap, interleaved with
    arrays that live on, and what they free stays resident. A fixed threshold returns
    every large array to the system when it is freed; small objects are unaffected.
    Returns whether the setting was applied (False off glibc).
    """
    if sys.platform != "linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGE_ALLOCATION))


@functools.cache
def _malloc_trim():
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def _usernames(user_ids: np.ndarray) -> dict[int, str]:
    ids = [int(pk) for pk in np.unique(user_ids)]
    return dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))


@dataclass(frozen=True)
class ProjectPairVotes:
    """A project's PairVotes as arrays; ``votes.unit`` indexes ``units``, ``votes.rater`` is the user id."""

    votes: PairVotes
    units: np.ndarray
    """(n_units, 3) int: task id, response_a id, response_b id of each unit."""
    usernames: dict[int, str]
    """User id -> username of every rater."""

    def rater_ids(self, usernames: list[str]) -> list[int]:
        """User ids of the given usernames, in that order."""
        by_name = {name: pk for pk, name in self.usernames.items()}
        return [by_name[name] for name in usernames]


_CHUNK = 100_000
"""Rows fetched per ``cursor.fetchmany`` while reading votes and judgements."""
_TASKS_PER_READ = 50_000
"""Tasks whose votes one query reads (bounds the bytes of one result)."""


def _connection_for(model: type) -> BaseDatabaseWrapper:
    return connections[router.db_for_read(model)]


def _table(model: type, connection: BaseDatabaseWrapper) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type, field: str, connection: BaseDatabaseWrapper) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def _fetch_int_columns(
    connection: BaseDatabaseWrapper, columns: list[str], rest: str, params: list, *, sort: bool = True
) -> list[np.ndarray]:
    """Run ``SELECT <columns> <rest>`` (every column an integer, no NULL; ``rest`` without ORDER BY).

    Returns one int64 array per column, rows sorted by the first column when ``sort``
    (numpy sorts faster than the database, which would sort before sending). On PostgreSQL
    each column comes back as ONE value, ``string_agg`` of the big-endian ``int8send``
    bytes, read with ``np.frombuffer``: no Python object, and no protocol message, per row
    (every aggregate of one query sees the rows in the same order, so the columns line up).
    Elsewhere ``fetchmany`` ``_CHUNK`` rows at a time, so no Python tuple outlives its chunk.
    """
    if connection.vendor == "postgresql":
        out = _string_agg_columns(connection, columns, rest, params)
    else:
        out = _fetchmany_columns(connection, columns, rest, params)
    if sort and out[0].size > 1 and np.any(out[0][1:] < out[0][:-1]):
        order = np.argsort(out[0], kind="stable")
        for index, column in enumerate(out):
            out[index] = column[order]
    return out


def _fetchmany_columns(
    connection: BaseDatabaseWrapper, columns: list[str], rest: str, params: list
) -> list[np.ndarray]:
    width = len(columns)
    parts: list[np.ndarray] = []
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} {rest}", params)  # noqa: S608 (names from model metadata)
        while True:
            rows = cursor.fetchmany(_CHUNK)
            if not rows:
                break
            parts.append(np.array(rows, dtype=np.int64).reshape(-1, width))
    table = np.concatenate(parts) if parts else np.empty((0, width), dtype=np.int64)
    del parts
    return [table[:, index].copy() for index in range(width)]


def _string_agg_columns(
    connection: BaseDatabaseWrapper, columns: list[str], rest: str, params: list
) -> list[np.ndarray]:
    select = ", ".join(f"string_agg(int8send(({column})::int8), ''::bytea)" for column in columns)
    import psycopg  # only on PostgreSQL

    connection.ensure_connection()
    # A server-side-binding cursor (Django's are client-side), for binary results: the
    # bytea values arrive as raw bytes, not as hex text to decode.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"SELECT {select} {rest}", params, binary=True)  # noqa: S608 (names from model metadata)
        values = list(cursor.fetchone())
    out = []
    for index in range(len(values)):
        raw, values[index] = values[index], None  # free each column's bytes once converted
        out.append(np.frombuffer(raw, dtype=">i8").astype(np.int64) if raw else np.empty(0, dtype=np.int64))
        del raw
    return out


def _narrow(values: np.ndarray, smallest: type = np.int32) -> np.ndarray:
    """``values`` as ``smallest`` (int8 or int32) when every value fits; else unchanged.

    Only the report's compact read narrows its arrays: ids and lengths to int32, the
    outcomes and display orders (-1, 0, 1) to int8 (6M votes: 24 MB or 6 MB a column
    instead of 48 MB).
    """
    if values.dtype == smallest:
        return values
    limits = np.iinfo(smallest)
    if values.size and (int(values.min()) < limits.min or int(values.max()) > limits.max):
        return values
    return values.astype(smallest)


def _fetch_int_array(connection: BaseDatabaseWrapper, columns: list[str], rest: str, params: list) -> np.ndarray:
    """:func:`_fetch_int_columns` as one (n, width) array (for the small reads)."""
    parts = _fetch_int_columns(connection, columns, rest, params)
    return np.stack(parts, axis=1) if parts[0].size else np.empty((0, len(columns)), dtype=np.int64)


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` at the position of each ``wanted`` in ``keys`` (sorted, unique), and a found mask."""
    if keys.size == 0:
        return np.zeros(wanted.shape, dtype=values.dtype), np.zeros(wanted.shape, dtype=bool)
    where = np.searchsorted(keys, wanted)
    where = np.minimum(where, keys.size - 1)
    found = keys[where] == wanted
    return values[where], found


def _response_lengths(project: Project, connection: BaseDatabaseWrapper) -> tuple[np.ndarray, np.ndarray]:
    """Sorted response ids of ``project`` and their text lengths, -1 for placeholder texts."""
    response, prompt = Response, Response._meta.get_field("prompt").related_model
    rest = (
        f"FROM {_table(response, connection)} r "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"JOIN {_table(prompt, connection)} p ON r.{_column(response, 'prompt', connection)} = "
        f"p.{_column(prompt, 'id', connection)} "
        f"WHERE p.{_column(prompt, 'project', connection)} = %s"
    )
    columns = [
        f"r.{_column(response, 'id', connection)}",
        f"LENGTH(r.{_column(response, 'text', connection)})",
    ]
    ids, lengths = _fetch_int_columns(connection, columns, rest, [project.pk])
    placeholders = np.fromiter(
        Response.objects.filter(prompt__project=project, metadata__text_available=False).values_list("pk", flat=True),
        dtype=np.int64,
    )
    if placeholders.size:
        lengths[np.isin(ids, placeholders)] = -1
    return ids, lengths


def _lengths_of(
    response_ids: np.ndarray, keys: np.ndarray, lengths: np.ndarray, connection: BaseDatabaseWrapper
) -> np.ndarray:
    """Text length of each response id; ids outside the project's responses are read one query more."""
    out, found = _lookup(keys, lengths, response_ids)
    if not found.all():
        missing = np.unique(response_ids[~found])
        extra = dict(
            Response.objects.using(connection.alias)
            .filter(pk__in=[int(pk) for pk in missing])
            .annotate(n=Length("text"))
            .values_list("pk", "n")
        )
        extra_keys = np.array(sorted(extra), dtype=np.int64)
        extra_values = np.array([extra[int(k)] for k in extra_keys], dtype=np.int64)
        out[~found], _ = _lookup(extra_keys, extra_values, response_ids[~found])
    return out.astype(int, copy=False)


def _judgement_id_time(project: Project, connection: BaseDatabaseWrapper) -> tuple[np.ndarray, np.ndarray]:
    """Sorted judgement ids of ``project`` and the time each took (NaN unknown)."""
    rest = (
        f"FROM {_table(Judgement, connection)} j "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"JOIN {_table(Task, connection)} t ON j.{_column(Judgement, 'task', connection)} = "
        f"t.{_column(Task, 'id', connection)} "
        f"WHERE t.{_column(Task, 'project', connection)} = %s"
    )
    columns = [
        f"j.{_column(Judgement, 'id', connection)}",
        f"COALESCE(j.{_column(Judgement, 'time_taken_ms', connection)}, -1)",
    ]
    ids, raw_time = _fetch_int_columns(connection, columns, rest, [project.pk])
    time_ms = raw_time.astype(float)
    time_ms[raw_time < 0] = np.nan
    return ids, time_ms


def _units(task: np.ndarray, response_a: np.ndarray, response_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (task, response_a, response_b) rows in lexicographic order and each vote's index in them.

    The same result as ``np.unique(keys, axis=0, return_inverse=True)``, by one lexsort.
    """
    n = task.shape[0]
    if n == 0:
        return np.empty((0, 3), dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.lexsort((response_b, response_a, task))
    new = np.zeros(n, dtype=bool)
    new[0] = True
    # One sorted column at a time (6M votes: 48 MB each): only where a unit starts is kept.
    for values in (task, response_a, response_b):
        ordered = values[order]
        new[1:] |= ordered[1:] != ordered[:-1]
        del ordered
    first_vote = order[new]
    units = np.stack([task[first_vote], response_a[first_vote], response_b[first_vote]], axis=1).astype(
        np.int64, copy=False
    )
    del first_vote
    # The vote's unit index, int32 where every unit index (times 3, as the counts use it) fits.
    index_type = np.int32 if 3 * units.shape[0] < np.iinfo(np.int32).max else np.int64
    unit_index = np.empty(n, dtype=index_type)
    unit_index[order] = np.cumsum(new, dtype=index_type) - 1
    return units, unit_index


def _unit_gold(project: Project, units: np.ndarray) -> np.ndarray:
    """Gold outcome of each unit (NaN where its task has no gold answer or the pair is not in it)."""
    gold = np.full(units.shape[0], np.nan)
    gold_outcome: dict[tuple[int, int, int], int] = {}
    for task_id, tiers in Task.objects.filter(project=project, is_gold=True).values_list("pk", "gold_tiers"):
        for a, b, outcome, _ in pair_votes_for(tiers):
            gold_outcome[(task_id, a, b)] = outcome
    if not gold_outcome:
        return gold
    gold_tasks = np.array(sorted({key[0] for key in gold_outcome}), dtype=np.int64)
    (rows,) = np.nonzero(np.isin(units[:, 0], gold_tasks))
    for row in rows:
        outcome = gold_outcome.get((int(units[row, 0]), int(units[row, 1]), int(units[row, 2])))
        if outcome is not None:
            gold[row] = outcome
    return gold


def project_pair_votes(
    project: Project, *, details: bool = True, max_judgement_id: int | None = None, compact: bool = False
) -> ProjectPairVotes:
    """Every PairVote of ``project`` with display order, lengths, judgement time and gold.

    ``details=False`` reads only what a vote count needs (unit, rater, outcome, judgement):
    lengths, times, display order and gold are left unknown, which saves reading every
    response's text length and every judgement's time. ``max_judgement_id`` leaves out the
    votes of later judgements (an export reads the project as of one moment).

    The vote arrays are int64 unless ``compact``: then unit, rater, judgement and lengths
    are int32 and outcome and display order int8 wherever the values fit, and a project
    without gold answers gets the all-NaN default ``gold`` (no array per vote); the same
    values in under half the memory (6M votes: about 230 MB instead of 470 MB). Callers
    that ask for it must not compute with the narrow arrays in ways that could overflow.
    """
    map_large_allocations()
    connection = _connection_for(PairVote)
    shown = _column(PairVote, "a_shown_first", connection)
    judgement_column = f"v.{_column(PairVote, 'judgement', connection)}"
    columns = [
        f"v.{_column(PairVote, 'task', connection)}",
        f"v.{_column(PairVote, 'response_a', connection)}",
        f"v.{_column(PairVote, 'response_b', connection)}",
        f"v.{_column(PairVote, 'annotator', connection)}",
        f"v.{_column(PairVote, 'winner', connection)}",
        judgement_column,
    ]
    if details:
        columns.append(f"CASE WHEN v.{shown} IS NULL THEN -1 WHEN v.{shown} THEN 1 ELSE 0 END")
    vote_task = f"v.{_column(PairVote, 'task', connection)}"
    columns.insert(0, f"v.{_column(PairVote, 'id', connection)}")
    limit = ""
    if max_judgement_id is not None:
        limit = f"AND {judgement_column} <= {int(max_judgement_id)} "
    rest = (
        f"FROM {_table(PairVote, connection)} v "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"JOIN {_table(Task, connection)} t ON {vote_task} = t.{_column(Task, 'id', connection)} "
        f"WHERE t.{_column(Task, 'project', connection)} = %s AND {vote_task} >= %s AND {vote_task} <= %s {limit}"
    )
    # Read by ranges of task ids (the votes' task index), a bounded number of rows per query.
    # The narrow type of each column in a compact read: the outcome (winner) and display
    # order are -1, 0 or 1, everything else an id.
    narrow = [np.int32] * len(columns)
    narrow[5] = np.int8
    if details:
        narrow[7] = np.int8
    task_ids = np.fromiter(Task.objects.filter(project=project).order_by("pk").values_list("pk", flat=True), np.int64)
    parts: list[list[np.ndarray]] = [[] for _ in columns]
    for start in range(0, task_ids.size, _TASKS_PER_READ):
        low, high = int(task_ids[start]), int(task_ids[min(start + _TASKS_PER_READ, task_ids.size) - 1])
        for index, column in enumerate(
            _fetch_int_columns(connection, columns, rest, [project.pk, low, high], sort=False)
        ):
            parts[index].append(_narrow(column, narrow[index]) if compact else column)
    fetched = []
    for index in range(len(columns)):
        fetched.append(np.concatenate(parts[index]) if parts[index] else np.empty(0, dtype=np.int64))
        parts[index] = []
    # Vote id order, as the rows were created.
    if fetched[0].size > 1 and np.any(fetched[0][1:] < fetched[0][:-1]):
        order = np.argsort(fetched[0], kind="stable")
        for index in range(len(fetched)):
            fetched[index] = fetched[index][order]  # one column at a time: one extra column at most
        del order
    fetched = fetched[1:]
    task, response_a, response_b, rater, outcome, judgement = fetched[:6]
    a_shown_first = fetched[6] if details else None
    del fetched
    units, unit_index = _units(task, response_a, response_b)
    del task
    if not compact:
        unit_index = unit_index.astype(np.int64, copy=False)

    length_a = length_b = time_ms = gold = None
    if details:
        # Lengths once per response and time once per judgement, spread onto the votes by index.
        response_ids, lengths = _response_lengths(project, connection)
        length_a = _lengths_of(response_a, response_ids, lengths, connection)
        length_b = _lengths_of(response_b, response_ids, lengths, connection)
        if compact:
            length_a, length_b = _narrow(length_a), _narrow(length_b)
        judgement_ids, judgement_time = _judgement_id_time(project, connection)
        time_ms, found = _lookup(judgement_ids, judgement_time, judgement)
        if not found.all():
            missing = np.unique(judgement[~found])
            extra = dict(
                Judgement.objects.filter(pk__in=[int(pk) for pk in missing]).values_list("pk", "time_taken_ms")
            )
            time_ms[~found] = [np.nan if extra.get(int(pk)) is None else extra[int(pk)] for pk in judgement[~found]]
        time_ms = time_ms.astype(float, copy=False)
        # Gold answers are tiers on the task; expand them into the same pair outcomes as votes.
        unit_gold = _unit_gold(project, units)
        gold = None if compact and np.isnan(unit_gold).all() else unit_gold[unit_index]
        del unit_gold
    del response_a, response_b

    votes = PairVotes(
        unit=unit_index,
        rater=rater,
        outcome=outcome,
        a_shown_first=a_shown_first,
        len_a=length_a,
        len_b=length_b,
        judgement=judgement,
        time_ms=time_ms,
        gold=gold,
    )
    release_free_memory()
    return ProjectPairVotes(votes=votes, units=units, usernames=_usernames(votes.rater))


@dataclass(frozen=True)
class ProjectRankings:
    """A project's Judgements as rank vectors over task positions; ``data.item`` is the task id."""

    data: RankingData
    judgement_ids: np.ndarray
    """Judgement id of each row."""
    time_ms: np.ndarray
    """Time each judgement took, NaN unknown."""
    usernames: dict[int, str]

    def rater_ids(self, usernames: list[str]) -> list[int]:
        by_name = {name: pk for pk, name in self.usernames.items()}
        return [by_name[name] for name in usernames]


def project_rankings(project: Project) -> ProjectRankings:
    """Every Judgement of ``project`` as ranks (tier index, 0 = best) per response position."""
    connection = _connection_for(Judgement)
    rest = (
        f"FROM {_table(TaskResponse, connection)} tr "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"JOIN {_table(Task, connection)} t ON tr.{_column(TaskResponse, 'task', connection)} = "
        f"t.{_column(Task, 'id', connection)} "
        f"WHERE t.{_column(Task, 'project', connection)} = %s"
    )
    columns = [
        f"tr.{_column(TaskResponse, 'task', connection)}",
        f"tr.{_column(TaskResponse, 'response', connection)}",
        f"tr.{_column(TaskResponse, 'position', connection)}",
    ]
    slots = _fetch_int_array(connection, columns, rest, [project.pk])
    width = int(slots[:, 2].max()) + 1 if slots.size else 2
    if connection.vendor == "postgresql":
        return _project_rankings_pg(project, connection, slots, width)
    position: dict[tuple[int, int], int] = {(task_id, response_id): pos for task_id, response_id, pos in slots.tolist()}

    tiers_column = _column(Judgement, "tiers", connection)
    sql = (
        f"SELECT j.{_column(Judgement, 'id', connection)}, j.{_column(Judgement, 'task', connection)}, "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"j.{_column(Judgement, 'annotator', connection)}, "
        f"COALESCE(j.{_column(Judgement, 'time_taken_ms', connection)}, -1), j.{tiers_column} "
        f"FROM {_table(Judgement, connection)} j "
        f"JOIN {_table(Task, connection)} t ON j.{_column(Judgement, 'task', connection)} = "
        f"t.{_column(Task, 'id', connection)} "
        f"WHERE t.{_column(Task, 'project', connection)} = %s "
        f"ORDER BY j.{_column(Judgement, 'id', connection)}"
    )
    int_chunks: list[np.ndarray] = []
    rank_chunks: list[np.ndarray] = []
    with connection.cursor() as cursor:
        cursor.execute(sql, [project.pk])
        while True:
            rows = cursor.fetchmany(_CHUNK)
            if not rows:
                break
            ints = np.array([row[:4] for row in rows], dtype=np.int64).reshape(-1, 4)
            ranks = np.full((len(rows), width), np.nan)
            for index, row in enumerate(rows):
                task_id, tiers = row[1], row[4]
                if isinstance(tiers, (str, bytes, bytearray)):
                    tiers = json.loads(tiers)
                for level, tier in enumerate(tiers):
                    for response_id in tier:
                        ranks[index, position[(task_id, response_id)]] = level
            int_chunks.append(ints)
            rank_chunks.append(ranks)
    ints = np.concatenate(int_chunks) if int_chunks else np.empty((0, 4), dtype=np.int64)
    ranks = np.concatenate(rank_chunks) if rank_chunks else np.full((0, width), np.nan)
    judgement_ids = ints[:, 0].copy()
    data = RankingData(item=ints[:, 1].copy(), rater=ints[:, 2].copy(), ranks=ranks)
    time_ms = ints[:, 3].astype(float)
    time_ms[ints[:, 3] < 0] = np.nan
    return ProjectRankings(data=data, judgement_ids=judgement_ids, time_ms=time_ms, usernames=_usernames(data.rater))


def _project_rankings_pg(
    project: Project, connection: BaseDatabaseWrapper, slots: np.ndarray, width: int
) -> ProjectRankings:
    """:func:`project_rankings` on PostgreSQL: the tiers are expanded by the database.

    ``jsonb_array_elements ... WITH ORDINALITY`` turns each judgement's tiers into
    (judgement, tier index, response id) rows, read as arrays like the votes; numpy then
    places each tier index at its response's position. No JSON is decoded in Python.
    """
    judgement, task = _column(Judgement, "id", connection), _column(Judgement, "task", connection)
    joined = (
        f"FROM {_table(Judgement, connection)} j "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"JOIN {_table(Task, connection)} t ON j.{task} = t.{_column(Task, 'id', connection)} "
    )
    where = f"WHERE t.{_column(Task, 'project', connection)} = %s"
    ids, item, rater, raw_time = _fetch_int_columns(
        connection,
        [
            f"j.{judgement}",
            f"j.{task}",
            f"j.{_column(Judgement, 'annotator', connection)}",
            f"COALESCE(j.{_column(Judgement, 'time_taken_ms', connection)}, -1)",
        ],
        joined + where,
        [project.pk],
    )
    expanded = (
        joined + f"CROSS JOIN LATERAL jsonb_array_elements(j.{_column(Judgement, 'tiers', connection)}) "
        "WITH ORDINALITY AS tier(members, level) "
        "CROSS JOIN LATERAL jsonb_array_elements(tier.members) AS member(response) " + where
    )
    of_judgement, level, response = _fetch_int_columns(
        connection, [f"j.{judgement}", "tier.level - 1", "member.response"], expanded, [project.pk], sort=False
    )
    row = np.searchsorted(ids, of_judgement)
    # The position of each (task, response): one integer key per slot, looked up at once.
    responses = np.unique(slots[:, 1])
    n_codes = max(int(responses.size), 1)
    slot_key = slots[:, 0] * n_codes + np.searchsorted(responses, slots[:, 1])
    order = np.argsort(slot_key, kind="stable")
    slot_key = slot_key[order]
    if response.size and responses.size == 0:
        found = np.zeros(response.size, dtype=bool)
        where_slot = np.zeros(response.size, dtype=np.int64)
    else:
        code = np.minimum(np.searchsorted(responses, response), responses.size - 1)
        wanted = item[row] * n_codes + code
        where_slot = np.minimum(np.searchsorted(slot_key, wanted), max(slot_key.size - 1, 0))
        found = (responses[code] == response) & (slot_key[where_slot] == wanted)
    if not np.all(found):
        bad = int(np.flatnonzero(~found)[0])
        raise ValueError(
            f"judgement {int(of_judgement[bad])} ranks response {int(response[bad])}, "
            f"which is not a response of its task {int(item[row[bad]])}"
        )
    ranks = np.full((ids.size, width), np.nan)
    ranks[row, slots[order[where_slot], 2]] = level
    time_ms = raw_time.astype(float)
    time_ms[raw_time < 0] = np.nan
    data = RankingData(item=item, rater=rater, ranks=ranks)
    return ProjectRankings(data=data, judgement_ids=ids, time_ms=time_ms, usernames=_usernames(data.rater))
