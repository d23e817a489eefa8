"""Imports of the real data sets in ../shared/data, with the counts checked against the files.

The expected numbers were counted from the files independently of the importers (see the
data README and each format module): HH harmless-base test has 2,312 pairs of which 5
diverge before the last assistant turn (lines 1255, 1689, 1951, 1953, 2037) and 4 have an
empty chosen reply; PandaLM has 999 items with 3 labels each (326 of them ties); the
OASST sample has 214 groups of 2..9 sibling replies (211 fully ranked); MT-Bench turn 1
has 1,689 votes on 910 (question, model pair) items with one duplicate (lines 992/994).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.db.models import Count

from annotation.importers import ImportFailed, import_file
from annotation.models import Judgement, PairVote, ProjectKind, Prompt, Response, Task, TaskResponse, TaskState
from tests.factories import ProjectFactory

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]

HH = "hh-rlhf/harmless-base-test.jsonl.gz"
HH_DIVERGENT_LINES = [1255, 1689, 1951, 1953, 2037]


def test_hh_rlhf(shared_data):
    project = ProjectFactory()
    summary = import_file(project=project, path=shared_data / HH, format="hh-rlhf")
    assert (summary.prompts, summary.responses, summary.tasks, summary.judgements) == (2312, 4624, 2312, 0)
    assert summary.skipped == []
    assert Task.objects.filter(project=project).count() == 2312
    divergent = Task.objects.filter(project=project, metadata__hh_divergent=True)
    assert sorted(task.prompt.metadata["import"]["line"] for task in divergent) == HH_DIVERGENT_LINES
    assert any(note.startswith("5 pair(s) differ") for note in summary.notes)
    assert Response.objects.filter(prompt__project=project, metadata__empty=True).count() == 4

    # Line 1951: the rejected dialogue has two assistant turns in a row after the shared
    # human turn; the prompt is that one human turn and the responses are the rest.
    task = divergent.get(prompt__metadata__import__line=1951)
    assert [m["role"] for m in task.prompt.messages] == ["user"]
    chosen, rejected = (task.responses.get(metadata__hh_label=label) for label in ("chosen", "rejected"))
    assert chosen.text.startswith("Hey human, if you want to be a criminal")
    assert rejected.text.startswith("Snatching purses is a very serious crime")
    assert "\n\nAssistant:" in rejected.text

    # Every non-divergent prompt ends with the human turn the replies answer.
    assert all(p.messages[-1]["role"] == "user" for p in Prompt.objects.filter(project=project))


def hh_labels_in_id_order(project) -> list[str]:
    """Each HH prompt's labels in response id order, prompts by their (content-hashed) id."""
    rows = Response.objects.filter(prompt__project=project).order_by("prompt__external_id", "pk")
    return list(rows.values_list("metadata__hh_label", flat=True))


def test_hh_rlhf_ids_and_positions_do_not_give_the_chosen_reply_away(shared_data):
    # The file puts the chosen reply first: stored in file order, the chosen reply had the
    # lower id and the first position in all 2,312 tasks.
    project = ProjectFactory()
    summary = import_file(project=project, path=shared_data / HH, format="hh-rlhf")
    labels = hh_labels_in_id_order(project)
    chosen_lower = labels[0::2].count("chosen")
    assert len(labels) == 4624 and 0.45 < chosen_lower / 2312 < 0.55
    chosen_first = TaskResponse.objects.filter(
        task__project=project, position=0, response__metadata__hh_label="chosen"
    ).count()
    assert 0.45 < chosen_first / 2312 < 0.55

    # Recorded and reproducible: the same file and seed give the same order, another seed another.
    assert (
        summary.shuffle_seed
        and Prompt.objects.filter(project=project, metadata__import__shuffle_seed=summary.shuffle_seed).count() == 2312
    )
    again = ProjectFactory()
    import_file(project=again, path=shared_data / HH, format="hh-rlhf", options={"shuffle_seed": summary.shuffle_seed})
    assert hh_labels_in_id_order(again) == labels
    other = ProjectFactory()
    import_file(project=other, path=shared_data / HH, format="hh-rlhf", options={"shuffle_seed": "another seed"})
    assert hh_labels_in_id_order(other) != labels


