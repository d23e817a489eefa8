"""Projects and their members: the rules that the manager pages and the REST API share.

The project form and member forms of ``frontend`` and the views of ``annotation.api`` call
these services, so each rule is written once:

- A pairwise project has exactly 2 responses per task (:func:`project_settings_refusals`,
  which the project form also calls, to show the reason next to its other field errors).
- Once a project has tasks, its kind cannot change and K cannot go below its widest task:
  the tasks keep the responses they were imported with (:func:`project_update`).
- A user is a member of a project once (:func:`membership_add`).
- A project always keeps a manager (:func:`membership_set_role`, :func:`membership_remove`).

The bounds of each numeric setting are declared once (``SETTING_BOUNDS``) and read by the
form's and the serializer's fields; the database's check constraints hold the same ones.

Locking. A settings change and every role change or removal take the project's row lock
(``SELECT ... FOR UPDATE``) before they read anything, and keep it until they have saved.
Two such changes of one project queue, and the second checks the row as the first left
it: two managers demoting each other at the same moment cannot leave the project without
one, and two settings changes cannot add up to a pairwise project with K = 3 (nor the
second overwrite the first). On SQLite every transaction is ``BEGIN IMMEDIATE``, which
serialises the writers anyway. An import does not take this lock: its tasks, until it
commits, are invisible to the existing-tasks check (the importer checks each item against
the settings it read when it started).

A refusal raises :class:`ProjectRefused` with its reasons by field: the forms show them at
their fields, the API answers them as a 400 in the shape of its other validation errors.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from annotation.models import MAX_RESPONSES_PER_TASK, Membership, Project, ProjectKind, Role

INT32_MAX = 2**31 - 1
"""The largest value of a 32-bit integer column; larger ones would be a 500 on PostgreSQL."""

SETTING_BOUNDS: dict[str, tuple[int | float, int | float]] = {
    "responses_per_task": (2, MAX_RESPONSES_PER_TASK),
    "annotations_per_task": (1, 100),
    "lease_seconds": (30, INT32_MAX),
    "agreement_threshold": (0.5, 1.0),
}
"""Inclusive (lowest, highest) of the numeric project settings, as the check constraints have them."""


def setting_bounds(name: str) -> dict[str, int | float]:
    """``min_value`` and ``max_value`` of a numeric setting, as form fields and serializer fields take them."""
    low, high = SETTING_BOUNDS[name]
    return {"min_value": low, "max_value": high}


PROJECT_SETTINGS = (
    "name",
    "kind",
    "responses_per_task",
    "annotations_per_task",
    "allow_ties",
    "allow_both_bad",
    "allow_skip",
    "lease_seconds",
    "agreement_threshold",
    "guidelines",
)
"""The fields a manager sets, on the settings page and through the API."""

KEEP_A_MANAGER = "A project must keep at least one manager: make someone else a manager first."


class ProjectRefused(Exception):
    """A change the project rules refuse; ``errors`` maps each field at fault to its reasons."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{field}: {' '.join(reasons)}" for field, reasons in errors.items()))
        self.errors = errors


def can_create_projects(user: Any) -> bool:
    """Staff, or a user with the ``annotation.add_project`` permission."""
    return bool(user.is_authenticated and (user.is_staff or user.has_perm("annotation.add_project")))


# --- projects -------------------------------------------------------------------------------


def project_settings_refusals(*, kind: str, k: int) -> dict[str, list[str]]:
    """Why ``kind`` with ``k`` responses per task is refused for any project; {} when it is not."""
    if kind == ProjectKind.PAIRWISE and k != 2:
        return {"responses_per_task": ["A pairwise project has exactly 2 responses per task."]}
    return {}


