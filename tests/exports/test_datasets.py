"""An export loads with Hugging Face ``datasets`` as-is, JSON lines and Parquet alike (offline)."""

from __future__ import annotations

import os

import pytest

from exports.formats import PAIR_COLUMNS
from tests.exports.helpers import add_task, directory, export, judge, ranking_project

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


@pytest.fixture
def snapshot():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by arpad.settings_test: no hub here
    project = ranking_project(k=4)
    for t in range(30):
        task, ids = add_task(project)
        for n in range(3):
            # Mostly agreed rankings, some ties, so that some pairs are dropped.
            order = ids if (t + n) % 4 else [ids[1], ids[0], ids[2], ids[3]]
            tiers = [[order[0]], [order[1], order[2]], [order[3]]] if t % 5 == 0 else [[r] for r in order]
            judge(task, f"hf{n}", tiers)
    return export(project, validation_fraction=0.3, batch_pairs=12)


def _load(kind: str, files, tmp_path):
    return datasets.load_dataset(kind, data_files=files, cache_dir=str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("kind,name", [("json", "pairs.jsonl"), ("parquet", "pairs.parquet")])
def test_pairs_load_with_trl_columns(snapshot, tmp_path, kind, name):
    loaded = _load(kind, {"pairs": str(directory(snapshot) / name)}, tmp_path)["pairs"]
    assert loaded.column_names == list(PAIR_COLUMNS)
    assert loaded.num_rows == snapshot.counts["pairs_kept"] > 0
    row = loaded[0]
    # TRL's conversational preference format with an explicit prompt.
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
    assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
    train = loaded.filter(lambda r: r["split"] == "train")
    validation = loaded.filter(lambda r: r["split"] == "validation")
    assert train.num_rows == snapshot.counts["pairs"]["train"] > 0
    assert validation.num_rows == snapshot.counts["pairs"]["validation"] > 0
    assert not set(train["prompt_id"]) & set(validation["prompt_id"])


def test_json_and_parquet_load_to_the_same_rows(snapshot, tmp_path):
    root = directory(snapshot)
    as_json = _load("json", {"x": str(root / "pairs.jsonl")}, tmp_path)["x"]
    as_parquet = _load("parquet", {"x": str(root / "pairs.parquet")}, tmp_path)["x"]
    assert as_json.to_list() == as_parquet.to_list()


def test_batches_and_groups_load(snapshot, tmp_path):
    root = directory(snapshot)
    batches = _load(
        "json",
        {"train": str(root / "batches" / "train-*.jsonl"), "validation": str(root / "batches" / "validation-*.jsonl")},
        tmp_path,
    )
    assert batches["train"].num_rows == snapshot.counts["pairs"]["train"]
    assert batches["validation"].num_rows == snapshot.counts["pairs"]["validation"]
    groups = _load("json", {"g": str(root / "groups.jsonl")}, tmp_path)["g"]
    assert groups.num_rows == sum(snapshot.counts["groups"].values())
    assert {"group_id", "prompt", "responses", "consensus", "pairs", "split"} <= set(groups.column_names)
