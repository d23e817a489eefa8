"""Reading tasks and judgements: managers see the project, annotators their own work."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from annotation import services
from annotation.importers import import_file
from annotation.models import Membership, Role, Task, TaskState
from tests.annotation.blind import REAL_IMPORTS, assert_blind, origin_values
from tests.factories import ProjectFactory, UserFactory, make_task

API = "/api/v1"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def judge(project, user):
    """Claim the next task for ``user`` and submit the display order as the ranking."""
    assignment = services.assignment_claim_next(project=project, annotator=user).assignment
    return services.judgement_submit(assignment=assignment, ranking=[[r] for r in assignment.display_order]).judgement


@pytest.fixture
def colleague(project):
    user = UserFactory(username="colleague")
    Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    return user


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.mark.django_db
class TestTaskList:
    def test_managers_see_every_task_annotators_only_theirs(self, project, manager, annotator):
        tasks = [make_task(project) for _ in range(3)]
        judge(project, annotator)
        url = f"{API}/projects/{project.pk}/tasks/"
        assert ids(client_for(manager).get(url)) == [t.pk for t in tasks]
        assert ids(client_for(annotator).get(url)) == [tasks[0].pk]

    def test_filters(self, project, manager, annotator, colleague):
        first, second, third = (make_task(project, required=2) for _ in range(3))
        Task.objects.filter(pk=second.pk).update(source="hh-rlhf", rl_round=2)
        judge(project, annotator)
        judge(project, colleague)  # completes `first`
        url = f"{API}/projects/{project.pk}/tasks/"
        client = client_for(manager)
        assert ids(client.get(url, {"state": "complete"})) == [first.pk]
        assert ids(client.get(url, {"state": "open"})) == [second.pk, third.pk]
        assert ids(client.get(url, {"source": "hh-rlhf"})) == [second.pk]
        assert ids(client.get(url, {"rl_round": 2})) == [second.pk]
        assert ids(client.get(url, {"min_judgements": 1})) == [first.pk]
        assert ids(client.get(url, {"max_judgements": 0})) == [second.pk, third.pk]
        assert ids(client.get(url, {"min_judgements": 1, "max_judgements": 1})) == []

    @pytest.mark.parametrize("params", [{"state": "done"}, {"min_judgements": "many"}, {"rl_round": -1}])
    def test_bad_filters_are_400(self, project, manager, params):
        response = client_for(manager).get(f"{API}/projects/{project.pk}/tasks/", params)
        assert response.status_code == 400
        assert set(response.json()) == set(params)


@pytest.mark.django_db
class TestTaskDetail:
    def test_annotator_sees_prompt_and_responses_blind(self, project, annotator):
        task = make_task(project)
        Task.objects.filter(pk=task.pk).update(is_gold=True, gold_tiers=[[1], [2]])
        judge(project, annotator)
        body = client_for(annotator).get(f"{API}/projects/{project.pk}/tasks/{task.pk}/").json()
        assert body["prompt"]["messages"] == task.prompt.messages
        assert [r["id"] for r in body["responses"]] == task.response_ids()
        assert set(body["responses"][0]) == {"id", "text"}  # no model names
        assert not {"is_gold", "gold_tiers", "judgements", "metadata", "source"} & set(body)
        assert set(body["prompt"]) == {"id", "messages"}  # no external id

    def test_annotator_cannot_open_a_task_they_were_not_given(self, project, annotator):
        task = make_task(project)
        assert client_for(annotator).get(f"{API}/projects/{project.pk}/tasks/{task.pk}/").status_code == 404

    def test_manager_sees_origin_gold_and_judgements(self, project, manager, annotator):
        task = make_task(project)
        task.responses.update(source="model-a")
        judgement = judge(project, annotator)
        body = client_for(manager).get(f"{API}/projects/{project.pk}/tasks/{task.pk}/").json()
        assert body["is_gold"] is False and body["responses"][0]["source"] == "model-a"
        assert [j["id"] for j in body["judgements"]] == [judgement.pk]
        assert body["judgements"][0]["annotator"] == "annotator"

    def test_a_task_of_another_project_is_404_even_for_its_manager(self, project, manager, other_project):
        foreign = make_task(other_project)
        assert client_for(manager).get(f"{API}/projects/{project.pk}/tasks/{foreign.pk}/").status_code == 404


@pytest.mark.django_db
class TestJudgementList:
    def test_managers_see_all_annotators_their_own(self, project, manager, annotator, colleague):
        make_task(project)
        mine, theirs = judge(project, annotator), judge(project, colleague)
        url = f"{API}/projects/{project.pk}/judgements/"
        assert ids(client_for(manager).get(url)) == [mine.pk, theirs.pk]
        assert ids(client_for(annotator).get(url)) == [mine.pk]

    def test_filters(self, project, manager, annotator, colleague):
        make_task(project)
        make_task(project)
        first = judge(project, annotator)
        second = judge(project, annotator)
        third = judge(project, colleague)
        url = f"{API}/projects/{project.pk}/judgements/"
        client = client_for(manager)
        assert ids(client.get(url, {"annotator": colleague.pk})) == [third.pk]
        assert ids(client.get(url, {"task": second.task_id})) == [second.pk]
        assert ids(client.get(url, {"annotator": annotator.pk, "task": first.task_id})) == [first.pk]
        assert client.get(url, {"task": "x"}).status_code == 400

    def test_an_annotator_cannot_filter_their_way_to_others(self, project, annotator, colleague):
        make_task(project)
        judge(project, colleague)
        url = f"{API}/projects/{project.pk}/judgements/"
        assert ids(client_for(annotator).get(url, {"annotator": colleague.pk})) == []

    def test_judgements_of_other_projects_are_not_listed(self, project, manager, other_project, outsider):
        make_task(other_project)
        judge(other_project, outsider)
        assert ids(client_for(manager).get(f"{API}/projects/{project.pk}/judgements/")) == []
        assert Task.objects.get(project=other_project).state == TaskState.OPEN


# --- blind to the reference, on the real data ---------------------------------------------------


@pytest.mark.realdata
@pytest.mark.django_db
@pytest.mark.parametrize(("fmt", "settings", "options", "file"), REAL_IMPORTS, ids=[r[0] for r in REAL_IMPORTS])
def test_an_annotator_sees_no_external_id_or_source(shared_data, fmt, settings, options, file):
    project = ProjectFactory(**settings)
    annotator = UserFactory(username="annotator")
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    import_file(project=project, path=shared_data / file, format=fmt, options=options)
    origin = origin_values(project)
    assert len(origin) > 10
    client = client_for(annotator)

    claimed = client.post(f"{API}/projects/{project.pk}/claim/")
    assert claimed.status_code == 200
    assert_blind(claimed.json(), origin)
    task_id = claimed.json()["assignment"]["task_id"]
    listed = client.get(f"{API}/projects/{project.pk}/tasks/")
    assert [row["id"] for row in listed.json()["results"]] == [task_id]
    assert_blind(listed.json(), origin)
    assert_blind(client.get(f"{API}/projects/{project.pk}/tasks/{task_id}/").json(), origin)
    assert client.get(f"{API}/projects/{project.pk}/tasks/", {"source": fmt}).status_code == 400

    # Managers keep seeing where it all came from.
    manager = UserFactory(username="manager")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    detail = client_for(manager).get(f"{API}/projects/{project.pk}/tasks/{task_id}/").json()
    task = Task.objects.select_related("prompt").get(pk=task_id)
    assert detail["prompt"]["external_id"] == task.prompt.external_id and detail["source"] == task.source
    assert {r["source"] for r in detail["responses"]} <= origin
