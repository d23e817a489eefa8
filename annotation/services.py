"""The work queue: claim, submit, skip, release, amend. Cross-model transactional flows live here.

Concurrency rule: every change to how many slots of a task are taken (a new lease, a
judgement, a skip, a late submit) happens while holding that task's row lock. On
PostgreSQL the lock is ``SELECT ... FOR UPDATE``; candidates are found with
``SKIP LOCKED`` so concurrent claimers fan out over different tasks instead of queueing
on one. On SQLite the database runs every atomic block as ``BEGIN IMMEDIATE`` (see
settings), which serialises writers, so the same read-check-write code is correct there.

A lease that ran out is not reclaimed eagerly. It stops counting towards the task's
slots the moment it expires, so the slot can go to somebody else; if nobody took it, a
late submit is still accepted. Only when the slot is gone is the late submit refused
(:class:`LeaseLost`, HTTP 409).
"""

from __future__ import annotations

import random
import reprlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from itertools import combinations, islice
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from annotation import queue_sql
from annotation.models import (
    Assignment,
    AssignmentState,
    Judgement,
    JudgementSource,
    PairVote,
    Project,
    Role,
    Task,
    TaskState,
)

# Without SKIP LOCKED (SQLite) a claim fetches this many candidates per round; writers
# are serialised there, so the first candidate is almost always taken.
_CLAIM_CANDIDATES = 16


class QueueError(Exception):
    """A request the queue refuses; ``code`` maps onto an HTTP status in the API."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRanking(QueueError):
    code = "invalid_ranking"


class NotAllowed(QueueError):
    status = 403
    code = "not_allowed"


class LeaseLost(QueueError):
    status = 409
    code = "lease_lost"


class AlreadyFinished(QueueError):
    status = 409
    code = "already_finished"


class TaskClosed(QueueError):
    """An answer may change only while its task is open: a complete task's judgements are final."""

    status = 409
    code = "task_complete"


# --- helpers ------------------------------------------------------------------------------


def _supports_skip_locked() -> bool:
    return connection.features.has_select_for_update_skip_locked


def _lock_task(task_id: int) -> Task:
    qs = Task.objects.filter(pk=task_id)
    if connection.features.has_select_for_update:
        qs = qs.select_for_update()
    return qs.get()


def _live_lease_count(task_id: int, *, now: Any, exclude_assignment: int | None = None) -> int:
    qs = Assignment.objects.filter(task_id=task_id).live(now)
    if exclude_assignment is not None:
        qs = qs.exclude(pk=exclude_assignment)
    return qs.count()


def _free_slots(task: Task, *, now: Any, exclude_assignment: int | None = None) -> int:
    taken = task.judgement_count + _live_lease_count(task.pk, now=now, exclude_assignment=exclude_assignment)
    return task.required_annotations - taken


def validate_tiers(tiers: Any, *, response_ids: list[int], allow_ties: bool) -> list[list[int]]:
    """Check that ``tiers`` is a ranking of exactly ``response_ids``; return it normalised.

    Raises :class:`InvalidRanking` naming the problem. Runs in O(K) whatever the size of
    ``tiers``: at most K + 1 ids are looked at, since among K + 1 ids one is either a
    repeat or not one of the task's K responses, so a 400,000-id ranking is refused as
    fast as a short one (issue 13: the old ``list.count`` was quadratic).
    """
    if not isinstance(tiers, list) or not tiers:
        raise InvalidRanking("ranking must be a non-empty list of tiers (lists of response ids)", field="ranking")
    expected = set(response_ids)
    k = len(expected)
    seen: set[int] = set()
    duplicates: set[int] = set()
    unknown: set[int] = set()
    normalised: list[list[int]] = []
    named = 0  # ids in the tiers walked so far
    for index, tier in enumerate(tiers):
        if not isinstance(tier, list) or not tier:
            raise InvalidRanking(f"tier {index} must be a non-empty list of response ids", field="ranking")
        walked = list(islice(tier, k + 1 - named))
        for rid in walked:
            if isinstance(rid, bool) or not isinstance(rid, int):
                raise InvalidRanking(
                    f"tier {index} holds {reprlib.repr(rid)}, which is not a response id", field="ranking"
                )
        if len(tier) > 1 and not allow_ties:
            raise InvalidRanking("this project does not allow ties: put one response in each tier", field="ranking")
        for rid in walked:
            if rid in seen:
                duplicates.add(rid)
            elif rid not in expected:
                unknown.add(rid)
            seen.add(rid)
        named += len(tier)
        if named > k:
            named += sum(len(rest) if isinstance(rest, list) else 1 for rest in islice(tiers, index + 1, None))
            break
        normalised.append(sorted(tier))
    if duplicates:
        raise InvalidRanking(f"responses {sorted(duplicates)} appear more than once", field="ranking")
    if named > k:
        raise InvalidRanking(f"the ranking names {named} responses; this task has {k}", field="ranking")
    if unknown:
        raise InvalidRanking(f"responses {sorted(unknown)} are not part of this task", field="ranking")
    missing = sorted(expected - seen)
    if missing:
        raise InvalidRanking(f"the ranking leaves out responses {missing}", field="ranking")
    return normalised


