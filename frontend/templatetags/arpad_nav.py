"""The tab bar shared by every manager page of a project.

One definition of the project's pages and their order; the current tab comes from the
resolved URL name, so views need not pass anything but the project.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

register = template.Library()

# (tab label, URL name of the tab, URL names that count as that tab)
PROJECT_TABS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("Annotate", "annotate", frozenset({"annotate"})),
    ("Tasks", "task-browser", frozenset({"task-browser", "item-review"})),
    ("Agreement", "project-dashboard", frozenset({"project-dashboard"})),
    ("Exports", "project-exports", frozenset({"project-exports"})),
    ("Reward models", "rewardmodel-list", frozenset({"rewardmodel-list", "rewardmodel-run", "rewardmodel-compare"})),
    ("Policies", "policy-list", frozenset({"policy-list", "policy-register", "policy-reference", "policy-round"})),
    ("Loop", "loop", frozenset({"loop", "loop-cycle", "loop-cycle-cancel", "loop-rule"})),
    ("Imports", "project-imports", frozenset({"project-imports"})),
    ("Jobs", "project-jobs", frozenset({"project-jobs"})),
    ("Members", "project-members", frozenset({"project-members"})),
    ("Settings", "project-edit", frozenset({"project-edit"})),
)


@register.inclusion_tag("frontend/_project_nav.html", takes_context=True)
def project_nav(context: template.Context, project: Any) -> dict[str, Any]:
    request = context.get("request")
    match = getattr(request, "resolver_match", None)
    current = match.url_name if match else None
    tabs = [
        {"label": label, "url": reverse(name, args=[project.pk]), "current": current in names}
        for label, name, names in PROJECT_TABS
    ]
    return {"project": project, "tabs": tabs}
