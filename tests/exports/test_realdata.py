"""The real PandaLM test set, imported and exported; the counts are recomputed from the file.

PandaLM: 999 items, each labelled by the same three annotators: 1 = response1 better,
2 = response2 better, 0 = tie. The expected pairs below come from the file alone, by the
definition of each tie policy, not from the database.
"""

from __future__ import annotations

import json

import pytest

from annotation.importers import import_file
from tests.exports.helpers import directory, export, read_jsonl
from tests.factories import ProjectFactory

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def expected_from_file(items: list[dict], policy: str) -> dict[str, tuple[str, str, tuple[int, int, int]]]:
    """prompt id -> (chosen text, rejected text, (votes chosen, rejected, tie)) of every kept pair."""
    kept = {}
    for item in items:
        labels = [int(item[k]) for k in ("annotator1", "annotator2", "annotator3") if item.get(k) is not None]
        one, two, tie = labels.count(1), labels.count(2), labels.count(0)
        if policy == "neither":
            win = max(one, two) * 2 > one + two + tie
        elif policy == "abstain":
            win = max(one, two) * 2 > one + two
        elif policy == "half":
            win = one != two
        else:  # drop: pairs whose ties are plurality go, the rest as "neither"
            win = not (tie and tie >= max(one, two)) and max(one, two) * 2 > one + two + tie
        if not win:
            continue
        first, second = _text(item["response1"]), _text(item["response2"])
        if one > two:
            kept[f"pandalm-{item['idx']}"] = (first, second, (one, two, tie))
        else:
            kept[f"pandalm-{item['idx']}"] = (second, first, (two, one, tie))
    return kept


@pytest.fixture
def items(shared_data) -> list[dict]:
    return json.loads((shared_data / "pandalm" / "testset-v1.json").read_text())


@pytest.fixture
def project(shared_data):
    project = ProjectFactory(allow_ties=True)
    import_file(project=project, path=shared_data / "pandalm" / "testset-v1.json", format="pandalm")
    return project


def test_pandalm_export_counts_match_the_file(project, items):
    snapshot = export(project)
    expected = expected_from_file(items, "neither")
    counts = snapshot.counts
    # By hand from the label histogram: 894 kept, 85 all-tie pairs tied, 20 "tie, tie, X" below threshold.
    assert len(expected) == 894
    assert counts["pairs_kept"] == 894 and sum(counts["groups"].values()) == 894
    assert counts["pairs_dropped"]["tied"] == 85 and counts["pairs_dropped"]["below_threshold"] == 20
    assert counts["votes"] == 2997 and snapshot.source_judgements == 2997

    rows = read_jsonl(directory(snapshot) / "pairs.jsonl")
    got = {
        r["prompt_id"]: (
            r["chosen"][0]["content"],
            r["rejected"][0]["content"],
            (r["votes_chosen"], r["votes_rejected"], r["votes_tie"]),
        )
        for r in rows
    }
    assert got == expected
    assert {r["weight"] for r in rows} == {1.0}  # K = 2: one pair per group

    by_split = {split: {r["prompt_id"] for r in rows if r["split"] == split} for split in ("train", "validation")}
    assert not by_split["train"] & by_split["validation"]
    assert 0.06 < len(by_split["validation"]) / 894 < 0.14


@pytest.mark.parametrize("policy", ["abstain", "half", "drop"])
def test_pandalm_tie_policies_match_the_file(project, items, policy):
    snapshot = export(project, tie_policy=policy)
    rows = read_jsonl(directory(snapshot) / "pairs.jsonl")
    expected = expected_from_file(items, policy)
    assert {r["prompt_id"] for r in rows} == set(expected)
    assert snapshot.counts["pairs_kept"] == len(expected)


def test_pandalm_reliability_weighting_and_exclusion(project, items):
    weighted = export(project, weighting="reliability")
    accuracies = [a["accuracy"] for a in weighted.manifest["annotators"]]
    # Three careful annotators (pairwise kappa 0.85-0.88): all well above chance.
    assert len(accuracies) == 3 and min(accuracies) > 0.9
    alone = export(project, exclude_annotators=["pandalm-annotator2", "pandalm-annotator3"])
    # One annotator left: every decisive label is a unanimous pair of one vote; ties are tied.
    decisive = sum(1 for item in items if int(item["annotator1"]) != 0)
    assert alone.counts["pairs_kept"] == decisive
    assert alone.counts["votes_excluded"] == 2 * 999
