"""Simulated annotators: the choice model's statistics, and labeling through the API as sim-* accounts.

The gold score of a response is the number of letters "o" in its text (``count_o``), so
each task's better response is known in advance.
"""

from __future__ import annotations

import functools
import io
import math
import random
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Judgement, Membership, ProjectKind, Response, Role, Task, TaskResponse, TaskState
from exports.models import ExportSnapshot
from jobs.models import JobState
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rlloop.models import SimulatedAnnotator
from rlloop.simulate import (
    AnnotatorSpec,
    HttpApi,
    InProcessApi,
    SimulationError,
    choose_ranking,
    gold_scorer,
    simulate,
    simulated_accounts,
)
from tests.factories import ProjectFactory, PromptFactory, UserFactory

GOLD = "tests.rlloop.test_simulate:count_o"


def count_o(prompt_messages: list[dict[str, str]], response_text: str) -> float:
    return float(response_text.count("o"))


def add_task(project, o_counts: list[int]) -> Task:
    """A task whose responses hold that many letters "o" each (their gold scores), in that stored order."""
    prompt = PromptFactory(project=project)
    responses = [
        Response.objects.create(prompt=prompt, text=f"r{i} {'o' * n}", source="secret-model", metadata={"gold": n})
        for i, n in enumerate(o_counts)
    ]
    task = Task.objects.create(
        project=project, prompt=prompt, num_responses=len(responses), required_annotations=project.annotations_per_task
    )
    TaskResponse.objects.bulk_create(TaskResponse(task=task, response=r, position=i) for i, r in enumerate(responses))
    return task


def gold_order(task: Task) -> list[int]:
    """The task's response ids, most letters "o" first."""
    return [r.pk for r in sorted(task.responses.all(), key=lambda r: -r.text.count("o"))]


def pairwise_project(n_tasks: int, *, overlap: int = 3):
    project = ProjectFactory(annotations_per_task=overlap)
    # Better response first in half the tasks, second in the other half.
    tasks = [add_task(project, [1 + i % 3, 4] if i % 2 else [5, i % 3]) for i in range(n_tasks)]
    return project, tasks


def specs(*names: str, **fields) -> list[AnnotatorSpec]:
    return [AnnotatorSpec(name=name, **fields) for name in names]


def first_wins_rate(scores: list[float], spec: AnnotatorSpec, n: int = 4000, seed: int = 0) -> float:
    rng = random.Random(seed)
    return sum(choose_ranking([1, 2], scores, spec=spec, rng=rng)[0] == [1] for _ in range(n)) / n


# --- the choice model ---------------------------------------------------------------------------


