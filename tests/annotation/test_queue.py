"""The work queue services: claim, submit, skip, on whichever database the suite runs on."""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation import queue_sql, services
from annotation.models import Assignment, AssignmentState, Judgement, Membership, PairVote, Role, Task, TaskState
from tests.factories import ProjectFactory, UserFactory, make_task


def members(project, n, prefix="a"):
    users = [UserFactory(username=f"{prefix}{i}") for i in range(n)]
    Membership.objects.bulk_create(Membership(project=project, user=u, role=Role.ANNOTATOR) for u in users)
    return users


def claim(project, user):
    result = services.assignment_claim_next(project=project, annotator=user)
    return None if result is None else result.assignment


def best_first(assignment):
    return [[rid] for rid in assignment.display_order]


@pytest.mark.django_db
class TestClaim:
    def test_returns_own_live_lease_first(self, project, annotator):
        make_task(project)
        make_task(project)
        first = services.assignment_claim_next(project=project, annotator=annotator)
        again = services.assignment_claim_next(project=project, annotator=annotator)
        assert not first.resumed and again.resumed
        assert again.assignment.pk == first.assignment.pk
        assert Assignment.objects.count() == 1

    def test_overlap_is_respected_and_nobody_gets_a_task_twice(self, project):
        project.annotations_per_task = 2
        project.save()
        task = make_task(project, required=2)
        a, b, c = members(project, 3)
        assert claim(project, a).task_id == task.pk
        assert claim(project, b).task_id == task.pk
        assert claim(project, c) is None  # both slots are leased
        services.judgement_submit(
            assignment=Assignment.objects.get(annotator=a), ranking=[[r] for r in task.response_ids()]
        )
        assert claim(project, a) is None  # a already judged it

    def test_highest_priority_first_then_partly_annotated(self, project):
        low = make_task(project, priority=0)
        fresh = make_task(project, priority=5)
        partly = make_task(project, priority=5)
        a, b = members(project, 2)
        first = claim(project, a)
        assert first.task_id == fresh.pk  # priority 5, oldest among equals
        services.judgement_submit(assignment=first, ranking=best_first(first))
        # b: both priority-5 tasks are equal in priority; `fresh` now has one judgement.
        assert claim(project, b).task_id == fresh.pk
        assert partly.pk and low.pk

    def test_expired_lease_becomes_claimable(self, project):
        task = make_task(project, required=1)
        a, b = members(project, 2)
        lease = claim(project, a)
        Assignment.objects.filter(pk=lease.pk).update(
            leased_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
        )
        assert claim(project, b).task_id == task.pk

    def test_display_order_is_a_recorded_permutation(self, project, annotator):
        project.kind, project.responses_per_task = "ranking", 5
        project.save()
        task = make_task(project, k=5)
        result = services.assignment_claim_next(project=project, annotator=annotator, rng=random.Random(3))
        assert sorted(result.assignment.display_order) == sorted(task.response_ids())

    def test_outsider_cannot_claim(self, project, outsider):
        make_task(project)
        with pytest.raises(services.NotAllowed):
            services.assignment_claim_next(project=project, annotator=outsider)

    def test_completed_tasks_are_not_offered(self, project):
        task = make_task(project, required=1)
        a, b = members(project, 2)
        services.judgement_submit(assignment=claim(project, a), ranking=[[r] for r in task.response_ids()])
        task.refresh_from_db()
        assert task.state == TaskState.COMPLETE
        assert claim(project, b) is None

    def test_a_task_the_annotator_judged_through_an_import_is_not_offered(self, project, annotator):
        # Imported judgements have no assignment; offering the task anyway led to a submit
        # that failed on the one-judgement-per-annotator constraint, every time.
        judged = make_task(project, priority=5)
        other = make_task(project)
        services.judgement_import(
            task=judged, annotator=annotator, tiers=[[r] for r in judged.response_ids()], allow_ties=False
        )
        lease = claim(project, annotator)
        assert lease.task_id == other.pk
        assert services.judgement_submit(assignment=lease, ranking=best_first(lease)).created
        assert claim(project, annotator) is None

    def test_a_lease_overtaken_by_an_import_of_the_same_judgement_ends_cleanly(self, project, annotator):
        task = make_task(project)
        lease = claim(project, annotator)
        services.judgement_import(
            task=task, annotator=annotator, tiers=[[r] for r in task.response_ids()], allow_ties=False
        )
        with pytest.raises(services.AlreadyFinished, match="imported"):
            services.judgement_submit(assignment=lease, ranking=best_first(lease))
        lease.refresh_from_db()
        assert lease.state == AssignmentState.EXPIRED  # the lease is over, not stuck until it runs out
        assert Judgement.objects.filter(task=task).count() == 1
        assert claim(project, annotator) is None


