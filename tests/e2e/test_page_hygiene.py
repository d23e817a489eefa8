"""What the browser's console shows on the project list and the API docs: nothing.

No 404 (the favicon included: browsers ask for /favicon.ico on every page), no CSP violation
(the docs page's own inline style included), no script error; and the docs page has the app's
header with a way back to the projects.
"""

from __future__ import annotations

from typing import Any

import pytest

from annotation.models import Membership, Role
from tests.e2e.conftest import UI
from tests.factories import ProjectFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

# Playwright's init scripts run before the page's own and are not subject to its CSP: this one
# keeps every violation the page reports, which the console messages may word differently.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


def watch(ui: UI) -> list[str]:
    """Every answer of 400 or more the page gets, and every CSP violation it reports, as lines."""
    failures: list[str] = []

    def on_response(response: Any) -> None:
        if response.status >= 400:
            failures.append(f"{response.status} {response.url}")

    ui.page.on("response", on_response)
    ui.page.context.add_init_script(RECORD_VIOLATIONS)
    return failures


def violations(ui: UI) -> list[str]:
    return ui.page.evaluate("window.__cspViolations")


def test_project_list_and_api_docs_have_a_favicon_no_violations_and_a_way_back(ui: UI) -> None:
    project = ProjectFactory(name="Helpful or harmless")
    manager = UserFactory(username="hygiene-manager")
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    failures = watch(ui)
    ui.login(manager.username)

    ui.goto("/")
    ui.page.wait_for_selector(f"text={project.name}")
    icon = ui.page.get_attribute("link[rel='icon']", "href")
    assert icon and icon.endswith(".svg"), icon
    answer = ui.page.request.get(ui.url(icon))
    assert answer.status == 200 and answer.headers["content-type"].startswith("image/svg+xml")
    # What a browser asks for when a page names no icon, or an old one asks for always.
    legacy = ui.page.request.get(ui.url("/favicon.ico"))
    assert legacy.status == 200 and legacy.headers["content-type"].startswith("image/svg+xml")
    assert legacy.body() == answer.body()
    assert violations(ui) == []
    ui.shot("projects")

    ui.page.click("header.topbar a:text-is('API')")
    ui.page.wait_for_url(ui.url("/api/v1/docs/"))
    # Swagger UI has drawn the schema: the title and the operations.
    ui.page.wait_for_selector(".swagger-ui .info .title")
    ui.page.wait_for_selector(".opblock-summary-path")
    assert "Arpad API" in ui.page.inner_text(".swagger-ui .info .title")
    ui.page.wait_for_timeout(300)  # late style injections report after the first paint
    ui.shot("api-docs")
    assert violations(ui) == []
    ui.assert_clean()
    assert failures == []
    assert ui.page.get_attribute("link[rel='icon']", "href") == icon

    # The app's header, with its user and a link back to the projects.
    assert ui.page.inner_text("header.topbar .who") == manager.username
    ui.page.click("header.topbar a.brand")
    ui.page.wait_for_url(ui.url("/"))
    ui.page.wait_for_selector(f"text={project.name}")
    assert violations(ui) == []
    ui.assert_clean()
    assert failures == []