class TestChoice:
    def test_pairwise_follows_the_bradley_terry_probability(self):
        rate = first_wins_rate([1.0, 0.0], AnnotatorSpec(name="a", temperature=1.0), n=10_000)
        assert rate == pytest.approx(1 / (1 + math.exp(-1)), abs=0.02)
        assert first_wins_rate([0.0, 1.0], AnnotatorSpec(name="a")) == pytest.approx(1 / (1 + math.e), abs=0.02)

    def test_a_large_temperature_is_a_coin_flip(self):
        assert first_wins_rate([5.0, 0.0], AnnotatorSpec(name="a", temperature=1.0)) > 0.98
        assert first_wins_rate([5.0, 0.0], AnnotatorSpec(name="a", temperature=1000.0)) == pytest.approx(0.5, abs=0.04)

    def test_position_bias_favours_the_response_shown_first(self):
        unbiased = first_wins_rate([0.0, 0.0], AnnotatorSpec(name="a"))
        biased = first_wins_rate([0.0, 0.0], AnnotatorSpec(name="a", position_bias=1.5))
        assert unbiased == pytest.approx(0.5, abs=0.04)
        assert biased == pytest.approx(1 / (1 + math.exp(-1.5)), abs=0.03)
        # Against a better second response too, the bias moves the first one's chances up.
        assert first_wins_rate([0.0, 1.0], AnnotatorSpec(name="a", position_bias=1.0)) == pytest.approx(0.5, abs=0.04)

    def test_random_answers_ignore_the_scores(self):
        sure = [10.0, 0.0]
        assert first_wins_rate(sure, AnnotatorSpec(name="a", temperature=0.01, random_share=1.0)) == pytest.approx(
            0.5, abs=0.04
        )
        # Half the answers random: right in all the others and in half of the random ones.
        half = first_wins_rate(sure, AnnotatorSpec(name="a", temperature=0.01, random_share=0.5))
        assert half == pytest.approx(0.75, abs=0.03)

    def test_plackett_luce_puts_the_best_of_three_first_most_often(self):
        rng = np.random.default_rng(3)
        spec = AnnotatorSpec(name="a")
        rankings = [choose_ranking([10, 20, 30], [0.0, 2.0, 1.0], spec=spec, rng=rng) for _ in range(5000)]
        assert all(sorted(r) == [[10], [20], [30]] for r in rankings)  # one response per tier, all of them
        first = {rid: sum(r[0] == [rid] for r in rankings) / len(rankings) for rid in (10, 20, 30)}
        total = 1 + math.e**2 + math.e
        assert first[20] == pytest.approx(math.e**2 / total, abs=0.03)
        assert first[20] > first[30] > first[10]
        # After the best, the second place is a Bradley-Terry draw between the other two.
        after_best = [r for r in rankings if r[0] == [20]]
        assert sum(r[1] == [30] for r in after_best) / len(after_best) == pytest.approx(math.e / (1 + math.e), abs=0.03)

    def test_a_seed_reproduces_the_answers(self):
        spec = AnnotatorSpec(name="a", temperature=2.0, random_share=0.2)

        def draw(rng) -> list:
            return [choose_ranking([1, 2, 3], [0.5, 0.0, 1.0], spec=spec, rng=rng) for _ in range(200)]

        assert draw(random.Random(5)) == draw(random.Random(5))
        assert draw(np.random.default_rng(5)) == draw(np.random.default_rng(5))
        assert draw(random.Random(5)) != draw(random.Random(6))

    def test_no_ties_even_where_the_project_allows_them(self):
        ranking = choose_ranking([1, 2, 3], [1.0, 1.0, 1.0], spec=AnnotatorSpec(name="a"), rng=random.Random(0))
        assert all(len(tier) == 1 for tier in ranking)
        ranking = choose_ranking(
            [7, 8], [0.0, 0.0], spec=AnnotatorSpec(name="a"), rng=random.Random(0), allow_ties=True
        )
        assert sorted(ranking) == [[7], [8]]

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"temperature": 0}, "temperature"),
            ({"temperature": -1.0}, "temperature"),
            ({"temperature": float("inf")}, "temperature"),
            ({"position_bias": float("nan")}, "position_bias"),
            ({"random_share": 1.5}, "random_share"),
            ({"random_share": -0.1}, "random_share"),
            ({"name": "two words"}, "name"),
            ({"name": ""}, "name"),
        ],
    )
    def test_a_bad_spec_names_its_field(self, fields, field):
        with pytest.raises(ValueError, match=f"^{field}: "):
            AnnotatorSpec(**{"name": "a", **fields})

    def test_scores_must_match_the_responses(self):
        with pytest.raises(ValueError, match="one score per response"):
            choose_ranking([1, 2], [1.0], spec=AnnotatorSpec(name="a"), rng=random.Random(0))
        with pytest.raises(ValueError, match="finite"):
            choose_ranking([1, 2], [1.0, float("nan")], spec=AnnotatorSpec(name="a"), rng=random.Random(0))


# --- labeling through the API ---------------------------------------------------------------------


