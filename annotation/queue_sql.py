"""Hand-written SQL for the two requests annotators make all day, claim and submit, and
for three lookups around them.

Everything here could be written with the ORM, and was; profiling the HTTP load
benchmark showed that building and compiling querysets cost more CPU than PostgreSQL
spent running them (about 1 ms per query on a small server). These statements are the
same queries written once, portable between PostgreSQL and SQLite; the locking clauses
are added only where the database has them. Only table names from model metadata and
fixed clauses are put into the SQL text; every value is a query parameter.

Callers. The claim and submit statements (every function but the three lookups below)
are ``annotation.services``' alone, and the rules they implement are explained there. The
lookups serve the web pages and the API alike:
``project_with_role`` (the caller's project and role, on every request under a project)
is called by ``arpad.api.permissions``, ``frontend.access``, ``frontend.views`` and
``frontend.views_manage``; ``own_assignment`` and ``task_texts`` by ``annotation.api.views``
and ``frontend.views`` (the claim and submit endpoints of the API and of the annotator page).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from annotation.models import (
    Assignment,
    AssignmentState,
    Judgement,
    Membership,
    Project,
    Prompt,
    Response,
    Task,
    TaskResponse,
)

ASSIGNMENT = Assignment._meta.db_table
JUDGEMENT = Judgement._meta.db_table
MEMBERSHIP = Membership._meta.db_table
PROJECT = Project._meta.db_table
TASK = Task._meta.db_table
TASK_RESPONSE = TaskResponse._meta.db_table
PROMPT = Prompt._meta.db_table
RESPONSE = Response._meta.db_table


# The largest value of the id columns (64-bit). Ids from URLs can be any number of digits
# (Django's <int:> converter): a larger one would be an OverflowError on SQLite, so it is
# answered here as what it is, an id no row has.
ID_MAX = 2**63 - 1


def _is_id(value: int) -> bool:
    return 0 < value <= ID_MAX


def _rows(sql: str, params: list[Any]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _execute(sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _dt(value: datetime) -> Any:
    """A datetime parameter as the backend stores it (naive UTC text on SQLite)."""
    return connection.ops.adapt_datetimefield_value(value)


def _read_dt(value: Any) -> datetime:
    if value.tzinfo is None:  # SQLite hands back naive UTC
        return value.replace(tzinfo=UTC)
    return value


def _read_json(value: Any) -> Any:
    # PostgreSQL's jsonb and SQLite's JSON both arrive as text through Django's cursor.
    return json.loads(value) if isinstance(value, str | bytes) else value


def _for_update(*, skip_locked: bool = False, of: str | None = None) -> str:
    if not connection.features.has_select_for_update:
        return ""
    clause = " FOR UPDATE"
    if of and connection.features.has_select_for_update_of:
        clause += f" OF {of}"
    if skip_locked and connection.features.has_select_for_update_skip_locked:
        clause += " SKIP LOCKED"
    return clause


def membership_role_locked(project_id: int, user_id: int) -> str | None:
    rows = _rows(
        f"SELECT role FROM {MEMBERSHIP} WHERE project_id = %s AND user_id = %s" + _for_update(),
        [project_id, user_id],
    )
    return rows[0][0] if rows else None


def own_live_assignment(project_id: int, user_id: int, now: datetime) -> Assignment | None:
    found = list(
        Assignment.objects.raw(
            f"SELECT * FROM {ASSIGNMENT} WHERE project_id = %s AND annotator_id = %s AND state = 'leased'"
            " AND expires_at > %s ORDER BY leased_at LIMIT 1",
            [project_id, user_id, _dt(now)],
        )
    )
    return found[0] if found else None


def own_assignment(assignment_id: int, user_id: int) -> Assignment | None:
    """The user's own assignment, if they are still a member of its project (else None)."""
    if not _is_id(assignment_id):
        return None
    found = list(
        Assignment.objects.raw(
            f"SELECT a.* FROM {ASSIGNMENT} a JOIN {MEMBERSHIP} m"
            " ON m.project_id = a.project_id AND m.user_id = a.annotator_id"
            " WHERE a.id = %s AND a.annotator_id = %s",
            [assignment_id, user_id],
        )
    )
    return found[0] if found else None


def claim_candidates(
    *, project_id: int, user_id: int, now: datetime, exclude: list[int], limit: int
) -> list[tuple[int, int, int, int | None]]:
    """Open tasks this user does not hold, never answered and never judged, with a free slot, in claim order.

    Returns ``(task id, judgement_count, required_annotations, released assignment id)``;
    the last is the id of the user's own assignment of the task when they released it
    (to be leased again: one assignment per task and annotator), else None. On PostgreSQL
    only the first candidate is returned, locked, skipping rows that other claimers hold.
    """
    skip_locked = connection.features.has_select_for_update_skip_locked
    excluded = ""
    released = AssignmentState.RELEASED.value
    params: list[Any] = [user_id, project_id, user_id, released, user_id, _dt(now)]
    if exclude:
        excluded = f" AND t.id NOT IN ({', '.join(['%s'] * len(exclude))})"
        params.extend(exclude)
    params.append(1 if skip_locked else limit)
    sql = (
        # The released row's id is looked up for the one row returned (PostgreSQL) or the few
        # (SQLite) only: a select-list subquery runs per output row, on the (task, annotator)
        # unique index.
        f"SELECT t.id, t.judgement_count, t.required_annotations,"
        f" (SELECT back.id FROM {ASSIGNMENT} back WHERE back.task_id = t.id AND back.annotator_id = %s)"
        f" FROM {TASK} t"
        " WHERE t.project_id = %s AND t.state = 'open'"
        # A released assignment gives the task back: it does not keep it from its annotator.
        f" AND NOT EXISTS (SELECT 1 FROM {ASSIGNMENT} own WHERE own.task_id = t.id AND own.annotator_id = %s"
        " AND own.state <> %s)"
        # An imported judgement has no assignment but still counts as this user's one
        # judgement of the task (a unique constraint): offering the task would only lead
        # to a submit that can never be recorded.
        f" AND NOT EXISTS (SELECT 1 FROM {JUDGEMENT} mine WHERE mine.task_id = t.id AND mine.annotator_id = %s)"
        f" AND t.judgement_count + (SELECT COUNT(*) FROM {ASSIGNMENT} live WHERE live.task_id = t.id"
        " AND live.state = 'leased' AND live.expires_at > %s) < t.required_annotations"
        f"{excluded}"
        " ORDER BY t.priority DESC, t.judgement_count DESC, t.id LIMIT %s" + _for_update(skip_locked=True, of="t")
    )
    return _rows(sql, params)