def check_both_bad(tiers: list[list[int]], *, both_bad: bool) -> None:
    """A "both are bad" answer is a full tie: one tier holding every response.

    So its PairVotes are ties (pair statistics count it as one), and the flag never sits on
    an answer that prefers one response to another. Call it on tiers ``validate_tiers`` checked.
    """
    if both_bad and len(tiers) != 1:
        raise InvalidRanking(
            "a 'both are bad' answer ties every response: send the ranking as one tier of all of them",
            field="both_bad",
        )


def _refuse_both_bad_unless_allowed(*, both_bad: bool, allowed: bool) -> None:
    if both_bad and not allowed:
        raise QueueError("this project does not take 'both are bad' answers (setting allow_both_bad)", field="both_bad")


def pair_votes_for(
    tiers: list[list[int]], *, display_order: list[int] | None = None
) -> list[tuple[int, int, int, bool | None]]:
    """Expand tiers into the C(K,2) outcomes ``(a, b, winner, a_shown_first)`` with a < b."""
    rank = {rid: level for level, tier in enumerate(tiers) for rid in tier}
    shown = {rid: pos for pos, rid in enumerate(display_order)} if display_order else None
    votes = []
    for a, b in combinations(sorted(rank), 2):
        if rank[a] < rank[b]:
            winner = 1
        elif rank[a] > rank[b]:
            winner = -1
        else:
            winner = 0
        a_first = None if shown is None else shown[a] < shown[b]
        votes.append((a, b, winner, a_first))
    return votes


def _write_pair_votes(judgement: Judgement, *, display_order: list[int] | None) -> None:
    PairVote.objects.bulk_create(
        PairVote(
            judgement=judgement,
            task_id=judgement.task_id,
            annotator_id=judgement.annotator_id,
            response_a_id=a,
            response_b_id=b,
            winner=winner,
            a_shown_first=a_first,
        )
        for a, b, winner, a_first in pair_votes_for(judgement.tiers, display_order=display_order)
    )


def _lock_membership_role(project: Project, user: Any) -> str:
    """Return the user's role in the project, locking their membership row.

    The lock serialises one annotator's concurrent claims (a double click, two tabs), so
    they cannot lease two tasks at once, and doubles as the permission check.
    """
    role = queue_sql.membership_role_locked(project.pk, user.pk)
    if role not in (Role.ANNOTATOR, Role.MANAGER):
        raise NotAllowed("you are not a member of this project")
    return role


# --- claim --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    assignment: Assignment
    resumed: bool  # True when the annotator's own live lease was handed back


