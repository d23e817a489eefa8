"""Fixtures of the reward-model tests: tiny bases and snapshots built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.rewardmodel.tiny import build_gpt2, build_llama, synthetic_snapshot

# The models here are tiny: one thread is fastest, and on a shared machine several threads
# that spin-wait for each other are 20x slower than one.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GPT-2 base with its own pad token."""
    return build_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def tiny_gpt2_dropout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with dropout 0.1 everywhere, for tests where the RNG state matters."""
    return build_gpt2(tmp_path_factory.mktemp("gpt2-dropout"), dropout=0.1)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama base without a pad token (pad = eos) and without any bias."""
    return build_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def snapshot_k4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 four-way groups of the known-rule task (a quarter of them validation)."""
    return synthetic_snapshot(tmp_path_factory.mktemp("snap-k4"), n_groups=300, k=4, seed=1)


@pytest.fixture(scope="session")
def snapshot_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 three-way groups with split votes: quick runs of every code path."""
    return synthetic_snapshot(tmp_path_factory.mktemp("snap-small"), n_groups=48, k=3, votes=3, split_votes=0.4, seed=2)
