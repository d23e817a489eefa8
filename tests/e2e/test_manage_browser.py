"""A manager's session in a real Chromium: settings, imports with a real worker, tasks, review."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from annotation.models import ImportJob, Membership, Project, ProjectKind, Role, Task, TaskState
from annotation.services import assignment_claim_next, judgement_submit
from tests.e2e.conftest import UI
from tests.factories import ProjectFactory, UserFactory, make_task
from tests.frontend.test_markdown import XSS_PAYLOADS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MANAGER_PAGES = ["settings/", "members/", "imports/", "tasks/"]


def member(project: Any, username: str, role: str = Role.ANNOTATOR, **user_fields: Any) -> Any:
    user = UserFactory(username=username, **user_fields)
    Membership.objects.create(project=project, user=user, role=role)
    return user


def judge(project: Any, user: Any, task: Any, *, rationale: str = "", reverse: bool = False) -> list[list[int]]:
    Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.ANNOTATOR})
    claim = assignment_claim_next(project=project, annotator=user)
    assert claim is not None and claim.assignment.task_id == task.pk
    ids = sorted(claim.assignment.display_order, reverse=reverse)
    ranking = [[rid] for rid in ids]
    judgement_submit(assignment=claim.assignment, ranking=ranking, client_token=uuid.uuid4(), rationale=rationale)
    return ranking


def test_manager_creates_and_edits_a_project(ui: UI):
    UserFactory(username="boss", is_staff=True)
    ui.login("boss")
    ui.shot("project-list")
    ui.page.click("#new-project")
    ui.page.wait_for_selector("h1:has-text('New project')")
    ui.page.fill("#id_name", "Ranking of three")
    ui.page.select_option("#id_kind", "ranking")
    ui.page.fill("#id_responses_per_task", "3")
    ui.page.fill("#id_annotations_per_task", "2")
    ui.page.check("#id_allow_ties")
    ui.page.fill("#id_lease_seconds", "900")
    ui.page.fill("#id_guidelines", "Prefer the **more helpful** answer.")
    ui.shot("create-form")
    ui.page.click("#save")
    ui.page.wait_for_selector("h1:has-text('Imports')")
    ui.shot("created")
    project = Project.objects.get(name="Ranking of three")
    assert (project.kind, project.responses_per_task, project.annotations_per_task) == ("ranking", 3, 2)
    assert project.allow_ties and project.lease_seconds == 900
    assert Membership.objects.get(project=project, user__username="boss").role == Role.MANAGER

    # Once tasks exist, the kind cannot change: the page says why and saves nothing.
    make_task(project, k=3)
    ui.page.click("nav.subnav >> text=Settings")
    ui.page.wait_for_selector("h1:has-text('Project settings')")
    ui.page.select_option("#id_kind", "pairwise")
    ui.page.fill("#id_responses_per_task", "2")
    ui.page.click("#save")
    ui.page.wait_for_selector("#form-errors")
    assert "The kind cannot change" in ui.page.inner_text(".field.invalid")
    ui.shot("kind-refused")
    project.refresh_from_db()
    assert project.kind == ProjectKind.RANKING

    # Guidelines full of payloads: the preview is sanitized and inert, then saved.
    ui.page.select_option("#id_kind", "ranking")
    ui.page.fill("#id_responses_per_task", "3")
    guidelines = "# Rules\n\n" + "\n\n".join(XSS_PAYLOADS)
    ui.page.fill("#id_guidelines", guidelines)
    ui.page.click("#preview-button")
    ui.page.wait_for_selector("#guidelines-preview h1")
    ui.shot("guidelines-preview")
    project.refresh_from_db()
    assert project.guidelines == "Prefer the **more helpful** answer."  # a preview saves nothing
    ui.page.click("#save")
    ui.page.wait_for_selector(".flash >> text=Settings saved.")
    ui.shot("saved")
    project.refresh_from_db()
    assert project.guidelines == guidelines.replace("\n", "\r\n")
    ui.page.wait_for_timeout(300)  # time for anything a payload might have started
    ui.assert_clean()


def _upload(ui: UI, path: Path) -> None:
    ui.page.set_input_files("#id_file", str(path))
    ui.page.select_option("#id_format", "jsonl")
    ui.page.click("#upload")
    ui.page.wait_for_selector("#job")


def test_import_progress_result_and_line_numbered_errors(ui: UI, tmp_path: Path, request: pytest.FixtureRequest):
    project = ProjectFactory(name="Imported")
    member(project, "mia", Role.MANAGER)
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "responses": [f"yes {i}", f"no {i}"]}) + "\n" for i in range(40)
        )
    )
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        json.dumps({"prompt": "fine", "responses": ["a", "b"]})
        + "\n"
        + json.dumps({"prompt": "typo", "respones": ["a", "b"]})
        + "\n{not json\n"
    )
    ui.login("mia")
    ui.goto(f"/projects/{project.pk}/imports/")
    ui.shot("imports-empty")

    # No worker is running yet, so the page is certain to see the job waiting.
    _upload(ui, good)
    assert ui.page.get_attribute("#job", "data-state") == "queued"
    assert ui.page.inner_text("#job-state") == "Queued"
    assert ui.page.eval_on_selector("#job-progress", "el => el.value") == 0
    ui.shot("import-queued")

    wait_for = request.getfixturevalue("celery_worker_process")  # now the worker starts
    wait_for(lambda: ImportJob.objects.filter(state="succeeded").exists(), what="the import to finish")
    ui.page.wait_for_selector("#job[data-state='succeeded']", timeout=20_000)
    assert "Imported 40 prompt(s), 80 response(s), 40 task(s)" in ui.page.inner_text("#job-result")
    assert ui.page.eval_on_selector("#job-progress", "el => el.value") == 1
    job = ImportJob.objects.get()
    status_url = f"{ui.origin}/api/v1/projects/{project.pk}/jobs/import/{job.pk}/"
    assert status_url in ui.requests  # the page followed the job through the generic job API
    ui.shot("import-succeeded")
    assert Task.objects.filter(project=project).count() == 40

    _upload(ui, broken)
    ui.page.wait_for_selector("#job[data-state='failed']", timeout=30_000)
    ui.shot("import-failed")
    assert "Nothing was imported" in ui.page.inner_text("#job-result")
    rows = ui.page.eval_on_selector_all(
        "#job-errors tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
    )
    lines = {row[1] for row in rows}
    assert lines == {"2", "3"}, rows
    assert any("respones" in " ".join(row) for row in rows)
    assert Task.objects.filter(project=project).count() == 40  # the broken file added nothing
    assert ui.page.locator("#jobs tbody tr").count() == 2
    ui.assert_clean()


def test_task_browser_filters_and_item_review(ui: UI):
    project = ProjectFactory(name="Review me", annotations_per_task=2, allow_ties=True)
    member(project, "max", Role.MANAGER)
    done = make_task(project, priority=3)
    half = make_task(project, priority=2)
    fresh = [make_task(project) for _ in range(3)]
    Task.objects.filter(pk=done.pk).update(source="policy-r2", rl_round=2)
    payload_rationale = '<img src=x onerror=alert("rationale")> <script>alert(1)</script>'
    judge(project, UserFactory(username="ann"), done, rationale=payload_rationale)
    judge(project, UserFactory(username="bea"), done, reverse=True, rationale="Second is **clearer**")
    judge(project, UserFactory(username="cat"), half)
    prompt = done.prompt
    prompt.messages = [{"role": "user", "content": XSS_PAYLOADS[0]}, {"role": "assistant", "content": "Hi"}]
    prompt.save()
    first = done.responses.order_by("task_links__position").first()
    first.text = "\n\n".join(XSS_PAYLOADS)
    first.save()

    ui.login("max")
    ui.page.click(f"a[href='/projects/{project.pk}/tasks/']")
    ui.page.wait_for_selector("#tasks")
    ui.shot("tasks-all")
    assert ui.page.locator("#tasks tbody tr").count() == 5

    ui.page.select_option("#id_state", "complete")
    ui.page.click("#apply-filters")
    ui.page.wait_for_url("**state=complete**")
    ui.shot("tasks-complete")
    assert ui.page.eval_on_selector_all("#tasks tbody tr", "rs => rs.map(r => r.dataset.task)") == [str(done.pk)]

    ui.page.select_option("#id_state", "")
    ui.page.fill("#id_judgements_max", "1")
    ui.page.click("#apply-filters")
    ui.page.wait_for_url("**judgements_max=1**")
    shown = ui.page.eval_on_selector_all("#tasks tbody tr", "rs => rs.map(r => Number(r.dataset.task))")
    assert sorted(shown) == sorted([half.pk] + [t.pk for t in fresh])
    ui.page.fill("#id_judgements_max", "")
    ui.page.fill("#id_rl_round", "2")
    ui.page.click("#apply-filters")
    ui.page.wait_for_url("**rl_round=2**")
    ui.shot("tasks-round-2")
    ui.page.click(f"#tasks a[href='/projects/{project.pk}/tasks/{done.pk}/']")

    ui.page.wait_for_selector("#judgements")
    ui.shot("item-review")
    assert Task.objects.get(pk=done.pk).state == TaskState.COMPLETE
    table = ui.page.inner_text("#judgements")
    assert "ann" in table and "bea" in table
    assert "A > B" in table and "B > A" in table
    assert 'onerror=alert("rationale")' in table  # shown as text
    assert "Second is **clearer**" in table  # rationale is plain text, not markdown
    pairs = ui.page.inner_text("#pairs")
    assert "A vs B" in pairs and "split" in pairs
    assert ui.page.locator(".turn").count() == 2
    ui.page.wait_for_timeout(300)
    ui.assert_clean()


def test_annotators_get_403_on_every_manager_page_and_outsiders_404_on_item_pages(ui: UI):
    project = ProjectFactory(name="Guarded")
    task = make_task(project)
    member(project, "anna")
    other = ProjectFactory(name="Elsewhere")
    member(other, "olaf")

    ui.login("anna")
    for page in [*MANAGER_PAGES, f"tasks/{task.pk}/"]:
        response = ui.goto(f"/projects/{project.pk}/{page}")
        assert response is not None and response.status == 403, page
        assert "Not allowed" in ui.page.inner_text("h1")
    ui.shot("annotator-403")
    body = ui.goto("/") and ui.page.inner_text("main")
    assert "Settings" not in body and "New project" not in body
    assert ui.page.locator(f"a[href='/projects/{project.pk}/tasks/']").count() == 0
    ui.page.context.clear_cookies()

    ui.login("olaf")
    response = ui.goto(f"/projects/{project.pk}/tasks/{task.pk}/")
    assert response is not None and response.status == 404
    ui.shot("outsider-404")
    assert "Not found" in ui.page.inner_text("h1")
    assert ui.dialogs == [] and ui.foreign_requests() == []
