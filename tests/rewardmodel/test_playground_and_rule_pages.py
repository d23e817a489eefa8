"""The reward-model page's scoring playground and retrain rule: personas, CSRF, results, errors by field."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from rewardmodel.models import RetrainRule, RewardModelVersion
from rewardmodel.services import RewardModelError, retrain_rule_set, score_batch, version_model_dir
from tests.rewardmodel import test_pages as pages
from tests.rewardmodel import test_services as shared

pytestmark = pytest.mark.django_db
artifacts, exported, trained, as_user = pages.artifacts, pages.exported, pages.trained, pages.as_user
tiny_base, tiny = shared.tiny_base, shared.tiny

PROMPT = "Which answer is good?"
ANSWERS = ["good good good good", "bad bad bad", "good <script>alert(1)</script> bad"]


def score_url(project) -> str:
    return reverse("rewardmodel-score", args=[project.pk])


def rule_url(project) -> str:
    return reverse("rewardmodel-rule", args=[project.pk])


def playground(prompt: str = PROMPT, answers: list[str] = ANSWERS, **extra) -> dict[str, str]:
    data = {"score-version": "", "score-prompt": prompt, **extra}
    data.update({f"score-response_{n}": text for n, text in enumerate(answers, start=1)})
    return data


def field_errors(body: str, name: str) -> list[str]:
    """The errors under the field whose input has ``id_<name>``."""
    start = body.index(f'id="id_{name}"')
    block = body[start : body.index("</div>", start)]
    return [html.unescape(e) for e in re.findall(r'<small class="field-error" role="alert">(.*?)</small>', block)]


# --- playground ---------------------------------------------------------------------------------


def test_the_playground_scores_with_the_active_version_by_default(project, manager, trained):
    assert RewardModelVersion.objects.get(is_active=True).number == 1
    response = as_user(manager).post(score_url(project), playground())
    assert response.status_code == 200
    body = response.content.decode()
    expected = score_batch(RewardModelVersion.objects.get(number=1), [(PROMPT, a) for a in ANSWERS])
    result = body[body.index('id="playground-result"') :]
    assert "Scored by v1 (active)" in result
    scores = [float(x) for x in re.findall(r'data-field="score">([-0-9.]+)<', result)]
    assert scores == pytest.approx(expected, abs=1e-4)
    ranks = [int(x) for x in re.findall(r'data-field="rank">(\d+)<', result)]
    assert ranks == [sorted(expected, reverse=True).index(e) + 1 for e in expected]
    firsts = [int(x) for x in re.findall(r'data-field="first">(\d+)%<', result)]
    assert abs(sum(firsts) - 100) <= 2 and firsts[ranks.index(1)] == max(firsts)
    # What was typed stays in the form and is escaped everywhere.
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert f"\n{PROMPT}</textarea>" in body


def test_a_chosen_version_and_more_responses_than_shown(project, manager, trained):
    answers = [f"{'good ' * n}bad" for n in range(5)]
    response = as_user(manager).post(score_url(project), playground(answers=answers, **{"score-version": "2"}))
    body = response.content.decode()
    assert response.status_code == 200 and "Scored by v2</caption>" in body  # v1 is the active one
    assert len(re.findall(r'data-field="score"', body)) == 5
    assert 'id="id_score-response_5"' in body
    expected = score_batch(RewardModelVersion.objects.get(number=2), [(PROMPT, a) for a in answers])
    scores = [float(x) for x in re.findall(r'data-field="score">([-0-9.]+)<', body)]
    assert scores == pytest.approx(expected, abs=1e-4)


def test_playground_errors_are_named_by_field(project, manager, trained, settings):
    client = as_user(manager)
    response = client.post(score_url(project), playground(prompt=""))
    assert response.status_code == 400 and field_errors(response.content.decode(), "score-prompt")
    assert 'id="playground-result"' not in response.content.decode()

    response = client.post(score_url(project), playground(answers=["only one", ""]))
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "score-response_2") == ["Give at least two responses to compare."]

    response = client.post(score_url(project), playground(**{"score-version": "9"}))
    assert response.status_code == 400 and field_errors(response.content.decode(), "score-version")

    settings.REWARDMODEL_SCORE_MAX_CHARS = 40
    response = client.post(score_url(project), playground(answers=["short", "x" * 60]))
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "score-response_2") == [
        f"Prompt and response hold {len(PROMPT) + 60} characters; at most 40."
    ]
    settings.REWARDMODEL_SCORE_MAX_CHARS = 32_000

    # A version whose files are gone: said at the version, nothing scored.
    (version_model_dir(RewardModelVersion.objects.get(number=1)) / "config.json").unlink()
    response = client.post(score_url(project), playground(**{"score-version": "1"}))
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "score-version") == [
        "The files of v1 are missing from the artifact store."
    ]


def test_without_a_version_the_page_says_so_and_the_post_names_the_version(project, manager, exported):
    client = as_user(manager)
    page = client.get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert "Scoring needs a version" in page and 'id="playground-form"' not in page
    response = client.post(score_url(project), playground())
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "score-version") == [
        "No active version: train one, activate one, or choose a version."
    ]


def test_playground_and_rule_are_for_managers_only_and_need_csrf(project, manager, annotator, outsider, exported):
    for url, data in ((score_url(project), playground()), (rule_url(project), {"rule-min_new_pairs": "5"})):
        assert as_user(outsider).post(url, data).status_code == 404
        assert as_user(annotator).post(url, data).status_code == 403
        assert Client().post(url, data).status_code == 302
        assert as_user(manager).get(url).status_code == 405
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(manager)
        assert strict.post(url, data).status_code == 403
    assert not RetrainRule.objects.exists()


# --- retrain rule -------------------------------------------------------------------------------


def test_the_manager_creates_edits_and_switches_off_the_rule(project, manager, exported, tiny):
    client = as_user(manager)
    page = client.get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert "No rule yet" in page and 'id="rule-form"' in page

    form = {"rule-enabled": "on", "rule-min_new_pairs": "50", "rule-base_model": tiny, "rule-epochs": "2",
            "rule-learning_rate": "0.001", "rule-max_length": "", "rule-lora_r": "8"}  # fmt: skip
    response = client.post(rule_url(project), form)
    assert response.status_code == 302 and response["Location"].endswith("/reward-models/#rule-h")
    rule = RetrainRule.objects.get(project=project)
    assert (rule.enabled, rule.min_new_pairs, rule.base_model) == (True, 50, tiny)
    assert rule.config == {"epochs": 2, "learning_rate": 0.001, "lora": {"r": 8, "alpha": 16}}
    page = client.get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert "The retrain rule is on: a run per 50 new agreed pairs." in page
    assert 'value="50"' in page and 'value="2"' in page and 'value="8"' in page
    assert f'<option value="{tiny}" selected>' in page and "Last check: not yet." in page

    # Off: the rule keeps its settings.
    form.pop("rule-enabled")
    assert client.post(rule_url(project), form).status_code == 302
    rule.refresh_from_db()
    assert rule.enabled is False and rule.min_new_pairs == 50 and rule.config["epochs"] == 2
    page = client.get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    assert "The retrain rule is off" in page and ">Off</span>" in page


def test_the_rules_last_check_outcome_and_run_are_shown(project, manager, exported, trained):
    rule = retrain_rule_set(project=project, min_new_pairs=10)
    RetrainRule.objects.filter(pk=rule.pk).update(
        last_checked_at=timezone.now(),
        last_outcome="3 new agreed pairs since the active version; waiting for 10 <b>",
        last_run=trained[1].run,
    )
    page = as_user(manager).get(reverse("rewardmodel-list", args=[project.pk])).content.decode()
    status = page[page.index('id="rule-status"') : page.index('id="rule-form"')]
    assert ">On</span>" in status
    assert "3 new agreed pairs since the active version; waiting for 10 &lt;b&gt;" in status
    assert f'href="{reverse("rewardmodel-run", args=[project.pk, trained[1].run_id])}"' in status


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"rule-min_new_pairs": "0"}, "rule-min_new_pairs", "greater than or equal to 1"),
        ({"rule-base_model": "/etc"}, "rule-base_model", "Select a valid choice"),
        ({"rule-epochs": "0"}, "rule-epochs", "greater than or equal to 1"),
        ({"rule-learning_rate": "2"}, "rule-learning_rate", "less than or equal to 1"),
    ],
)
def test_a_bad_rule_is_not_saved_and_the_field_says_why(project, manager, exported, tiny, change, field, needle):
    form = {"rule-enabled": "on", "rule-min_new_pairs": "50", "rule-base_model": "", **change}
    response = as_user(manager).post(rule_url(project), form)
    assert response.status_code == 400
    assert any(needle in e for e in field_errors(response.content.decode(), field))
    assert not RetrainRule.objects.exists()


def test_a_base_the_service_refuses_is_named_at_its_field(project, manager, exported, settings, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    settings.REWARDMODEL_BASE_MODELS = {"broken": str(empty)}
    response = as_user(manager).post(rule_url(project), {"rule-min_new_pairs": "5", "rule-base_model": "broken"})
    assert response.status_code == 400
    assert field_errors(response.content.decode(), "rule-base_model") == [
        "registered base model 'broken' is not a Hugging Face checkpoint directory (no config.json)"
    ]


def test_the_rule_service_checks_what_a_run_would(project, tiny):
    for kwargs, field in [
        ({"min_new_pairs": 0}, "min_new_pairs"),
        ({"min_new_pairs": True}, "min_new_pairs"),
        ({"base_model": "nope"}, "base_model"),
        ({"config": {"output_dir": "/tmp"}}, "config.output_dir"),
        ({"config": {"epochs": 0}}, "config.epochs"),
        ({"config": {"bogus": 1}}, "config.bogus"),
    ]:
        with pytest.raises(RewardModelError) as caught:
            retrain_rule_set(project=project, **kwargs)
        assert caught.value.field == field, kwargs
    assert not RetrainRule.objects.exists()
    rule = retrain_rule_set(project=project, min_new_pairs=7, base_model=tiny, config={"epochs": 3})
    assert (rule.min_new_pairs, rule.base_model, rule.config) == (7, tiny, {"epochs": 3})
    again = retrain_rule_set(project=project, enabled=False, min_new_pairs=9)
    assert again.pk == rule.pk and (again.enabled, again.min_new_pairs, again.base_model) == (False, 9, "")
