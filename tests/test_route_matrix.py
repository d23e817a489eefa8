"""Every route and method of the URLconf, as every persona: who gets in, who is told no, and how.

``ROUTES`` names each route's access rule per method; the URLconf is walked to build the
list, so a route (or a method of an API view) added without an entry here fails
:func:`test_every_route_has_an_entry`. For each entry and persona the expected answer:

* anonymous: 401 from the API, a redirect to the login page from a page;
* an outsider (a member of another project) and a staff user who is not a member:
  404 on anything of the project, as if it did not exist;
* the project's annotator: 403 on a manager's work, and 404 on another's assignment;
* whoever may: anything but 401/403/404 and never a 5xx.

Requests carry empty bodies: permissions are checked before a body is read, so a refusal
never depends on it, and whoever may gets a 400 at most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.services import invitation_create, named_token_create
from annotation import services
from annotation.models import Assignment, Membership, Role
from exports.models import ExportSnapshot
from jobs.lifecycle import job_create
from jobs.models import JobState
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rlloop.models import LoopCycle, LoopRule, PolicyRound, PolicyVersion, SamplingJob
from tests.factories import ProjectFactory, UserFactory, make_task
from tests.jobkinds.models import CountdownJob

# Access rules. PUBLIC: anyone. LOGIN: anyone signed in. MEMBER / MANAGER: of the project.
# ASSIGNEE: the annotator who holds the assignment. STAFF: staff users.
# CREATOR: staff, or users granted annotation.add_project. OWNER: the annotator, whose API token it is.
PUBLIC, LOGIN, CREATOR = "public", "login", "creator"
MEMBER, MANAGER, ASSIGNEE, OWNER = "member", "manager", "assignee", "owner"

ROUTES: dict[str, dict[str, str]] = {
    # --- REST API ---------------------------------------------------------------------------
    "api-token": {"post": PUBLIC, "delete": LOGIN},
    "api-auth-tokens": {"get": LOGIN, "post": LOGIN},
    "api-auth-token": {"delete": OWNER},
    "api-projects": {"get": LOGIN, "post": CREATOR},
    "api-project": {"get": MEMBER, "patch": MANAGER, "delete": MANAGER},
    "api-members": {"get": MANAGER, "post": MANAGER},
    "api-member": {"patch": MANAGER, "delete": MANAGER},
    "api-claim": {"post": MEMBER},
    "api-tasks": {"get": MEMBER},
    "api-task": {"get": MEMBER},
    "api-judgements": {"get": MEMBER},
    "api-imports": {"get": MANAGER, "post": MANAGER},
    "api-import": {"get": MANAGER},
    "api-import-cancel": {"post": MANAGER},
    "api-submit": {"post": ASSIGNEE},
    "api-skip": {"post": ASSIGNEE},
    "api-release": {"post": ASSIGNEE},
    "api-judgement-amend": {"post": ASSIGNEE},
    "api-agreement": {"get": MANAGER},
    "api-agreement-trend": {"get": MANAGER},
    "api-exports": {"get": MANAGER, "post": MANAGER},
    "api-export-preview": {"get": MANAGER},
    "api-export": {"get": MANAGER},
    "api-export-file": {"get": MANAGER},
    "api-export-archive": {"get": MANAGER},
    "api-export-cancel": {"post": MANAGER},
    "api-rm-versions": {"get": MANAGER},
    "api-rm-runs": {"get": MANAGER, "post": MANAGER},
    "api-rm-bases": {"get": MANAGER},
    "api-rm-run": {"get": MANAGER},
    "api-rm-run-cancel": {"post": MANAGER},
    "api-rm-compare": {"get": MANAGER},
    "api-rm-score-active": {"post": MANAGER},
    "api-rm-version": {"get": MANAGER},
    "api-rm-activate": {"post": MANAGER},
    "api-rm-score": {"post": MANAGER},
    "api-rm-archive": {"get": MANAGER},
    "api-policies": {"get": MANAGER, "post": MANAGER},
    "api-policy-checkpoints": {"get": MANAGER},
    "api-policy": {"get": MANAGER},
    "api-policy-reference": {"post": MANAGER},
    "api-rl-rounds": {"get": MANAGER, "post": MANAGER},
    "api-rl-round": {"get": MANAGER},
    "api-rl-round-cancel": {"post": MANAGER},
    "api-sampling-jobs": {"get": MANAGER, "post": MANAGER},
    "api-leaderboard": {"get": MANAGER},
    "api-cycles": {"get": MANAGER, "post": MANAGER},
    "api-cycle": {"get": MANAGER},
    "api-cycle-cancel": {"post": MANAGER},
    "api-cycle-rule": {"get": MANAGER, "put": MANAGER, "delete": MANAGER},
    "api-proxy-vs-human": {"get": MANAGER},
    "api-sampling-job": {"get": MANAGER},
    "api-sampling-job-cancel": {"post": MANAGER},
    "api-jobs": {"get": MANAGER},
    "api-job": {"get": MANAGER},
    "api-job-cancel": {"post": MANAGER},
    "api-schema": {"get": PUBLIC},
    "api-docs": {"get": PUBLIC},
    "api-redoc": {"get": PUBLIC},
    # --- pages ------------------------------------------------------------------------------
    "favicon": {"get": PUBLIC},
    "login": {"get": PUBLIC},
    "account-invite": {"get": PUBLIC, "post": PUBLIC},
    "account-tokens": {"get": LOGIN, "post": LOGIN},
    "logout": {"post": PUBLIC},
    "project-list": {"get": LOGIN},
    "project-create": {"get": CREATOR, "post": CREATOR},
    "annotate": {"get": MEMBER},
    "annotate-assignment": {"get": ASSIGNEE},
    "annotate-next": {"post": MEMBER},
    "annotate-submit-next": {"post": ASSIGNEE},
    "annotate-release-next": {"post": ASSIGNEE},
    "annotate-last": {"get": MEMBER},
    "annotate-amend": {"post": ASSIGNEE},
    "annotate-preview": {"get": MANAGER},
    "project-edit": {"get": MANAGER, "post": MANAGER},
    "project-members": {"get": MANAGER, "post": MANAGER},
    "project-imports": {"get": MANAGER, "post": MANAGER},
    "task-browser": {"get": MANAGER},
    "item-review": {"get": MANAGER},
    "project-dashboard": {"get": MANAGER},
    "project-exports": {"get": MANAGER, "post": MANAGER},
    "rewardmodel-list": {"get": MANAGER, "post": MANAGER},
    "rewardmodel-run": {"get": MANAGER},
    "rewardmodel-activate": {"post": MANAGER},
    "rewardmodel-compare": {"get": MANAGER},
    "rewardmodel-score": {"post": MANAGER},
    "rewardmodel-rule": {"post": MANAGER},
    "policy-list": {"get": MANAGER, "post": MANAGER},
    "policy-register": {"post": MANAGER},
    "policy-reference": {"post": MANAGER},
    "policy-round": {"get": MANAGER},
    "loop": {"get": MANAGER, "post": MANAGER},
    "loop-cycle": {"post": MANAGER},
    "loop-cycle-cancel": {"post": MANAGER},
    "loop-rule": {"post": MANAGER},
    "project-jobs": {"get": MANAGER},
    "job-cancel": {"post": MANAGER},
}
PERSONAS = ["anonymous", "outsider", "staff", "annotator", "manager"]
# Answers that mean "not let in"; whoever may must get something else, and no 5xx.
REFUSALS = {401, 403, 404}


def walk(patterns: list[Any], prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if getattr(pattern, "app_name", None) == "admin":
                continue  # Django's admin: staff only, tested in test_the_admin_is_for_staff_only
            found += walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif pattern.name:
            found.append((prefix + str(pattern.pattern), pattern))
    return found


def drf_methods(pattern: URLPattern) -> set[str] | None:
    view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
    if view_class is None or not hasattr(view_class, "http_method_names"):
        return None
    if not getattr(pattern.callback, "cls", None) and not hasattr(view_class, "permission_classes"):
        return None
    return {m for m in view_class.http_method_names if m not in ("options", "head", "trace") and hasattr(view_class, m)}


def test_every_route_has_an_entry():
    routes = {pattern.name: (route, pattern) for route, pattern in walk(get_resolver().url_patterns)}
    assert set(routes) == set(ROUTES), (
        f"routes without an entry: {sorted(set(routes) - set(ROUTES))}; "
        f"entries without a route: {sorted(set(ROUTES) - set(routes))}"
    )
    for name, (_route, pattern) in routes.items():
        methods = drf_methods(pattern)
        if methods is not None:
            assert methods == set(ROUTES[name]), f"{name}: the view answers {sorted(methods)}"


@dataclass
class World:
    project: Any
    people: dict[str, Any]
    kwargs: dict[str, Any]


@pytest.fixture
def world(db, settings, tmp_path, job_messages) -> World:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    cache.clear()  # throttle counts live in the cache
    project = ProjectFactory()
    other = ProjectFactory(name="Another project")
    people = {
        "manager": UserFactory(username="matrix-manager"),
        "annotator": UserFactory(username="matrix-annotator"),
        "outsider": UserFactory(username="matrix-outsider"),
        "staff": UserFactory(username="matrix-staff", is_staff=True),
    }
    for user in people.values():
        Token.objects.create(user=user)  # so that revoking one is possible for everybody
    Membership.objects.create(project=project, user=people["manager"], role=Role.MANAGER)
    Membership.objects.create(project=project, user=people["annotator"], role=Role.ANNOTATOR)
    Membership.objects.create(project=other, user=people["outsider"], role=Role.ANNOTATOR)
    task = make_task(project)
    assignment = services.assignment_claim_next(project=project, annotator=people["annotator"]).assignment
    now = timezone.now()
    snapshot = ExportSnapshot.objects.create(
        project=project, state=JobState.SUCCEEDED, progress=1.0, finished_at=now, content_hash="0" * 64,
        path="exports/" + "0" * 64, manifest={"files": {}},
    )  # fmt: skip
    published = settings.ARTIFACT_ROOT / snapshot.path
    published.mkdir(parents=True)
    (published / "manifest.json").write_text("{}")
    run = RewardModelRun.objects.create(
        project=project, snapshot=snapshot, base_model="/models/base", state=JobState.SUCCEEDED, progress=1.0,
        finished_at=now,
    )  # fmt: skip
    RewardModelVersion.objects.create(
        project=project, number=1, run=run, snapshot=snapshot, base_model="/models/base", model_dir="rm/none",
        is_active=True,
    )  # fmt: skip
    import_job = job_create(
        __import__("annotation.models", fromlist=["ImportJob"]).ImportJob,
        project=project, format="jsonl", file_name="a.jsonl", file_path=str(tmp_path / "a.jsonl"),
    )  # fmt: skip
    countdown = job_create(CountdownJob, project=project)
    policy = PolicyVersion.objects.create(
        project=project, number=1, model_dir="/models/policy", base_model="/models/policy"
    )
    policy_round = job_create(PolicyRound, project=project, method="sft", number=1, policy=policy)
    sampling = job_create(SamplingJob, project=project, target=project)
    cycle = LoopCycle.objects.create(project=project, number=1, policy=policy)
    LoopRule.objects.create(project=project, min_new_pairs=5)
    invited = invitation_create(
        project=project, created_by=people["manager"], username="matrix-invited", role="annotator"
    )
    named_token = named_token_create(user=people["annotator"], name="matrix").token
    kwargs = {
        "project_id": project.pk,
        "user_id": people["annotator"].pk,
        "task_id": task.pk,
        "job_id": import_job.pk,
        "assignment_id": assignment.pk,
        "export_id": snapshot.pk,
        "name": "manifest.json",
        "run_id": run.pk,
        "number": 1,
        "kind": "countdown",
        "round_id": policy_round.pk,
        "cycle_id": cycle.pk,
        "key": invited.key,
        "token_id": named_token.pk,
    }
    world = World(project, people, kwargs)
    world.kwargs["_countdown"] = countdown.pk
    world.kwargs["_sampling"] = sampling.pk
    return world


def answered_judgement(world: World) -> int:
    """The annotator's answer on a task that is still open, for the routes that change an answer.

    Made only for them: a judgement in the world would fill the annotator's judgement list,
    whose rows name their own username under the key ``annotator``.
    """
    task = make_task(world.project)
    now = timezone.now()
    order = task.response_ids()
    lease = Assignment.objects.create(
        task=task, project=world.project, annotator=world.people["annotator"], display_order=order,
        leased_at=now, expires_at=now + timedelta(minutes=30),
    )  # fmt: skip
    return services.judgement_submit(assignment=lease, ranking=[[r] for r in order]).judgement.pk


def url_of(pattern_route: str, name: str, world: World) -> str:
    from django.urls import reverse

    route_params = [p.split(">")[0].split(":")[-1] for p in pattern_route.split("<")[1:]]
    if "judgement_id" in route_params and "judgement_id" not in world.kwargs:
        world.kwargs["judgement_id"] = answered_judgement(world)
    kwargs = {key: world.kwargs[key] for key in route_params}
    if name in ("api-job", "api-job-cancel", "job-cancel"):
        kwargs["job_id"] = world.kwargs["_countdown"]
    if name.startswith("api-sampling-job") and "job_id" in kwargs:
        kwargs["job_id"] = world.kwargs["_sampling"]
    return reverse(name, kwargs=kwargs)


def expected_refusal(access: str, persona: str, is_api: bool) -> set[int] | None:
    """The answers a persona must get, or None when it is let in."""
    anonymous = {401} if is_api else {302}
    if access == PUBLIC:
        return None
    if persona == "anonymous":
        return anonymous
    if access == LOGIN:
        return None
    if access == CREATOR:
        return None if persona == "staff" else {403}
    if persona in ("outsider", "staff"):
        return {404}
    if access == MEMBER:
        return None
    if access == MANAGER:
        return None if persona == "manager" else {403}
    if access in (ASSIGNEE, OWNER):
        return None if persona == "annotator" else {404}
    raise AssertionError(access)


def client_for(persona: str, world: World, is_api: bool) -> Client:
    client: Client = APIClient() if is_api else Client()
    if persona != "anonymous":
        client.force_login(world.people[persona])
    return client


CASES = [(name, method) for name, methods in ROUTES.items() for method in methods]


@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{m.upper()} {n}" for n, m in CASES])
def test_every_persona_on_every_route(world, name, method):
    routes = {pattern.name: route for route, pattern in walk(get_resolver().url_patterns)}
    url = url_of(routes[name], name, world)
    is_api = url.startswith("/api/")
    access = ROUTES[name][method]
    for persona in PERSONAS:
        cache.clear()
        client = client_for(persona, world, is_api)
        kwargs: dict[str, Any] = {"HTTP_ACCEPT": "application/json"} if is_api else {}
        if method in ("post", "patch", "put") and is_api:
            response = getattr(client, method)(url, {}, format="json", **kwargs)
        else:
            response = getattr(client, method)(url, **kwargs)
        status = response.status_code
        refusal = expected_refusal(access, persona, is_api)
        where = f"{method.upper()} {url} as {persona}"
        assert status < 500, f"{where}: {status}"
        if refusal is None:
            assert status not in REFUSALS, f"{where}: refused with {status}"
        else:
            assert status in refusal, f"{where}: {status}, expected {sorted(refusal)}"
            if status == 302:
                assert "/accounts/login/" in response["Location"], where
        project_data = access not in (PUBLIC, LOGIN, CREATOR)
        if persona == "annotator" and refusal is None and project_data and "json" in response.get("Content-Type", ""):
            assert_nothing_hidden_leaks(json.loads(response.content or b"null"), world, where)


# Keys an annotator must never be sent: other people, gold, how a response was made, scores.
HIDDEN_KEYS = {"gold_tiers", "gold_answer", "source", "external_id", "score", "reward", "annotator", "created_by"}


def assert_nothing_hidden_leaks(body: Any, world: World, where: str) -> None:
    others = {world.people["manager"].username, world.people["outsider"].username, world.people["staff"].username}

    def walk_body(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                assert key not in HIDDEN_KEYS, f"{where}: {path}.{key} is sent to an annotator"
                walk_body(inner, f"{path}.{key}")
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk_body(inner, f"{path}[{i}]")
        elif isinstance(value, str):
            assert value not in others, f"{where}: {path} names another person"

    walk_body(body, "body")


def test_the_admin_is_for_staff_only(world):
    assert Client().get("/admin/").status_code == 302
    for persona in ("manager", "annotator", "outsider"):
        response = client_for(persona, world, is_api=False).get("/admin/")
        assert response.status_code == 302 and "/admin/login/" in response["Location"], persona
    assert client_for("staff", world, is_api=False).get("/admin/").status_code == 200