@pytest.mark.django_db
class TestSimulate:
    def test_three_careful_annotators_complete_every_task_and_pick_the_better_response(self):
        project, tasks = pairwise_project(8)
        summary = simulate(project, specs("alice", "bob", "carol", temperature=0.05), scorer=gold_scorer(count_o))

        assert summary.judgements == {"sim-alice": 8, "sim-bob": 8, "sim-carol": 8}
        assert summary.total == 24 and summary.open_tasks_left == 0 and not summary.stopped_by_max_tasks
        for task in tasks:
            task.refresh_from_db()
            assert task.state == TaskState.COMPLETE and task.judgement_count == 3
        judgements = Judgement.objects.filter(task__project=project).select_related("task")
        assert all(j.tiers == [[i] for i in gold_order(j.task)] for j in judgements)
        # Round robin: every task was judged by all three, each within its own lease.
        assert {j.annotator.username for j in judgements} == {"sim-alice", "sim-bob", "sim-carol"}
        assert all(j.assignment_id is not None and j.source == "annotation" for j in judgements)

    def test_the_accounts_are_marked_simulated_cannot_log_in_and_annotate_the_project(self):
        project, _ = pairwise_project(2)
        simulate(project, specs("alice", "bob", temperature=0.5, position_bias=0.25), scorer=gold_scorer(GOLD))
        for name in ("alice", "bob"):
            user = get_user_model().objects.get(username=f"sim-{name}")
            assert user.is_active and not user.has_usable_password()
            marker = SimulatedAnnotator.objects.get(user=user)
            assert marker.project == project
            assert marker.settings == {
                "name": name,
                "temperature": 0.5,
                "position_bias": 0.25,
                "random_share": 0.0,
                "gold": f"function:{GOLD}",
            }
            assert Membership.objects.get(project=project, user=user).role == Role.ANNOTATOR
            for password in ("", "!", user.password, f"sim-{name}", "pw-for-tests-only"):
                assert not Client().login(username=user.username, password=password)
            assert Token.objects.filter(user=user).exists()

    def test_a_k3_ranking_project_gets_full_rankings_the_api_accepts(self):
        project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3, annotations_per_task=2)
        tasks = [add_task(project, counts) for counts in ([0, 3, 1], [2, 0, 5], [4, 1, 0], [1, 6, 3])]
        summary = simulate(project, specs("x", "y", temperature=0.05), scorer=gold_scorer(count_o), seed=4)
        assert summary.total == 8 and summary.open_tasks_left == 0
        for task in tasks:
            judgements = list(Judgement.objects.filter(task=task))
            assert len(judgements) == 2
            assert all(j.tiers == [[i] for i in gold_order(task)] for j in judgements)
            task.refresh_from_db()
            assert task.state == TaskState.COMPLETE
            assert task.pair_votes.count() == 6  # each 3-way ranking as its three pairs

    def test_max_tasks_stops_early_and_a_second_run_finishes(self):
        project, tasks = pairwise_project(4, overlap=2)
        first = simulate(project, specs("a", "b"), scorer=gold_scorer(count_o), max_tasks=3)
        # Partly judged tasks come first, so the two finished one task and started the next.
        assert first.total == 3 and first.stopped_by_max_tasks and first.open_tasks_left == 3
        assert first.judgements == {"sim-a": 2, "sim-b": 1}  # taking turns
        second = simulate(project, specs("a", "b"), scorer=gold_scorer(count_o))
        assert second.total == 5 and second.open_tasks_left == 0
        # The same two accounts, not new ones.
        assert get_user_model().objects.filter(username__startswith="sim-").count() == 2
        assert simulate(project, specs("a", "b"), scorer=gold_scorer(count_o)).total == 0

    def test_a_seed_reproduces_a_run_given_the_same_claims(self):
        def run(seed: int) -> list[tuple[int, str, int]]:
            project, tasks = pairwise_project(6)
            random.seed(11)  # the server shuffles each display order with the module's generator
            noisy = specs("a", "b", "c", temperature=3.0, random_share=0.3)
            simulate(project, noisy, scorer=gold_scorer(count_o), seed=seed)
            judgements = Judgement.objects.filter(task__project=project).order_by("task_id", "annotator__username")
            # (task index, annotator, the winner's place in the task's stored order)
            return [
                (tasks.index(j.task), j.annotator.username, j.task.response_ids().index(j.tiers[0][0]))
                for j in judgements
            ]

        assert run(seed=1) == run(seed=1)
        assert run(seed=1) != run(seed=2)

    def test_the_annotator_sees_only_what_the_api_shows(self):
        project, tasks = pairwise_project(1, overlap=1)
        seen = []

        def spy(prompt_messages, response_text):
            seen.append((prompt_messages, response_text))
            return 0.0

        simulate(project, specs("a"), scorer=gold_scorer(spy))
        task = tasks[0]
        assert sorted(text for _, text in seen) == sorted(task.responses.values_list("text", flat=True))
        assert all(messages == task.prompt.messages for messages, _ in seen)

    def test_a_reward_model_version_scores_the_claimed_texts(self, monkeypatch):
        project, tasks = pairwise_project(3, overlap=1)
        version = reward_model_version(project)
        calls = []

        def fake_score_batch(v, items, **kwargs):
            calls.append((v.pk, items))
            return [count_o([], text) for _, text in items]

        monkeypatch.setattr("rewardmodel.services.compare.score_batch", fake_score_batch)
        scorer = gold_scorer(version)
        summary = simulate(project, specs("rm", temperature=0.05), scorer=scorer)
        assert summary.total == 3
        assert [len(items) for _, items in calls] == [2, 2, 2] and {v for v, _ in calls} == {version.pk}
        prompts = [task.prompt.messages for task in tasks]
        assert all(messages in prompts for _, items in calls for messages, _ in items)
        assert all(j.tiers[0][0] == gold_order(j.task)[0] for j in Judgement.objects.filter(task__project=project))
        assert SimulatedAnnotator.objects.get(user__username="sim-rm").settings["gold"] == scorer.label
        assert "v1" in scorer.label

    def test_a_name_taken_by_a_person_is_refused(self):
        project, _ = pairwise_project(1)
        person = UserFactory(username="sim-alice")
        with pytest.raises(SimulationError, match="sim-alice exists and is not a simulated annotator"):
            simulated_accounts(project, specs("alice"), gold_label="x")
        person.refresh_from_db()
        assert person.has_usable_password() and not hasattr(person, "simulated_annotator")
        assert not Membership.objects.filter(project=project, user=person).exists()

    def test_a_deactivated_account_is_not_brought_back(self):
        project, _ = pairwise_project(1)
        (account,) = simulated_accounts(project, specs("a"), gold_label="x")
        get_user_model().objects.filter(pk=account.user.pk).update(is_active=False)
        with pytest.raises(SimulationError, match="sim-a was deactivated"):
            simulate(project, specs("a"), scorer=gold_scorer(count_o))
        assert not get_user_model().objects.get(pk=account.user.pk).is_active

    def test_an_expired_token_is_replaced_and_a_password_given_since_is_taken_away(self, settings):
        project, _ = pairwise_project(1)
        (account,) = simulated_accounts(project, specs("a"), gold_label="x")
        assert simulated_accounts(project, specs("a"), gold_label="x")[0].token == account.token  # still live
        Token.objects.filter(user=account.user).update(
            created=timezone.now() - timedelta(days=settings.ARPAD_API_TOKEN_MAX_AGE_DAYS + 1)
        )
        account.user.set_password("someone-set-this")
        account.user.save()
        (again,) = simulated_accounts(project, specs("a"), gold_label="x")
        assert again.token != account.token
        assert InProcessApi(again.token).post(f"/api/v1/projects/{project.pk}/claim/")[0] == 200
        assert InProcessApi(account.token).post(f"/api/v1/projects/{project.pk}/claim/")[0] == 401
        assert not Client().login(username="sim-a", password="someone-set-this")

    def test_an_unexpected_answer_stops_the_run_with_its_status_and_body(self):
        project, _ = pairwise_project(1)

        class Refusing:
            def __init__(self, token: str) -> None:
                pass

            def post(self, path, json=None):
                return 503, {"detail": "down for maintenance"}

        with pytest.raises(SimulationError, match="503.*down for maintenance"):
            simulate(project, specs("a"), scorer=gold_scorer(count_o), api=Refusing)

    def test_a_submit_the_api_refuses_is_reported(self):
        project, _ = pairwise_project(1)

        class BadRanking(InProcessApi):
            def post(self, path, json=None):
                if path.endswith("/submit/"):
                    json = {**json, "ranking": [[999_999], [1]]}
                return super().post(path, json)

        with pytest.raises(SimulationError, match="submitting assignment .* 400"):
            simulate(project, specs("a"), scorer=gold_scorer(count_o), api=BadRanking)


