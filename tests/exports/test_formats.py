"""The pure parts of an export: parameters, the split, batches, weights, Parquet. No database."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exports.formats import PAIR_COLUMNS, Batches, ParquetPairs, chat, json_line, pair_weight, split_of
from exports.params import ExportParams, InvalidParams


class TestParams:
    def test_defaults_and_spelled_out_defaults_are_the_same_snapshot(self):
        assert ExportParams.from_dict({}).to_dict() == ExportParams.from_dict(ExportParams().to_dict()).to_dict()

    def test_annotators_are_sorted_and_deduplicated(self):
        assert ExportParams.from_dict({"exclude_annotators": [3, 1, 3]}).to_dict()["exclude_annotators"] == [1, 3]

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("threshold", 0.49),
            ("threshold", True),
            ("min_votes", 0),
            ("tie_policy", "coin"),
            ("weighting", "vibes"),
            ("validation_fraction", 1.5),
            ("batch_pairs", 0),
            ("pair_weight", "heavy"),
            ("exclude_annotators", "bob"),
            ("em_tol", 0.0),
            ("unknown", 1),
        ],
    )
    def test_bad_values_name_their_field(self, field, value):
        with pytest.raises(InvalidParams) as caught:
            ExportParams.from_dict({field: value})
        assert caught.value.field == field

    def test_majority_config_carries_the_filter(self):
        config = ExportParams(threshold=0.75, min_votes=2, tie_policy="half", exclude_annotators=(5,)).majority_config()
        assert (config.threshold, config.min_votes, config.tie_policy, config.exclude_raters) == (0.75, 2, "half", (5,))


class TestSplit:
    def test_fraction_is_respected_roughly_and_deterministically(self):
        keys = [f"prompt-{i}" for i in range(4000)]
        splits = [split_of(k, seed="s", validation_fraction=0.2) for k in keys]
        assert splits == [split_of(k, seed="s", validation_fraction=0.2) for k in keys]
        assert 0.17 < splits.count("validation") / len(keys) < 0.23

    def test_the_seed_changes_the_split_and_the_extremes_are_exact(self):
        keys = [f"p{i}" for i in range(200)]
        assert [split_of(k, seed="a", validation_fraction=0.5) for k in keys] != [
            split_of(k, seed="b", validation_fraction=0.5) for k in keys
        ]
        assert {split_of(k, seed="a", validation_fraction=0.0) for k in keys} == {"train"}
        assert {split_of(k, seed="a", validation_fraction=1.0) for k in keys} == {"validation"}

    @settings(max_examples=50, deadline=None)
    @given(keys=st.lists(st.text(min_size=1, max_size=20), unique=True, max_size=30), fraction=st.floats(0, 1))
    def test_a_prompts_split_depends_on_nothing_but_its_id(self, keys, fraction):
        alone = {k: split_of(k, seed="x", validation_fraction=fraction) for k in keys}
        for k in reversed(keys):
            assert split_of(k, seed="x", validation_fraction=fraction) == alone[k]


class TestBatches:
    @settings(max_examples=50, deadline=None)
    @given(sizes=st.lists(st.integers(1, 6), max_size=40), max_pairs=st.integers(6, 20))
    def test_batches_hold_at_most_n_pairs_and_never_split_a_group(self, tmp_path_factory, sizes, max_pairs):
        root = tmp_path_factory.mktemp("batches")
        batches = Batches(root, "train", max_pairs)
        for group, size in enumerate(sizes):
            batches.add_group([json_line({"group_id": group, "i": i}) for i in range(size)])
        files = batches.close()
        seen_groups: list[int] = []
        total = 0
        for name in sorted(files):
            rows = [json.loads(line) for line in (root / name).read_text().splitlines()]
            assert 0 < len(rows) <= max_pairs and files[name]["rows"] == len(rows)
            groups = [row["group_id"] for row in rows]
            # Whole groups, in order, each in exactly one file.
            assert not set(groups) & set(seen_groups)
            seen_groups.extend(dict.fromkeys(groups))
            total += len(rows)
        assert seen_groups == list(range(len(sizes))) and total == sum(sizes)
        assert batches.oversized == 0

    def test_a_group_larger_than_a_batch_gets_its_own_file_and_is_counted(self, tmp_path):
        batches = Batches(tmp_path, "validation", 2)
        batches.add_group([json_line({"g": 0})])
        batches.add_group([json_line({"g": 1})] * 3)
        batches.add_group([json_line({"g": 2})])
        assert sorted(batches.close()) == [f"batches/validation-0000{i}.jsonl" for i in range(3)]
        assert batches.oversized == 1


def test_pair_weights():
    assert pair_weight("group", k=4, vote_share=1.0) == pytest.approx(1 / 6)
    assert pair_weight("uniform", k=4, vote_share=0.6) == 1.0
    assert pair_weight("vote_margin", k=2, vote_share=0.75) == pytest.approx(0.5)


def test_chat_keeps_role_and_content_only():
    assert chat([{"role": "user", "content": "hi", "name": "x"}]) == [{"role": "user", "content": "hi"}]
    assert chat("plain") == [{"role": "user", "content": "plain"}]


def test_parquet_is_written_in_row_groups_and_byte_stable(tmp_path):
    def row(i: int) -> dict:
        return {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "group_id": i // 3,
            "prompt_id": f"p{i // 3}",
            "chosen_id": 2 * i,
            "rejected_id": 2 * i + 1,
            "split": "train",
            "weight": 1 / 3,
            "vote_share": 1.0,
            "votes_chosen": 3,
            "votes_rejected": 0,
            "votes_tie": 0,
            "votes_both_bad": 0,
        }

    infos = []
    for name in ("a.parquet", "b.parquet"):
        writer = ParquetPairs(tmp_path / name, row_group=4)
        for i in range(10):
            writer.write(row(i))
        infos.append(writer.close())
    assert infos[0] == infos[1] and infos[0]["rows"] == 10
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 10
    assert pq.read_table(tmp_path / "a.parquet").column_names == list(PAIR_COLUMNS)
