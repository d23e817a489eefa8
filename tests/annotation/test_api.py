"""API v1: authentication, CSRF, projects, members, the persona matrix and the schema.

The persona matrix runs every endpoint as the four people who matter: somebody not signed
in (401), an annotator of another project (404, as if the project did not exist), an
annotator of the project (403 on a manager's work) and the manager (success).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.core.management import call_command
from django.utils.crypto import get_random_string
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import services
from annotation.api import views
from annotation.importers import import_file
from annotation.models import Assignment, ImportJob, Judgement, Membership, Project, Role
from tests.factories import UserFactory, make_task

API = "/api/v1"


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@dataclass
class World:
    """One project with a task the annotator judged, one they hold a lease on, and an import job."""

    project: Project
    manager: object
    annotator: object
    outsider: object
    judged_task: object
    leased: Assignment
    job: ImportJob

    def url(self, template: str) -> str:
        return API + template.format(
            p=self.project.pk,
            task=self.judged_task.pk,
            job=self.job.pk,
            member=self.annotator.pk,
            assignment=self.leased.pk,
        )


@pytest.fixture
def world(project, manager, annotator, outsider, tmp_path) -> World:
    judged = make_task(project)
    first = services.assignment_claim_next(project=project, annotator=annotator).assignment
    services.judgement_submit(assignment=first, ranking=[[r] for r in first.display_order])
    make_task(project)
    leased = services.assignment_claim_next(project=project, annotator=annotator).assignment
    job = ImportJob.objects.create(
        project=project, created_by=manager, format="jsonl", file_name="a.jsonl", file_path=str(tmp_path / "a.jsonl")
    )
    return World(project, manager, annotator, outsider, judged, leased, job)


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # The anonymous throttle counts in the cache, which outlives a test.
    cache.clear()


def _upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    line = json.dumps({"id": "x1", "prompt": "Why?", "responses": ["a", "b"]})
    return {"file": SimpleUploadedFile("x.jsonl", line.encode()), "format": "jsonl"}


# (method, url, body, expected status for the manager). Every project endpoint is here.
MANAGER_ONLY = [
    ("patch", "/projects/{p}/", {"guidelines": "Be kind."}, 200),
    ("get", "/projects/{p}/members/", None, 200),
    ("post", "/projects/{p}/members/", {"username": "newcomer", "role": "annotator"}, 201),
    ("patch", "/projects/{p}/members/{member}/", {"role": "manager"}, 200),
    ("delete", "/projects/{p}/members/{member}/", None, 204),
    ("get", "/projects/{p}/imports/", None, 200),
    ("post", "/projects/{p}/imports/", "upload", 202),
    ("get", "/projects/{p}/imports/{job}/", None, 200),
    ("delete", "/projects/{p}/", None, 204),
]
ANY_MEMBER = [
    ("get", "/projects/{p}/", None, 200),
    ("post", "/projects/{p}/claim/", None, 200),
    ("get", "/projects/{p}/tasks/", None, 200),
    ("get", "/projects/{p}/tasks/{task}/", None, 200),
    ("get", "/projects/{p}/judgements/", None, 200),
]
OWN_ASSIGNMENT = [
    ("post", "/assignments/{assignment}/submit/", "ranking", None),
    ("post", "/assignments/{assignment}/skip/", {"reason": "unclear"}, None),
]
EVERY_ENDPOINT = MANAGER_ONLY + ANY_MEMBER + OWN_ASSIGNMENT


def _call(client: APIClient, world: World, method: str, template: str, body):
    url = world.url(template)
    if body == "upload":
        return client.post(url, _upload(), format="multipart")
    if body == "ranking":
        body = {
            "ranking": [[r] for r in world.leased.display_order],
            "client_token": "1f0c3a4e-0000-4000-8000-000000000001",
        }
    return getattr(client, method)(url, body, format="json") if body is not None else getattr(client, method)(url)


def _ids(params):
    return [f"{m.upper()} {t}" for m, t, *_ in params]


@pytest.mark.django_db
class TestPersonaMatrix:
    @pytest.fixture(autouse=True)
    def _artifacts(self, settings, tmp_path, job_messages):
        settings.ARTIFACT_ROOT = tmp_path / "artifacts"
        UserFactory(username="newcomer")

    @pytest.mark.parametrize(("method", "template", "body", "_"), EVERY_ENDPOINT, ids=_ids(EVERY_ENDPOINT))
    def test_anonymous_is_refused(self, world, method, template, body, _):
        response = _call(client_for(None), world, method, template, body)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"

    @pytest.mark.parametrize(("method", "template", "body", "_"), EVERY_ENDPOINT, ids=_ids(EVERY_ENDPOINT))
    def test_outsider_gets_404(self, world, method, template, body, _):
        response = _call(client_for(world.outsider), world, method, template, body)
        assert response.status_code == 404
        assert Project.objects.filter(pk=world.project.pk).exists()

    @pytest.mark.parametrize(("method", "template", "body", "_"), MANAGER_ONLY, ids=_ids(MANAGER_ONLY))
    def test_annotator_cannot_do_a_managers_work(self, world, method, template, body, _):
        before = (
            Membership.objects.count(),
            ImportJob.objects.count(),
            Project.objects.get(pk=world.project.pk).guidelines,
        )
        response = _call(client_for(world.annotator), world, method, template, body)
        assert response.status_code == 403
        assert (
            Membership.objects.count(),
            ImportJob.objects.count(),
            Project.objects.get(pk=world.project.pk).guidelines,
        ) == before

    @pytest.mark.parametrize(("method", "template", "body", "expected"), MANAGER_ONLY, ids=_ids(MANAGER_ONLY))
    def test_manager_succeeds(self, world, method, template, body, expected):
        response = _call(client_for(world.manager), world, method, template, body)
        assert response.status_code == expected, response.content

    @pytest.mark.parametrize(("method", "template", "body", "expected"), ANY_MEMBER, ids=_ids(ANY_MEMBER))
    @pytest.mark.parametrize("persona", ["manager", "annotator"])
    def test_members_succeed(self, world, persona, method, template, body, expected):
        response = _call(client_for(getattr(world, persona)), world, method, template, body)
        assert response.status_code == expected, response.content

    @pytest.mark.parametrize(("method", "template", "body", "_"), OWN_ASSIGNMENT, ids=_ids(OWN_ASSIGNMENT))
    def test_only_the_assignments_annotator_may_act_on_it(self, world, method, template, body, _):
        assert _call(client_for(world.manager), world, method, template, body).status_code == 404
        assert _call(client_for(world.annotator), world, method, template, body).status_code in (200, 201)

    def test_an_outsider_cannot_tell_a_project_exists(self, world):
        client = client_for(world.outsider)
        existing = client.get(f"{API}/projects/{world.project.pk}/")
        missing = client.get(f"{API}/projects/{world.project.pk + 1000}/")
        assert existing.status_code == missing.status_code == 404
        assert existing.json() == missing.json()

    def test_a_removed_member_loses_access_to_their_lease(self, world):
        Membership.objects.filter(user=world.annotator).delete()
        response = _call(client_for(world.annotator), world, "post", "/assignments/{assignment}/submit/", "ranking")
        assert response.status_code == 404
        assert not Judgement.objects.filter(assignment=world.leased).exists()


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.django_db
class TestAuthentication:
    def test_token_for_good_credentials_and_scripts_can_use_it(self, project, annotator):
        response = APIClient().post(
            f"{API}/auth/token/", {"username": "annotator", "password": "pw-for-tests-only"}, format="json"
        )
        assert response.status_code == 200
        token = response.json()["token"]
        assert token == Token.objects.get(user=annotator).key
        script = APIClient()
        script.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        listed = script.get(f"{API}/projects/")
        assert listed.status_code == 200
        assert [p["id"] for p in listed.json()["results"]] == [project.pk]

    def test_bad_password_gets_no_token(self, annotator):
        response = APIClient().post(f"{API}/auth/token/", {"username": "annotator", "password": "nope"}, format="json")
        assert response.status_code == 400
        assert not Token.objects.exists()

    def test_a_wrong_token_is_401(self, db):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
        assert client.get(f"{API}/projects/").status_code == 401

    def test_token_endpoint_is_throttled(self, annotator, monkeypatch):
        monkeypatch.setattr(views.TokenThrottle, "rate", "3/minute", raising=False)
        client = APIClient()
        codes = [
            client.post(f"{API}/auth/token/", {"username": "annotator", "password": "guess"}, format="json").status_code
            for _ in range(4)
        ]
        assert codes == [400, 400, 400, 429]


@pytest.mark.django_db
class TestCsrf:
    """Browsers authenticate by session cookie; a cross-site POST must carry the CSRF token."""

    @pytest.fixture
    def browser(self, project, annotator) -> APIClient:
        make_task(project)
        client = APIClient(enforce_csrf_checks=True)
        assert client.login(username="annotator", password="pw-for-tests-only")
        return client

    def test_post_without_the_token_is_refused(self, browser, project):
        response = browser.post(f"{API}/projects/{project.pk}/claim/")
        assert response.status_code == 403
        assert "CSRF" in response.json()["detail"]
        assert not Assignment.objects.exists()

    def test_post_with_the_token_succeeds(self, browser, project):
        secret = get_random_string(32)
        browser.cookies["csrftoken"] = secret
        response = browser.post(f"{API}/projects/{project.pk}/claim/", HTTP_X_CSRFTOKEN=secret)
        assert response.status_code == 200
        assert Assignment.objects.count() == 1

    def test_reads_need_no_token(self, browser, project):
        assert browser.get(f"{API}/projects/{project.pk}/").status_code == 200


# --- projects ------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestProjects:
    def test_list_shows_only_my_projects_with_role_and_progress(self, project, manager, annotator, outsider):
        task = make_task(project, required=1)
        make_task(project)
        lease = services.assignment_claim_next(project=project, annotator=annotator).assignment
        services.judgement_submit(assignment=lease, ranking=[[r] for r in lease.display_order])
        body = client_for(annotator).get(f"{API}/projects/").json()
        assert body["count"] == 1
        (row,) = body["results"]
        assert row["id"] == project.pk and row["role"] == "annotator"
        assert row["progress"] == {
            "tasks": 2,
            "tasks_open": 1,
            "tasks_complete": 1,
            "judgements": 1,
            "my_judgements": 1,
        }
        assert task.pk
        assert client_for(manager).get(f"{API}/projects/").json()["results"][0]["role"] == "manager"
        assert client_for(manager).get(f"{API}/projects/").json()["results"][0]["progress"]["my_judgements"] == 0
        assert project.pk not in [p["id"] for p in client_for(outsider).get(f"{API}/projects/").json()["results"]]

    def test_anonymous_can_neither_list_nor_create(self, project):
        assert client_for(None).get(f"{API}/projects/").status_code == 401
        assert client_for(None).post(f"{API}/projects/", {"name": "x"}, format="json").status_code == 401
        assert Project.objects.count() == 1

    def test_staff_create_a_project_and_become_its_manager(self, db):
        staff = UserFactory(username="boss", is_staff=True)
        response = client_for(staff).post(
            f"{API}/projects/", {"name": "Helpfulness", "kind": "ranking", "responses_per_task": 4}, format="json"
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["role"] == "manager" and body["responses_per_task"] == 4
        assert body["progress"]["tasks"] == 0
        project = Project.objects.get(pk=body["id"])
        assert project.created_by == staff
        assert project.role_of(staff) == Role.MANAGER

    def test_the_add_project_permission_is_enough(self, db):
        user = UserFactory(username="lead")
        user.user_permissions.add(Permission.objects.get(codename="add_project", content_type__app_label="annotation"))
        response = client_for(user).post(f"{API}/projects/", {"name": "P"}, format="json")
        assert response.status_code == 201

    def test_an_annotator_cannot_create_projects(self, annotator):
        response = client_for(annotator).post(f"{API}/projects/", {"name": "Mine"}, format="json")
        assert response.status_code == 403
        assert Project.objects.count() == 1

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"responses_per_task": 3}, "responses_per_task"),  # pairwise is always 2
            ({"kind": "ranking", "responses_per_task": 10}, "responses_per_task"),
            ({"kind": "ranking", "responses_per_task": 1}, "responses_per_task"),
            ({"kind": "triples"}, "kind"),
            ({"annotations_per_task": 0}, "annotations_per_task"),
            ({"annotations_per_task": 101}, "annotations_per_task"),
            ({"lease_seconds": 29}, "lease_seconds"),
            ({"lease_seconds": 2**40}, "lease_seconds"),
            ({"agreement_threshold": 0.49}, "agreement_threshold"),
            ({"agreement_threshold": 1.01}, "agreement_threshold"),
            ({"agreement_threshold": "NaN"}, "agreement_threshold"),
            ({"name": ""}, "name"),
            ({"name": "   "}, "name"),
        ],
    )
    def test_patch_refuses_what_the_database_would_refuse(self, project, manager, change, field):
        response = client_for(manager).patch(f"{API}/projects/{project.pk}/", change, format="json")
        assert response.status_code == 400
        assert field in response.json()
        fresh = Project.objects.get(pk=project.pk)
        assert (fresh.kind, fresh.responses_per_task, fresh.lease_seconds) == ("pairwise", 2, project.lease_seconds)

    def test_patch_applies_valid_settings(self, project, manager):
        change = {"kind": "ranking", "responses_per_task": 4, "allow_ties": True, "agreement_threshold": 0.75}
        response = client_for(manager).patch(f"{API}/projects/{project.pk}/", change, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["responses_per_task"] == 4 and response.json()["role"] == "manager"
        project.refresh_from_db()
        assert (project.kind, project.responses_per_task, project.allow_ties) == ("ranking", 4, True)

    def test_tasks_pin_the_kind_and_the_smallest_k(self, project, manager):
        project.kind, project.responses_per_task = "ranking", 5
        project.save()
        make_task(project, k=4)
        client = client_for(manager)
        url = f"{API}/projects/{project.pk}/"
        assert client.patch(url, {"responses_per_task": 3}, format="json").json().keys() == {"responses_per_task"}
        assert client.patch(url, {"kind": "pairwise", "responses_per_task": 2}, format="json").status_code == 400
        assert client.patch(url, {"responses_per_task": 6}, format="json").status_code == 200

    def test_put_is_not_offered(self, project, manager):
        assert client_for(manager).put(f"{API}/projects/{project.pk}/", {"name": "x"}, format="json").status_code == 405

    def test_delete_removes_the_project(self, project, manager):
        make_task(project)
        assert client_for(manager).delete(f"{API}/projects/{project.pk}/").status_code == 204
        assert not Project.objects.filter(pk=project.pk).exists()


# --- members -------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestMembers:
    def test_list(self, project, manager, annotator):
        body = client_for(manager).get(f"{API}/projects/{project.pk}/members/").json()
        assert [(m["username"], m["role"]) for m in body["results"]] == [
            ("manager", "manager"),
            ("annotator", "annotator"),
        ]

    def test_import_accounts_are_marked(self, project, manager, annotator, tmp_path):
        path = tmp_path / "judged.jsonl"
        row = {"prompt": "Q", "responses": ["a", "b"], "judgements": [{"annotator": "labeler", "ranking": [[0], [1]]}]}
        path.write_text(json.dumps(row) + "\n")
        import_file(project=project, path=path, format="jsonl")
        body = client_for(manager).get(f"{API}/projects/{project.pk}/members/").json()
        assert {m["username"]: m["imported"] for m in body["results"]} == {
            "manager": False,
            "annotator": False,
            "labeler": True,
        }

    def test_add_by_username(self, project, manager):
        newcomer = UserFactory(username="newcomer")
        response = client_for(manager).post(
            f"{API}/projects/{project.pk}/members/", {"username": "newcomer", "role": "annotator"}, format="json"
        )
        assert response.status_code == 201
        assert response.json()["user_id"] == newcomer.pk
        assert project.role_of(newcomer) == Role.ANNOTATOR

    @pytest.mark.parametrize("username", ["nobody", "annotator"])
    def test_add_refuses_unknown_users_and_members(self, project, manager, annotator, username):
        response = client_for(manager).post(
            f"{API}/projects/{project.pk}/members/", {"username": username}, format="json"
        )
        assert response.status_code == 400
        assert "username" in response.json()
        assert Membership.objects.filter(project=project).count() == 2

    def test_change_role(self, project, manager, annotator):
        url = f"{API}/projects/{project.pk}/members/{annotator.pk}/"
        assert client_for(manager).patch(url, {"role": "manager"}, format="json").json()["role"] == "manager"
        assert project.role_of(annotator) == Role.MANAGER

    def test_the_last_manager_cannot_step_down_or_leave(self, project, manager, annotator):
        client = client_for(manager)
        url = f"{API}/projects/{project.pk}/members/{manager.pk}/"
        demote = client.patch(url, {"role": "annotator"}, format="json")
        assert demote.status_code == 400 and "role" in demote.json()
        assert client.delete(url).status_code == 400
        assert project.role_of(manager) == Role.MANAGER

    def test_a_manager_can_leave_when_another_remains(self, project, manager, annotator):
        Membership.objects.filter(user=annotator).update(role=Role.MANAGER)
        assert client_for(manager).delete(f"{API}/projects/{project.pk}/members/{manager.pk}/").status_code == 204
        assert project.role_of(manager) is None

    def test_someone_outside_the_project_is_404(self, project, manager, outsider):
        url = f"{API}/projects/{project.pk}/members/{outsider.pk}/"
        assert client_for(manager).patch(url, {"role": "manager"}, format="json").status_code == 404
        assert client_for(manager).delete(url).status_code == 404


# --- schema --------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestSchema:
    def test_schema_endpoint_serves_valid_openapi(self, annotator):
        from drf_spectacular.validation import validate_schema

        response = client_for(annotator).get(f"{API}/schema/", {"format": "json"})
        assert response.status_code == 200
        schema = json.loads(response.content)
        validate_schema(schema)
        paths = schema["paths"]
        assert "/api/v1/projects/{project_id}/claim/" in paths
        assert "/api/v1/assignments/{assignment_id}/submit/" in paths
        assert set(paths["/api/v1/assignments/{assignment_id}/submit/"]["post"]["responses"]) >= {
            "200",
            "201",
            "400",
            "404",
            "409",
        }

    def test_schema_generates_without_warnings(self, tmp_path):
        # The same check as `manage.py spectacular --validate --fail-on-warn` in CI.
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
        assert (tmp_path / "schema.yaml").stat().st_size > 0