def _existing_task_refusals(project: Project, *, kind: str, k: int) -> dict[str, list[str]]:
    """Why ``kind`` and ``k`` contradict the tasks ``project`` (as stored) already has; {} when they do not."""
    widest = project.tasks.order_by("-num_responses").values_list("num_responses", flat=True).first()
    if widest is None:
        return {}
    errors: dict[str, list[str]] = {}
    if kind != project.kind:
        n_tasks = project.tasks.count()
        errors["kind"] = [
            f"The kind cannot change: the project already has {n_tasks} task(s) "
            f"built as {project.get_kind_display().lower()}."
        ]
    if k < widest:
        errors["responses_per_task"] = [
            f"K cannot go below {widest}: the project already has tasks with {widest} responses."
        ]
    return errors


def _check_settings(settings: dict[str, Any]) -> None:
    unknown = set(settings) - set(PROJECT_SETTINGS)
    if unknown:
        raise ValueError(f"not project settings: {', '.join(sorted(unknown))}")


def _lock_project(project_id: int) -> Project:
    """The project's row, locked until the end of the transaction (see the module docstring)."""
    return Project.objects.select_for_update().get(pk=project_id)


@transaction.atomic
def project_create(*, created_by: Any, settings: dict[str, Any]) -> Project:
    """A new project with ``settings`` (see ``PROJECT_SETTINGS``); ``created_by`` becomes its manager."""
    _check_settings(settings)
    project = Project(created_by=created_by, **settings)
    refusals = project_settings_refusals(kind=project.kind, k=project.responses_per_task)
    if refusals:
        raise ProjectRefused(refusals)
    project.save()
    Membership.objects.create(project=project, user=created_by, role=Role.MANAGER)
    return project


@transaction.atomic
def project_update(*, project: Project, changes: dict[str, Any]) -> Project:
    """Apply ``changes`` to the project's settings; the saved row, re-read under its lock.

    ``project`` only names the row: what is checked is the row as stored once locked, so a
    form that has already written the new values onto its instance changes nothing here.
    """
    _check_settings(changes)
    locked = _lock_project(project.pk)
    kind = changes.get("kind", locked.kind)
    k = changes.get("responses_per_task", locked.responses_per_task)
    refusals = project_settings_refusals(kind=kind, k=k)
    if kind != locked.kind or k != locked.responses_per_task:
        for field, reasons in _existing_task_refusals(locked, kind=kind, k=k).items():
            refusals.setdefault(field, []).extend(reasons)
    if refusals:
        raise ProjectRefused(refusals)
    for field, value in changes.items():
        setattr(locked, field, value)
    locked.save(update_fields=[*changes, "updated_at"])
    return locked


# --- members --------------------------------------------------------------------------------


@transaction.atomic
def membership_add(*, project: Project, username: str, role: str) -> Membership:
    """Add the active user called ``username`` to ``project`` with ``role``."""
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ProjectRefused({"username": [f"No active user is called “{username}”."]})
    already = [f"{user.username} is already a member of this project."]
    if Membership.objects.filter(project=project, user=user).exists():
        raise ProjectRefused({"username": already})
    try:
        with transaction.atomic():
            return Membership.objects.create(project=project, user=user, role=role)
    except IntegrityError:
        # Added by a concurrent request between the check and the insert.
        raise ProjectRefused({"username": already}) from None


def _locked_membership(project: Project, user_id: int) -> Membership:
    _lock_project(project.pk)
    return Membership.objects.select_related("user").get(project=project, user_id=user_id)


def _keep_a_manager(membership: Membership, *, field: str) -> None:
    others = Membership.objects.filter(project_id=membership.project_id, role=Role.MANAGER).exclude(pk=membership.pk)
    if membership.role == Role.MANAGER and not others.exists():
        raise ProjectRefused({field: [KEEP_A_MANAGER]})


@transaction.atomic
def membership_set_role(*, project: Project, user_id: int, role: str) -> Membership:
    """Give a member ``role``; :class:`Membership.DoesNotExist` when ``user_id`` is not a member."""
    membership = _locked_membership(project, user_id)
    if role != Role.MANAGER:
        _keep_a_manager(membership, field="role")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, project: Project, user_id: int) -> Membership:
    """Remove a member; the deleted membership. :class:`Membership.DoesNotExist` when not a member."""
    membership = _locked_membership(project, user_id)
    _keep_a_manager(membership, field="user_id")
    membership.delete()
    return membership
