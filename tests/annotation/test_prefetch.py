"""Submit and claim the next task in one call: the queue rules hold across the two steps."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, AssignmentState, Judgement, Membership, Role, TaskState
from annotation.services import (
    InvalidRanking,
    LeaseLost,
    QueueError,
    assignment_claim_next,
    assignment_skip,
    judgement_submit_and_claim_next,
)
from tests.factories import UserFactory, make_task

pytestmark = pytest.mark.django_db


def _answer(assignment: Assignment) -> list[list[int]]:
    return [[rid] for rid in assignment.display_order]


def _submit_next(assignment: Assignment, annotator, **kwargs):
    kwargs.setdefault("ranking", _answer(assignment))
    kwargs.setdefault("client_token", uuid.uuid4())
    return judgement_submit_and_claim_next(
        assignment=assignment, project=assignment.project, annotator=annotator, **kwargs
    )


def _expire(assignment: Assignment) -> None:
    now = timezone.now()
    Assignment.objects.filter(pk=assignment.pk).update(
        leased_at=now - timedelta(hours=1), expires_at=now - timedelta(seconds=1)
    )


def _live(annotator) -> list[Assignment]:
    now = timezone.now()
    return list(Assignment.objects.filter(annotator=annotator, state=AssignmentState.LEASED, expires_at__gt=now))


def test_records_the_answer_and_leases_a_different_task(project, annotator):
    first, second = make_task(project, priority=2), make_task(project, priority=1)
    claim = assignment_claim_next(project=project, annotator=annotator)
    assert claim.assignment.task_id == first.pk

    outcome = _submit_next(
        claim.assignment, annotator, ranking=[[claim.assignment.display_order[1]], [claim.assignment.display_order[0]]]
    )

    assert outcome.refused is None and outcome.submission.created
    judgement = Judgement.objects.get(task=first, annotator=annotator)
    assert judgement.tiers == [[claim.assignment.display_order[1]], [claim.assignment.display_order[0]]]
    assert judgement.pair_votes.count() == 1
    assert outcome.claim is not None and not outcome.claim.resumed
    assert outcome.claim.assignment.task_id == second.pk
    # One lease at a time: the finished one is closed, only the new one is live.
    assert [a.pk for a in _live(annotator)] == [outcome.claim.assignment.pk]
    assert Assignment.objects.get(pk=claim.assignment.pk).state == AssignmentState.SUBMITTED


def test_a_retried_call_writes_nothing_and_returns_the_same_next_task(project, annotator):
    make_task(project, priority=2), make_task(project, priority=1), make_task(project)
    claim = assignment_claim_next(project=project, annotator=annotator)
    token = uuid.uuid4()
    first = _submit_next(claim.assignment, annotator, client_token=token)
    again = _submit_next(claim.assignment, annotator, client_token=token)

    assert first.submission.created and not again.submission.created
    assert again.submission.judgement.pk == first.submission.judgement.pk
    assert again.claim.resumed and again.claim.assignment.pk == first.claim.assignment.pk
    assert Judgement.objects.filter(annotator=annotator).count() == 1
    assert Assignment.objects.filter(annotator=annotator).count() == 2


def test_the_next_task_is_never_one_already_had_nor_a_full_one(project, annotator):
    other = UserFactory(username="other")
    Membership.objects.create(project=project, user=other, role=Role.ANNOTATOR)
    full = make_task(project, priority=9, required=1)
    skipped = make_task(project, priority=8)
    mine = make_task(project, priority=5)
    rest = make_task(project, priority=0)
    # ``other`` holds the only slot of the top task; ``annotator`` skipped the second.
    assert assignment_claim_next(project=project, annotator=other).assignment.task_id == full.pk
    skip_claim = assignment_claim_next(project=project, annotator=annotator)
    assert skip_claim.assignment.task_id == skipped.pk
    assignment_skip(assignment=skip_claim.assignment, reason="not my field")

    claim = assignment_claim_next(project=project, annotator=annotator)
    assert claim.assignment.task_id == mine.pk
    outcome = _submit_next(claim.assignment, annotator)
    assert outcome.claim.assignment.task_id == rest.pk

    last = _submit_next(outcome.claim.assignment, annotator)
    assert last.submission.created and last.claim is None  # nothing left for this annotator
    assert _live(annotator) == []
    assert Assignment.objects.filter(task=full).count() == 1


def test_a_late_submit_whose_slot_was_taken_is_refused_and_moves_on(project, annotator):
    other = UserFactory(username="other")
    Membership.objects.create(project=project, user=other, role=Role.ANNOTATOR)
    contested = make_task(project, priority=5, required=1)
    spare = make_task(project)
    claim = assignment_claim_next(project=project, annotator=annotator)
    assert claim.assignment.task_id == contested.pk
    _expire(claim.assignment)
    assert assignment_claim_next(project=project, annotator=other).assignment.task_id == contested.pk

    outcome = _submit_next(claim.assignment, annotator)

    assert outcome.submission is None and isinstance(outcome.refused, LeaseLost)
    assert outcome.claim.assignment.task_id == spare.pk
    assert not Judgement.objects.filter(annotator=annotator).exists()
    assert Assignment.objects.get(pk=claim.assignment.pk).state == AssignmentState.EXPIRED


def test_a_late_submit_whose_slot_is_still_free_is_accepted(project, annotator):
    task = make_task(project, required=1)
    claim = assignment_claim_next(project=project, annotator=annotator)
    _expire(claim.assignment)
    outcome = _submit_next(claim.assignment, annotator)
    assert outcome.submission.created and outcome.refused is None and outcome.claim is None
    task.refresh_from_db()
    assert task.state == TaskState.COMPLETE and task.judgement_count == 1


def test_a_malformed_answer_raises_and_claims_nothing(project, annotator):
    make_task(project), make_task(project)
    claim = assignment_claim_next(project=project, annotator=annotator)
    with pytest.raises(InvalidRanking):
        _submit_next(claim.assignment, annotator, ranking=[[claim.assignment.display_order[0]]])
    with pytest.raises(QueueError):
        _submit_next(claim.assignment, annotator, client_token="not-a-uuid")
    # Still on the same task, nothing recorded, nothing else leased.
    assert [a.pk for a in _live(annotator)] == [claim.assignment.pk]
    assert Assignment.objects.filter(annotator=annotator).count() == 1
    assert not Judgement.objects.exists()
