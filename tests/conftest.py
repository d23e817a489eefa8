"""Shared fixtures: the three personas of every permission test, and data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

from annotation.models import Membership, Role
from tests.factories import ProjectFactory, UserFactory

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ARPAD_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    """The real preference data beside the checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set ARPAD_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture
def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://...")


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def manager(project):
    user = UserFactory(username="manager")
    Membership.objects.create(project=project, user=user, role=Role.MANAGER)
    return user


@pytest.fixture
def annotator(project):
    user = UserFactory(username="annotator")
    Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    return user


@pytest.fixture
def other_project(db):
    return ProjectFactory(name="Other project")


@pytest.fixture
def outsider(other_project):
    """An annotator of another project: must see nothing of ``project``."""
    user = UserFactory(username="outsider")
    Membership.objects.create(project=other_project, user=user, role=Role.ANNOTATOR)
    return user
