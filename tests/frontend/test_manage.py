"""Manager pages through Django's test client: permissions, forms, imports, tasks, review.

The browser flows (progress polling against a real worker, what a user sees) are in
tests/e2e/test_manage_browser.py.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotation.import_jobs import import_job_run
from annotation.importers import import_file
from annotation.models import (
    ImportJob,
    ImportJobState,
    Judgement,
    Membership,
    Project,
    ProjectKind,
    Role,
    Task,
    TaskState,
)
from annotation.services import assignment_claim_next, judgement_submit
from tests.factories import UserFactory, make_task

pytestmark = pytest.mark.django_db

PAGES = ["settings/", "members/", "imports/", "tasks/"]


def _urls(project_id: int, task_id: int) -> list[str]:
    return [f"/projects/{project_id}/{page}" for page in PAGES] + [f"/projects/{project_id}/tasks/{task_id}/"]


@pytest.fixture
def task(project):
    return make_task(project)


@pytest.fixture
def mclient(client, manager):
    client.force_login(manager)
    return client


def _judge(project, user, task, tiers_from_order, **kwargs):
    Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.ANNOTATOR})
    claim = assignment_claim_next(project=project, annotator=user)
    assert claim.assignment.task_id == task.pk
    order = claim.assignment.display_order
    ranking = tiers_from_order(sorted(order))
    judgement_submit(assignment=claim.assignment, ranking=ranking, client_token=uuid.uuid4(), **kwargs)
    return ranking


# --- permissions ----------------------------------------------------------------------------


def test_every_manager_page_needs_login(client, project, task):
    for url in _urls(project.pk, task.pk) + ["/projects/new/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_annotators_get_403_and_outsiders_404_on_every_manager_page(client, project, task, annotator, outsider):
    client.force_login(annotator)
    for url in _urls(project.pk, task.pk):
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"name": "x", "action": "add", "username": "annotator"}).status_code == 403, url
    client.force_login(outsider)
    for url in _urls(project.pk, task.pk):
        assert client.get(url).status_code == 404, url
        assert client.post(url, {"name": "x"}).status_code == 404, url
    assert client.get("/projects/999999/tasks/").status_code == 404


def test_managers_open_every_page(mclient, project, task):
    for url in _urls(project.pk, task.pk):
        assert mclient.get(url).status_code == 200, url


def test_a_task_of_another_project_is_404_on_the_managers_item_page(mclient, project, other_project):
    foreign = make_task(other_project)
    assert mclient.get(f"/projects/{project.pk}/tasks/{foreign.pk}/").status_code == 404


def test_manager_pages_post_only_with_the_csrf_token(project, manager):
    client = Client(enforce_csrf_checks=True)
    client.force_login(manager)
    response = client.post(f"/projects/{project.pk}/settings/", {"name": "Renamed"})
    assert response.status_code == 403
    project.refresh_from_db()
    assert project.name != "Renamed"


def test_project_list_links_managers_to_their_pages(client, project, manager, annotator):
    client.force_login(manager)
    body = client.get("/").content.decode()
    for page in PAGES:
        assert f'href="/projects/{project.pk}/{page}"' in body
    client.force_login(annotator)
    body = client.get("/").content.decode()
    assert f'href="/projects/{project.pk}/settings/"' not in body
    assert "/projects/new/" not in body


# --- create and edit ------------------------------------------------------------------------


def _settings(**overrides):
    data = {
        "name": "Harmlessness",
        "kind": ProjectKind.RANKING,
        "responses_per_task": 4,
        "annotations_per_task": 3,
        "allow_ties": "on",
        "allow_skip": "on",
        "lease_seconds": 600,
        "agreement_threshold": 0.6,
        "guidelines": "# Rules\n\nPrefer **honest** answers.",
    }
    data.update(overrides)
    return data


def test_creating_a_project_needs_the_apis_permission_and_makes_the_creator_manager(client, db):
    user = UserFactory(username="creator")
    client.force_login(user)
    assert client.get("/projects/new/").status_code == 403
    assert client.post("/projects/new/", _settings()).status_code == 403
    assert not Project.objects.filter(name="Harmlessness").exists()

    user.user_permissions.add(Permission.objects.get(codename="add_project"))
    response = client.post("/projects/new/", _settings())
    project = Project.objects.get(name="Harmlessness")
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/imports/"
    assert (project.kind, project.responses_per_task, project.lease_seconds) == ("ranking", 4, 600)
    assert project.allow_ties and project.created_by == user
    assert Membership.objects.get(project=project, user=user).role == Role.MANAGER


def test_create_refuses_bad_settings_with_a_message_and_creates_nothing(client, db):
    client.force_login(UserFactory(username="boss", is_staff=True))
    response = client.post("/projects/new/", _settings(kind="pairwise", responses_per_task=3, lease_seconds=5))
    assert response.status_code == 200
    body = response.content.decode()
    assert "A pairwise project has exactly 2 responses per task." in body
    assert "Ensure this value is greater than or equal to 30." in body
    assert not Project.objects.filter(name="Harmlessness").exists()


def test_edit_saves_settings(mclient, project):
    response = mclient.post(
        f"/projects/{project.pk}/settings/",
        _settings(kind="pairwise", responses_per_task=2, annotations_per_task=5, allow_ties=""),
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.name, project.annotations_per_task, project.allow_ties) == ("Harmlessness", 5, False)
    assert project.agreement_threshold == 0.6


def test_edit_refuses_kind_and_k_changes_that_contradict_existing_tasks(mclient, db):
    project = Project.objects.create(name="Ranks", kind=ProjectKind.RANKING, responses_per_task=4)
    Membership.objects.create(project=project, user=Membership.objects.get(role=Role.MANAGER).user, role=Role.MANAGER)
    make_task(project, k=4)
    url = f"/projects/{project.pk}/settings/"

    response = mclient.post(url, _settings(kind="pairwise", responses_per_task=2, name="Changed"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "The kind cannot change: the project already has 1 task(s)" in body
    assert "Nothing was saved" in body

    response = mclient.post(url, _settings(responses_per_task=3, name="Changed"))
    assert "K cannot go below 4: the project already has tasks with 4 responses." in response.content.decode()
    project.refresh_from_db()
    assert (project.name, project.kind, project.responses_per_task) == ("Ranks", "ranking", 4)

    # Raising K is harmless: new tasks may be wider.
    assert mclient.post(url, _settings(responses_per_task=6, name="Changed")).status_code == 302
    project.refresh_from_db()
    assert (project.name, project.responses_per_task) == ("Changed", 6)


def test_guidelines_preview_is_sanitized_and_saves_nothing(mclient, project):
    payload = "<script>alert(1)</script> [click](javascript:alert(2)) <img src=x onerror=alert(3)> **bold**"
    response = mclient.post(
        f"/projects/{project.pk}/settings/",
        _settings(kind="pairwise", responses_per_task=2, guidelines=payload, preview="1"),
    )
    body = response.content.decode()
    preview = re.search(r'<div class="md" id="guidelines-preview">(.*?)</div>', body, re.S).group(1)
    assert "<strong>bold</strong>" in preview
    assert "<script" not in preview and "onerror=" not in preview.replace("onerror=alert(3)&gt;", "")
    assert 'href="javascript' not in preview  # the refused link stays as inert text
    assert "&lt;script&gt;" in preview
    project.refresh_from_db()
    assert project.guidelines == "" and project.name != "Harmlessness"


# --- members --------------------------------------------------------------------------------


def test_members_add_change_role_and_remove(mclient, project, annotator, manager):
    UserFactory(username="newcomer")
    url = f"/projects/{project.pk}/members/"
    body = mclient.get(url).content.decode()
    assert 'data-username="annotator"' in body and 'data-username="manager"' in body

    assert mclient.post(url, {"action": "add", "username": "newcomer", "role": "annotator"}).status_code == 302
    newcomer = Membership.objects.get(project=project, user__username="newcomer")
    assert newcomer.role == Role.ANNOTATOR

    response = mclient.post(url, {"action": "add", "username": "nobody", "role": "annotator"})
    assert "No active user is called “nobody”." in response.content.decode()
    response = mclient.post(url, {"action": "add", "username": "annotator", "role": "manager"})
    assert "annotator is already a member of this project." in response.content.decode()

    mclient.post(url, {"action": "role", "user_id": newcomer.user_id, "role": "manager"})
    assert Membership.objects.get(pk=newcomer.pk).role == Role.MANAGER
    mclient.post(url, {"action": "remove", "user_id": annotator.pk})
    assert not Membership.objects.filter(project=project, user=annotator).exists()


def test_import_accounts_are_marked_on_the_members_page(mclient, project, annotator, tmp_path):
    path = tmp_path / "judged.jsonl"
    row = {"prompt": "Q", "responses": ["a", "b"], "judgements": [{"annotator": "labeler", "ranking": [[0], [1]]}]}
    path.write_text(json.dumps(row) + "\n")
    import_file(project=project, path=path, format="jsonl")
    rows = re.findall(
        r'<tr data-username="([^"]+)">\s*<td>(.*?)</td>',
        mclient.get(f"/projects/{project.pk}/members/").content.decode(),
    )
    marked = {name: "import account, cannot log in" in cell for name, cell in rows}
    assert marked == {"manager": False, "annotator": False, "labeler": True}


def test_the_last_manager_cannot_be_demoted_or_removed(mclient, project, manager):
    url = f"/projects/{project.pk}/members/"
    response = mclient.post(url, {"action": "role", "user_id": manager.pk, "role": "annotator"}, follow=True)
    assert "A project must keep at least one manager" in response.content.decode()
    response = mclient.post(url, {"action": "remove", "user_id": manager.pk}, follow=True)
    assert "A project must keep at least one manager" in response.content.decode()
    assert Membership.objects.get(project=project, user=manager).role == Role.MANAGER


def test_members_of_other_projects_cannot_be_changed_through_this_page(mclient, project, outsider, other_project):
    url = f"/projects/{project.pk}/members/"
    response = mclient.post(url, {"action": "remove", "user_id": outsider.pk}, follow=True)
    assert "That user is not a member of this project." in response.content.decode()
    assert Membership.objects.filter(project=other_project, user=outsider).exists()


# --- imports --------------------------------------------------------------------------------


def _jsonl(*records) -> bytes:
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


def test_upload_queues_a_job_and_the_page_shows_its_result(mclient, project, django_capture_on_commit_callbacks):
    data = _jsonl(
        {"prompt": "Say hi", "responses": ["hi", "hello"]},
        {"prompt": "Say bye", "responses": ["bye", "ciao"]},
    )
    url = f"/projects/{project.pk}/imports/"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = mclient.post(
            url, {"file": SimpleUploadedFile("two.jsonl", data), "format": "jsonl", "options": "{}"}
        )
    job = ImportJob.objects.get(project=project)
    assert response.status_code == 302 and response["Location"] == f"{url}?job={job.pk}"
    assert job.state == ImportJobState.QUEUED and len(callbacks) == 1  # sent to the worker after commit

    body = mclient.get(f"{url}?job={job.pk}").content.decode()
    # The shared job component follows the job, and offers to cancel it while it is live.
    assert f'data-job-url="/api/v1/projects/{project.pk}/jobs/import/{job.pk}/" data-state="queued"' in body
    assert 'id="job-cancel"' in body

    import_job_run(job_id=job.pk)  # what the worker does with the message
    body = mclient.get(f"{url}?job={job.pk}").content.decode()
    assert "Imported 2 prompt(s), 4 response(s), 2 task(s)" in body
    job.refresh_from_db()
    assert f"shuffled with seed <code>{job.summary['shuffle_seed']}</code>" in body
    assert 'data-state="succeeded"' in body and 'id="job-cancel"' not in body  # finished: nothing to follow
    assert Task.objects.filter(project=project).count() == 2


def test_a_broken_file_shows_line_numbered_errors_and_imports_nothing(mclient, project):
    data = _jsonl({"prompt": "ok", "responses": ["a", "b"]}) + b'{"prompt": "x", "respones": ["a", "b"]}\n{not json\n'
    url = f"/projects/{project.pk}/imports/"
    mclient.post(url, {"file": SimpleUploadedFile("broken.jsonl", data), "format": "jsonl", "options": "{}"})
    job = ImportJob.objects.get(project=project)
    import_job_run(job_id=job.pk)
    body = mclient.get(f"{url}?job={job.pk}").content.decode()
    assert "Nothing was imported" in body
    rows = re.findall(r"<tr><td>([^<]*)</td><td class=\"num\">(\d+)</td>", body)
    assert {line for _, line in rows} == {"2", "3"}
    assert "respones" in body
    assert not Task.objects.filter(project=project).exists()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"format": "jsonl", "options": "{}"}, "file: No file was submitted."),
        ({"format": "csv", "options": "{}", "file": True}, 'format: "csv" is not a valid choice.'),
        ({"format": "jsonl", "options": "{oops", "file": True}, "options: Not valid JSON"),
        (
            {"format": "mt-bench", "options": '{"questions": "/etc/passwd"}', "file": True},
            "cannot be set through the API",
        ),
    ],
)
def test_upload_errors_are_shown_and_nothing_is_queued(mclient, project, form, message):
    if form.pop("file", None):
        form["file"] = SimpleUploadedFile("x.jsonl", _jsonl({"prompt": "p", "responses": ["a", "b"]}))
    response = mclient.post(f"/projects/{project.pk}/imports/", form)
    assert response.status_code == 200
    assert message in response.content.decode().replace("&quot;", '"')
    assert not ImportJob.objects.exists()


def test_import_page_lists_only_this_projects_jobs(mclient, project, other_project, manager):
    ImportJob.objects.create(project=other_project, format="jsonl", file_name="secret.jsonl", file_path="/x")
    mine = ImportJob.objects.create(project=project, format="jsonl", file_name="mine.jsonl", file_path="/y")
    body = mclient.get(f"/projects/{project.pk}/imports/").content.decode()
    assert "mine.jsonl" in body and "secret.jsonl" not in body
    other = ImportJob.objects.get(file_name="secret.jsonl")
    assert mclient.get(f"/projects/{project.pk}/imports/?job={other.pk}").status_code == 404
    assert mclient.get(f"/projects/{project.pk}/imports/?job={mine.pk}").status_code == 200


# --- task browser ---------------------------------------------------------------------------


def _listed(client, project, query: str = "") -> list[int]:
    body = client.get(f"/projects/{project.pk}/tasks/?{query}").content.decode()
    return [int(x) for x in re.findall(r'<tr data-task="(\d+)">', body)]


def test_task_browser_filters(mclient, project, annotator):
    a = make_task(project, required=1)
    b = make_task(project)
    c = make_task(project)
    Task.objects.filter(pk=a.pk).update(source="policy-v1", rl_round=1)
    Task.objects.filter(pk=b.pk).update(source="policy-v2", rl_round=2)
    _judge(project, annotator, a, lambda ids: [[i] for i in ids])  # a: complete, 1 judgement

    assert sorted(_listed(mclient, project)) == sorted([a.pk, b.pk, c.pk])
    assert _listed(mclient, project, "state=complete") == [a.pk]
    assert sorted(_listed(mclient, project, "state=open")) == sorted([b.pk, c.pk])
    assert _listed(mclient, project, "source=policy-v2") == [b.pk]
    assert _listed(mclient, project, "rl_round=1") == [a.pk]
    assert _listed(mclient, project, "judgements=1") == [a.pk]
    assert sorted(_listed(mclient, project, "judgements_max=0")) == sorted([b.pk, c.pk])
    assert _listed(mclient, project, "judgements_min=1&judgements_max=3") == [a.pk]
    response = mclient.get(f"/projects/{project.pk}/tasks/?judgements_min=3&judgements_max=1")
    assert "The maximum is below the minimum." in response.content.decode()
    assert _listed(mclient, project, "judgements_min=3&judgements_max=1") == []
    response = mclient.get(f"/projects/{project.pk}/tasks/?state=bogus")
    assert "Select a valid choice." in response.content.decode()


def test_task_browser_paginates_and_keeps_the_filters(mclient, project):
    for _ in range(53):
        make_task(project)
    assert len(_listed(mclient, project, "state=open")) == 50
    body = mclient.get(f"/projects/{project.pk}/tasks/?state=open").content.decode()
    assert "Page 1 of 2" in body and 'href="?state=open&amp;page=2"' in body
    assert len(_listed(mclient, project, "state=open&page=2")) == 3


def _prompted(project, messages, responses=("plain answer", "other answer")) -> Task:
    task = make_task(project)
    task.prompt.messages = messages
    task.prompt.save(update_fields=["messages"])
    for link, text in zip(task.task_responses.order_by("position"), responses, strict=False):
        link.response.text = text
        link.response.save(update_fields=["text"])
    return task


def test_task_browser_searches_prompt_and_response_text(mclient, project, django_assert_max_num_queries):
    eye = _prompted(project, [{"role": "user", "content": "Tips for eye strain?\n1. The 20/20/20 rule"}])
    multi = _prompted(
        project,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is the Café de Flore?"},
            {"role": "assistant", "content": "In Paris."},
            {"role": "user", "content": "And its opening hours?"},
        ],
    )
    answered = _prompted(project, [{"role": "user", "content": "Name a colour."}], ("Ultramarine BLUE", "red"))
    wild = _prompted(project, [{"role": "user", "content": "What does 100% mean?"}], ("a_b", "c"))
    Task.objects.filter(pk=answered.pk).update(state=TaskState.RETIRED)

    # Case-insensitive substrings of the prompt (any message, line breaks included) and of responses.
    assert _listed(mclient, project, "q=EYE+STRAIN") == [eye.pk]
    assert _listed(mclient, project, "q=20%2F20%2F20") == [eye.pk]
    assert _listed(mclient, project, "q=be+brief") == [multi.pk]  # a system message
    assert _listed(mclient, project, "q=in+paris") == [multi.pk]  # an earlier assistant turn
    assert _listed(mclient, project, "q=caf%C3%A9+de") == [multi.pk]  # non-ASCII, stored escaped on SQLite
    assert _listed(mclient, project, "q=ultramarine+blue") == [answered.pk]
    # The JSON's keys are not text: "role", "content" and "user" match no task.
    for word in ("role", "content", "user", "assistant"):
        assert _listed(mclient, project, f"q={word}") == [], word
    # LIKE wildcards are literal characters.
    assert _listed(mclient, project, "q=100%25") == [wild.pk]
    assert _listed(mclient, project, "q=a_b") == [wild.pk]
    assert _listed(mclient, project, "q=%25") == [wild.pk]
    assert _listed(mclient, project, "q=_") == [wild.pk]
    # Combined with the other filters.
    assert _listed(mclient, project, "q=blue&state=open") == []
    assert _listed(mclient, project, "q=blue&state=retired") == [answered.pk]
    assert _listed(mclient, project, "q=") == sorted([eye.pk, multi.pk, answered.pk, wild.pk])
    # The search is part of the page's statements: a count and the page, whatever the text.
    with django_assert_max_num_queries(12) as searched:
        mclient.get(f"/projects/{project.pk}/tasks/?q=paris&state=open")
    with django_assert_max_num_queries(12) as unsearched:
        mclient.get(f"/projects/{project.pk}/tasks/?state=open")
    assert len(searched.captured_queries) == len(unsearched.captured_queries)
    response = mclient.get(f"/projects/{project.pk}/tasks/?q=" + "x" * 201)
    assert "Text: Ensure this value has at most 200 characters" in response.content.decode()


def test_task_browser_search_is_kept_in_the_pages_and_escaped(mclient, project):
    for n in range(53):
        _prompted(project, [{"role": "user", "content": f'<b>bold</b> & "quoted" question {n}'}])
    make_task(project)  # one that does not match
    query = "q=%3Cb%3Ebold%3C%2Fb%3E+%26+%22quoted%22"
    body = mclient.get(f"/projects/{project.pk}/tasks/?{query}").content.decode()
    assert "53 tasks match the filters." in body
    assert 'href="?q=%3Cb%3Ebold%3C%2Fb%3E+%26+%22quoted%22&amp;page=2"' in body
    assert 'value="&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;"' in body
    assert "<b>bold</b>" not in body
    assert len(_listed(mclient, project, query + "&page=2")) == 3


# --- item review ----------------------------------------------------------------------------


def test_item_review_shows_every_judgement_with_tiers_votes_and_leases(mclient, project, db):
    project.kind, project.responses_per_task, project.allow_ties = ProjectKind.RANKING, 3, True
    project.save()
    task = make_task(project, k=3)
    alice, bob, carol = (UserFactory(username=n) for n in ("alice", "bob", "carol"))
    # Responses in position order are A, B, C (make_task creates them in that order).
    _judge(
        project, alice, task, lambda ids: [[ids[1]], [ids[0], ids[2]]], rationale="B is <b>clearer</b>", confidence=4
    )
    _judge(project, bob, task, lambda ids: [[ids[0]], [ids[1]], [ids[2]]])
    Membership.objects.create(project=project, user=carol, role=Role.ANNOTATOR)
    assignment_claim_next(project=project, annotator=carol)  # holding a lease

    body = mclient.get(f"/projects/{project.pk}/tasks/{task.pk}/").content.decode()
    judgements = body[body.index('id="judgements"') : body.index('id="pairs-heading"')]
    assert judgements.index("alice") < judgements.index("bob")
    text = re.sub(r"<[^>]+>", "", judgements)
    assert "B &gt; A = C" in text and "A &gt; B &gt; C" in text
    assert "B is &lt;b&gt;clearer&lt;/b&gt;" in judgements  # rationale escaped
    pairs = re.sub(r"<[^>]+>", "", body[body.index('id="pairs"') : body.index('id="leases-heading"')])
    # A vs B: alice prefers B, bob prefers A -> split; A vs C: tie + A; B vs C: B twice.
    assert re.search(r"A vs B\s*1\s*1\s*0\s*split", pairs)
    assert re.search(r"A vs C\s*1\s*0\s*1\s*split", pairs)
    assert re.search(r"B vs C\s*2\s*0\s*0\s*B preferred", pairs)
    leases = body[body.index('id="assignments"') :]
    assert "carol" in leases and "holding" in leases
    assert Judgement.objects.filter(task=task).count() == 2
    assert Task.objects.get(pk=task.pk).state == TaskState.OPEN


def test_item_review_renders_untrusted_text_inert(mclient, project):
    task = make_task(project)
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>[x](javascript:alert(3))"
    task.prompt.messages = [{"role": "user", "content": payload}]
    task.prompt.save()
    first = task.responses.order_by("task_links__position").first()
    first.text = payload
    first.save()
    body = mclient.get(f"/projects/{project.pk}/tasks/{task.pk}/").content.decode()
    assert "<script>alert" not in body and "<img" not in body and 'href="javascript' not in body
    assert body.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2


def test_a_manager_who_steps_down_is_sent_to_the_project_list(mclient, project, manager):
    other = UserFactory(username="successor")
    Membership.objects.create(project=project, user=other, role=Role.MANAGER)
    response = mclient.post(
        f"/projects/{project.pk}/members/", {"action": "role", "user_id": manager.pk, "role": "annotator"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert Membership.objects.get(project=project, user=manager).role == Role.ANNOTATOR
    assert mclient.get(f"/projects/{project.pk}/members/").status_code == 403
