"""Checks that what an annotator is shown names no origin: no external id, no source.

Shared by the API tests and the labeling page's tests, on the real data sets whose ids
and origin would give the reference answer away.
"""

from __future__ import annotations

from annotation.models import ProjectKind, Prompt, Response, Task

# (format, project settings, import options, file) of the imports whose ids and origin would
# give the reference away: HH's chosen reply, OpenAssistant's consensus, PandaLM's labels.
REAL_IMPORTS = [
    ("hh-rlhf", {}, {"import_preference": True}, "hh-rlhf/harmless-base-test.jsonl.gz"),
    (
        "oasst",
        {"kind": ProjectKind.RANKING, "responses_per_task": 9, "allow_ties": True},
        {"import_consensus": True},
        "oasst_en100/en_100_tree.jsonl",
    ),
    ("pandalm", {"allow_ties": True, "annotations_per_task": 4}, {}, "pandalm/testset-v1.json"),
]


def origin_values(project) -> set[str]:
    """Every prompt and response external id and every source of ``project``: none is for annotators."""
    values = set(Prompt.objects.filter(project=project).values_list("external_id", flat=True))
    responses = Response.objects.filter(prompt__project=project)
    values |= set(responses.values_list("external_id", flat=True))
    values |= set(responses.values_list("source", flat=True))
    values |= set(Task.objects.filter(project=project).values_list("source", flat=True))
    return values - {""}


def assert_blind(body: object, origin: set[str]) -> None:
    """No key that names an origin, and no value that is one, anywhere in a JSON body."""
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            assert not {"external_id", "source", "metadata", "is_gold", "gold_tiers"} & set(node), sorted(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            assert node not in origin, node