@transaction.atomic
def assignment_claim_next(
    *, project: Project, annotator: Any, rng: random.Random | None = None, exclude: Sequence[int] = ()
) -> Claim | None:
    """Lease the next task of ``project`` to ``annotator``, or return None when none is left.

    Order: the annotator's own live lease first; then highest priority; among equals,
    partly annotated tasks before fresh ones; then the oldest. A task is never leased
    to more annotators than it still needs, and never twice to one person at once; a
    task they released comes back to them like any other (its row is leased again).
    ``exclude``: task ids not to hand out this time (the task just released, which
    would otherwise come straight back, being first in the order).
    """
    _lock_membership_role(project, annotator)
    now = timezone.now()
    own = queue_sql.own_live_assignment(project.pk, annotator.pk, now)
    if own is not None:
        return Claim(assignment=own, resumed=True)

    rejected: list[int] = [int(task_id) for task_id in exclude]
    # Each round excludes what the previous rounds rejected, so this ends: either a task
    # is leased or the candidate query comes back empty ("no work left for you").
    while True:
        # On PostgreSQL: one candidate, its row locked with SKIP LOCKED. A row locked by
        # FOR UPDATE is returned in its newest committed version, so its counters are
        # current. On SQLite writers are serialised and a few candidates are read at once.
        candidates = queue_sql.claim_candidates(
            project_id=project.pk, user_id=annotator.pk, now=now, exclude=rejected, limit=_CLAIM_CANDIDATES
        )
        if not candidates:
            return None
        for task_id, judgement_count, required, released_id in candidates:
            # Re-count live leases with a fresh statement now that the row is locked: a
            # concurrent claimer may have filled the task after our candidate query's
            # snapshot was taken. (That this annotator has no assignment on it yet was
            # settled by the candidate query: their own claims are serialised by the
            # membership lock.)
            if judgement_count + queue_sql.live_lease_count(task_id, now) >= required:
                rejected.append(task_id)
                continue
            if released_id is not None:
                # The annotator released this task before: the same row, leased again, with
                # the order they were shown then.
                queue_sql.assignment_lease_again(
                    released_id, now=now, expires_at=now + timedelta(seconds=project.lease_seconds)
                )
                return Claim(assignment=Assignment.objects.get(pk=released_id), resumed=False)
            order = queue_sql.task_response_ids(task_id)
            (rng or random).shuffle(order)
            assignment = Assignment.objects.create(
                task_id=task_id,
                project=project,
                annotator=annotator,
                display_order=order,
                leased_at=now,
                expires_at=now + timedelta(seconds=project.lease_seconds),
            )
            return Claim(assignment=assignment, resumed=False)


# --- submit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    judgement: Judgement
    created: bool  # False when a retried submit found its earlier judgement


def judgement_submit(
    *,
    assignment: Assignment,
    ranking: Any,
    client_token: uuid.UUID | str | None = None,
    confidence: int | None = None,
    rationale: str = "",
    time_taken_ms: int | None = None,
    both_bad: bool = False,
) -> Submission:
    """Record the annotator's ranking for a leased task, with its PairVotes, atomically.

    Idempotent on ``client_token``: a retry with the same token returns the judgement the
    first call created and writes nothing. A lease that expired is still accepted when its
    slot was not given to somebody else; otherwise :class:`LeaseLost`. ``both_bad``: the
    "both are bad" verdict, only where the project allows it and only as a full tie
    (:func:`check_both_bad`); allowed, it is a tie even in a project without ties.
    """
    try:
        token = uuid.UUID(str(client_token)) if client_token else uuid.uuid4()
    except ValueError:
        raise QueueError("client_token must be a UUID", field="client_token") from None
    if confidence is not None and not (1 <= confidence <= 5):
        raise QueueError("confidence must be between 1 and 5", field="confidence")
    # The display order was fixed at claim time and is exactly the task's responses, so
    # the ranking's shape is checked here, before the task lock and the transaction: a
    # malformed or huge ranking must not hold a lock (on SQLite, the database's only
    # write lock) while it is refused. The project's tie rule is applied under the lock.
    ranking = validate_tiers(ranking, response_ids=assignment.display_order, allow_ties=True)
    check_both_bad(ranking, both_bad=both_bad)
    with transaction.atomic():
        outcome = _submit_under_lock(
            assignment_id=assignment.pk,
            task_id=assignment.task_id,
            ranking=ranking,
            token=token,
            confidence=confidence,
            rationale=rationale,
            time_taken_ms=time_taken_ms,
            both_bad=both_bad,
        )
    # Raised after the block commits, so that the lease is recorded as expired.
    if isinstance(outcome, QueueError):
        raise outcome
    return outcome


