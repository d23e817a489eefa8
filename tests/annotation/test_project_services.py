"""Project and membership services: the rules the settings page and the API share, and the lock.

The page and the API are tested through their own clients in tests/frontend/test_manage.py
and tests/annotation/test_api.py; here the services are called directly, and the races the
project row lock exists for are run for real on PostgreSQL, one connection per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections, transaction

from annotation.models import Membership, Project, ProjectKind, Role
from annotation.project_services import (
    KEEP_A_MANAGER,
    ProjectRefused,
    membership_add,
    membership_remove,
    membership_set_role,
    project_create,
    project_update,
)
from tests.factories import ProjectFactory, UserFactory, make_task

# --- projects -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_makes_the_creator_its_manager():
    creator = UserFactory(username="lead")
    project = project_create(created_by=creator, settings={"name": "Ranks", "kind": "ranking", "responses_per_task": 4})
    assert (project.kind, project.responses_per_task, project.created_by) == ("ranking", 4, creator)
    assert project.role_of(creator) == Role.MANAGER


@pytest.mark.django_db
def test_create_refuses_a_pairwise_project_with_more_than_two_responses():
    with pytest.raises(ProjectRefused) as refused:
        project_create(created_by=UserFactory(), settings={"name": "P", "kind": "pairwise", "responses_per_task": 3})
    assert refused.value.errors == {"responses_per_task": ["A pairwise project has exactly 2 responses per task."]}
    assert not Project.objects.exists() and not Membership.objects.exists()


@pytest.mark.django_db
def test_once_tasks_exist_the_kind_is_pinned_and_k_cannot_go_below_the_widest_task():
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=5, name="Ranks")
    make_task(project, k=4)

    with pytest.raises(ProjectRefused) as refused:
        project_update(project=project, changes={"kind": "pairwise", "responses_per_task": 2, "name": "Changed"})
    assert refused.value.errors == {
        "kind": ["The kind cannot change: the project already has 1 task(s) built as k-way ranking."],
        "responses_per_task": ["K cannot go below 4: the project already has tasks with 4 responses."],
    }
    with pytest.raises(ProjectRefused) as refused:
        project_update(project=project, changes={"responses_per_task": 3})
    assert refused.value.errors.keys() == {"responses_per_task"}
    project.refresh_from_db()
    assert (project.name, project.kind, project.responses_per_task) == ("Ranks", "ranking", 5)

    # Down to the widest task, or up: new tasks may be wider, existing ones still fit.
    assert project_update(project=project, changes={"responses_per_task": 4}).responses_per_task == 4
    assert project_update(project=project, changes={"responses_per_task": 6, "name": "Wider"}).name == "Wider"
    project.refresh_from_db()
    assert (project.name, project.responses_per_task) == ("Wider", 6)


@pytest.mark.django_db
def test_without_tasks_the_kind_may_change():
    project = ProjectFactory()
    updated = project_update(project=project, changes={"kind": "ranking", "responses_per_task": 4})
    assert (updated.kind, updated.responses_per_task) == ("ranking", 4)


@pytest.mark.django_db
def test_update_checks_the_stored_row_not_the_callers_copy():
    """A form writes its values onto its instance before saving; the rule reads the database."""
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=4)
    make_task(project, k=4)
    stale = Project.objects.get(pk=project.pk)
    stale.kind, stale.responses_per_task = ProjectKind.PAIRWISE, 2  # as ModelForm.is_valid() leaves it
    with pytest.raises(ProjectRefused) as refused:
        project_update(project=stale, changes={"kind": "pairwise", "responses_per_task": 2})
    assert refused.value.errors.keys() == {"kind", "responses_per_task"}


# --- members --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_add_refuses_unknown_inactive_and_existing_members(project, manager, annotator):
    UserFactory(username="gone", is_active=False)
    for username, reason in [
        ("nobody", "No active user is called “nobody”."),
        ("gone", "No active user is called “gone”."),
        ("annotator", "annotator is already a member of this project."),
    ]:
        with pytest.raises(ProjectRefused) as refused:
            membership_add(project=project, username=username, role=Role.MANAGER)
        assert refused.value.errors == {"username": [reason]}
    assert project.role_of(annotator) == Role.ANNOTATOR
    newcomer = UserFactory(username="newcomer")
    assert membership_add(project=project, username="newcomer", role=Role.ANNOTATOR).user == newcomer


@pytest.mark.django_db
def test_the_last_manager_can_neither_step_down_nor_leave(project, manager, annotator):
    with pytest.raises(ProjectRefused) as refused:
        membership_set_role(project=project, user_id=manager.pk, role=Role.ANNOTATOR)
    assert refused.value.errors == {"role": [KEEP_A_MANAGER]}
    with pytest.raises(ProjectRefused) as refused:
        membership_remove(project=project, user_id=manager.pk)
    assert refused.value.errors == {"user_id": [KEEP_A_MANAGER]}
    assert project.role_of(manager) == Role.MANAGER

    # Once someone else manages, both are allowed.
    membership_set_role(project=project, user_id=annotator.pk, role=Role.MANAGER)
    assert membership_set_role(project=project, user_id=manager.pk, role=Role.ANNOTATOR).role == Role.ANNOTATOR
    membership_remove(project=project, user_id=manager.pk)
    assert project.role_of(manager) is None and project.role_of(annotator) == Role.MANAGER


@pytest.mark.django_db
def test_members_of_other_projects_are_not_found(project, manager, outsider):
    with pytest.raises(Membership.DoesNotExist):
        membership_set_role(project=project, user_id=outsider.pk, role=Role.MANAGER)
    with pytest.raises(Membership.DoesNotExist):
        membership_remove(project=project, user_id=outsider.pk)
    assert Membership.objects.filter(user=outsider).count() == 1


# --- the project row lock (PostgreSQL: one connection per thread) --------------------------


def _race(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``first`` in a transaction left open until ``second`` has started in another thread.

    Returns whether ``second`` was still waiting 0.5 s after it started, and what it returned
    or raised once ``first`` had committed.
    """
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def run_first() -> None:
        try:
            with transaction.atomic():
                first()
                started.set()
                release.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            outcome["first"] = exc
            started.set()
        finally:
            connections.close_all()

    def run_second() -> None:
        try:
            outcome["second"] = second()
        except BaseException as exc:  # noqa: BLE001 - the refusal is the answer under test
            outcome["second"] = exc
        finally:
            connections.close_all()

    one = threading.Thread(target=run_first)
    one.start()
    assert started.wait(10)
    assert "first" not in outcome, outcome
    two = threading.Thread(target=run_second)
    two.start()
    two.join(0.5)
    waited = two.is_alive()
    release.set()
    one.join(10)
    two.join(10)
    assert "first" not in outcome, outcome
    return waited, outcome["second"]