def lock_task(task_id: int) -> tuple[str, int, int]:
    """Lock the task row; return ``(state, judgement_count, required_annotations)``."""
    rows = _rows(
        f"SELECT state, judgement_count, required_annotations FROM {TASK} WHERE id = %s" + _for_update(), [task_id]
    )
    return rows[0]


def live_lease_count(task_id: int, now: datetime, *, exclude_assignment: int | None = None) -> int:
    sql = f"SELECT COUNT(*) FROM {ASSIGNMENT} WHERE task_id = %s AND state = 'leased' AND expires_at > %s"
    params: list[Any] = [task_id, _dt(now)]
    if exclude_assignment is not None:
        sql += " AND id <> %s"
        params.append(exclude_assignment)
    return _rows(sql, params)[0][0]


def task_response_ids(task_id: int) -> list[int]:
    return [
        r[0] for r in _rows(f"SELECT response_id FROM {TASK_RESPONSE} WHERE task_id = %s ORDER BY position", [task_id])
    ]


def assignment_for_submit(assignment_id: int) -> dict[str, Any]:
    """The assignment as the submit needs it, with its project's tie and both-bad rules.

    ``judged``: the annotator already has a judgement on the task (this assignment's own,
    or one imported while the lease was out).
    """
    row = _rows(
        f"SELECT a.annotator_id, a.state, a.leased_at, a.expires_at, a.display_order, p.allow_ties,"
        f" EXISTS (SELECT 1 FROM {JUDGEMENT} j WHERE j.task_id = a.task_id AND j.annotator_id = a.annotator_id),"
        " p.allow_both_bad"
        f" FROM {ASSIGNMENT} a JOIN {PROJECT} p ON p.id = a.project_id WHERE a.id = %s",
        [assignment_id],
    )[0]
    return {
        "annotator_id": row[0],
        "state": row[1],
        "leased_at": _read_dt(row[2]),
        "expires_at": _read_dt(row[3]),
        "display_order": _read_json(row[4]),
        "allow_ties": bool(row[5]),
        "judged": bool(row[6]),
        "allow_both_bad": bool(row[7]),
    }


def judgement_id_for_token(annotator_id: int, token: Any) -> tuple[int, int | None] | None:
    """``(judgement id, assignment id)`` of the annotator's judgement with this client token."""
    value = Judgement._meta.get_field("client_token").get_db_prep_value(token, connection)
    rows = _rows(
        f"SELECT id, assignment_id FROM {JUDGEMENT} WHERE annotator_id = %s AND client_token = %s",
        [annotator_id, value],
    )
    return rows[0] if rows else None


def assignment_finish(assignment_id: int, *, state: str, now: datetime) -> None:
    _execute(f"UPDATE {ASSIGNMENT} SET state = %s, finished_at = %s WHERE id = %s", [state, _dt(now), assignment_id])


def assignment_lease_again(assignment_id: int, *, now: datetime, expires_at: datetime) -> None:
    """Lease a released assignment to its annotator again (the claim found it among the candidates)."""
    _execute(
        f"UPDATE {ASSIGNMENT} SET state = %s, leased_at = %s, expires_at = %s, finished_at = NULL WHERE id = %s",
        [AssignmentState.LEASED.value, _dt(now), _dt(expires_at), assignment_id],
    )


def task_count_judgement(task_id: int, *, complete: bool, now: datetime) -> None:
    if complete:
        _execute(
            f"UPDATE {TASK} SET judgement_count = judgement_count + 1, state = 'complete', completed_at = %s"
            " WHERE id = %s",
            [_dt(now), task_id],
        )
    else:
        _execute(f"UPDATE {TASK} SET judgement_count = judgement_count + 1 WHERE id = %s", [task_id])


def project_with_role(project_id: int, user_id: int) -> Project | None:
    """The project with ``caller_role`` set, if the user is a member; one query, no ORM compile."""
    if not _is_id(project_id):
        return None
    found = list(
        Project.objects.raw(
            f"SELECT p.*, m.role AS caller_role FROM {PROJECT} p"
            f" JOIN {MEMBERSHIP} m ON m.project_id = p.id WHERE p.id = %s AND m.user_id = %s",
            [project_id, user_id],
        )
    )
    return found[0] if found else None


def task_texts(task_id: int, response_ids: list[int]) -> tuple[list[dict[str, str]], dict[int, str]]:
    """The task's prompt messages and the texts of its responses, for the claim payload."""
    messages = _rows(
        f"SELECT p.messages FROM {PROMPT} p JOIN {TASK} t ON t.prompt_id = p.id WHERE t.id = %s", [task_id]
    )[0][0]
    placeholders = ", ".join(["%s"] * len(response_ids))
    texts = dict(_rows(f"SELECT id, text FROM {RESPONSE} WHERE id IN ({placeholders})", list(response_ids)))
    return _read_json(messages), texts
