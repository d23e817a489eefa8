"""The parameters of an export snapshot: one dataclass, validated, with a canonical dict form.

No Django here. The canonical dict (every field present, defaults filled in, annotators
as sorted user ids) is what a snapshot stores and hashes, so ``{}`` and the same values
spelled out give the same snapshot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from annotation.aggregate import TIE_POLICIES, WEIGHTINGS, MajorityConfig

PAIR_WEIGHTS: tuple[str, ...] = ("group", "uniform", "vote_margin")
# The largest group a batch must be able to hold: C(9, 2) pairs of a 9-way ranking.
MAX_BATCH_PAIRS = 1_000_000


# Bounds of the numeric parameters, read by ExportParams, the export form and the API's
# serializer alike (one declaration, no copies to drift).
BOUNDS: dict[str, tuple[float, float]] = {
    "threshold": (0.5, 1.0),
    "min_votes": (1, 10_000),
    "min_reliability": (0.0, 1.0),
    "em_max_iter": (1, 10_000),
    "em_tol": (1e-15, 1.0),
    "validation_fraction": (0.0, 1.0),
    "batch_pairs": (1, MAX_BATCH_PAIRS),
}
SPLIT_SEED_MAX_CHARS = 200


class InvalidParams(ValueError):
    """A parameter is out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ExportParams:
    """What an export keeps and how it lays it out."""

    threshold: float = 0.5
    """Vote share the winner of a pair needs (0.5..1; 0.5 = strict majority); see annotation.aggregate."""
    min_votes: int = 1
    """Counted votes a pair needs to be kept."""
    tie_policy: str = "neither"
    """How tie votes count: neither, abstain, half, drop (annotation.aggregate)."""
    weighting: str = "none"
    """Vote weights: none, or reliability (Dawid–Skene log-odds of each annotator)."""
    min_reliability: float = 0.0
    """Leave out annotators whose estimated accuracy is below this (0: nobody)."""
    exclude_annotators: tuple[int, ...] = ()
    """User ids whose votes are left out."""
    em_max_iter: int = 100
    """Most EM rounds of the reliability estimate."""
    em_tol: float = 1e-6
    """EM tolerance on the annotators' accuracies."""
    validation_fraction: float = 0.1
    """Share of prompts (not pairs) that go to the validation split."""
    split_seed: str = "arpad"
    """Salt of the split hash; keep it to keep every prompt in its split across snapshots."""
    batch_pairs: int = 64
    """Most pairs in one batch file; a group is never split, so it must hold the largest group."""
    pair_weight: str = "group"
    """group: 1/C(K,2) (InstructGPT); uniform: 1; vote_margin: (2 * vote_share - 1) / C(K,2)."""

    def __post_init__(self) -> None:
        def number(name: str) -> None:
            low, high = BOUNDS[name]
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidParams(name, "must be a number")
            if not low <= value <= high:
                raise InvalidParams(name, f"must be between {low} and {high}")
            object.__setattr__(self, name, float(value))

        def integer(name: str) -> None:
            low, high = BOUNDS[name]
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParams(name, "must be an integer")
            if not low <= value <= high:
                raise InvalidParams(name, f"must be between {low} and {high}")

        def choice(name: str, choices: tuple[str, ...]) -> None:
            if getattr(self, name) not in choices:
                raise InvalidParams(name, f"must be one of {', '.join(choices)}")

        number("threshold")
        integer("min_votes")
        choice("tie_policy", TIE_POLICIES)
        choice("weighting", WEIGHTINGS)
        number("min_reliability")
        integer("em_max_iter")
        number("em_tol")
        number("validation_fraction")
        integer("batch_pairs")
        choice("pair_weight", PAIR_WEIGHTS)
        if not isinstance(self.split_seed, str) or len(self.split_seed) > SPLIT_SEED_MAX_CHARS:
            raise InvalidParams("split_seed", f"must be a string of at most {SPLIT_SEED_MAX_CHARS} characters")
        annotators = self.exclude_annotators
        if isinstance(annotators, str | bytes) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in annotators
        ):
            raise InvalidParams("exclude_annotators", "must be a list of user ids")
        object.__setattr__(self, "exclude_annotators", tuple(sorted(set(annotators))))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportParams:
        """Parameters from a (possibly partial) dict; an unknown key is an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParams(unknown[0], "is not a parameter of an export")
        values = dict(data)
        if "exclude_annotators" in values:
            given = values["exclude_annotators"]
            if not isinstance(given, list | tuple):
                raise InvalidParams("exclude_annotators", "must be a list of user ids")
            values["exclude_annotators"] = tuple(given)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: every field, annotators as a sorted list."""
        data = asdict(self)
        data["exclude_annotators"] = list(self.exclude_annotators)
        return dict(sorted(data.items()))

    def majority_config(self) -> MajorityConfig:
        return MajorityConfig(
            threshold=self.threshold,
            min_votes=self.min_votes,
            tie_policy=self.tie_policy,  # type: ignore[arg-type]
            exclude_raters=self.exclude_annotators,
            weighting=self.weighting,  # type: ignore[arg-type]
            min_reliability=self.min_reliability,
            em_max_iter=self.em_max_iter,
            em_tol=self.em_tol,
        )