def _submit_under_lock(
    *,
    assignment_id: int,
    task_id: int,
    ranking: Any,
    token: uuid.UUID,
    confidence: int | None,
    rationale: str,
    time_taken_ms: int | None,
    both_bad: bool,
) -> Submission | QueueError:
    task_state, judgement_count, required = queue_sql.lock_task(task_id)
    # Everything below is read after the task lock, so a concurrent duplicate of this
    # request sees the judgement the first one committed, and the assignment's state as
    # the last writer left it.
    assignment = queue_sql.assignment_for_submit(assignment_id)
    previous = queue_sql.judgement_id_for_token(assignment["annotator_id"], token)
    if previous is not None:
        judgement_id, previous_assignment = previous
        if previous_assignment != assignment_id:
            raise QueueError("this client token was already used for another task", field="client_token")
        return Submission(judgement=Judgement.objects.get(pk=judgement_id), created=False)
    if assignment["state"] == AssignmentState.SUBMITTED:
        raise AlreadyFinished("this task was already submitted")
    if assignment["state"] == AssignmentState.SKIPPED:
        raise AlreadyFinished("this task was skipped")
    if assignment["state"] == AssignmentState.RELEASED:
        raise AlreadyFinished("you released this task: claim it again to answer it")
    now = timezone.now()
    if assignment["judged"]:
        # An import recorded this annotator's judgement of the task while the lease was
        # out; one person judges a task once, so the lease ends here instead of failing
        # every submit on the unique constraint until it runs out.
        queue_sql.assignment_finish(assignment_id, state=AssignmentState.EXPIRED, now=now)
        return AlreadyFinished("you already have a judgement on this task (an imported one)")

    # Checked again with the project's tie and both-bad rules, read under the lock; the
    # ranking was already checked against the display order, so this is O(K).
    _refuse_both_bad_unless_allowed(both_bad=both_bad, allowed=assignment["allow_both_bad"])
    display_order = assignment["display_order"]
    tiers = validate_tiers(ranking, response_ids=display_order, allow_ties=assignment["allow_ties"] or both_bad)

    if not (assignment["state"] == AssignmentState.LEASED and assignment["expires_at"] > now):
        # Late: accept only if the slot it held is still free.
        taken = judgement_count + queue_sql.live_lease_count(task_id, now, exclude_assignment=assignment_id)
        if task_state != TaskState.OPEN or taken >= required:
            queue_sql.assignment_finish(assignment_id, state=AssignmentState.EXPIRED, now=now)
            return LeaseLost("your lease on this task expired and the task went to another annotator")

    if time_taken_ms is None:
        time_taken_ms = int((now - assignment["leased_at"]).total_seconds() * 1000)
    judgement = Judgement.objects.create(
        task_id=task_id,
        annotator_id=assignment["annotator_id"],
        assignment_id=assignment_id,
        tiers=tiers,
        both_bad=both_bad,
        confidence=confidence,
        rationale=rationale or "",
        time_taken_ms=max(0, time_taken_ms),
        client_token=token,
        source=JudgementSource.ANNOTATION,
        created_at=now,
    )
    _write_pair_votes(judgement, display_order=display_order)
    queue_sql.assignment_finish(assignment_id, state=AssignmentState.SUBMITTED, now=now)
    queue_sql.task_count_judgement(task_id, complete=judgement_count + 1 >= required, now=now)
    return Submission(judgement=judgement, created=True)


def _count_judgement(task: Task, *, now: Any) -> None:
    """Bump the task's counter under its lock and complete it when full."""
    task.judgement_count += 1
    fields = ["judgement_count"]
    if task.judgement_count >= task.required_annotations:
        task.state = TaskState.COMPLETE
        task.completed_at = now
        fields += ["state", "completed_at"]
    task.save(update_fields=fields)


# --- skip ---------------------------------------------------------------------------------