@pytest.mark.django_db
class TestSubmit:
    def test_writes_judgement_pair_votes_and_counts(self, project, annotator):
        project.kind, project.responses_per_task, project.allow_ties = "ranking", 4, True
        project.save()
        task = make_task(project, k=4)
        lease = claim(project, annotator)
        r = task.response_ids()
        result = services.judgement_submit(
            assignment=lease, ranking=[[r[2]], [r[0], r[1]], [r[3]]], confidence=4, rationale="clear"
        )
        assert result.created
        votes = {(v.response_a_id, v.response_b_id): v.winner for v in PairVote.objects.all()}
        assert len(votes) == 6
        assert votes[(r[0], r[1])] == 0
        assert votes[(r[0], r[2])] == -1
        assert votes[(r[2], r[3])] == 1
        assert all(v.a_shown_first is not None for v in PairVote.objects.all())
        task.refresh_from_db()
        assert task.judgement_count == 1
        lease.refresh_from_db()
        assert lease.state == AssignmentState.SUBMITTED

    @pytest.mark.parametrize(
        "bad",
        [
            [],
            "first",
            [[]],
            [["x"]],
            [[True], [False]],
            "missing",
            "unknown",
            "duplicate",
            "tie",
        ],
    )
    def test_rejects_rankings_that_do_not_cover_the_task(self, project, annotator, bad):
        task = make_task(project)
        r = task.response_ids()
        lease = claim(project, annotator)
        ranking = (
            {
                "missing": [[r[0]]],
                "unknown": [[r[0]], [r[1]], [999999]],
                "duplicate": [[r[0]], [r[0]], [r[1]]],
                "tie": [[r[0], r[1]]],
            }.get(bad, bad)
            if isinstance(bad, str)
            else bad
        )
        with pytest.raises(services.InvalidRanking):
            services.judgement_submit(assignment=lease, ranking=ranking)
        assert Judgement.objects.count() == 0 and PairVote.objects.count() == 0

    def test_retry_with_same_token_is_idempotent(self, project, annotator):
        task = make_task(project)
        lease = claim(project, annotator)
        token = uuid.uuid4()
        first = services.judgement_submit(assignment=lease, ranking=best_first(lease), client_token=token)
        again = services.judgement_submit(assignment=lease, ranking=best_first(lease), client_token=token)
        assert first.created and not again.created
        assert again.judgement.pk == first.judgement.pk
        assert Judgement.objects.count() == 1 and PairVote.objects.count() == 1
        task.refresh_from_db()
        assert task.judgement_count == 1

    def test_second_submit_with_new_token_is_refused(self, project, annotator):
        make_task(project)
        lease = claim(project, annotator)
        services.judgement_submit(assignment=lease, ranking=best_first(lease))
        with pytest.raises(services.AlreadyFinished):
            services.judgement_submit(assignment=lease, ranking=best_first(lease))

    def test_late_submit_accepted_while_slot_free(self, project, annotator):
        make_task(project, required=1)
        lease = claim(project, annotator)
        Assignment.objects.filter(pk=lease.pk).update(
            leased_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
        )
        lease.refresh_from_db()
        assert services.judgement_submit(assignment=lease, ranking=best_first(lease)).created

    def test_late_submit_refused_when_slot_went_to_someone_else(self, project):
        task = make_task(project, required=1)
        a, b = members(project, 2)
        lease = claim(project, a)
        Assignment.objects.filter(pk=lease.pk).update(
            leased_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1)
        )
        assert claim(project, b).task_id == task.pk
        lease.refresh_from_db()
        with pytest.raises(services.LeaseLost):
            services.judgement_submit(assignment=lease, ranking=best_first(lease))
        lease.refresh_from_db()
        assert lease.state == AssignmentState.EXPIRED
        assert Judgement.objects.count() == 0

    def test_ties_only_when_allowed(self, project, annotator):
        project.allow_ties = True
        project.save()
        task = make_task(project)
        lease = claim(project, annotator)
        services.judgement_submit(assignment=lease, ranking=[task.response_ids()])
        assert PairVote.objects.get().winner == 0

    @pytest.mark.parametrize("shape", ["a repeated tier", "nothing but repeats", "repeated within a tier"])
    def test_a_duplicated_response_is_named(self, project, annotator, shape):
        project.allow_ties = True
        project.save()
        make_task(project)
        lease = claim(project, annotator)
        a, b = lease.display_order
        ranking = {
            "a repeated tier": [[a], [a], [b]],
            "nothing but repeats": [[a], [a]],
            "repeated within a tier": [[a, a], [b]],
        }[shape]
        with pytest.raises(services.InvalidRanking) as caught:
            services.judgement_submit(assignment=lease, ranking=ranking)
        assert caught.value.message == f"responses [{a}] appear more than once"

    @pytest.mark.timeout(60)  # the quadratic check took minutes on the 400k ranking
    @pytest.mark.parametrize("n", [20_000, 400_000])
    def test_a_huge_ranking_is_refused_at_once_without_taking_the_task_lock(self, project, annotator, monkeypatch, n):
        """Issue 13: the check ran in quadratic time while holding the task lock (on SQLite,
        the database's one write lock): 20,000 ids held it for seconds."""
        make_task(project)
        lease = claim(project, annotator)
        locked: list[int] = []
        real_lock = queue_sql.lock_task
        monkeypatch.setattr(queue_sql, "lock_task", lambda task_id: locked.append(task_id) or real_lock(task_id))
        extra = max(lease.display_order) + 1
        ranking = [[rid] for rid in lease.display_order] + [[extra + i] for i in range(n - 2)]
        started = time.perf_counter()
        with pytest.raises(services.InvalidRanking, match=f"^the ranking names {n} responses; this task has 2$"):
            services.judgement_submit(assignment=lease, ranking=ranking)
        assert time.perf_counter() - started < 1.0
        assert locked == []
        assert services.judgement_submit(assignment=lease, ranking=best_first(lease)).created
        assert locked == [lease.task_id]  # the spy does see the lock a real submit takes


