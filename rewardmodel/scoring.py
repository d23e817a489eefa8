"""Score (prompt, response) pairs with a trained reward model. No Django here.

The inputs are rendered and truncated by :class:`rewardmodel.data.Formatter`, the very code
training used, with the ``max_length`` recorded in the model's ``reward_model.json``. The
rewards are normalized (validation mean 0) because training folded the offset into the
weights; when it could not (a head and final norm without bias), ``reward_model.json``
carries ``reward_offset`` and it is subtracted here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewardmodel.data import Formatter, pad_batch
from rewardmodel.train import autocast_dtype, forward_rewards, load_base
from trainio.runtime import resolve_device

DEFAULT_MAX_LENGTH = 512


class RewardScorer:
    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        max_length: int,
        reward_offset: float = 0.0,
        device: torch.device,
        precision: str = "auto",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.formatter = Formatter(tokenizer, max_length)
        self.reward_offset = reward_offset
        self.device = device
        self.amp = autocast_dtype(precision, device)

    @classmethod
    def from_pretrained(cls, model_dir: str, device: str = "auto", precision: str = "auto") -> RewardScorer:
        """Load a model saved by ``rewardmodel.train`` (or any one-output sequence classifier)."""
        path = Path(model_dir)
        if not path.is_dir():
            raise ValueError(f"reward model {model_dir!r} is not a directory")
        sidecar: dict[str, Any] = {}
        if (path / "reward_model.json").is_file():
            sidecar = json.loads((path / "reward_model.json").read_text(encoding="utf-8"))
        tokenizer, model = load_base(str(path))
        if model.config.num_labels != 1:
            raise ValueError(f"{model_dir} has {model.config.num_labels} outputs; a reward model has one")
        target = resolve_device(device)
        model.to(target)
        return cls(
            model,
            tokenizer,
            max_length=int(sidecar.get("max_length", DEFAULT_MAX_LENGTH)),
            reward_offset=float(sidecar.get("reward_offset", 0.0)),
            device=target,
            precision=precision,
        )

    @torch.no_grad()
    def score(
        self, items: list[tuple[list[dict] | str, str]], batch_size: int = 16, *, padding_side: str = "right"
    ) -> list[float]:
        """The normalized reward of each (prompt messages or text, response text), in order."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for i, item in enumerate(items):
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], str)):
                raise ValueError(f"item {i} must be (prompt, response text)")
        encoded = [self.formatter.encode(prompt, response) for prompt, response in items]
        # Similar lengths together: less padding; results go back to the input order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        scores = [0.0] * len(encoded)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            inputs = pad_batch(
                [encoded[i] for i in chunk],
                pad_token_id=self.tokenizer.pad_token_id,
                padding_side=padding_side,
                device=self.device,
            )
            rewards = forward_rewards(self.model, inputs, self.amp) - self.reward_offset
            for i, value in zip(chunk, rewards.tolist(), strict=True):
                scores[i] = float(value)
        return scores
