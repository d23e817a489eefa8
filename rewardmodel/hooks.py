"""The callbacks a training run reports through, in a module without torch.

``rewardmodel.train`` calls them; the platform's job (``rewardmodel.jobs``) implements
them, and is imported by every process at start, so it must not pull torch in.
"""

from __future__ import annotations


class TrainHooks:
    """Callbacks of a run; subclass and override. The defaults do nothing."""

    def on_start(self, total_steps: int, info: dict) -> None:
        """Once, before the first step (after a resume too); ``info`` holds the data counts."""

    def on_step(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        """After every optimizer step."""

    def on_eval(self, epoch: int, metrics: dict) -> None:
        """After each epoch's evaluation (``epoch`` counts from 1)."""

    def on_checkpoint(self, path: str, step: int) -> None:
        """After a checkpoint directory is complete."""

    def should_stop(self) -> bool:
        """Polled before every optimizer step; True saves a checkpoint and raises TrainingCancelled."""
        return False

    def log(self, line: str) -> None:
        """One human-readable line of progress."""


class TrainingCancelled(Exception):
    """Raised after saving a checkpoint when ``hooks.should_stop()`` said so."""

    def __init__(self, step: int, checkpoint: str) -> None:
        super().__init__(f"training cancelled at step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