@pytest.mark.django_db
class TestSkip:
    def test_skip_frees_the_slot_and_is_not_offered_again(self, project):
        task = make_task(project, required=1)
        a, b = members(project, 2)
        lease = claim(project, a)
        services.assignment_skip(assignment=lease, reason="not English")
        assert claim(project, a) is None
        assert claim(project, b).task_id == task.pk

    def test_skip_needs_a_reason_and_permission(self, project, annotator):
        make_task(project)
        lease = claim(project, annotator)
        with pytest.raises(services.QueueError):
            services.assignment_skip(assignment=lease, reason="  ")
        project.allow_skip = False
        project.save()
        with pytest.raises(services.NotAllowed):
            services.assignment_skip(assignment=lease, reason="hard")


@pytest.mark.django_db
class TestDatabaseConstraints:
    """The invariants hold against raw ORM writes that bypass the services."""

    def test_one_assignment_per_task_and_annotator(self, project, annotator):
        task = make_task(project)
        lease = claim(project, annotator)
        with pytest.raises(IntegrityError), transaction.atomic():
            Assignment.objects.create(
                task=task, project=project, annotator=annotator, display_order=[], expires_at=lease.expires_at
            )

    def test_task_cannot_hold_more_judgements_than_required(self, project):
        task = make_task(project, required=1)
        with pytest.raises(IntegrityError), transaction.atomic():
            Task.objects.filter(pk=task.pk).update(judgement_count=2)

    def test_pairwise_project_has_k_2(self, db):
        with pytest.raises(IntegrityError), transaction.atomic():
            ProjectFactory(kind="pairwise", responses_per_task=3)

    def test_pair_vote_order_is_canonical(self, project, annotator):
        task = make_task(project)
        lease = claim(project, annotator)
        judgement = services.judgement_submit(assignment=lease, ranking=best_first(lease)).judgement
        low, high = sorted(task.response_ids())
        with pytest.raises(IntegrityError), transaction.atomic():
            PairVote.objects.create(
                judgement=judgement, task=task, annotator=annotator, response_a_id=high, response_b_id=low, winner=1
            )
