"""The "both are bad" verdict: the project setting, its validation, its votes and the agreement report."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from annotation.models import Judgement, Membership, PairVote, ProjectKind, Role
from annotation.reports import agreement_report, render_table
from annotation.services import QueueError, assignment_claim_next, judgement_submit
from tests.factories import ProjectFactory, UserFactory, make_task

pytestmark = pytest.mark.django_db

API = "/api/v1"


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def member(project, username: str, role: str = Role.ANNOTATOR):
    user = UserFactory(username=username)
    Membership.objects.create(project=project, user=user, role=role)
    return user


def claim(project, user):
    return assignment_claim_next(project=project, annotator=user).assignment


def full_tie(assignment) -> list[list[int]]:
    return [sorted(assignment.display_order)]


# --- the setting -----------------------------------------------------------------------------


def test_the_setting_is_off_by_default_and_a_manager_turns_it_on_through_the_api(project, manager, annotator):
    body = api(manager).get(f"{API}/projects/{project.pk}/").json()
    assert body["allow_both_bad"] is False
    assert api(annotator).patch(f"{API}/projects/{project.pk}/", {"allow_both_bad": True}).status_code == 403
    changed = api(manager).patch(f"{API}/projects/{project.pk}/", {"allow_both_bad": True}, format="json")
    assert changed.status_code == 200 and changed.json()["allow_both_bad"] is True
    project.refresh_from_db()
    assert project.allow_both_bad


def test_the_settings_page_has_the_setting(client, project, manager):
    client.force_login(manager)
    page = client.get(f"/projects/{project.pk}/settings/").content.decode()
    assert 'name="allow_both_bad"' in page and "both are bad" in page
    form = {
        "name": project.name,
        "kind": project.kind,
        "responses_per_task": 2,
        "annotations_per_task": 3,
        "lease_seconds": 1800,
        "agreement_threshold": 0.5,
        "allow_both_bad": "on",
        "guidelines": "",
    }
    assert client.post(f"/projects/{project.pk}/settings/", form).status_code == 302
    project.refresh_from_db()
    assert project.allow_both_bad and not project.allow_ties


# --- submitting it ---------------------------------------------------------------------------


def test_refused_where_the_project_does_not_allow_it(project, annotator):
    project.allow_ties = True
    project.save()
    make_task(project)
    lease = claim(project, annotator)
    with pytest.raises(QueueError) as refused:
        judgement_submit(assignment=lease, ranking=full_tie(lease), both_bad=True)
    assert refused.value.field == "both_bad" and "allow_both_bad" in refused.value.message
    assert not Judgement.objects.exists()
    # The same answer without the flag is a plain tie, accepted.
    assert judgement_submit(assignment=lease, ranking=full_tie(lease)).judgement.both_bad is False


def test_only_as_a_full_tie(project, annotator):
    project.allow_both_bad = True
    project.save()
    make_task(project)
    lease = claim(project, annotator)
    with pytest.raises(QueueError) as refused:
        judgement_submit(assignment=lease, ranking=[[r] for r in lease.display_order], both_bad=True)
    assert refused.value.field == "both_bad" and "one tier" in refused.value.message
    assert not Judgement.objects.exists()


def test_a_both_bad_answer_is_stored_flagged_and_votes_a_tie_even_without_ties(project, annotator):
    project.allow_both_bad, project.allow_ties = True, False
    project.save()
    make_task(project)
    lease = claim(project, annotator)
    judgement = judgement_submit(assignment=lease, ranking=full_tie(lease), both_bad=True).judgement
    assert judgement.both_bad and judgement.tiers == full_tie(lease)
    assert list(PairVote.objects.values_list("winner", flat=True)) == [0]


def test_all_are_bad_in_a_ranking_is_a_tie_on_every_pair():
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=4, allow_both_bad=True)
    user = member(project, "ranker")
    make_task(project)
    lease = claim(project, user)
    judgement_submit(assignment=lease, ranking=full_tie(lease), both_bad=True)
    assert sorted(PairVote.objects.values_list("winner", flat=True)) == [0] * 6


def test_the_api_takes_and_returns_the_flag(project, annotator):
    project.allow_both_bad = True
    project.save()
    make_task(project)
    client = api(annotator)
    lease = client.post(f"{API}/projects/{project.pk}/claim/").json()["assignment"]
    url = f"{API}/assignments/{lease['id']}/submit/"
    one_tier = [sorted(lease["display_order"])]
    split = [[r] for r in lease["display_order"]]
    refused = client.post(url, {"ranking": split, "client_token": str(uuid.uuid4()), "both_bad": True}, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "both_bad"
    made = client.post(url, {"ranking": one_tier, "client_token": str(uuid.uuid4()), "both_bad": True}, format="json")
    assert made.status_code == 201 and made.json()["both_bad"] is True
    listed = client.get(f"{API}/projects/{project.pk}/judgements/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["both_bad"] for row in rows] == [True]


# --- the agreement report --------------------------------------------------------------------


def test_the_report_counts_both_bad_as_a_tie_and_on_its_own(project):
    project.allow_both_bad, project.allow_ties, project.annotations_per_task = True, True, 2
    project.save()
    first, second, third = (member(project, name) for name in ("ann", "bea", "cal"))
    for _ in range(4):
        make_task(project)
    # ann says "both are bad" on every task, bea ties them plainly, cal prefers the first shown.
    for user, both_bad in ((first, True), (second, False)):
        for _ in range(4):
            lease = claim(project, user)
            judgement_submit(assignment=lease, ranking=full_tie(lease), both_bad=both_bad)
    report = agreement_report(project=project, bootstrap=0)
    # For the pair statistics a both-bad answer is a tie: ann and bea agree on all four.
    assert report["pairwise"]["percent_agreement"]["value"] == 1.0
    assert report["verdicts"] == {
        "allow_both_bad": True,
        "both_bad": {"judgements": 4, "share": 0.5, "reason": None},
    }
    rows = {row["username"]: row["both_bad"] for row in report["annotators"]}
    assert rows == {"ann": {"n": 4, "share": 1.0}, "bea": {"n": 0, "share": 0.0}}
    assert "both are bad: 4 of 8 judgements (50.0%)" in render_table(report)
    assert third.judgements.count() == 0


def test_a_project_without_the_setting_or_answers_reports_zero(project):
    report = agreement_report(project=project, bootstrap=0)
    assert report["verdicts"]["both_bad"] == {"judgements": 0, "share": None, "reason": "the project has no judgements"}
    assert "both are bad" not in render_table(report)


def test_the_dashboard_shows_the_share_per_annotator(client, project, manager):
    project.allow_both_bad, project.annotations_per_task = True, 1
    project.save()
    user = member(project, "dee")
    for both_bad in (True, False, False, False):
        make_task(project)
        lease = claim(project, user)
        ranking = full_tie(lease) if both_bad else [[r] for r in lease.display_order]
        judgement_submit(assignment=lease, ranking=ranking, both_bad=both_bad)
    client.force_login(manager)
    page = client.get(f"/projects/{project.pk}/dashboard/").content.decode()
    assert "“Both are bad”: 1 of 4 judgements (25%)" in page
    assert '<td class="num both-bad" data-sort="0.25">1 <small class="muted">25%</small></td>' in page


def test_the_item_review_page_marks_both_bad_and_changed_answers(client, project, manager, annotator):
    from annotation.services import judgement_amend

    project.allow_both_bad = True
    project.save()
    task = make_task(project)
    lease = claim(project, annotator)
    judgement = judgement_submit(assignment=lease, ranking=[[r] for r in lease.display_order]).judgement
    client.force_login(manager)
    page = client.get(f"/projects/{project.pk}/tasks/{task.pk}/").content.decode()
    assert "both are bad</span>" not in page and ">changed</span>" not in page
    judgement_amend(judgement=judgement, ranking=full_tie(lease), both_bad=True)
    page = client.get(f"/projects/{project.pk}/tasks/{task.pk}/").content.decode()
    assert '<span class="tag bad">both are bad</span>' in page and ">changed</span>" in page