@transaction.atomic
def assignment_skip(*, assignment: Assignment, reason: str) -> Assignment:
    """Give the task back with a reason; the annotator will not be offered it again."""
    reason = (reason or "").strip()
    if not reason:
        raise QueueError("a skip needs a reason", field="reason")
    if len(reason) > 500:
        raise QueueError("the skip reason is longer than 500 characters", field="reason")
    _lock_task(assignment.task_id)
    assignment = Assignment.objects.select_related("project").get(pk=assignment.pk)
    if not assignment.project.allow_skip:
        raise NotAllowed("this project does not allow skipping")
    if assignment.state in (AssignmentState.SUBMITTED, AssignmentState.SKIPPED, AssignmentState.RELEASED):
        raise AlreadyFinished(f"this task was already {assignment.state}")
    assignment.state = AssignmentState.SKIPPED
    assignment.skip_reason = reason
    assignment.finished_at = timezone.now()
    assignment.save(update_fields=["state", "skip_reason", "finished_at"])
    return assignment


# --- release ------------------------------------------------------------------------------


@transaction.atomic
def assignment_release(*, assignment: Assignment) -> Assignment:
    """Give a task back without an answer and without a reason: the lease ends at once.

    Unlike a skip, the task is not gone for good: it is back in the queue for everybody,
    this annotator included (the claim ignores a released assignment and a later claim
    leases the same row again). Releasing twice answers the released assignment again;
    a submitted or skipped task is refused.
    """
    _lock_task(assignment.task_id)
    assignment = Assignment.objects.get(pk=assignment.pk)
    if assignment.state in (AssignmentState.SUBMITTED, AssignmentState.SKIPPED):
        raise AlreadyFinished(f"this task was already {assignment.state}")
    if assignment.state == AssignmentState.RELEASED:
        return assignment
    # A lease that ran out (or whose late submit found the slot gone) is released too: it
    # held nothing any more, and the task may still come back to its annotator.
    assignment.state = AssignmentState.RELEASED
    assignment.finished_at = timezone.now()
    assignment.save(update_fields=["state", "finished_at"])
    return assignment


# --- amend --------------------------------------------------------------------------------


def judgement_last(*, project: Project, annotator: Any) -> Judgement | None:
    """The annotator's most recent answer on the labeling queue of ``project`` (imports aside), or None."""
    return (
        Judgement.objects.filter(task__project=project, annotator=annotator, source=JudgementSource.ANNOTATION)
        .select_related("task", "assignment")
        .order_by("-id")
        .first()
    )


@dataclass(frozen=True)
class Amendment:
    judgement: Judgement
    changed: bool  # False when the answer sent is the one already stored: nothing was written


def judgement_amend(
    *,
    judgement: Judgement,
    ranking: Any,
    both_bad: bool = False,
    confidence: int | None = None,
    rationale: str = "",
) -> Amendment:
    """Replace the annotator's answer while its task is still open; its PairVotes are rewritten with it.

    ``judgement`` must be the caller's own (the views answer anybody else's with a 404).
    The answer is whole: ranking, ``both_bad``, confidence and rationale replace the stored
    ones, checked by the rules of a submit (the display order the annotator was shown, the
    project's tie and both-bad rules read under the task's lock). Refused with
    :class:`TaskClosed` once the task is complete (its judgements are the final set that
    agreement and exports read) or retired, and for imported judgements. Idempotent: the
    stored answer sent again writes nothing (``changed`` False).
    """
    if judgement.source != JudgementSource.ANNOTATION or judgement.assignment_id is None:
        raise NotAllowed("an imported judgement cannot be changed on the platform")
    if confidence is not None and not (1 <= confidence <= 5):
        raise QueueError("confidence must be between 1 and 5", field="confidence")
    display_order = Assignment.objects.values_list("display_order", flat=True).get(pk=judgement.assignment_id)
    # Shape first, outside the lock, as a submit does.
    tiers = validate_tiers(ranking, response_ids=display_order, allow_ties=True)
    check_both_bad(tiers, both_bad=both_bad)
    with transaction.atomic():
        task = _lock_task(judgement.task_id)
        if task.state != TaskState.OPEN:
            raise TaskClosed(
                f"this task is {task.state}: its answers are final and can no longer change", field="judgement"
            )
        project = Project.objects.only("allow_ties", "allow_both_bad").get(pk=task.project_id)
        _refuse_both_bad_unless_allowed(both_bad=both_bad, allowed=project.allow_both_bad)
        tiers = validate_tiers(tiers, response_ids=display_order, allow_ties=project.allow_ties or both_bad)
        current = Judgement.objects.get(pk=judgement.pk)
        wanted = {"tiers": tiers, "both_bad": both_bad, "confidence": confidence, "rationale": rationale or ""}
        if all(getattr(current, field) == value for field, value in wanted.items()):
            return Amendment(judgement=current, changed=False)
        for field, value in wanted.items():
            setattr(current, field, value)
        current.amended_at = timezone.now()
        current.save(update_fields=[*wanted, "amended_at"])
        # Every pair outcome follows the new tiers: the old votes go in the same transaction.
        PairVote.objects.filter(judgement=current).delete()
        _write_pair_votes(current, display_order=display_order)
    return Amendment(judgement=current, changed=True)