def reward_model_version(project) -> RewardModelVersion:
    """A registered version row; its files do not exist, so scoring must be replaced."""
    now = timezone.now()
    snapshot = ExportSnapshot.objects.create(
        project=project, state=JobState.SUCCEEDED, progress=1.0, finished_at=now, content_hash="1" * 64,
        path="exports/1", manifest={"files": {}}, counts={"groups": {"train": 3, "validation": 1}},
    )  # fmt: skip
    run = RewardModelRun.objects.create(
        project=project, snapshot=snapshot, base_model="/srv/models/base", state=JobState.SUCCEEDED, progress=1.0,
        finished_at=now,
    )  # fmt: skip
    return RewardModelVersion.objects.create(
        project=project, number=1, run=run, snapshot=snapshot, base_model="/srv/models/base", model_dir="rm/1"
    )


# --- over real HTTP -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_http_api_labels_tasks_on_a_running_server(live_server):
    project, tasks = pairwise_project(3, overlap=2)
    summary = simulate(
        project,
        specs("h1", "h2", temperature=0.05),
        scorer=gold_scorer(count_o),
        api=functools.partial(HttpApi, live_server.url),
    )
    assert summary.judgements == {"sim-h1": 3, "sim-h2": 3} and summary.open_tasks_left == 0
    judgements = Judgement.objects.filter(task__project=project).select_related("task")
    assert all(j.tiers[0][0] == gold_order(j.task)[0] for j in judgements)
    # Errors come back as (status, body), not exceptions.
    assert HttpApi(live_server.url, "not-a-token").post(f"/api/v1/projects/{project.pk}/claim/")[0] == 401


