"""Many annotators claiming and submitting at once on PostgreSQL.

Each worker thread has its own database connection, so the locking in
``assignment_claim_next`` / ``judgement_submit`` is exercised for real: SKIP LOCKED
candidate search, the row lock and the fresh re-check under it.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter

import pytest
from django.db import connection, connections

from annotation import services
from annotation.models import Assignment, Judgement, Membership, PairVote, Role, Task, TaskState
from tests.factories import ProjectFactory, UserFactory, make_task

WORKERS = 32
TASKS = 60
OVERLAP = 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_and_submits_keep_every_invariant(postgres_only):
    project = ProjectFactory(annotations_per_task=OVERLAP, allow_ties=True)
    tasks = [make_task(project, priority=random.Random(i).randint(0, 2)) for i in range(TASKS)]
    users = [UserFactory(username=f"worker{i}") for i in range(WORKERS)]
    Membership.objects.bulk_create(Membership(project=project, user=u, role=Role.ANNOTATOR) for u in users)

    accepted: list[tuple[int, int, str]] = []  # (judgement id, assignment id, token)
    retried: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WORKERS)

    def annotate(user_index: int) -> None:
        rng = random.Random(user_index)
        user = users[user_index]
        try:
            start.wait()
            while True:
                claim = services.assignment_claim_next(project=project, annotator=user, rng=rng)
                if claim is None:
                    break
                order = list(claim.assignment.display_order)
                rng.shuffle(order)
                token = str(uuid.uuid4())
                result = services.judgement_submit(
                    assignment=claim.assignment, ranking=[[rid] for rid in order], client_token=token
                )
                with lock:
                    accepted.append((result.judgement.pk, claim.assignment.pk, token))
                if rng.random() < 0.2:
                    # A network retry of the same request must create nothing new.
                    again = services.judgement_submit(
                        assignment=claim.assignment, ranking=[[rid] for rid in order], client_token=token
                    )
                    assert not again.created and again.judgement.pk == result.judgement.pk
                    with lock:
                        retried.append(again.judgement.pk)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread below
            with lock:
                failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=annotate, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures[:3]
    assert retried, "the retry path was not exercised"

    # Every task got exactly its overlap, from distinct annotators, and is complete.
    assert len(accepted) == TASKS * OVERLAP
    assert Judgement.objects.count() == TASKS * OVERLAP
    for task in Task.objects.filter(pk__in=[t.pk for t in tasks]):
        assert task.judgement_count == OVERLAP == task.judgements.count()
        assert task.state == TaskState.COMPLETE
    pairs = Counter(Assignment.objects.values_list("task_id", "annotator_id"))
    assert max(pairs.values()) == 1
    # Every accepted submit is persisted, with its vote; retries added nothing.
    stored = set(Judgement.objects.values_list("pk", "assignment_id", "client_token"))
    assert {(j, a, uuid.UUID(t)) for j, a, t in accepted} == stored
    assert PairVote.objects.count() == TASKS * OVERLAP
    assert connection.vendor == "postgresql"