@pytest.mark.django_db(transaction=True)
def test_two_managers_demoting_each_other_at_once_leave_one_manager(postgres_only):
    project = ProjectFactory()
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    for user in (alice, bob):
        Membership.objects.create(project=project, user=user, role=Role.MANAGER)

    waited, second = _race(
        lambda: membership_set_role(project=project, user_id=alice.pk, role=Role.ANNOTATOR),
        lambda: membership_set_role(project=project, user_id=bob.pk, role=Role.ANNOTATOR),
    )
    assert waited, "the second change did not queue on the project row"
    assert isinstance(second, ProjectRefused) and second.errors == {"role": [KEEP_A_MANAGER]}
    assert (project.role_of(alice), project.role_of(bob)) == (Role.ANNOTATOR, Role.MANAGER)


@pytest.mark.django_db(transaction=True)
def test_two_settings_changes_at_once_cannot_make_a_pairwise_project_with_three_responses(postgres_only):
    """Each change is valid alone; the second must be checked against the first one's result."""
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=2)

    waited, second = _race(
        lambda: project_update(project=project, changes={"kind": "pairwise"}),
        lambda: project_update(project=project, changes={"responses_per_task": 3}),
    )
    assert waited, "the second change did not queue on the project row"
    assert isinstance(second, ProjectRefused), second
    assert second.errors == {"responses_per_task": ["A pairwise project has exactly 2 responses per task."]}
    project.refresh_from_db()
    assert (project.kind, project.responses_per_task) == ("pairwise", 2)
