"""The device a trainer runs on and its seeds, one way for every trainer and sampler. No Django."""

from __future__ import annotations

import random

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (a GPU when there is one), or a torch device name; CUDA asked for without one is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    """Python's, torch's and every GPU's generator."""
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