def test_hh_rlhf_divergent_skip_and_error(shared_data):
    summary = import_file(
        project=ProjectFactory(), path=shared_data / HH, format="hh-rlhf", options={"divergent": "skip"}
    )
    assert summary.tasks == 2307
    assert [s["line"] for s in summary.skipped] == HH_DIVERGENT_LINES
    with pytest.raises(ImportFailed) as caught:
        import_file(project=ProjectFactory(), path=shared_data / HH, format="hh-rlhf", options={"divergent": "error"})
    assert [(e.file, e.line) for e in caught.value.errors] == [
        ("harmless-base-test.jsonl.gz", line) for line in HH_DIVERGENT_LINES
    ]


def test_hh_rlhf_with_preference(shared_data):
    project = ProjectFactory()
    summary = import_file(project=project, path=shared_data / HH, format="hh-rlhf", options={"import_preference": True})
    assert summary.judgements == 2312 and PairVote.objects.filter(task__project=project).count() == 2312
    assert Task.objects.filter(project=project, judgement_count=1, state=TaskState.OPEN).count() == 2312


def test_pandalm(shared_data):
    project = ProjectFactory(allow_ties=True)
    summary = import_file(project=project, path=shared_data / "pandalm/testset-v1.json", format="pandalm")
    assert (summary.tasks, summary.judgements, summary.annotators_created) == (999, 2997, 3)
    counts = Counter(Task.objects.filter(project=project).values_list("judgement_count", flat=True))
    assert counts == {3: 999}
    assert Task.objects.filter(project=project, state=TaskState.COMPLETE).count() == 999
    votes = PairVote.objects.filter(task__project=project)
    assert votes.count() == 2997
    assert Counter(votes.values_list("winner", flat=True))[0] == 97 + 116 + 113  # the ties
    per_annotator = dict(
        Judgement.objects.filter(task__project=project)
        .values_list("annotator__username")
        .annotate(n=Count("id"))
        .values_list("annotator__username", "n")
    )
    assert per_annotator == {"pandalm-annotator1": 999, "pandalm-annotator2": 999, "pandalm-annotator3": 999}
    # The file's quirks are reported, not hidden.
    assert any(note.startswith("6 response(s) were JSON booleans") for note in summary.notes)
    assert any(note.startswith("54 item(s) have an empty response") for note in summary.notes)


def test_pandalm_without_ties_names_every_tie(shared_data):
    with pytest.raises(ImportFailed) as caught:
        import_file(project=ProjectFactory(), path=shared_data / "pandalm/testset-v1.json", format="pandalm")
    errors = caught.value.errors
    assert errors[0].field.startswith("[") and "does not allow ties" in errors[0].message
    assert errors[0].line > 1 and caught.value.truncated


def test_oasst(shared_data):
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=9, allow_ties=False)
    summary = import_file(
        project=project,
        path=shared_data / "oasst_en100/en_100_tree.jsonl",
        format="oasst",
        options={"import_consensus": True},
    )
    assert (summary.tasks, summary.responses, summary.judgements) == (214, 647, 211)
    sizes = Counter(Task.objects.filter(project=project).values_list("num_responses", flat=True))
    assert min(sizes) == 2 and max(sizes) == 9
    assert sizes == {2: 58, 3: 117, 4: 28, 5: 3, 6: 6, 8: 1, 9: 1}
    assert any("partly ranked" in note for note in summary.notes)
    for judgement in Judgement.objects.filter(task__project=project)[:50]:
        ranks = {r.pk: r.metadata["oasst_rank"] for r in Response.objects.filter(pk__in=judgement.task.response_ids())}
        assert [ranks[tier[0]] for tier in judgement.tiers] == sorted(ranks.values())

    # The file lists siblings in consensus order: stored in file order, all 211 consensus
    # rankings were ascending ids and ascending positions. Shuffled, a ranking of K replies
    # is in id order with chance 1/K!, about 0.24 of these groups in expectation.
    rankings = [[tier[0] for tier in j.tiers] for j in Judgement.objects.filter(task__project=project)]
    assert len(rankings) == 211
    in_id_order = sum(ranking == sorted(ranking) for ranking in rankings)
    assert in_id_order / 211 < 0.4
    positions = {
        task_id: ids for task_id, ids in ((t.pk, t.response_ids()) for t in Task.objects.filter(project=project))
    }
    in_position_order = sum(
        [tier[0] for tier in j.tiers] == positions[j.task_id] for j in Judgement.objects.filter(task__project=project)
    )
    assert in_position_order / 211 < 0.4


