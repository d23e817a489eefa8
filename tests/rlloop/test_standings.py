"""The leaderboard and proxy-vs-human figures of a project, from its pair votes: service, API, CLI."""

from __future__ import annotations

import io
import json
import random

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from annotation.models import Prompt, Response, Task, TaskResponse
from rlloop.models import PolicyVersion
from rlloop.standings import project_leaderboard, project_votes, proxy_vs_human
from tests.exports.helpers import judge
from tests.factories import ProjectFactory, UserFactory
from tests.rewardmodel.test_services import manager_of

pytestmark = pytest.mark.django_db


def duel(project, n: int, source_a: str, source_b: str, a_wins: float, rng: random.Random, meta=None) -> None:
    """``n`` prompts, each one task of a response of ``source_a`` against one of ``source_b``, judged once."""
    for _ in range(n):
        number = Prompt.objects.filter(project=project).count()
        prompt = Prompt.objects.create(project=project, external_id=f"p{number}", messages=[{"role": "user",
                                       "content": f"question {number}"}])  # fmt: skip
        ra = Response.objects.create(prompt=prompt, text="a", source=source_a, metadata=(meta or {}).get(source_a, {}))
        rb = Response.objects.create(prompt=prompt, text="b", source=source_b, metadata=(meta or {}).get(source_b, {}))
        task = Task.objects.create(project=project, prompt=prompt, num_responses=2, required_annotations=1)
        TaskResponse.objects.bulk_create([TaskResponse(task=task, response=ra, position=0),
                                          TaskResponse(task=task, response=rb, position=1)])  # fmt: skip
        first, second = (ra, rb) if rng.random() < a_wins else (rb, ra)
        judge(task, f"rater-{task.pk}", [[first.pk], [second.pk]])


@pytest.fixture
def tournament():
    project = ProjectFactory(annotations_per_task=1)
    ref = PolicyVersion.objects.create(project=project, number=1, model_dir="/x", base_model="/x", is_reference=True)
    new = PolicyVersion.objects.create(project=project, number=2, model_dir="/y", base_model="/x", parent=ref)
    rng = random.Random(0)
    duel(project, 60, "policy p2", "policy p1", 0.8, rng)
    duel(project, 60, "policy p1", "model-x", 0.75, rng)
    duel(project, 5, "model-x", "model-x", 0.5, rng)  # one source against itself: no information
    return project, ref, new


def test_the_leaderboard_orders_sources_and_anchors_the_reference(tournament) -> None:
    project, _, _ = tournament
    found = project_votes(project)
    assert len(found.votes) == 120 and found.skipped_same_source == 5
    board = project_leaderboard(project, rounds=200)
    names = [row["name"] for row in board["rows"]]
    assert names == ["policy p2", "policy p1", "model-x"]
    rows = {row["name"]: row for row in board["rows"]}
    assert board["anchor"] == "policy p1" and rows["policy p1"]["rating"] == pytest.approx(1000.0)
    assert rows["policy p2"]["ci_low"] < rows["policy p2"]["rating"] < rows["policy p2"]["ci_high"]
    assert rows["policy p2"]["ci_low"] > 1000  # 80% of 60 votes: clearly above the reference
    assert rows["policy p2"]["policy"] == {"number": 2, "label": "p2", "is_reference": False, "round": None}
    assert rows["model-x"]["policy"] is None
    assert rows["policy p1"]["votes"] == 120 and rows["policy p2"]["wins"] + rows["policy p2"]["losses"] == 60
    i, j = board["names"].index("policy p2"), board["names"].index("policy p1")
    assert board["counts"][i][j] == board["counts"][j][i] == 60
    assert board["win_rate"][i][j] == pytest.approx(rows["policy p2"]["wins"] / 60)
    assert board["win_rate"][i][board["names"].index("model-x")] is None
    json.dumps(board, allow_nan=False)


def test_proxy_vs_human_puts_scores_kl_and_win_rate_side_by_side() -> None:
    project = ProjectFactory(annotations_per_task=1)
    ref = PolicyVersion.objects.create(project=project, number=1, model_dir="/x", base_model="/x", is_reference=True)
    new = PolicyVersion.objects.create(project=project, number=2, model_dir="/y", base_model="/x", parent=ref)
    rng = random.Random(1)
    # The new policy's samples are longer and score higher by exactly their length: all of its gain is length.
    for i in range(40):
        meta = {
            "policy p1": {"policy_version": ref.pk, "reward_score": 0.1 * (10 + i % 5), "tokens": 10 + i % 5,
                          "kl": 0.0, "reward_model": "v1"},
            "policy p2": {"policy_version": new.pk, "reward_score": 0.1 * (20 + i % 7), "tokens": 20 + i % 7,
                          "kl": 3.0 + (i % 3), "reward_model": "v1"},
        }  # fmt: skip
        duel(project, 1, "policy p2", "policy p1", 0.5, rng, meta)
    data = proxy_vs_human(project, rounds=200)
    assert data["reference"] == 1
    points = {p["policy"]: p for p in data["policies"]}
    assert points[1]["samples"] == points[2]["samples"] == 40 and points[1]["win_rate"] is None
    assert points[2]["kl"] == pytest.approx(4.0, abs=0.05) and points[1]["kl"] == 0.0
    assert points[2]["score"] == pytest.approx(0.1 * (20 + sum(i % 7 for i in range(40)) / 40))
    assert points[2]["length_slope"] == pytest.approx(0.1) and points[2]["length_correlation"] == pytest.approx(1.0)
    assert points[2]["gain_explained_by_length"] == pytest.approx(1.0)
    win = points[2]["win_rate"]
    assert win["votes"] == 40 and win["low"] <= win["rate"] <= win["high"] and 0.2 < win["rate"] < 0.8