# --- imported judgements -----------------------------------------------------------------


def judgement_import(
    *,
    task: Task,
    annotator: Any,
    tiers: list[list[int]],
    allow_ties: bool,
    rationale: str = "",
    created_at: Any = None,
) -> Judgement:
    """Record an existing judgement (from an imported file) on a task, with its PairVotes.

    Runs inside the importer's transaction. Imported judgements have no lease and no
    display order, so they carry no position information.
    """
    tiers = validate_tiers(tiers, response_ids=task.response_ids(), allow_ties=allow_ties)
    task = _lock_task(task.pk)
    if task.judgement_count >= task.required_annotations:
        raise QueueError(f"task {task.pk} already holds {task.judgement_count} judgements, all it needs")
    judgement = Judgement.objects.create(
        task=task,
        annotator=annotator,
        tiers=tiers,
        rationale=rationale,
        source=JudgementSource.IMPORT,
        created_at=created_at or timezone.now(),
    )
    _write_pair_votes(judgement, display_order=None)
    _count_judgement(task, now=timezone.now())
    return judgement


# --- submit, then the next task, in one request -------------------------------------------


@dataclass(frozen=True)
class SubmitAndNext:
    """What the labeling page needs after Enter: the fate of the answer and the next task."""

    submission: Submission | None  # None when the queue refused the answer (``refused``)
    refused: QueueError | None  # LeaseLost / AlreadyFinished: the task is gone, move on anyway
    claim: Claim | None  # None when no work is left for the annotator


def judgement_submit_and_claim_next(
    *,
    assignment: Assignment,
    project: Project,
    annotator: Any,
    ranking: Any,
    client_token: uuid.UUID | str | None = None,
    confidence: int | None = None,
    rationale: str = "",
    time_taken_ms: int | None = None,
    both_bad: bool = False,
    rng: random.Random | None = None,
) -> SubmitAndNext:
    """Submit the annotator's ranking and lease their next task, for one HTTP round trip.

    The two steps are the unchanged :func:`judgement_submit` and
    :func:`assignment_claim_next`, run as two transactions on purpose: the answer commits
    first, so a failing claim can never roll back an accepted judgement, and the claim
    then sees this task as done (the annotator holds no live lease any more), so it hands
    out a different task. Every queue invariant is therefore exactly the one the two
    services already keep: a task is never over-assigned nor leased twice to one person,
    and a late submit is accepted only while its slot is free.

    A retry with the same ``client_token`` (the reply to the first call was lost) finds
    its judgement, writes nothing, and is handed the lease the first call took
    (``claim.resumed``), so both calls show the same next task.

    A ranking the queue rejects as malformed (:class:`InvalidRanking`, a bad token or
    confidence) raises before anything is claimed: the annotator stays on the task and
    fixes it. A submit refused because the task is gone for them (:class:`LeaseLost`,
    :class:`AlreadyFinished`) does not raise: there is nothing left to fix, so the next
    task is claimed and the refusal is reported with it.
    """
    submission: Submission | None = None
    refused: QueueError | None = None
    try:
        submission = judgement_submit(
            assignment=assignment,
            ranking=ranking,
            client_token=client_token,
            confidence=confidence,
            rationale=rationale,
            time_taken_ms=time_taken_ms,
            both_bad=both_bad,
        )
    except (LeaseLost, AlreadyFinished) as exc:
        refused = exc
    claim = assignment_claim_next(project=project, annotator=annotator, rng=rng)
    return SubmitAndNext(submission=submission, refused=refused, claim=claim)
