"""Releasing a task back to the queue, and changing an answer while its task is open."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from annotation.models import Assignment, AssignmentState, Judgement, JudgementSource, Membership, PairVote, Role
from annotation.services import (
    AlreadyFinished,
    QueueError,
    TaskClosed,
    assignment_claim_next,
    assignment_release,
    assignment_skip,
    judgement_amend,
    judgement_last,
    judgement_submit,
)
from tests.factories import UserFactory, make_task

pytestmark = pytest.mark.django_db

API = "/api/v1"


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def second(project):
    user = UserFactory(username="second")
    Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    return user


def claim(project, user) -> Assignment:
    return assignment_claim_next(project=project, annotator=user).assignment


def answer(lease: Assignment, *, reverse: bool = False, **extra) -> Judgement:
    order = list(reversed(lease.display_order)) if reverse else list(lease.display_order)
    return judgement_submit(assignment=lease, ranking=[[r] for r in order], **extra).judgement


# --- release ---------------------------------------------------------------------------------


def test_a_release_ends_the_lease_and_frees_the_slot(project, annotator, second):
    project.annotations_per_task = 1
    project.save()
    task = make_task(project)
    lease = claim(project, annotator)
    assert assignment_claim_next(project=project, annotator=second) is None  # the one slot is held
    released = assignment_release(assignment=lease)
    assert released.state == AssignmentState.RELEASED and released.finished_at is not None
    assert claim(project, second).task_id == task.pk


def test_a_released_task_may_come_back_to_its_annotator_later(project, annotator):
    task = make_task(project)
    other = make_task(project)
    lease = claim(project, annotator)
    assert lease.task_id == task.pk
    assignment_release(assignment=lease)
    # Right after the release, the page's claim leaves the task out ...
    assert assignment_claim_next(project=project, annotator=annotator, exclude=[task.pk]).assignment.task_id == other.pk
    answer(Assignment.objects.get(task=other, annotator=annotator))
    # ... and a later claim offers it again: the same row, leased again, shown in the same order.
    again = claim(project, annotator)
    assert (again.pk, again.task_id, again.display_order) == (lease.pk, task.pk, lease.display_order)
    assert again.state == AssignmentState.LEASED and again.finished_at is None and again.expires_at > lease.leased_at
    judgement = answer(again)
    assert judgement.assignment_id == lease.pk


def test_release_refusals(project, annotator):
    make_task(project)
    make_task(project)
    lease = claim(project, annotator)
    assert assignment_release(assignment=lease).state == AssignmentState.RELEASED
    assert assignment_release(assignment=lease).state == AssignmentState.RELEASED  # twice: the same answer
    with pytest.raises(AlreadyFinished, match="released"):
        answer(lease)
    with pytest.raises(AlreadyFinished, match="released"):
        assignment_skip(assignment=lease, reason="changed my mind")
    done = claim(project, annotator)
    answer(done)
    with pytest.raises(AlreadyFinished, match="submitted"):
        assignment_release(assignment=done)


def test_the_release_api(project, annotator, manager, outsider):
    make_task(project)
    lease = claim(project, annotator)
    url = f"{API}/assignments/{lease.pk}/release/"
    for stranger in (manager, outsider):
        assert api(stranger).post(url).status_code == 404
    response = api(annotator).post(url)
    assert response.status_code == 200 and response.json()["state"] == "released"
    again = api(annotator).post(f"{API}/projects/{project.pk}/claim/").json()["assignment"]
    assert again["id"] == lease.pk and again["resumed"] is False
    submitted = api(annotator).post(
        f"{API}/assignments/{lease.pk}/submit/",
        {"ranking": [[r] for r in again["display_order"]], "client_token": str(uuid.uuid4())},
        format="json",
    )
    assert submitted.status_code == 201
    refused = api(annotator).post(url)
    assert refused.status_code == 409 and refused.json()["code"] == "already_finished"


# --- amend -----------------------------------------------------------------------------------


def test_judgement_last_is_the_latest_answer_on_the_platform(project, annotator, second):
    assert judgement_last(project=project, annotator=annotator) is None
    for _ in range(2):
        make_task(project)
    first = answer(claim(project, annotator))
    latest = answer(claim(project, annotator))
    answer(claim(project, second))
    assert judgement_last(project=project, annotator=annotator) == latest != first


def test_an_amendment_rewrites_the_answer_and_its_votes_at_once():
    from tests.factories import ProjectFactory

    project = ProjectFactory(kind="ranking", responses_per_task=3, allow_ties=True, allow_both_bad=True)
    user = UserFactory(username="ranker")
    Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    make_task(project)
    lease = claim(project, user)
    judgement = answer(lease, confidence=2, rationale="first look")
    a, b, c = lease.display_order
    before = set(PairVote.objects.filter(judgement=judgement).values_list("response_a", "response_b", "winner"))
    outcome = judgement_amend(judgement=judgement, ranking=[[c], [a, b]], confidence=4, rationale="read again")
    assert outcome.changed
    judgement.refresh_from_db()
    assert judgement.tiers == [[c], sorted([a, b])] and judgement.confidence == 4
    assert judgement.rationale == "read again" and judgement.amended_at is not None
    votes = PairVote.objects.filter(judgement=judgement)
    assert votes.count() == 3
    after = {(v.response_a_id, v.response_b_id): v.winner for v in votes}
    assert after[tuple(sorted((a, b)))] == 0  # tied now
    assert after[tuple(sorted((a, c)))] == (1 if c < a else -1)
    assert set(votes.values_list("response_a", "response_b", "winner")) != before
    # Display order is kept with the votes: a_shown_first follows what the annotator saw.
    shown = {r: i for i, r in enumerate(lease.display_order)}
    assert all(v.a_shown_first == (shown[v.response_a_id] < shown[v.response_b_id]) for v in votes)
    # Idempotent: the same answer again writes nothing.
    stamp = judgement.amended_at
    again = judgement_amend(judgement=judgement, ranking=[[c], [a, b]], confidence=4, rationale="read again")
    assert not again.changed and Judgement.objects.get(pk=judgement.pk).amended_at == stamp
    # "All are bad": the full tie only.
    judgement_amend(judgement=judgement, ranking=[[a, b, c]], both_bad=True)
    judgement.refresh_from_db()
    assert judgement.both_bad and set(
        PairVote.objects.filter(judgement=judgement).values_list("winner", flat=True)
    ) == {0}
    with pytest.raises(QueueError) as refused:
        judgement_amend(judgement=judgement, ranking=[[a], [b, c]], both_bad=True)
    assert refused.value.field == "both_bad"


def test_the_project_rules_apply_to_an_amendment(project, annotator):
    make_task(project)
    lease = claim(project, annotator)
    judgement = answer(lease)
    with pytest.raises(QueueError, match="ties"):
        judgement_amend(judgement=judgement, ranking=[sorted(lease.display_order)])
    with pytest.raises(QueueError) as refused:
        judgement_amend(judgement=judgement, ranking=[sorted(lease.display_order)], both_bad=True)
    assert refused.value.field == "both_bad"
    with pytest.raises(QueueError) as refused:
        judgement_amend(judgement=judgement, ranking=[[lease.display_order[0]]])
    assert refused.value.field == "ranking"
    assert Judgement.objects.get(pk=judgement.pk).tiers == judgement.tiers


def test_a_complete_task_refuses_amendments_and_says_so(project, annotator, second):
    project.annotations_per_task = 2
    project.save()
    make_task(project)
    lease = claim(project, annotator)
    judgement = answer(lease)
    assert judgement_amend(judgement=judgement, ranking=[[r] for r in reversed(lease.display_order)]).changed
    answer(claim(project, second))  # the second answer completes the task
    with pytest.raises(TaskClosed, match="complete: its answers are final") as refused:
        judgement_amend(judgement=judgement, ranking=[[r] for r in lease.display_order])
    assert refused.value.status == 409 and refused.value.code == "task_complete"
    assert Judgement.objects.get(pk=judgement.pk).tiers == [[r] for r in reversed(lease.display_order)]


def test_an_imported_judgement_cannot_be_amended(project, annotator):
    task = make_task(project)
    imported = Judgement.objects.create(
        task=task, annotator=annotator, tiers=[[r] for r in task.response_ids()], source=JudgementSource.IMPORT
    )
    with pytest.raises(QueueError, match="imported"):
        judgement_amend(judgement=imported, ranking=[[r] for r in task.response_ids()])


def test_the_amend_api(project, annotator, second, manager, outsider):
    project.annotations_per_task = 2
    project.save()
    make_task(project)
    lease = claim(project, annotator)
    judgement = answer(lease)
    url = f"{API}/judgements/{judgement.pk}/amend/"
    body = {"ranking": [[r] for r in reversed(lease.display_order)], "confidence": 5}
    for stranger in (manager, outsider, second):
        assert api(stranger).post(url, body, format="json").status_code == 404
    response = api(annotator).post(url, body, format="json")
    assert response.status_code == 200
    data = response.json()
    assert data["ranking"] == body["ranking"] and data["confidence"] == 5 and data["amended_at"]
    assert "ranking" in api(annotator).post(url, {"confidence": 3}, format="json").json()
    answer(claim(project, second))
    refused = api(annotator).post(url, body, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "task_complete"
    assert "final" in refused.json()["detail"]