def test_api_and_cli(tournament) -> None:
    project, _, _ = tournament
    client = APIClient()
    client.force_authenticate(manager_of(project))
    answer = client.get(f"/api/v1/projects/{project.pk}/leaderboard/?rounds=100&k=16")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["k"] == 16 and body["rounds"] == 100 and body["rows"][0]["name"] == "policy p2"
    proxy = client.get(f"/api/v1/projects/{project.pk}/leaderboard/proxy-vs-human/?rounds=50").json()
    assert [p["policy"] for p in proxy["policies"]] == [2]
    assert proxy["policies"][0]["win_rate"]["votes"] == 60
    for query, field in (("rounds=-1", "rounds"), ("level=2", "level"), ("who=robots", "who"), ("k=x", "k")):
        bad = client.get(f"/api/v1/projects/{project.pk}/leaderboard/?{query}")
        assert bad.status_code == 400 and bad.json()["field"] == field, bad.content
    annotator = UserFactory()
    project.memberships.create(user=annotator, role="annotator")
    client.force_authenticate(annotator)
    assert client.get(f"/api/v1/projects/{project.pk}/leaderboard/").status_code == 403

    out = io.StringIO()
    call_command("leaderboard", "--project", str(project.pk), "--rounds", "50", stdout=out)
    text = out.getvalue()
    assert "120 votes between sources" in text and text.index("policy p2") < text.index("model-x")
    out = io.StringIO()
    call_command("leaderboard", "--project", str(project.pk), "--rounds", "0", "--json", stdout=out)
    assert json.loads(out.getvalue())["leaderboard"]["rows"][0]["ci_low"] is None
    with pytest.raises(CommandError, match="--project"):
        call_command("leaderboard", "--project", "999999")


def test_cached_standings_are_recomputed_only_when_their_inputs_change(tournament, monkeypatch) -> None:
    from django.core.cache import cache

    from rlloop import standings

    project, ref, _ = tournament
    cache.clear()
    calls = []

    def counted(project, **options):
        calls.append(options)
        return standings.project_leaderboard(project, **options)

    first = standings.cached(counted, project, rounds=50)
    assert standings.cached(counted, project, rounds=50) == first and len(calls) == 1
    standings.cached(counted, project, rounds=60)  # other options: another entry
    assert len(calls) == 2

    rng = random.Random(5)
    duel(project, 1, "policy p2", "policy p1", 1.0, rng)  # a new vote
    after_vote = standings.cached(counted, project, rounds=50)
    assert len(calls) == 3 and after_vote["votes"] == first["votes"] + 1

    from annotation.models import PairVote

    vote = PairVote.objects.filter(task__project=project).latest("id")
    PairVote.objects.filter(pk=vote.pk).update(winner=-vote.winner)  # an edited vote
    standings.cached(counted, project, rounds=50)
    assert len(calls) == 4

    PolicyVersion.objects.create(project=project, number=3, model_dir="/z", base_model="/x", parent=ref)
    standings.cached(counted, project, rounds=50)  # a new policy
    assert len(calls) == 5
    standings.cached(counted, project, rounds=50)
    assert len(calls) == 5


def test_the_page_and_the_api_read_the_cached_standings(tournament, client, monkeypatch) -> None:
    import functools

    from django.core.cache import cache

    from frontend import views_loop
    from rlloop import standings
    from rlloop.api import views

    project, _, _ = tournament
    cache.clear()
    calls = []

    def counting(compute):
        @functools.wraps(compute)
        def wrapper(*args, **kwargs):
            calls.append(compute.__name__)
            return compute(*args, **kwargs)

        return wrapper

    for module in (views, views_loop):
        monkeypatch.setattr(module, "project_leaderboard", counting(standings.project_leaderboard))
        monkeypatch.setattr(module, "proxy_vs_human", counting(standings.proxy_vs_human))
    manager = manager_of(project)
    api = APIClient()
    api.force_authenticate(manager)
    url = f"/api/v1/projects/{project.pk}/leaderboard/?rounds=100"
    first = api.get(url).json()
    assert api.get(url).json() == first and calls == ["project_leaderboard"]
    client.force_login(manager)
    for _ in range(2):
        assert client.get(f"/projects/{project.pk}/loop/").status_code == 200
    assert calls == ["project_leaderboard", "project_leaderboard", "proxy_vs_human"]
    duel(project, 3, "policy p2", "policy p1", 1.0, random.Random(9))
    assert api.get(url).json()["votes"] == first["votes"] + 3 and len(calls) == 4
