"""The labeling page's endpoints for release, the last answer, amending it and a manager's preview."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from annotation.models import Assignment, AssignmentState, Judgement, Membership, Role
from annotation.services import assignment_claim_next, judgement_submit
from tests.factories import UserFactory, make_task

pytestmark = pytest.mark.django_db


def post_json(client: Client, url: str, body: object = None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def claimed(project, user) -> Assignment:
    return assignment_claim_next(project=project, annotator=user).assignment


# --- the page ---------------------------------------------------------------------------------


def test_a_manager_opens_the_page_in_preview_and_an_annotator_does_not(client, project, manager, annotator):
    make_task(project)
    client.force_login(manager)
    page = client.get(f"/projects/{project.pk}/annotate/").content.decode()
    assert 'data-preview="true"' in page and 'id="preview-bar"' in page
    assert f'data-preview-url="/projects/{project.pk}/annotate/preview/"' in page
    assert f'href="/projects/{project.pk}/annotate/?label=1"' in page
    labeling = client.get(f"/projects/{project.pk}/annotate/?label=1").content.decode()
    assert 'data-preview="false"' in labeling and 'id="preview-bar"' not in labeling
    assert "preview without claiming" in labeling
    assert Assignment.objects.count() == 0  # the page itself never claims

    client.force_login(annotator)
    page = client.get(f"/projects/{project.pk}/annotate/").content.decode()
    assert 'data-preview="false"' in page and "data-preview-url" not in page and "preview without claiming" not in page
    # The keys panel names the new keys.
    for words in ("confidence, with Shift", "scroll the focused or hovered response", "leave the rationale box"):
        assert words in page
    assert "both are bad" not in page
    project.allow_both_bad = True
    project.save()
    page = client.get(f"/projects/{project.pk}/annotate/").content.decode()
    assert 'id="both-bad"' in page and "both are bad" in page and 'data-allow-both-bad="true"' in page


# --- preview ----------------------------------------------------------------------------------


def test_the_preview_walks_the_open_tasks_in_queue_order_and_claims_nothing(client, project, manager, annotator):
    low = make_task(project, priority=0)
    high = make_task(project, priority=5)
    done = make_task(project, priority=9)
    done.state = "retired"
    done.save()
    client.force_login(manager)
    url = f"/projects/{project.pk}/annotate/preview/"
    first = client.get(url).json()
    assert first["open"] == 2 and first["n"] == 0 and first["task"]["task_id"] == high.pk
    assert [r["id"] for r in first["task"]["responses"]] == first["task"]["display_order"] == high.response_ids()
    assert client.get(url, {"n": 1}).json()["task"]["task_id"] == low.pk
    assert client.get(url, {"n": 2}).json()["task"] is None
    assert client.get(url, {"n": "x"}).status_code == 400
    assert Assignment.objects.count() == 0

    client.force_login(annotator)
    assert client.get(url).status_code == 403


# --- release ----------------------------------------------------------------------------------


def test_release_next_gives_the_task_back_and_claims_another(client, project, annotator, manager):
    first = make_task(project)
    second = make_task(project)
    lease = claimed(project, annotator)
    assert lease.task_id == first.pk
    url = f"/projects/{project.pk}/annotate/assignments/{lease.pk}/release/"
    client.force_login(manager)
    assert client.post(url).status_code == 404  # not theirs
    client.force_login(annotator)
    data = client.post(url).json()
    assert data["released"] is True and data["next"]["task_id"] == second.pk
    assert Assignment.objects.get(pk=lease.pk).state == AssignmentState.RELEASED
    # Once the other task is answered, the released one comes back.
    nxt = Assignment.objects.get(pk=data["next"]["id"])
    judgement_submit(assignment=nxt, ranking=[[r] for r in nxt.display_order])
    again = post_json(client, f"/projects/{project.pk}/annotate/next/").json()["next"]
    assert again["id"] == lease.pk and again["task_id"] == first.pk


def test_release_next_needs_csrf(project, annotator):
    make_task(project)
    lease = claimed(project, annotator)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(annotator)
    assert strict.post(f"/projects/{project.pk}/annotate/assignments/{lease.pk}/release/").status_code == 403
    assert Assignment.objects.get(pk=lease.pk).state == AssignmentState.LEASED


# --- the last answer and amending it ----------------------------------------------------------


@pytest.fixture
def answered(project, annotator):
    project.annotations_per_task = 2
    project.save()
    make_task(project)
    lease = claimed(project, annotator)
    judgement = judgement_submit(
        assignment=lease, ranking=[[r] for r in lease.display_order], confidence=3, rationale="<b>sure</b>"
    ).judgement
    return lease, judgement


def test_last_answer_comes_with_its_task_as_shown(client, project, annotator, manager, answered):
    lease, judgement = answered
    client.force_login(manager)
    assert client.get(f"/projects/{project.pk}/annotate/last/").json() == {"last": None}
    client.force_login(annotator)
    last = client.get(f"/projects/{project.pk}/annotate/last/").json()["last"]
    assert last["id"] == judgement.pk and last["display_order"] == lease.display_order
    assert [r["id"] for r in last["responses"]] == lease.display_order
    assert last["answer"] == {
        "tiers": judgement.tiers,
        "both_bad": False,
        "confidence": 3,
        "rationale": "<b>sure</b>",
    }
    assert last["editable"] is True and last["closed"] is None and last["amended"] is False


def test_amend_changes_the_answer_until_the_task_is_complete(client, project, annotator, answered):
    lease, judgement = answered
    url = f"/projects/{project.pk}/annotate/judgements/{judgement.pk}/amend/"
    client.force_login(annotator)
    flipped = [[r] for r in reversed(lease.display_order)]
    data = post_json(client, url, {"ranking": flipped, "confidence": 4}).json()
    assert data["changed"] is True and data["judgement"]["tiers"] == flipped
    assert post_json(client, url, {"ranking": flipped, "confidence": 4}).json()["changed"] is False
    refused = post_json(client, url, {"ranking": flipped, "both_bad": True})
    assert refused.status_code == 400 and refused.json()["field"] == "both_bad"
    assert post_json(client, url, {"confidence": 4}).json()["field"] == "ranking"
    last = client.get(f"/projects/{project.pk}/annotate/last/").json()["last"]
    assert last["amended"] is True and last["answer"]["tiers"] == flipped

    other = UserFactory(username="completer")
    Membership.objects.create(project=project, user=other, role=Role.ANNOTATOR)
    second = claimed(project, other)
    judgement_submit(assignment=second, ranking=[[r] for r in second.display_order])
    last = client.get(f"/projects/{project.pk}/annotate/last/").json()["last"]
    assert last["editable"] is False and last["closed"] == "This task is complete: its answers are final."
    refused = post_json(client, url, {"ranking": [[r] for r in lease.display_order]})
    assert refused.status_code == 409 and refused.json()["code"] == "task_complete"
    assert Judgement.objects.get(pk=judgement.pk).tiers == flipped


def test_amend_is_the_owners_alone_and_needs_csrf(client, project, annotator, manager, outsider, answered):
    lease, judgement = answered
    url = f"/projects/{project.pk}/annotate/judgements/{judgement.pk}/amend/"
    body = {"ranking": [[r] for r in reversed(lease.display_order)]}
    for stranger in (manager, outsider):
        client.force_login(stranger)
        assert post_json(client, url, body).status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(annotator)
    assert post_json(strict, url, body).status_code == 403
    client.force_login(annotator)
    assert post_json(client, f"/projects/{project.pk}/annotate/judgements/{2**70}/amend/", body).status_code == 404
    assert Judgement.objects.get(pk=judgement.pk).tiers == judgement.tiers
