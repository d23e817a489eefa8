"""The trainers' ``@dataclass`` configs read and checked one way. No Django, no torch.

:class:`TrainerConfig` gives a config ``to_dict`` and ``from_dict``: a key that is not a field
and a field without a default that is not given are refused, each named (``unknown PPO
option(s): wat``), and then the config's own ``validate`` runs. ``validate`` collects every
problem with the ``check_*`` helpers here and raises them all at once (:func:`refuse`), so a
caller fixes a bad config in one round. The messages are the ones the web forms show beside
their fields ("epochs must be an integer in [1, 1000]").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

LORA_KEYS = frozenset({"r", "alpha", "dropout", "target_modules"})


class TrainerConfig:
    """Base of a trainer's ``@dataclass`` config; the subclass names its options and validates."""

    OPTIONS: ClassVar[str]
    """How messages name the options: "unknown {OPTIONS} option(s): ..."."""
    ARTICLE: ClassVar[str] = "a"
    """The article before ``OPTIONS`` in "a PPO config must be a JSON object" ("an SFT ...")."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Self:
        """The config of ``d``'s options, validated; ValueError naming unknown and missing keys."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.ARTICLE} {cls.OPTIONS} config must be a JSON object")
        fields = dataclasses.fields(cls)
        unknown = sorted(set(d) - {f.name for f in fields})
        if unknown:
            raise ValueError(f"unknown {cls.OPTIONS} option(s): {', '.join(unknown)}")
        missing = sorted(
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in d
        )
        if missing:
            raise ValueError(f"missing {cls.OPTIONS} option(s): {', '.join(missing)}")
        config = cls(**d)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming every bad field (:func:`refuse`); nothing else happens."""
        raise NotImplementedError


def refuse(problems: list[str]) -> None:
    """Raise every problem found at once, or nothing when there is none."""
    if problems:
        raise ValueError("; ".join(problems))


def is_int(value: Any) -> bool:
    """An integer, not a bool (JSON's true is no epoch count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_bounds(
    config: Any, bounds: Mapping[str, tuple[float, float]], optional: Iterable[str] = frozenset()
) -> list[str]:
    """Each ``name: (low, high)`` of ``bounds`` within its closed range; integers where both bounds are ints.

    A name in ``optional`` may be None.
    """
    problems = []
    for name, (low, high) in bounds.items():
        value = getattr(config, name)
        if name in optional and value is None:
            continue
        if isinstance(low, int) and isinstance(high, int):
            if not (is_int(value) and low <= value <= high):
                problems.append(f"{name} must be an integer in [{low}, {high}]")
        elif not (is_number(value) and low <= value <= high):
            problems.append(f"{name} must be a number in [{low:g}, {high:g}]")
    return problems


def check_paths(config: Any, names: Iterable[str]) -> list[str]:
    return [
        f"{name} must be a path"
        for name in names
        if not (isinstance(getattr(config, name), str) and getattr(config, name))
    ]


def check_flags(config: Any, names: Iterable[str]) -> list[str]:
    return [f"{name} must be true or false" for name in names if not isinstance(getattr(config, name), bool)]


def check_precision(precision: Any) -> list[str]:
    return [] if precision in ("auto", "fp32", "bf16") else ["precision must be auto, fp32 or bf16"]


def check_device(device: Any, *, indexed: bool = False) -> list[str]:
    """ "auto", "cpu" or "cuda"; with ``indexed``, "cuda:N" too (one process picks its GPU; accelerate picks for many)."""
    if indexed:
        if isinstance(device, str) and (device in ("auto", "cpu") or device.startswith("cuda")):
            return []
        return ["device must be auto, cpu or cuda[:N]"]
    return [] if device in ("auto", "cpu", "cuda") else ["device must be auto, cpu or cuda"]


def check_lora(lora: Any, *, rank_bounds: tuple[int, int]) -> list[str]:
    """None, or peft's options {"r", "alpha", "dropout", "target_modules"}, each optional."""
    if lora is None:
        return []
    if not isinstance(lora, dict):
        return ["lora must be an object or null"]
    problems = []
    unknown = sorted(set(lora) - LORA_KEYS)
    if unknown:
        problems.append(f"unknown lora option(s): {', '.join(unknown)}")
    low, high = rank_bounds
    rank = lora.get("r", 8)
    if not (is_int(rank) and low <= rank <= high):
        problems.append(f"lora.r must be an integer in [{low}, {high}]")
    alpha = lora.get("alpha", 16)
    if not (is_number(alpha) and alpha > 0):
        problems.append("lora.alpha must be > 0")
    dropout = lora.get("dropout", 0.0)
    if not (is_number(dropout) and 0 <= dropout < 1):
        problems.append("lora.dropout must be in [0, 1)")
    targets = lora.get("target_modules")
    if not (targets is None or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
        problems.append("lora.target_modules must be a list of module names or null")
    return problems
