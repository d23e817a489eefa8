"""Scoring with registered versions (a small per-process cache of loaded models) and comparing two.

Torch is imported lazily, inside the functions that need it, so the web process pays for
it only when it scores.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from exports.models import ExportSnapshot
from exports.services import snapshot_directory
from rewardmodel import conf
from rewardmodel.models import RewardModelVersion
from rewardmodel.services.errors import RewardModelError
from rewardmodel.services.runs import version_model_dir


class _ScorerCache:
    """Loaded scorers by model directory, least recently used dropped first; thread-safe."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_dir: Path) -> Any:
        from rewardmodel.scoring import RewardScorer

        key = str(model_dir)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            scorer = RewardScorer.from_pretrained(key, device=conf.device())
            self._items[key] = scorer
            while len(self._items) > max(1, conf.scorer_cache_size()):
                self._items.popitem(last=False)
            return scorer

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


scorer_cache = _ScorerCache()


def score_batch(
    version: RewardModelVersion, items: list[tuple[list[dict[str, str]] | str, str]], *, batch_size: int = 16
) -> list[float]:
    """Rewards of (prompt, response) pairs under one version, in input order."""
    model_dir = version_model_dir(version)
    if not (model_dir / "config.json").is_file():
        raise RewardModelError(
            None, f"the files of {version.label} are missing from the artifact store", code="model_missing", status=409
        )
    if not items:
        return []
    scorer = scorer_cache.get(model_dir)
    return [float(r) for r in scorer.score(list(items), batch_size=batch_size)]


def score_item_chars(prompt: str | list[dict[str, str]], response: str) -> int:
    """What ``REWARDMODEL_SCORE_MAX_CHARS`` bounds: every character of the item, roles included."""
    if isinstance(prompt, str):
        return len(response) + len(prompt)
    return len(response) + sum(len(m["role"]) + len(m["content"]) for m in prompt)


def score_items_count_check(count: int) -> None:
    """Refuse more items than one request may score (``REWARDMODEL_SCORE_MAX_ITEMS``), before reading them."""
    limit = conf.score_max_items()
    if count > limit:
        raise RewardModelError("items", f"at most {limit} items per request, got {count}")


def reward_model_score(
    *, version: RewardModelVersion, items: list[tuple[list[dict[str, str]] | str, str]]
) -> list[float]:
    """Rewards of (prompt, response) items under ``version``, within the platform's bounds.

    What the scoring API and the reward-model page's playground both call: at most
    ``REWARDMODEL_SCORE_MAX_ITEMS`` items and ``REWARDMODEL_SCORE_MAX_CHARS`` characters
    per item (field ``items[i]``), then :func:`score_batch`.
    """
    score_items_count_check(len(items))
    max_chars = conf.score_max_chars()
    for i, (prompt, response) in enumerate(items):
        size = score_item_chars(prompt, response)
        if size > max_chars:
            raise RewardModelError(f"items[{i}]", f"prompt and response hold {size} characters; at most {max_chars}")
    return score_batch(version, items)


# --- comparison -----------------------------------------------------------------------------


def validation_pairs(snapshot: ExportSnapshot, *, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` validation pairs of a snapshot, and how many it has in all."""
    directory = snapshot_directory(snapshot)
    if directory is None:
        raise RewardModelError("snapshot", f"export {snapshot.pk} is {snapshot.state}: it has no pairs")
    path = directory / "pairs.jsonl"
    if not path.is_file():
        raise RewardModelError("snapshot", f"export {snapshot.pk}'s files are gone from the artifact store")
    rows, total = [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("split") != "validation":
                continue
            total += 1
            if len(rows) < limit:
                rows.append(row)
    return rows, total


def reward_model_versions_compare(
    *, a: RewardModelVersion, b: RewardModelVersion, snapshot: ExportSnapshot | None = None
) -> dict[str, Any]:
    """Score one validation set with two versions of a project, side by side.

    The set is ``snapshot``'s validation pairs (default: the newer version's snapshot).
    Per version: accuracy (chosen scored above rejected), mean margin. Between them:
    agreement (both prefer the same side of a pair) and the Pearson and Spearman
    correlations of their rewards over the distinct responses.
    """
    import numpy as np

    if a.project_id != b.project_id:
        raise RewardModelError("b", "the two versions belong to different projects")
    if snapshot is None:
        snapshot = max((a, b), key=lambda v: v.number).snapshot
    elif snapshot.project_id != a.project_id:
        raise RewardModelError("snapshot", "belongs to another project")
    rows, total = validation_pairs(snapshot, limit=conf.compare_max_pairs())
    if not rows:
        raise RewardModelError("snapshot", f"export {snapshot.pk} has no validation pairs to compare on")
    # Each distinct (prompt, response) is scored once per model.
    keys: dict[str, int] = {}
    items: list[tuple[Any, str]] = []
    index = []
    for row in rows:
        pair = []
        for side in ("chosen", "rejected"):
            text = "".join(m["content"] for m in row[side])
            key = json.dumps([row["prompt"], text], ensure_ascii=False)
            if key not in keys:
                keys[key] = len(items)
                items.append((row["prompt"], text))
            pair.append(keys[key])
        index.append(pair)
    idx = np.asarray(index)
    rewards = {}
    out: dict[str, Any] = {
        "snapshot": snapshot.pk,
        "pairs": len(rows),
        "pairs_available": total,
        "responses": len(items),
    }
    for name, version in (("a", a), ("b", b)):
        r = np.asarray(score_batch(version, items), dtype=np.float64)
        rewards[name] = r
        margin = r[idx[:, 0]] - r[idx[:, 1]]
        out[name] = {
            "version": version.number,
            "accuracy": float(np.mean(margin > 0)),
            "mean_margin": float(np.mean(margin)),
            "reward_mean": float(np.mean(r)),
            "reward_std": float(np.std(r)),
        }
    margin_a = rewards["a"][idx[:, 0]] - rewards["a"][idx[:, 1]]
    margin_b = rewards["b"][idx[:, 0]] - rewards["b"][idx[:, 1]]
    out["agreement"] = float(np.mean(np.sign(margin_a) == np.sign(margin_b)))
    out["pearson"] = _correlation(rewards["a"], rewards["b"])
    out["spearman"] = _correlation(_ranks(rewards["a"]), _ranks(rewards["b"]))
    return out


def _ranks(x: Any) -> Any:
    import numpy as np

    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    # Average ranks over ties.
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    return sums[inverse] / counts[inverse]


def _correlation(x: Any, y: Any) -> float | None:
    import numpy as np

    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
