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

import json
from dataclasses import dataclass

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import Length

from annotation.agreement import PairVotes, RankingData
from annotation.models import Judgement, PairVote, Project, Response, Task, TaskResponse
from annotation.services import pair_votes_for


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


def _connection_for(model: type) -> BaseDatabaseWrapper:
    return connections[router.db_for_read(model)]


def _table(model: type, connection: BaseDatabaseWrapper) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type, field: str, connection: BaseDatabaseWrapper) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def _fetch_int_array(connection: BaseDatabaseWrapper, sql: str, params: list, width: int) -> np.ndarray:
    """Run ``sql`` (every column an integer, no NULL) and return its rows as an (n, width) int64 array.

    Rows are read ``_CHUNK`` at a time and turned into arrays chunk by chunk, so no Python
    tuple outlives its chunk and no Django converter runs per row.
    """
    chunks = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while True:
            rows = cursor.fetchmany(_CHUNK)
            if not rows:
                break
            chunks.append(np.array(rows, dtype=np.int64).reshape(-1, width))
    if not chunks:
        return np.empty((0, width), dtype=np.int64)
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks)


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
    sql = (
        f"SELECT r.{_column(response, 'id', connection)}, LENGTH(r.{_column(response, 'text', connection)}) "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"FROM {_table(response, connection)} r "
        f"JOIN {_table(prompt, connection)} p ON r.{_column(response, 'prompt', connection)} = "
        f"p.{_column(prompt, 'id', connection)} "
        f"WHERE p.{_column(prompt, 'project', connection)} = %s "
        f"ORDER BY r.{_column(response, 'id', connection)}"
    )
    rows = _fetch_int_array(connection, sql, [project.pk], 2)
    ids, lengths = rows[:, 0].copy(), rows[:, 1].copy()
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


def _judgement_times(project: Project, connection: BaseDatabaseWrapper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted judgement ids of ``project``, their task and annotator ids and time taken (NaN unknown).

    Returns ``(ids, task_annotator, time_ms)`` with ``task_annotator`` an (n, 2) int array.
    """
    sql = (
        f"SELECT j.{_column(Judgement, 'id', connection)}, j.{_column(Judgement, 'task', connection)}, "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"j.{_column(Judgement, 'annotator', connection)}, "
        f"COALESCE(j.{_column(Judgement, 'time_taken_ms', connection)}, -1) "
        f"FROM {_table(Judgement, connection)} j "
        f"JOIN {_table(Task, connection)} t ON j.{_column(Judgement, 'task', connection)} = "
        f"t.{_column(Task, 'id', connection)} "
        f"WHERE t.{_column(Task, 'project', connection)} = %s "
        f"ORDER BY j.{_column(Judgement, 'id', connection)}"
    )
    rows = _fetch_int_array(connection, sql, [project.pk], 4)
    time_ms = rows[:, 3].astype(float)
    time_ms[rows[:, 3] < 0] = np.nan
    return rows[:, 0].copy(), rows[:, 1:3].copy(), time_ms


def _units(task: np.ndarray, response_a: np.ndarray, response_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (task, response_a, response_b) rows in lexicographic order and each vote's index in them.

    The same result as ``np.unique(keys, axis=0, return_inverse=True)``, by one lexsort.
    """
    n = task.shape[0]
    if n == 0:
        return np.empty((0, 3), dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.lexsort((response_b, response_a, task))
    t, a, b = task[order], response_a[order], response_b[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = (t[1:] != t[:-1]) | (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    sorted_index = np.cumsum(new) - 1
    unit_index = np.empty(n, dtype=np.int64)
    unit_index[order] = sorted_index
    units = np.stack([t[new], a[new], b[new]], axis=1)
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


def project_pair_votes(project: Project) -> ProjectPairVotes:
    """Every PairVote of ``project`` with display order, lengths, judgement time and gold."""
    connection = _connection_for(PairVote)
    shown = _column(PairVote, "a_shown_first", connection)
    sql = (
        f"SELECT v.{_column(PairVote, 'task', connection)}, v.{_column(PairVote, 'response_a', connection)}, "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"v.{_column(PairVote, 'response_b', connection)}, v.{_column(PairVote, 'annotator', connection)}, "
        f"v.{_column(PairVote, 'winner', connection)}, "
        f"CASE WHEN v.{shown} IS NULL THEN -1 WHEN v.{shown} THEN 1 ELSE 0 END, "
        f"v.{_column(PairVote, 'judgement', connection)} "
        f"FROM {_table(PairVote, connection)} v "
        f"JOIN {_table(Task, connection)} t ON v.{_column(PairVote, 'task', connection)} = "
        f"t.{_column(Task, 'id', connection)} "
        f"WHERE t.{_column(Task, 'project', connection)} = %s "
        f"ORDER BY v.{_column(PairVote, 'id', connection)}"
    )
    rows = _fetch_int_array(connection, sql, [project.pk], 7)
    task, response_a, response_b = rows[:, 0], rows[:, 1], rows[:, 2]
    units, unit_index = _units(task, response_a, response_b)

    # Lengths once per response and time once per judgement, spread onto the votes by index.
    response_ids, lengths = _response_lengths(project, connection)
    length_a = _lengths_of(response_a, response_ids, lengths, connection)
    length_b = _lengths_of(response_b, response_ids, lengths, connection)
    judgement = rows[:, 6].copy()
    judgement_ids, _, judgement_time = _judgement_times(project, connection)
    time_ms, found = _lookup(judgement_ids, judgement_time, judgement)
    if not found.all():
        missing = np.unique(judgement[~found])
        extra = dict(Judgement.objects.filter(pk__in=[int(pk) for pk in missing]).values_list("pk", "time_taken_ms"))
        time_ms[~found] = [np.nan if extra.get(int(pk)) is None else extra[int(pk)] for pk in judgement[~found]]

    # Gold answers are tiers on the task; expand them into the same pair outcomes as votes.
    gold = _unit_gold(project, units)[unit_index]

    rater = rows[:, 3].copy()
    votes = PairVotes(
        unit=unit_index,
        rater=rater,
        outcome=rows[:, 4].copy(),
        a_shown_first=rows[:, 5].copy(),
        len_a=length_a,
        len_b=length_b,
        judgement=judgement,
        time_ms=time_ms.astype(float, copy=False),
        gold=gold,
    )
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
    sql = (
        f"SELECT tr.{_column(TaskResponse, 'task', connection)}, tr.{_column(TaskResponse, 'response', connection)}, "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"tr.{_column(TaskResponse, 'position', connection)} "
        f"FROM {_table(TaskResponse, connection)} tr "
        f"JOIN {_table(Task, connection)} t ON tr.{_column(TaskResponse, 'task', connection)} = "
        f"t.{_column(Task, 'id', connection)} "
        f"WHERE t.{_column(Task, 'project', connection)} = %s"
    )
    slots = _fetch_int_array(connection, sql, [project.pk], 3)
    width = int(slots[:, 2].max()) + 1 if slots.size else 2
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
