"""The scoring request's size limits count everything (issue 13, finding 7).

They used to count message contents only: a 300,000-character role and 20,000 empty
messages passed. Roles now come from a short set, prompts hold a bounded number of messages,
and the character cap counts roles too. Nothing here needs a trained model: a request that
passes the checks reaches the scorer and gets 409 because the version's files do not exist.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from rewardmodel.models import RewardModelRun, RewardModelVersion
from tests.exports.helpers import add_task, export, judge

pytestmark = pytest.mark.django_db


@pytest.fixture
def score(project, manager, settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path
    task, (a, b) = add_task(project)
    judge(task, "voter", [[a], [b]])
    snapshot = export(project)
    run = RewardModelRun.objects.create(
        project=project, snapshot=snapshot, base_model="base", config={}, output_dir="rewardmodels/x/run"
    )
    RewardModelVersion.objects.create(
        project=project, number=1, run=run, snapshot=snapshot, base_model="base", model_dir="rewardmodels/x/v1"
    )
    client = APIClient()
    client.force_authenticate(manager)

    def post(prompt, response: str = "y"):
        return client.post(
            f"/api/v1/projects/{project.pk}/reward-models/1/score/",
            {"items": [{"prompt": prompt, "response": response}]},
            format="json",
        )

    return post


def passed_the_checks(response) -> bool:
    return response.status_code == 409 and response.json()["code"] == "model_missing"


def test_a_conversation_within_the_limits_reaches_the_scorer(score):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Why?"},
    ]
    assert passed_the_checks(score(conversation))
    assert passed_the_checks(score("plain text is one user turn"))


def test_a_huge_role_is_refused(score):
    response = score([{"role": "x" * 300_000, "content": "hi"}])
    assert response.status_code == 400
    assert "role must be one of system, user, assistant" in response.content.decode()


@pytest.mark.parametrize("role", ["moderator", "USER", "", None, 3])
def test_roles_come_from_a_short_set(score, role):
    assert score([{"role": role, "content": "hi"}]).status_code == 400


def test_twenty_thousand_empty_messages_are_refused(score):
    response = score([{"role": "user", "content": ""}] * 20_000)
    assert response.status_code == 400
    assert "at most 128 messages, got 20000" in response.content.decode()


def test_the_message_cap_is_a_setting(score, settings):
    settings.REWARDMODEL_SCORE_MAX_MESSAGES = 3
    assert passed_the_checks(score([{"role": "user", "content": "a"}] * 3))
    assert "at most 3 messages" in score([{"role": "user", "content": "a"}] * 4).content.decode()


def test_roles_count_towards_the_character_cap(score, settings):
    settings.REWARDMODEL_SCORE_MAX_CHARS = 100
    # 12 messages of 4 content characters: 48 characters of content, 48 + 12 * 4 = 96 with roles.
    within = [{"role": "user", "content": "abcd"}] * 12
    assert passed_the_checks(score(within, response="1234"))
    # The same contents under a longer role: 48 + 12 * 9 = 156, over the cap.
    over = [{"role": "assistant", "content": "abcd"}] * 12
    refused = score(over, response="1234")
    assert refused.status_code == 400 and "160 characters; at most 100" in refused.json()["detail"]


@pytest.mark.parametrize(
    "prompt",
    [
        [],
        [{"role": "user"}],
        [{"role": "user", "content": "a", "name": "x"}],
        [{"role": "user", "content": ["a"]}],
        ["user: hi"],
        {"role": "user", "content": "hi"},
    ],
)
def test_malformed_conversations_are_refused(score, prompt):
    assert score(prompt).status_code == 400
