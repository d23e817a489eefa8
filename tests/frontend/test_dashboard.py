"""The agreement dashboard, the export page and their JSON endpoints: permissions and content."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from annotation.aggregate import MajorityConfig
from annotation.agreement_data import project_pair_votes
from annotation.models import Membership, ProjectKind, Role
from annotation.preview import survival_curves
from exports.models import ExportSnapshot, ExportState
from exports.services import export_snapshot_run
from tests.annotation.test_trends import annotate
from tests.factories import ProjectFactory, UserFactory, make_task

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("error::RuntimeWarning")]

# ann-1 and ann-2 agree everywhere; ann-3 dissents on the last three of eight tasks.
PLAN = {
    "ann-1": ["a", "b", "a", "b", "a", "b", "a", "a"],
    "ann-2": ["a", "b", "a", "b", "a", "b", "a", "a"],
    "ann-3": ["a", "b", "a", "b", "a", "a", "b", "t"],
}


@pytest.fixture
def judged(project):
    """``project`` (pairwise, three votes per task) annotated by three annotators through the queue."""
    project.annotations_per_task = 3
    project.allow_ties = True
    project.agreement_threshold = 0.7
    project.save()
    for _ in range(8):
        make_task(project)
    annotate(project, PLAN)
    return project


def page_urls(project_id: int) -> list[str]:
    return [
        reverse("project-dashboard", args=[project_id]),
        reverse("project-exports", args=[project_id]),
    ]


def api_urls(project_id: int) -> list[str]:
    return [
        reverse("api-agreement-trend", args=[project_id]),
        reverse("api-export-preview", args=[project_id]),
    ]


def chart_data(response, element_id: str) -> dict:
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, f"no json_script #{element_id}"
    return json.loads(match.group(1))


# --- permissions -------------------------------------------------------------------------------


def test_every_page_and_endpoint_is_for_managers_only(client, judged, manager, annotator, outsider):
    urls = page_urls(judged.pk) + api_urls(judged.pk)
    client.force_login(outsider)
    assert [client.get(url).status_code for url in urls] == [404] * len(urls)
    client.force_login(annotator)
    assert [client.get(url).status_code for url in urls] == [403] * len(urls)
    client.force_login(manager)
    assert [client.get(url).status_code for url in urls] == [200] * len(urls)


def test_creating_an_export_is_for_managers_only(client, judged, manager, annotator, outsider):
    url = reverse("project-exports", args=[judged.pk])
    for user, status in ((outsider, 404), (annotator, 403)):
        client.force_login(user)
        assert client.post(url, {"threshold": "0.5"}).status_code == status
    assert ExportSnapshot.objects.count() == 0


def test_anonymous_visitors_are_sent_to_log_in(client, judged):
    for url in page_urls(judged.pk):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    for url in api_urls(judged.pk):
        assert client.get(url).status_code in (401, 403)


def test_no_such_project_is_a_404(client, manager):
    client.force_login(manager)
    for url in page_urls(987654) + api_urls(987654):
        assert client.get(url).status_code == 404


# --- the dashboard -----------------------------------------------------------------------------


def test_dashboard_shows_the_figures_trend_heatmap_and_preview(client, judged, manager):
    client.force_login(manager)
    # Eight shared pairs: below the default minimum of 10 for a Cohen's kappa.
    default = chart_data(client.get(reverse("project-dashboard", args=[judged.pk])), "dashboard-data")
    assert default["heatmap"]["matrix"][0][1] is None
    response = client.get(reverse("project-dashboard", args=[judged.pk]), {"min_overlap": 8})
    assert response.status_code == 200
    body = response.content.decode()
    policy = response["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "script-src 'self'" in policy
    # Every script is the nonce'd module or the JSON data: no inline code.
    scripts = re.findall(r"<script([^>]*)>", body)
    assert all('type="module"' in s and "nonce=" in s or 'type="application/json"' in s for s in scripts), scripts
    for title in ("Percent agreement", "Fleiss&#x27; kappa", "Krippendorff&#x27;s alpha"):
        assert title in body
    assert "95% CI" in body

    data = chart_data(response, "dashboard-data")
    # 24 votes on 8 pairs; the trend's last point is the report's figure.
    assert data["trend"]["points"][-1]["judgements"] == 24
    agreeing = 5 * 3 + 3 * 1  # five unanimous pairs, three split 2-1
    assert data["trend"]["points"][-1]["percent_agreement"] == round(agreeing / 24, 4)
    heat = data["heatmap"]
    assert heat["labels"] == ["ann-1", "ann-2", "ann-3"]
    assert heat["matrix"][0][1] == heat["matrix"][1][0] == 1.0  # ann-1 and ann-2 always agree
    assert heat["matrix"][0][2] is not None and heat["matrix"][0][2] < 1.0
    assert heat["matrix"][0][0] is None
    # The preview equals what the aggregation keeps, curve by curve.
    expected = survival_curves(
        project_pair_votes(judged).votes, max_min_votes=3, thresholds=data["preview"]["thresholds"]
    )
    assert [c["kept"] for c in data["preview"]["curves"]] == expected.kept.tolist()
    at = data["preview"]["thresholds"].index(0.7)
    # Every pair has a strict majority; at 0.7 only the five unanimous ones are left.
    assert data["preview"]["curves"][0]["kept"][0] == 8 and data["preview"]["curves"][2]["kept"][at] == 5
    assert data["project"] == {"threshold": 0.7, "overlap": 3, "min_votes": 1, "kind": "pairwise"}


def test_annotator_table_flags_and_sort_keys(client, judged, manager):
    client.force_login(manager)
    body = client.get(reverse("project-dashboard", args=[judged.pk]), {"min_overlap": 3}).content.decode()
    table = body[body.index('id="annotator-table"') : body.index("</table>", body.index('id="annotator-table"'))]
    rows = re.findall(r"<tr[^>]*>\s*<th scope=\"row\" data-sort=\"([^\"]+)\">", table)
    assert rows == ["ann-1", "ann-2", "ann-3"]
    assert table.count('data-sort="8"') == 3  # eight judgements each
    # Median time 5 s (the helper's): no too_fast flag at the default 3 s ...
    assert "flag-too_fast" not in table
    # ... but all three are too fast under a 10 s threshold, and the page says which threshold it used.
    body = client.get(reverse("project-dashboard", args=[judged.pk]), {"too_fast_s": "10"}).content.decode()
    assert body.count('class="flag flag-too_fast"') == 3
    assert "median under 10 s" in body


def test_contested_items_link_to_the_item_review_page(client, judged, manager):
    client.force_login(manager)
    body = client.get(reverse("project-dashboard", args=[judged.pk])).content.decode()
    table = body[body.index('id="contested-table"') :]
    links = re.findall(r'<a href="(/projects/\d+/tasks/(\d+)/)">Task (\d+)</a>', table)
    # Threshold 0.7: the three 2-1 splits and the A / A / tie pair are contested.
    tasks = sorted(judged.tasks.values_list("pk", flat=True))
    assert sorted(int(t) for _, t, _ in links) == tasks[5:]
    for href, task_id, _ in links:
        assert href == f"/projects/{judged.pk}/tasks/{task_id}/"


def test_bad_settings_are_a_400_naming_the_field_and_show_the_defaults(client, judged, manager):
    client.force_login(manager)
    response = client.get(reverse("project-dashboard", args=[judged.pk]), {"low_agreement_below": "2", "trend": "year"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Low agreement below" in body and "Trend" in body and "defaults are shown" in body
    assert chart_data(response, "dashboard-data")["trend"]["by"] == "count"


def test_trend_by_day_on_the_page(client, judged, manager):
    client.force_login(manager)
    response = client.get(reverse("project-dashboard", args=[judged.pk]), {"trend": "day"})
    trend = chart_data(response, "dashboard-data")["trend"]
    assert trend["by"] == "day" and trend["points"][-1]["judgements"] == 24 and "period_start" in trend["points"][0]


def test_figures_on_few_units_are_marked_and_the_trend_says_not_enough(client, judged, manager):
    client.force_login(manager)
    body = client.get(reverse("project-dashboard", args=[judged.pk])).content.decode()
    # Eight response pairs with three votes each: every figure rests on too few units.
    assert body.count('class="card stat few"') == 5
    assert body.count(">too few units (n=8)</p>") == 5
    assert 'id="trend-caution"' in body
    assert "its figures rest on 8 response pairs with two or more votes (fewer than 30)" in body
    assert "The checkpoints start at judgement 9, the first that gave a response pair a second vote" in body
    # By day every judgement falls on today: one checkpoint, no trend.
    by_day = client.get(reverse("project-dashboard", args=[judged.pk]), {"trend": "day"}).content.decode()
    assert (
        "Not enough data for a trend: one checkpoint has a figure (every judgement on a shared item falls in one day)."
        in by_day
    )


def test_single_votes_only_say_why_there_is_no_trend(client, project, manager):
    for _ in range(3):
        make_task(project)
    annotate(project, {"solo": ["a", "b", "a"]})
    client.force_login(manager)
    body = client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    assert "Not enough data for a trend: no response pair has two votes yet" in body
    assert 'class="card stat few"' not in body  # undefined figures say their reason instead


def test_user_text_is_escaped_everywhere(client, project, manager):
    project.name = "<img src=x onerror=alert(1)>"
    project.save()
    make_task(project)
    evil = "<script>alert(2)</script>"
    annotate(project, {evil: ["a"]})
    client.force_login(manager)
    for url in page_urls(project.pk)[:2]:
        body = client.get(url).content.decode()
        assert "<img src=x" not in body and "<script>alert(2)" not in body
        assert "&lt;img src=x onerror=alert(1)&gt;" in body
    data = chart_data(client.get(reverse("project-dashboard", args=[project.pk])), "dashboard-data")
    assert data["heatmap"]["labels"] == [evil]  # json_script escapes it as \u003C, and JSON gives it back


def test_empty_project_renders(client, project, manager):
    client.force_login(manager)
    response = client.get(reverse("project-dashboard", args=[project.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "No judgements yet." in body and "No contested pairs." in body
    data = chart_data(response, "dashboard-data")
    assert data["trend"]["points"] == [] and data["heatmap"]["labels"] == []


def test_ranking_project_shows_kendall(client, manager):
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3, annotations_per_task=2)
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    client.force_login(manager)
    body = client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    assert "Kendall&#x27;s W" in body and "Kendall&#x27;s tau-b" in body


# --- the export page ---------------------------------------------------------------------------


def test_export_page_lists_the_form_and_the_preview(client, judged, manager):
    client.force_login(manager)
    response = client.get(reverse("project-exports", args=[judged.pk]))
    body = response.content.decode()
    assert 'name="threshold"' in body and 'value="0.7"' in body  # the project's threshold
    for name in ("ann-1", "ann-2", "ann-3"):
        assert body.count(f'value="{name}"') == 1  # one leave-out checkbox each
    data = chart_data(response, "exports-data")
    assert 0.7 in data["preview"]["thresholds"]
    assert data["preview_url"] == reverse("api-export-preview", args=[judged.pk])
    assert "No exports yet." in body


def test_creating_a_snapshot_then_downloading_it(
    client, judged, manager, annotator, django_capture_on_commit_callbacks
):
    client.force_login(manager)
    url = reverse("project-exports", args=[judged.pk])
    form = {
        "threshold": "0.6",
        "min_votes": "2",
        "tie_policy": "neither",
        "weighting": "none",
        "min_reliability": "0",
        "exclude_annotators": ["ann-3"],
        "validation_fraction": "0.25",
        "split_seed": "s1",
        "batch_pairs": "4",
        "pair_weight": "group",
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(url, form)
    assert response.status_code == 302 and response["Location"] == url
    assert len(callbacks) == 1  # the worker is asked only after the row is committed
    snapshot = ExportSnapshot.objects.get()
    assert snapshot.created_by == manager and snapshot.state == ExportState.QUEUED
    assert snapshot.params["exclude_annotators"] == [judged.memberships.get(user__username="ann-3").user_id]
    assert snapshot.params["threshold"] == 0.6 and snapshot.params["min_votes"] == 2

    table_url = reverse("project-exports", args=[judged.pk])
    fragment = client.get(table_url).content.decode()
    assert 'data-state="queued"' in fragment and "<progress" in fragment and "not ready" in fragment
    # The banner states what happened; whether the export is still queued is the table's to say.
    assert f"Export {snapshot.pk} was created." in fragment and f"Export {snapshot.pk} queued" not in fragment
    # The row's bar is the shared job component, following the generic job endpoint.
    assert f'data-job-url="/api/v1/projects/{judged.pk}/jobs/export/{snapshot.pk}/"' in fragment

    export_snapshot_run(snapshot_id=snapshot.pk)
    snapshot.refresh_from_db()
    assert snapshot.state == ExportState.SUCCEEDED
    fragment = client.get(table_url).content.decode()
    assert 'data-state="succeeded"' in fragment and snapshot.content_hash[:12] in fragment
    # With ann-3 left out, ann-1 and ann-2 agree on all eight pairs, two votes each.
    assert f'<strong class="num">{snapshot.counts["pairs_kept"]}</strong> pairs kept' in fragment
    assert snapshot.counts["pairs_kept"] == 8
    links = re.findall(r'<a href="([^"]+)" download>([^<]+)</a>', fragment)
    assert {name for _, name in links} == set(snapshot.file_names)
    href = dict((name, link) for link, name in links)["pairs.jsonl"]
    download = client.get(href)
    assert download.status_code == 200
    assert len(b"".join(download.streaming_content).splitlines()) == 8
    client.force_login(annotator)
    assert client.get(href).status_code == 403


def test_invalid_export_parameters_create_nothing_and_name_the_field(client, judged, manager):
    client.force_login(manager)
    url = reverse("project-exports", args=[judged.pk])
    base = {
        "threshold": "0.3",
        "min_votes": "1",
        "tie_policy": "neither",
        "weighting": "none",
        "min_reliability": "0",
        "validation_fraction": "0.1",
        "batch_pairs": "64",
        "pair_weight": "group",
    }
    response = client.post(url, base)
    assert response.status_code == 400
    body = response.content.decode()
    assert "Nothing was created" in body and "greater than or equal to 0.5" in body
    assert ExportSnapshot.objects.count() == 0


def test_service_errors_land_on_their_field(client, manager):
    # A ranking project of K=4 has groups of 6 pairs: a batch of 5 could not keep a group whole.
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=4)
    Membership.objects.create(project=project, user=manager, role=Role.MANAGER)
    client.force_login(manager)
    response = client.post(
        reverse("project-exports", args=[project.pk]),
        {
            "threshold": "0.5",
            "min_votes": "1",
            "tie_policy": "neither",
            "weighting": "none",
            "min_reliability": "0",
            "validation_fraction": "0.1",
            "batch_pairs": "5",
            "pair_weight": "group",
        },
    )
    assert response.status_code == 400
    assert "must be at least 6" in response.content.decode()
    assert ExportSnapshot.objects.count() == 0


def test_export_form_posts_need_csrf(judged, manager):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(manager)
    response = strict.post(reverse("project-exports", args=[judged.pk]), {"threshold": "0.5"})
    assert response.status_code == 403
    assert ExportSnapshot.objects.count() == 0


# --- JSON endpoints ----------------------------------------------------------------------------


def test_preview_endpoint_follows_the_settings(client, judged, manager):
    client.force_login(manager)
    url = reverse("api-export-preview", args=[judged.pk])
    votes = project_pair_votes(judged).votes
    plain = client.get(url).json()
    assert plain["curves"][0]["kept"] == survival_curves(votes, max_min_votes=3).kept[0].tolist()
    ann3 = judged.memberships.get(user__username="ann-3").user_id
    left_out = client.get(url, {"exclude_annotators": "ann-3", "tie_policy": "abstain", "threshold": "0.66"}).json()
    assert left_out["excluded_raters"] == [ann3] and left_out["parameters"]["tie_policy"] == "abstain"
    assert 0.66 in left_out["thresholds"]
    config = MajorityConfig(tie_policy="abstain", exclude_raters=(ann3,))
    expected = survival_curves(votes, base=config, thresholds=left_out["thresholds"], max_min_votes=3)
    assert [c["kept"] for c in left_out["curves"]] == expected.kept.tolist()
    # Only two votes left per pair: nothing survives a minimum of three.
    assert set(left_out["curves"][2]["kept"]) == {0}


def test_preview_endpoint_refuses_bad_input_by_name(client, judged, manager):
    client.force_login(manager)
    url = reverse("api-export-preview", args=[judged.pk])
    for query, field in (
        ({"exclude_annotators": "nobody"}, "exclude_annotators"),
        ({"tie_policy": "coin"}, "tie_policy"),
        ({"threshold": "0.2"}, "threshold"),
        ({"max_min_votes": "0"}, "max_min_votes"),
    ):
        response = client.get(url, query)
        assert response.status_code == 400 and field in response.json(), query


def test_trend_endpoint(client, judged, manager):
    client.force_login(manager)
    url = reverse("api-agreement-trend", args=[judged.pk])
    trend = client.get(url, {"by": "count", "points": 4}).json()
    # ann-1 judged all eight tasks before anyone else: agreement starts at judgement 9, so the
    # four checkpoints are spaced over judgements 9-24 (not 6, 12, 18, 24 with the first undefined).
    assert trend["first_overlap"] == 9 and trend["counts_from"] == 8
    assert [p["judgements"] for p in trend["points"]] == [12, 16, 20, 24]
    assert all(p["percent_agreement"] is not None for p in trend["points"])
    assert client.get(url, {"by": "year"}).status_code == 400
    assert "points" in client.get(url, {"points": 1}).json()


def test_a_new_annotator_without_judgements_cannot_be_excluded_in_the_form(client, judged, manager):
    UserFactory(username="idle")
    client.force_login(manager)
    response = client.post(
        reverse("project-exports", args=[judged.pk]),
        {
            "threshold": "0.5",
            "min_votes": "1",
            "tie_policy": "neither",
            "weighting": "none",
            "min_reliability": "0",
            "exclude_annotators": ["idle"],
            "validation_fraction": "0.1",
            "batch_pairs": "64",
            "pair_weight": "group",
        },
    )
    assert response.status_code == 400 and "idle is not one of the available choices" in response.content.decode()


@pytest.mark.realdata
def test_pandalm_dashboard_and_export_page(client, manager, project, shared_data):
    from annotation.importers import import_file

    project.allow_ties = True
    project.save()
    import_file(project=project, path=shared_data / "pandalm/testset-v1.json", format="pandalm")
    client.force_login(manager)
    response = client.get(reverse("project-dashboard", args=[project.pk]))
    assert response.status_code == 200
    data = chart_data(response, "dashboard-data")
    heat = data["heatmap"]
    kappa = {(heat["labels"][i], heat["labels"][j]): heat["matrix"][i][j] for i in range(3) for j in range(3) if i < j}
    # The published Cohen's kappas (../shared/data/README.md), through the page's data.
    assert {names: round(value, 2) for names, value in kappa.items()} == {
        ("pandalm-annotator1", "pandalm-annotator2"): 0.85,
        ("pandalm-annotator1", "pandalm-annotator3"): 0.88,
        ("pandalm-annotator2", "pandalm-annotator3"): 0.86,
    }
    assert data["trend"]["points"][-1]["judgements"] == 2997
    # 999 response pairs with three votes each: enough, nothing marked.
    assert "too few units" not in response.content.decode() and 'id="trend-caution"' not in response.content.decode()
    votes = project_pair_votes(project).votes
    expected = survival_curves(votes, thresholds=data["preview"]["thresholds"], max_min_votes=3)
    assert [c["kept"] for c in data["preview"]["curves"]] == expected.kept.tolist()
    body = client.get(reverse("project-exports", args=[project.pk])).content.decode()
    for n in (1, 2, 3):
        assert body.count(f'value="pandalm-annotator{n}"') == 1


def test_cancelling_a_queued_snapshot(client, judged, manager, annotator, outsider, other_project):
    from exports.services import export_snapshot_create

    snapshot = export_snapshot_create(project=judged, params={}, user=manager)
    foreign = export_snapshot_create(project=other_project, params={}, user=None)
    url = reverse("job-cancel", args=[judged.pk, "export", snapshot.pk])
    client.force_login(outsider)
    assert client.post(url).status_code == 404
    client.force_login(annotator)
    assert client.post(url).status_code == 403
    client.force_login(manager)
    assert client.get(url).status_code == 405
    # Another project's snapshot under this project's URL does not exist.
    assert client.post(reverse("job-cancel", args=[judged.pk, "export", foreign.pk])).status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(manager)
    assert strict.post(url).status_code == 403
    snapshot.refresh_from_db()
    assert snapshot.state == ExportState.QUEUED

    page = reverse("project-exports", args=[judged.pk])
    fragment = client.get(page).content.decode()
    assert f'action="{url}"' in fragment and "csrfmiddlewaretoken" in fragment
    response = client.post(url, {"next": page}, follow=True)
    snapshot.refresh_from_db()
    assert snapshot.state == ExportState.CANCELLED and snapshot.cancelled_by == manager
    assert response.redirect_chain[-1][0] == page
    assert f"Export snapshot {snapshot.pk} was cancelled" in response.content.decode()
    assert 'data-state="cancelled"' in response.content.decode() and f'action="{url}"' not in response.content.decode()
    again = client.post(url, {"next": page}, follow=True)
    assert "had already finished" in again.content.decode()
    foreign.refresh_from_db()
    assert foreign.state == ExportState.QUEUED
