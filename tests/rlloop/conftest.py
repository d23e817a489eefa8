"""Fixtures of the policy tests: a tiny chat policy built in code and a prompt file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlloop.prompts import write_records
from tests.rewardmodel.tiny import CHATML, build_llama

# Tiny models: one thread is fastest, and avoids spin-waiting threads on a shared machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama causal LM with a ChatML-like chat template (pad = eos)."""
    return build_llama(tmp_path_factory.mktemp("policy"), chat_template=CHATML)


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = ["river", "mountain", "city", "story"]
    records = [{"prompt": f"tell me about the {words[i % 4]} {i}", "id": i} for i in range(32)]
    return write_records(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", records)


@pytest.fixture(scope="session")
def gold_model(tiny_policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny reward model to watch PPO with: the tiny policy read as a one-output classifier, random head (seed 1)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = tmp_path_factory.mktemp("gold")
    torch.manual_seed(1)
    AutoModelForSequenceClassification.from_pretrained(str(tiny_policy), num_labels=1).save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(tiny_policy)).save_pretrained(directory)
    return directory
