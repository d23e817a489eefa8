"""The labeling page shell and its render endpoint (the browser flow is in tests/e2e)."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.test import Client

from annotation import queue_sql
from annotation.api.serializers import SUBMIT_MAX_BODY_BYTES
from annotation.importers import import_file
from annotation.models import Assignment, Judgement, Membership, Role
from annotation.services import assignment_claim_next, judgement_submit
from arpad.http import SMALL_BODY_MAX_BYTES
from tests.annotation.blind import REAL_IMPORTS, assert_blind, origin_values
from tests.factories import ProjectFactory, UserFactory, make_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(project):
    return make_task(project)


def test_annotate_page_requires_login(client, project):
    response = client.get(f"/projects/{project.pk}/annotate/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_annotate_page_is_404_for_outsiders(client, project, outsider):
    client.force_login(outsider)
    assert client.get(f"/projects/{project.pk}/annotate/").status_code == 404
    assert client.get("/projects/999999/annotate/").status_code == 404


def test_annotate_page_loads_its_module_with_the_csp_nonce(client, project, annotator):
    client.force_login(annotator)
    response = client.get(f"/projects/{project.pk}/annotate/")
    assert response.status_code == 200
    body = response.content.decode()
    nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
    assert f'<script type="module" src="/static/frontend/annotate.js" nonce="{nonce}"></script>' in body
    # No inline script or handler: the page works under script-src 'self' + nonce alone.
    assert re.search(r"<script(?![^>]*\bsrc=)", body) is None
    assert re.search(r"\son[a-z]+=", body) is None
    assert f'data-next-url="/projects/{project.pk}/annotate/next/"' in body
    assert 'name="csrf-token"' in body


def test_guidelines_are_rendered_as_sanitized_markdown(client, project, annotator):
    project.guidelines = "## Be fair\n\n<script>alert(1)</script> [x](javascript:alert(1)) **bold**"
    project.save()
    client.force_login(annotator)
    body = client.get(f"/projects/{project.pk}/annotate/").content.decode()
    assert "<h2>Be fair</h2>" in body
    assert "<strong>bold</strong>" in body
    assert "<script>alert(1)</script>" not in body
    assert 'href="javascript:' not in body
    assert "[x](javascript:alert(1))" in body  # left as inert text


def test_project_list_links_to_the_annotate_page(client, project, annotator):
    client.force_login(annotator)
    assert f'href="/projects/{project.pk}/annotate/"' in client.get("/").content.decode()


def _claimed(project, user):
    claim = assignment_claim_next(project=project, annotator=user)
    assert claim is not None
    return claim.assignment


def test_render_endpoint_returns_sanitized_html_in_display_order(client, project, annotator, task):
    prompt = task.prompt
    prompt.messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi <img src=x onerror=alert(1)>"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "**Now** answer"},
    ]
    prompt.save()
    first = task.responses.order_by("id").first()
    first.text = "<script>alert(1)</script>\n\n```\ncode\n```"
    first.save()
    assignment = _claimed(project, annotator)
    client.force_login(annotator)
    response = client.get(f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert [m["role"] for m in data["prompt"]] == ["system", "user", "assistant", "user"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in data["prompt"][1]["html"]
    assert "<strong>Now</strong>" in data["prompt"][3]["html"]
    assert [r["id"] for r in data["responses"]] == assignment.display_order
    by_id = {r["id"]: r["html"] for r in data["responses"]}
    assert "<script" not in by_id[first.pk]
    assert "<pre><code>code\n</code></pre>" in by_id[first.pk]
    assert data["progress"] == {"done_today": 0, "done_project": 0}


def test_render_endpoint_counts_progress(client, project, annotator):
    make_task(project)
    make_task(project)
    done = _claimed(project, annotator)
    judgement_submit(assignment=done, ranking=[[done.display_order[0]], [done.display_order[1]]])
    nxt = _claimed(project, annotator)
    client.force_login(annotator)
    data = client.get(f"/projects/{project.pk}/annotate/assignments/{nxt.pk}/").json()
    assert data["progress"] == {"done_today": 1, "done_project": 1}


def test_render_endpoint_is_scoped_to_the_callers_own_assignment(client, project, annotator, manager, outsider, task):
    assignment = _claimed(project, annotator)
    url = f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/"
    for other in (manager, outsider, UserFactory(username="stranger")):
        client.force_login(other)
        assert client.get(url).status_code == 404
    client.force_login(annotator)
    # The right assignment under another project's URL is still a 404.
    assert client.get(f"/projects/{project.pk + 1000}/annotate/assignments/{assignment.pk}/").status_code == 404
    # An annotator removed from the project loses access to their old assignment.
    Membership.objects.filter(project=project, user=annotator).delete()
    assert client.get(url).status_code == 404


def test_render_endpoint_is_read_only(project, annotator, task):
    assignment = _claimed(project, annotator)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(annotator)
    assert strict.post(f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/").status_code in (403, 405)


def test_manager_can_open_the_annotate_page_too(client, project, manager):
    client.force_login(manager)
    assert client.get(f"/projects/{project.pk}/annotate/").status_code == 200
    assert Membership.objects.get(project=project, user=manager).role == Role.MANAGER


# --- the page's own claim and submit-and-next endpoints -------------------------------------


def _post_json(client, url, body=None):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json")


def test_next_endpoint_claims_and_renders_in_one_request(client, project, annotator, task):
    client.force_login(annotator)
    response = client.post(f"/projects/{project.pk}/annotate/next/")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    data = response.json()["next"]
    assignment = Assignment.objects.get(annotator=annotator)
    assert data["id"] == assignment.pk and data["task_id"] == task.pk and data["resumed"] is False
    assert data["display_order"] == assignment.display_order
    assert [r["id"] for r in data["responses"]] == assignment.display_order
    assert all(r["html"].startswith("<p>") and r["text"].startswith("Answer") for r in data["responses"])
    # Asking again hands back the same live lease.
    again = client.post(f"/projects/{project.pk}/annotate/next/").json()["next"]
    assert again["id"] == assignment.pk and again["resumed"] is True


def test_next_endpoint_is_null_without_work_and_404_for_outsiders(client, project, annotator, outsider):
    client.force_login(annotator)
    assert client.post(f"/projects/{project.pk}/annotate/next/").json() == {"next": None}
    client.force_login(outsider)
    assert client.post(f"/projects/{project.pk}/annotate/next/").status_code == 404
    assert client.get(f"/projects/{project.pk}/annotate/next/").status_code == 405


def test_submit_next_records_the_answer_and_returns_the_next_task(client, project, annotator):
    first, second = make_task(project, priority=1), make_task(project)
    assignment = _claimed(project, annotator)
    assert assignment.task_id == first.pk
    client.force_login(annotator)
    url = f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/submit/"
    ranking = [[assignment.display_order[1]], [assignment.display_order[0]]]
    body = {"ranking": ranking, "client_token": str(uuid.uuid4()), "confidence": 4, "rationale": "clearer"}
    data = _post_json(client, url, body).json()
    assert data["submitted"]["created"] is True and data["refused"] is None
    assert data["next"]["task_id"] == second.pk
    assert data["next"]["progress"] == {"done_today": 1, "done_project": 1}
    judgement = Judgement.objects.get(assignment=assignment)
    assert (judgement.tiers, judgement.confidence, judgement.rationale) == (ranking, 4, "clearer")
    # The retry of a lost reply: same judgement, same next task, nothing new written.
    retry = _post_json(client, url, body).json()
    assert retry["submitted"] == {**data["submitted"], "created": False}
    assert retry["next"]["id"] == data["next"]["id"] and retry["next"]["resumed"] is True
    assert Judgement.objects.count() == 1 and Assignment.objects.count() == 2


def test_submit_next_refuses_malformed_answers_and_claims_nothing(client, project, annotator, task):
    make_task(project)
    assignment = _claimed(project, annotator)
    client.force_login(annotator)
    url = f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/submit/"
    token = str(uuid.uuid4())
    cases = [
        ({"ranking": [[assignment.display_order[0]]], "client_token": token}, "invalid_ranking"),
        ({"ranking": [[assignment.display_order[0]], [assignment.display_order[1]]]}, "invalid"),
        ({"ranking": "best", "client_token": token, "confidence": 9}, "invalid"),
    ]
    for body, code in cases:
        response = _post_json(client, url, body)
        assert response.status_code == 400, body
        assert response.json()["code"] == code and response.json()["detail"]
    bad_json = client.post(url, data="{not json", content_type="application/json")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["detail"]
    assert Assignment.objects.filter(annotator=annotator).count() == 1
    assert not Judgement.objects.exists()


def test_submit_next_is_scoped_to_the_callers_own_assignment_and_needs_csrf(project, annotator, manager, task):
    assignment = _claimed(project, annotator)
    url = f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/submit/"
    body = {"ranking": [[rid] for rid in assignment.display_order], "client_token": str(uuid.uuid4())}
    client = Client()
    client.force_login(manager)
    assert _post_json(client, url, body).status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(annotator)
    assert _post_json(strict, url, body).status_code == 403
    assert not Judgement.objects.exists()


# --- hostile input (issue 13) ---------------------------------------------------------------


@pytest.fixture
def lock_spy(monkeypatch) -> list[int]:
    """The task ids that ``queue_sql.lock_task`` was called for."""
    locked: list[int] = []
    real = queue_sql.lock_task
    monkeypatch.setattr(queue_sql, "lock_task", lambda task_id: locked.append(task_id) or real(task_id))
    return locked


def test_submit_next_refuses_hostile_bodies_cheaply_and_claims_nothing(client, project, annotator, task, lock_spy):
    make_task(project)
    assignment = _claimed(project, annotator)
    client.force_login(annotator)
    url = f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/submit/"
    token = str(uuid.uuid4())
    deep = client.post(url, data='{"ranking": ' + "[" * 100_000 + "]" * 100_000 + "}", content_type="application/json")
    assert deep.status_code == 400 and "nested deeper than" in deep.json()["detail"]
    nan = client.post(
        url, data='{"ranking": [[NaN]], "client_token": "' + token + '"}', content_type="application/json"
    )
    assert nan.status_code == 400 and "NaN is not valid JSON" in nan.json()["detail"]
    extra = max(assignment.display_order) + 1
    ranking = [[rid] for rid in assignment.display_order] + [[extra + i] for i in range(20_000 - 2)]
    huge = _post_json(client, url, {"ranking": ranking, "client_token": token})
    assert huge.status_code == 400
    assert huge.json()["detail"] == "the ranking names 20000 responses; this task has 2"
    assert lock_spy == []
    assert Assignment.objects.filter(annotator=annotator).count() == 1
    assert not Judgement.objects.exists()


def test_bodies_over_the_labeling_endpoints_caps_are_413(client, project, annotator, task):
    make_task(project)
    assignment = _claimed(project, annotator)
    other = UserFactory(username="annotator2")
    Membership.objects.create(project=project, user=other, role=Role.ANNOTATOR)
    cases = [
        (other, f"/projects/{project.pk}/annotate/next/", SMALL_BODY_MAX_BYTES),
        (annotator, f"/projects/{project.pk}/annotate/assignments/{assignment.pk}/submit/", SUBMIT_MAX_BODY_BYTES),
    ]
    for user, url, cap in cases:
        client.force_login(user)
        body = {"ranking": [[rid] for rid in assignment.display_order], "client_token": str(uuid.uuid4())}
        response = _post_json(client, url, {**body, "padding": "x" * cap})
        assert response.status_code == 413, url
        assert response.json() == {
            "detail": f"the request body is larger than {cap:,} bytes",
            "code": "too_large",
            "field": None,
        }
    assert list(Assignment.objects.values_list("annotator", flat=True)) == [annotator.pk]
    assert not Judgement.objects.exists()


@pytest.mark.parametrize("big", [2**63, 2**64])
def test_ids_beyond_64_bits_are_404(client, project, annotator, task, big):
    client.force_login(annotator)
    assert client.post(f"/projects/{big}/annotate/next/").status_code == 404
    assert client.get(f"/projects/{project.pk}/annotate/assignments/{big}/").status_code == 404
    assert _post_json(client, f"/projects/{project.pk}/annotate/assignments/{big}/submit/").status_code == 404


@pytest.mark.realdata
@pytest.mark.parametrize(("fmt", "settings", "options", "file"), REAL_IMPORTS, ids=[r[0] for r in REAL_IMPORTS])
def test_the_labeling_page_shows_no_external_id_or_source(client, shared_data, fmt, settings, options, file):
    project = ProjectFactory(**settings)
    annotator = UserFactory(username="annotator")
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    import_file(project=project, path=shared_data / file, format=fmt, options=options)
    origin = origin_values(project)
    client.force_login(annotator)

    page = client.get(f"/projects/{project.pk}/annotate/").content.decode()
    assert not [value for value in origin if len(value) > 6 and value in page]
    first = client.post(f"/projects/{project.pk}/annotate/next/").json()["next"]
    assert first is not None
    assert_blind(first, origin)
    rendered = client.get(f"/projects/{project.pk}/annotate/assignments/{first['id']}/").json()
    assert_blind(rendered, origin)
    url = f"/projects/{project.pk}/annotate/assignments/{first['id']}/submit/"
    body = {"ranking": [[rid] for rid in first["display_order"]], "client_token": str(uuid.uuid4())}
    following = client.post(url, data=json.dumps(body), content_type="application/json").json()
    assert following["submitted"] is not None
    assert_blind(following, origin)
