"""Bounds of the training options, in a module without torch so that the web process can read them.

``TrainConfig.validate`` (``rewardmodel.train``), the web form and the platform's config
check all read these: one declaration, no copies to drift.
"""

from __future__ import annotations

OPTION_BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 1000),
    "learning_rate": (1e-9, 1.0),
    "groups_per_batch": (1, 4096),
    "gradient_accumulation": (1, 1024),
    "max_length": (8, 131_072),
    "warmup_ratio": (0.0, 0.99),
    "weight_decay": (0.0, 10.0),
    "max_grad_norm": (1e-6, 1e6),
    "center_coefficient": (0.0, 100.0),
    "seed": (0, 2**31 - 1),
    "checkpoint_every_steps": (1, 10**9),
    "eval_batch_groups": (1, 4096),
    "max_train_groups": (1, 10**9),
}
LORA_RANK_BOUNDS = (1, 1024)
