"""Retrain rules: an export job when enough new agreed pairs arrived, and the run once it succeeded."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from exports.models import ExportState
from rewardmodel.models import RetrainRule, RewardModelRun, RewardModelVersion, RunState, RunTrigger
from rewardmodel.services.errors import RewardModelError
from rewardmodel.services.runs import (
    base_model_name_of,
    base_model_resolve,
    reward_model_run_create,
    train_config_resolve,
)

logger = logging.getLogger(__name__)


@transaction.atomic
def retrain_rule_set(
    *,
    project: Any,
    enabled: bool = True,
    min_new_pairs: int = 1000,
    base_model: str = "",
    config: dict[str, Any] | None = None,
) -> RetrainRule:
    """Create or change the project's retrain rule; its base and options are checked as a run's are.

    ``base_model`` is a registered name, or "" for the base the active version was trained
    from. ``config`` holds the training options the rule's runs set (the others keep the
    trainer's defaults); it is stored as given once ``train_config_resolve`` accepts it.
    Switching the rule off keeps its settings and its last outcome.
    """
    if isinstance(min_new_pairs, bool) or not isinstance(min_new_pairs, int) or min_new_pairs < 1:
        raise RewardModelError("min_new_pairs", "must be an integer of at least 1")
    if not isinstance(base_model, str):
        raise RewardModelError("base_model", "must be the name of a registered base model")
    if base_model:
        base_model_resolve(project=project, name=base_model, parent_version=None)
    config = dict(config or {})
    train_config_resolve(config)
    rule, _ = RetrainRule.objects.update_or_create(
        project=project,
        defaults={"enabled": bool(enabled), "min_new_pairs": min_new_pairs, "base_model": base_model, "config": config},
    )
    return rule


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
    from exports.params import ExportParams
    from exports.services import (
        export_params_resolve,
        export_snapshot_create,
        export_snapshot_send,
        new_agreed_pairs,
    )

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
        base = rule.base_model or None
        if base is None and active is not None:
            # The active version's starting point, by its registered name: a rule trains
            # afresh from it on all the data, as that version was trained.
            base = base_model_name_of(active)
            if base is None:
                raise RewardModelError(
                    "base_model",
                    f"the base v{active.number} was trained from is not registered any more: set the rule's base model",
                )
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
    resolved = (
        ExportParams.from_dict(dict(active.snapshot.params))
        if active is not None and active.snapshot.params
        else export_params_resolve(project=project, params={})
    )
    votes, added = new_agreed_pairs(
        project=project, since=active.snapshot if active else None, params=resolved, at_least=rule.min_new_pairs
    )
    if added is None:
        return f"{votes} new pair votes since the active version; waiting for {rule.min_new_pairs} new pairs"
    if added < rule.min_new_pairs:
        return f"{added} new agreed pairs since the active version; waiting for {rule.min_new_pairs}"
    with transaction.atomic():
        snapshot = export_snapshot_create(
            project=project, params=resolved.to_dict(), user=None, trigger=RunTrigger.RULE
        )
        RetrainRule.objects.filter(pk=rule.pk).update(pending_snapshot=snapshot)
        export_snapshot_send(snapshot)
    return f"{added} new agreed pairs: started export {snapshot.pk}; the run starts when it succeeds"
