"""The transactional flows around ``rewardmodel.train``, one module per concern.

* ``runs``: where a run's files live, its base model (a registered name, ``rewardmodel.bases``)
  and options, create and cancel (a run is a job of the shared lifecycle; its kind is in
  ``rewardmodel.jobs``).
* ``registry``: the versions runs produce, one active per project.
* ``compare``: scoring with a version (a small per-process cache) and comparing two.
* ``rules``: retrain rules, which start an export job and then the run.
* ``errors``: the refusal they all raise.

The names callers use are importable from here.
"""

from rewardmodel.services.compare import (
    reward_model_score,
    reward_model_versions_compare,
    score_batch,
    score_items_count_check,
    scorer_cache,
    validation_pairs,
)
from rewardmodel.services.errors import RewardModelError
from rewardmodel.services.registry import (
    reward_model_version_activate,
    reward_model_version_create,
    reward_model_version_files,
)
from rewardmodel.services.rules import retrain_rule_check, retrain_rule_set, retrain_rules_check
from rewardmodel.services.runs import (
    OUTSIDE_REGISTRY,
    PLATFORM_KEYS,
    base_model_label,
    base_model_name_of,
    base_model_names,
    default_base_model,
    resolve_path,
    reward_model_run_cancel,
    reward_model_run_create,
    run_output_dir,
    train_config_fields,
    train_config_resolve,
    version_model_dir,
)

__all__ = [
    "OUTSIDE_REGISTRY",
    "PLATFORM_KEYS",
    "RewardModelError",
    "base_model_label",
    "base_model_name_of",
    "base_model_names",
    "default_base_model",
    "resolve_path",
    "retrain_rule_check",
    "retrain_rule_set",
    "retrain_rules_check",
    "reward_model_run_cancel",
    "reward_model_run_create",
    "reward_model_score",
    "reward_model_version_activate",
    "reward_model_version_create",
    "reward_model_version_files",
    "reward_model_versions_compare",
    "run_output_dir",
    "score_batch",
    "score_items_count_check",
    "scorer_cache",
    "train_config_fields",
    "train_config_resolve",
    "validation_pairs",
    "version_model_dir",
]