def test_http_api_refuses_other_schemes():
    for url in ("file:///etc/passwd", "ftp://example.org", "localhost:8000"):
        with pytest.raises(ValueError, match="not an http"):
            HttpApi(url, "t")


def test_http_api_says_when_the_server_cannot_be_reached():
    with pytest.raises(SimulationError, match="cannot reach http://127.0.0.1:9"):
        HttpApi("http://127.0.0.1:9", "t", timeout=5).post("/api/v1/projects/1/claim/")


# --- the command ----------------------------------------------------------------------------------


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("simulate_annotators", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
class TestCommand:
    def test_it_labels_and_prints_a_summary(self):
        project, tasks = pairwise_project(4, overlap=2)
        out = command(
            "--project", str(project.pk), "--names", "alice,bob", "--gold-function", GOLD,
            "--temperature", "0.05,0.1", "--position-bias", "0.5", "--seed", "3",
        )  # fmt: skip
        assert f"project {project.pk}: 8 judgements by 2 simulated annotators (sim-alice 4, sim-bob 4)" in out
        assert "0 open tasks left" in out
        assert SimulatedAnnotator.objects.get(user__username="sim-bob").settings["temperature"] == 0.1
        assert all(j.tiers[0][0] == gold_order(j.task)[0] for j in Judgement.objects.filter(task__project=project))

    def test_annotators_by_count_and_max_tasks(self):
        project, _ = pairwise_project(4)
        out = command("--project", str(project.pk), "--annotators", "3", "--gold-function", GOLD, "--max-tasks", "5")
        assert "5 judgements by 3 simulated annotators (sim-1 2, sim-2 2, sim-3 1)" in out
        assert "stopped at --max-tasks 5" in out

    def test_a_reward_model_by_number(self, monkeypatch):
        project, _ = pairwise_project(2, overlap=1)
        reward_model_version(project)
        monkeypatch.setattr(
            "rewardmodel.services.compare.score_batch", lambda v, items, **kw: [count_o([], t) for _, t in items]
        )
        out = command("--project", str(project.pk), "--annotators", "1", "--gold-reward-model", "1")
        assert "2 judgements by 1 simulated annotators" in out
        out = command("--project", str(project.pk), "--annotators", "1", "--gold-reward-model", f"{project.pk}:v1")
        assert "0 judgements" in out

    def test_a_reward_model_without_files_is_reported(self, settings, tmp_path):
        settings.ARTIFACT_ROOT = tmp_path
        project, _ = pairwise_project(1, overlap=1)
        reward_model_version(project)
        with pytest.raises(CommandError, match="--gold-reward-model: .*missing"):
            command("--project", str(project.pk), "--annotators", "1", "--gold-reward-model", "1")

    @pytest.mark.parametrize(
        ("args", "option"),
        [
            (["--annotators", "2", "--temperature", "0", "--gold-function", GOLD], "--temperature"),
            (["--annotators", "2", "--temperature", "1,2,3", "--gold-function", GOLD], "--temperature"),
            (["--annotators", "2", "--temperature", "warm", "--gold-function", GOLD], "--temperature"),
            (["--annotators", "2", "--position-bias", "nan", "--gold-function", GOLD], "--position-bias"),
            (["--annotators", "2", "--random-share", "1.5", "--gold-function", GOLD], "--random-share"),
            (["--annotators", "0", "--gold-function", GOLD], "--annotators"),
            (["--names", "a,,b", "--gold-function", GOLD], "--names"),
            (["--names", "a,a", "--gold-function", GOLD], "--names"),
            (["--names", "has space", "--gold-function", GOLD], "--names"),
            (["--annotators", "1", "--max-tasks", "0", "--gold-function", GOLD], "--max-tasks"),
            (["--annotators", "1", "--max-tasks", "many", "--gold-function", GOLD], "--max-tasks"),
            (["--annotators", "1", "--url", "ftp://example.org", "--gold-function", GOLD], "--url"),
            (["--annotators", "1", "--gold-function", "no_colon"], "--gold-function"),
            (["--annotators", "1", "--gold-function", "tests.rlloop.test_simulate:nothing"], "--gold-function"),
            (["--annotators", "1", "--gold-function", "no.such.module:f"], "--gold-function"),
            (["--annotators", "1", "--gold-reward-model", "7"], "--gold-reward-model"),
            (["--annotators", "1", "--gold-reward-model", "latest"], "--gold-reward-model"),
            (["--annotators", "1"], "--gold-reward-model"),  # one of the gold options is required
            (["--gold-function", GOLD], "--annotators"),  # as is one of --annotators and --names
        ],
    )
    def test_bad_options_name_the_option(self, args, option):
        project, _ = pairwise_project(1)
        with pytest.raises(CommandError, match=option):
            command("--project", str(project.pk), *args)
        assert not get_user_model().objects.filter(username__startswith="sim-").exists()

    def test_an_unknown_project_names_the_option(self):
        with pytest.raises(CommandError, match="--project: project 99999 does not exist"):
            command("--project", "99999", "--annotators", "1", "--gold-function", GOLD)

    def test_a_name_taken_by_a_person(self):
        project, _ = pairwise_project(1)
        UserFactory(username="sim-bob")
        with pytest.raises(CommandError, match="sim-bob exists and is not a simulated annotator"):
            command("--project", str(project.pk), "--names", "bob", "--gold-function", GOLD)


# --- marked in the members listing ------------------------------------------------------------------


@pytest.mark.django_db
def test_members_api_and_page_mark_the_simulated_accounts(project, manager, annotator):
    simulated_accounts(project, specs("alice"), gold_label="x")
    api = APIClient()
    api.force_authenticate(manager)
    body = api.get(f"/api/v1/projects/{project.pk}/members/").json()
    assert {m["username"]: m["simulated"] for m in body["results"]} == {
        "manager": False,
        "annotator": False,
        "sim-alice": True,
    }
    page = Client()
    page.force_login(manager)
    html = page.get(f"/projects/{project.pk}/members/").content.decode()
    row = html.split('data-username="sim-alice"')[1].split("</td>")[0]
    assert "(simulated)" in row
    assert "(simulated)" not in html.split('data-username="annotator"')[1].split("</td>")[0]
