"""The checkpoints a project may register as policies, by name (an ``arpad.checkpoints`` registry).

- ``smollm2-135m-instruct``: the demo policy, once ``manage.py fetch_demo_policy`` converted it
  (``rlloop.demo_policy``);
- every checkpoint directory in ``POLICY_MODELS_DIR`` (default ``var/models/policies``), under
  its directory name;
- ``POLICY_BASE_MODELS``: ``NAME=PATH`` pairs (``{name: path}`` in Django settings).

A GPU node's operator puts any Hugging Face causal-LM checkpoint directory there; managers
then register it in a project by name (``PolicyVersion``), never by a typed path.
"""

from __future__ import annotations

from pathlib import Path

from arpad.checkpoints import CheckpointRegistry, UnknownCheckpoint

__all__ = ["UnknownCheckpoint", "registry"]


def _bundled() -> dict[str, Path]:
    from rlloop.demo_policy import DEMO_POLICY_NAME, demo_policy_dir, is_converted

    path = demo_policy_dir()
    return {DEMO_POLICY_NAME: path} if is_converted(path) else {}


registry = CheckpointRegistry(
    entries_setting="POLICY_BASE_MODELS",
    models_dir_setting="POLICY_MODELS_DIR",
    bundled=_bundled,
    what="policy checkpoint",
)
