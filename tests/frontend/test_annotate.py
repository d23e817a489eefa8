"""The labeling page shell and its render endpoint (the browser flow is in tests/e2e)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from annotation.models import Membership, Role
from annotation.services import assignment_claim_next, judgement_submit
from tests.factories import UserFactory, make_task

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
    assert f'data-claim-url="/api/v1/projects/{project.pk}/claim/"' in body
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
