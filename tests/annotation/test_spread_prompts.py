"""Import option spread_same_prompts: the queue does not serve one prompt several times in a row."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from annotation.demo import PANDALM_NAME, load_demo
from annotation.importers import import_file
from annotation.importers.base import PromptSpec
from annotation.importers.writer import spread_same_prompts
from annotation.models import Project, TaskState
from tests.factories import ProjectFactory

PANDALM = "pandalm/testset-v1.json"


def specs(texts: str) -> list[PromptSpec]:
    return [
        PromptSpec(external_id=f"{text}{n}", messages=[{"role": "user", "content": text}], line=n)
        for n, text in enumerate(texts)
    ]


def texts_of(prompts: list[PromptSpec]) -> str:
    return "".join(spec.messages[0]["content"] for spec in prompts)


def longest_run(values: list[Any]) -> int:
    return max((len(list(group)) for _, group in itertools.groupby(values)), default=0)


@pytest.mark.parametrize("texts", ["AAAABBBCCD", "AABB", "ABCABC", "AAAAABBBBCC", "A", ""])
def test_no_two_neighbours_alike_when_the_counts_allow(texts):
    spread = spread_same_prompts(specs(texts))
    assert sorted(texts_of(spread)) == sorted(texts)
    assert longest_run(list(texts_of(spread))) <= 1
    # Each text's entries keep their file order, and the result is the same every time.
    for text in set(texts):
        lines = [spec.line for spec in spread if spec.messages[0]["content"] == text]
        assert lines == sorted(lines)
    assert [spec.line for spec in spread_same_prompts(specs(texts))] == [spec.line for spec in spread]


def test_too_many_of_one_text_leaves_only_the_surplus_together():
    assert texts_of(spread_same_prompts(specs("AAAAAB"))) == "ABAAAA"
    assert texts_of(spread_same_prompts(specs("ABCD"))) == "ABCD"  # nothing to spread: file order


def queue_texts(project: Project) -> list[str]:
    """The prompt of each open task, in the order the claim serves them."""
    tasks = project.tasks.filter(state=TaskState.OPEN).order_by("-priority", "-judgement_count", "id")
    return [str(messages) for messages in tasks.values_list("prompt__messages", flat=True)]


@pytest.mark.django_db
@pytest.mark.realdata
def test_pandalm_with_the_option_never_serves_one_prompt_twice_in_a_row(shared_data):
    plain = ProjectFactory(annotations_per_task=4, allow_ties=True)
    import_file(project=plain, path=shared_data / PANDALM, format="pandalm")
    assert longest_run(queue_texts(plain)) == 10  # in file order: up to ten model pairs on one instruction
    spread = ProjectFactory(annotations_per_task=4, allow_ties=True)
    summary = import_file(
        project=spread, path=shared_data / PANDALM, format="pandalm", options={"spread_same_prompts": True}
    )
    assert summary.tasks == 999
    queue = queue_texts(spread)
    assert len(queue) == 999 and longest_run(queue) == 1
    assert sorted(queue) == sorted(queue_texts(plain))


@pytest.mark.django_db(transaction=True)
@pytest.mark.realdata
def test_the_demo_spreads_pandalm(shared_data, monkeypatch):
    monkeypatch.setenv("ARPAD_DATA_DIR", str(shared_data))
    results = {result.project.name: result.project for result in load_demo(password="pw-for-tests-only")}
    assert longest_run(queue_texts(results[PANDALM_NAME])) == 1