def test_oasst_slice_by_language_and_tree_count(shared_data):
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=9)
    path = shared_data / "oasst_en100/en_100_tree.jsonl"
    first_ten = import_file(project=project, path=path, format="oasst", options={"max_trees": "10"})
    first_trees = [json.loads(line) for line in path.read_text().splitlines()[:10]]

    def message_ids(node):
        yield node["message_id"]
        for reply in node.get("replies", []):
            yield from message_ids(reply)

    allowed = {mid for tree in first_trees for mid in message_ids(tree["prompt"])}
    imported = set(Prompt.objects.filter(project=project).values_list("external_id", flat=True))
    assert 0 < first_ten.tasks < 214 and imported <= allowed
    assert any("stopped after 10 trees" in note for note in first_ten.notes)
    other = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=9)
    none = import_file(project=other, path=path, format="oasst", options={"lang": "de"})
    assert none.tasks == 0
    assert any("100 tree(s) in languages other than 'de'" in note for note in none.notes)
    with pytest.raises(ImportFailed) as caught:
        import_file(project=other, path=path, format="oasst", options={"max_trees": 0})
    assert caught.value.errors[0].field == "options.max_trees"


def test_oasst_k_too_large_names_the_messages(shared_data):
    project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=5)
    with pytest.raises(ImportFailed) as caught:
        import_file(project=project, path=shared_data / "oasst_en100/en_100_tree.jsonl", format="oasst")
    assert len(caught.value.errors) == 8  # the groups of 6, 8 and 9 replies
    assert all("responses; this project takes 2 to 5" in e.message for e in caught.value.errors)


def test_mt_bench(shared_data):
    project = ProjectFactory(allow_ties=True)
    path = shared_data / "mt_bench_human/human_judgments_turn1.jsonl"
    summary = import_file(project=project, path=path, format="mt-bench", options={"duplicates": "last"})
    assert (summary.prompts, summary.tasks, summary.judgements, summary.annotators_created) == (80, 910, 1688, 65)
    assert summary.skipped == [
        {
            "line": 992,
            "reason": "judge author_0 judged question 128, claude-v1 vs gpt-3.5-turbo again on line 994; "
            "kept line 994 (duplicates=last)",
        }
    ]
    assert Response.objects.filter(prompt__project=project, metadata__text_available=False).count() == 480
    # Up to 7 judges on one item: more than the overlap of 3, so those tasks hold them all.
    counts = Counter(Task.objects.filter(project=project).values_list("judgement_count", flat=True))
    assert counts == {1: 426, 2: 282, 3: 136, 4: 47, 5: 13, 6: 5, 7: 1}
    assert not Task.objects.filter(project=project, required_annotations__lt=3).exists()
    assert Task.objects.get(project=project, judgement_count=7).required_annotations == 7

    with pytest.raises(ImportFailed) as caught:
        import_file(project=ProjectFactory(allow_ties=True), path=path, format="mt-bench")
    error = caught.value.errors[0]
    assert (error.line, error.field) == (994, "judge") and "lines 992 and 994" in error.message
