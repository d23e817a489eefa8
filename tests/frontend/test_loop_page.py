"""The Loop page: personas, the sampling form (fields, refusals, a prompt file), the leaderboard and proxy data."""

from __future__ import annotations

import json
import random

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs.models import JobState
from rlloop.models import PolicyVersion, SamplingJob
from rlloop.services import policy_register
from tests.factories import ProjectFactory, UserFactory
from tests.frontend.test_rlloop_pages import CHECKPOINT, XSS, as_user
from tests.rewardmodel.test_services import manager_of
from tests.rlloop.test_standings import duel

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def checkpoints(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    directory = tmp_path / "checkpoints" / CHECKPOINT
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    settings.POLICY_BASE_MODELS = {CHECKPOINT: str(directory)}
    settings.POLICY_MODELS_DIR = str(tmp_path / "no-models")


@pytest.fixture
def loop_project():
    project = ProjectFactory(annotations_per_task=1)
    reference = policy_register(project=project, name=CHECKPOINT, is_reference=True)
    newer = policy_register(project=project, name=CHECKPOINT)
    return project, reference, newer


def test_only_managers_open_it(loop_project) -> None:
    project, _, _ = loop_project
    url = reverse("loop", args=[project.pk])
    annotator = UserFactory()
    project.memberships.create(user=annotator, role="annotator")
    assert as_user(annotator).get(url).status_code == 403
    assert as_user(UserFactory()).get(url).status_code == 404
    page = as_user(manager_of(project)).get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="sampling-form"' in html and 'id="leaderboard-empty"' in html and ">Loop<" in html


def test_the_form_starts_a_job_and_refusals_name_the_field(loop_project, job_messages) -> None:
    project, reference, newer = loop_project
    client = as_user(manager_of(project))
    url = reverse("loop", args=[project.pk])
    form = {"policies": [newer.number], "anchor": reference.number, "mode": "pool", "prompts": "file",
            "max_prompts": 10, "seed": 0, "priority": 20, "temperature": 0.9}  # fmt: skip
    records = b'{"prompt": "hello there", "id": "h1"}\n\n{"prompt": "", "id": "h2"}\n'
    bad = client.post(url, {**form, "prompt_file": SimpleUploadedFile("p.jsonl", records)})
    assert bad.status_code == 400
    assert "line 3: prompt is empty" in bad.content.decode() and not SamplingJob.objects.exists()
    not_json = client.post(url, {**form, "prompt_file": SimpleUploadedFile("p.jsonl", b"{oops\n")})
    assert not_json.status_code == 400 and "line 1: not JSON" in not_json.content.decode()
    missing = client.post(url, {**form})
    assert missing.status_code == 400 and "Choose a prompt file" in missing.content.decode()
    too_many = client.post(url, {**form, "prompts": "project", "responses_per_prompt": 3})
    assert too_many.status_code == 400 and "exactly 2 responses" in too_many.content.decode()

    good = client.post(url, {**form, "prompt_file": SimpleUploadedFile("p.jsonl", b'{"prompt": "hi", "id": "a"}\n')})
    assert good.status_code == 302 and good["Location"].endswith("#sampling")
    job = SamplingJob.objects.get()
    assert job.state == JobState.QUEUED and job.priority == 20 and job.sampling["temperature"] == 0.9
    assert job.anchor == reference and list(job.policies.all()) == [newer]
    page = client.get(url).content.decode()
    assert f'data-job="{job.pk}"' in page and "Sampling job" in page and "vs p1" in page


def test_the_leaderboard_and_proxy_are_drawn_from_votes_with_text_escaped(loop_project) -> None:
    project, reference, newer = loop_project
    rng = random.Random(0)
    duel(project, 12, "policy p2", "policy p1", 0.75, rng)
    duel(project, 4, "policy p1", XSS, 0.5, rng)
    page = as_user(manager_of(project)).get(reverse("loop", args=[project.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="leaderboard"' in html and 'data-source="policy p2"' in html
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "few votes" in html  # 16 votes is under the page's threshold
    data = json.loads(html.split('id="loop-data" type="application/json">')[1].split("</script>")[0])
    assert data["leaderboard"]["votes"] == 16 and data["leaderboard"]["anchor"] == "policy p1"
    assert {r["name"] for r in data["leaderboard"]["rows"]} == {"policy p1", "policy p2", XSS}
    assert isinstance(PolicyVersion.objects.get(pk=newer.pk), PolicyVersion)


def test_run_a_cycle_cancel_it_and_set_the_rule(loop_project, job_messages) -> None:
    from rlloop.models import LoopCycle, LoopRule

    project, reference, newer = loop_project
    client = as_user(manager_of(project))
    start = reverse("loop-cycle", args=[project.pk])
    bad = client.post(start, {"cycle-policy": newer.number, "cycle-updates": 0, "cycle-sample_prompts": 5,
                              "cycle-priority": 3})  # fmt: skip
    assert bad.status_code == 400 and not LoopCycle.objects.exists()
    answer = client.post(start, {"cycle-policy": newer.number, "cycle-updates": 2, "cycle-sample_prompts": 5,
                                 "cycle-priority": 3})  # fmt: skip
    assert answer.status_code == 302 and answer["Location"].endswith("#cycles")
    cycle = LoopCycle.objects.get()
    assert cycle.policy == newer and cycle.trigger == "ui"
    assert cycle.options == {"ppo": {"config": {"updates": 2}}, "sampling": {"max_prompts": 5, "priority": 3}}
    cycle.state, cycle.reason = "cancelled", "test"
    cycle.finished_at = cycle.created_at
    cycle.save()
    sized = client.post(start, {"cycle-policy": newer.number, "cycle-updates": 8, "cycle-rollouts": 16,
                                "cycle-lora_r": 16, "cycle-max_new_tokens": 64, "cycle-sample_prompts": 5,
                                "cycle-priority": 3})  # fmt: skip
    assert sized.status_code == 302
    cycle = LoopCycle.objects.order_by("-id").first()
    assert cycle.options["ppo"]["config"] == {"updates": 8, "rollouts_per_update": 16, "minibatch_size": 8,
                                              "lora": {"r": 16, "alpha": 32}, "max_new_tokens": 64}  # fmt: skip
    page = client.get(reverse("loop", args=[project.pk])).content.decode()
    assert f'data-cycle="{cycle.pk}"' in page and 'data-state="running"' in page and "Export" in page
    busy = client.post(start, {"cycle-policy": newer.number, "cycle-sample_prompts": 5, "cycle-priority": 3})
    assert busy.status_code == 400 and "still running" in busy.content.decode()

    cancelled = client.post(reverse("loop-cycle-cancel", args=[project.pk, cycle.pk]))
    assert cancelled.status_code == 302
    cycle.refresh_from_db()
    assert cycle.state == "cancelled" and "cancelled by" in cycle.reason
    assert cycle.reason in client.get(reverse("loop", args=[project.pk])).content.decode()

    rule = client.post(reverse("loop-rule", args=[project.pk]), {"rule-enabled": "on", "rule-min_new_pairs": 50})
    assert rule.status_code == 302
    assert LoopRule.objects.get(project=project).min_new_pairs == 50
    bad_rule = client.post(reverse("loop-rule", args=[project.pk]), {"rule-min_new_pairs": 0})
    assert bad_rule.status_code == 400 and LoopRule.objects.get(project=project).min_new_pairs == 50


def test_the_cycle_form_estimates_ppo_from_the_last_round_here(loop_project) -> None:
    from tests.frontend.test_rlloop_pages import finished_round, reward_model

    project, reference, _ = loop_project
    client = as_user(manager_of(project))

    def pace():
        html = client.get(reverse("loop", args=[project.pk])).content.decode()
        assert 'id="cycle-estimate"' in html
        return json.loads(html.split('id="loop-data" type="application/json">')[1].split("</script>")[0])["ppo_pace"]

    assert pace() is None  # no PPO round yet: no figure
    round = finished_round(project, reference, reward_model(project), 1, kl=2.0, score=0.5)
    round.config = {**round.config, "rollouts_per_update": 16, "max_new_tokens": 64}
    round.metrics_history = [
        {**p, "time/update": s} for p, s in zip(round.metrics_history, [30, 34, 90, 32], strict=True)
    ]
    round.save()
    found = pace()
    assert found["round"] == 1 and found["seconds_per_update"] == 33  # the median: one slow update does not count
    assert found["seconds_per_rollout_token"] == pytest.approx(33 / (16 * 64))
