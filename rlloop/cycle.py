"""One turn of the loop as a chain of jobs: export → reward model → PPO round → sampling.

``cycle_start`` records a :class:`LoopCycle` and queues its export; each later step starts
when the step before it succeeded:

1. **export**: a snapshot of the project's agreed pairs (``options["export"]``: export
   parameters; default, the project's threshold);
2. **reward_model**: a reward-model run on that snapshot, continuing from the active
   version (``options["reward_model"]``: ``config``, ``base_model``);
3. **policy_round**: a PPO round of the cycle's policy against the new reward model,
   leashed to the project's reference (``options["ppo"]``: ``config``, ``max_prompts``);
4. **sampling**: fresh samples of the new policy, one slot answered by the policy it
   started from, as tasks in the queue (``options["sampling"]``: ``max_prompts``,
   ``sampling``, ``priority``);

then the cycle has succeeded. Each step is an ordinary job of the shared lifecycle with
its own page and progress; the cycle only links them. A step that fails or is cancelled
stops the cycle with the step's own reason; a step that cannot be created (no training
pairs, no prompts left) stops it with the service's refusal.

The chain moves the moment a job ends (``jobs.lifecycle.on_job_finished``, in the process
that ended it), and a periodic check (``rlloop.tasks.advance_cycles``) catches up a cycle
whose announcement was lost with its process. Advancing locks the cycle row, so the two
never start a step twice. A :class:`LoopRule` starts a cycle when enough new agreed pairs
arrived since the last cycle's export.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Project
from arpad.errors import ServiceError
from jobs.lifecycle import JobAlreadyFinished, job_cancel, on_job_finished
from jobs.models import JobState, JobTrigger
from rlloop.models import CycleState, CycleStep, LoopCycle, LoopRule, PolicyVersion, RoundMethod
from rlloop.services import PolicyError

logger = logging.getLogger(__name__)

OPTION_KEYS = {
    "export": None,  # export parameters, checked by the export service
    "reward_model": {"config", "base_model"},
    "ppo": {"config", "max_prompts"},
    "sampling": {"max_prompts", "sampling", "priority", "responses_per_prompt"},
}
STEP_JOBS = {
    CycleStep.EXPORT: "snapshot",
    CycleStep.REWARD_MODEL: "reward_model_run",
    CycleStep.POLICY_ROUND: "policy_round",
    CycleStep.SAMPLING: "sampling_job",
}
NEXT_STEP = {
    CycleStep.EXPORT: CycleStep.REWARD_MODEL,
    CycleStep.REWARD_MODEL: CycleStep.POLICY_ROUND,
    CycleStep.POLICY_ROUND: CycleStep.SAMPLING,
    CycleStep.SAMPLING: CycleStep.DONE,
}


def _check_options(project: Project, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise PolicyError("options", "must be an object of export, reward_model, ppo, sampling")
    for key, value in options.items():
        if key not in OPTION_KEYS:
            raise PolicyError(f"options.{key}", f"unknown step; known: {', '.join(OPTION_KEYS)}")
        if not isinstance(value, dict):
            raise PolicyError(f"options.{key}", "must be an object")
        allowed = OPTION_KEYS[key]
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise PolicyError(f"options.{key}.{unknown[0]}", f"unknown; known: {', '.join(sorted(allowed))}")
    # What can be checked before anything runs is checked now, by the services' own validation.
    from rlloop.services import round_config_resolve

    try:
        round_config_resolve(RoundMethod.PPO, (options.get("ppo") or {}).get("config"))
    except PolicyError as exc:
        raise PolicyError(f"options.ppo.{exc.field or 'config'}", exc.message) from None
    if "reward_model" in options and "config" in options["reward_model"]:
        from rewardmodel.services import train_config_resolve

        try:
            train_config_resolve(options["reward_model"]["config"])
        except ServiceError as exc:
            raise PolicyError(f"options.reward_model.{exc.field or 'config'}", exc.message) from None
    if "export" in options:
        from exports.services import InvalidParams, export_params_resolve

        try:
            export_params_resolve(project=project, params=options["export"])
        except InvalidParams as exc:
            raise PolicyError(f"options.export.{exc.field}", exc.message) from None
    return options


def cycle_start(
    *,
    project: Project,
    policy: PolicyVersion | None = None,
    options: dict[str, Any] | None = None,
    user: Any = None,
    trigger: str = JobTrigger.API,
) -> LoopCycle:
    """Record a running cycle and queue its export (sent once the transaction commits)."""
    options = _check_options(project, options)
    if policy is None:
        policy = PolicyVersion.objects.filter(project=project).order_by("-number").first()
        if policy is None:
            raise PolicyError("policy", "the project has no policy yet: register a checkpoint first")
    elif policy.project_id != project.pk:
        raise PolicyError("policy", "belongs to another project")
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        running = LoopCycle.objects.filter(project=project, state=CycleState.RUNNING).first()
        if running is not None:
            raise PolicyError(
                None, f"cycle {running.number} is still running ({running.get_step_display()})", code="busy", status=409
            )
        number = (LoopCycle.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
        cycle = LoopCycle.objects.create(
            project=project,
            number=number,
            policy=policy,
            options=options,
            trigger=trigger,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        _start_step(cycle, CycleStep.EXPORT)
    return cycle


def _start_step(cycle: LoopCycle, step: str) -> None:
    """Create and send the job of ``step`` (inside the caller's transaction); a refusal stops the cycle."""
    from exports.services import InvalidParams, export_snapshot_create, export_snapshot_send
    from rewardmodel.services import reward_model_run_create
    from rlloop.sampling import sampling_job_create
    from rlloop.services import policy_round_create

    project = cycle.project
    options = cycle.options or {}
    trigger = cycle.trigger if cycle.trigger in JobTrigger.values else JobTrigger.API
    user = cycle.created_by
    try:
        with transaction.atomic():
            if step == CycleStep.EXPORT:
                cycle.snapshot = export_snapshot_create(
                    project=project, params=options.get("export") or {}, user=user, trigger=trigger
                )
                export_snapshot_send(cycle.snapshot)
            elif step == CycleStep.REWARD_MODEL:
                from rewardmodel.models import RewardModelVersion
                from rewardmodel.services.runs import base_model_name_of

                active = RewardModelVersion.objects.filter(project=project, is_active=True).first()
                settings = options.get("reward_model") or {}
                base = settings.get("base_model") or (base_model_name_of(active) if active is not None else None)
                cycle.reward_model_run = reward_model_run_create(
                    project=project,
                    snapshot=cycle.snapshot,
                    config=settings.get("config"),
                    base_model=base,
                    parent_version=active if base is None else None,
                    user=user,
                    trigger=trigger,
                )
            elif step == CycleStep.POLICY_ROUND:
                settings = options.get("ppo") or {}
                data = {"max_prompts": settings["max_prompts"]} if "max_prompts" in settings else {}
                cycle.policy_round = policy_round_create(
                    project=project,
                    method=RoundMethod.PPO,
                    policy=cycle.policy,
                    reward_model=cycle.reward_model_run.version,
                    snapshot=cycle.snapshot,
                    data=data,
                    config=settings.get("config"),
                    user=user,
                    trigger=trigger,
                )
            elif step == CycleStep.SAMPLING:
                settings = options.get("sampling") or {}
                arguments = {
                    "project": project,
                    "policies": [cycle.policy_round.result],
                    "anchor": cycle.policy,
                    "reward_model": cycle.reward_model_run.version,
                    "responses_per_prompt": settings.get("responses_per_prompt"),
                    "max_prompts": settings.get("max_prompts", 50),
                    "sampling": settings.get("sampling") or {},
                    "priority": settings.get("priority", 10),
                    "user": user,
                    "trigger": trigger,
                }
                try:
                    with transaction.atomic():
                        cycle.sampling_job = sampling_job_create(prompts="unused", **arguments)
                except PolicyError as exc:
                    if exc.field != "prompts":
                        raise
                    # Every prompt went into training: the new policy answers them afresh all the same.
                    cycle.sampling_job = sampling_job_create(prompts="project", **arguments)
            cycle.step = step
            cycle.save()
    except (ServiceError, InvalidParams) as exc:
        field = getattr(exc, "field", None)
        message = getattr(exc, "message", str(exc))
        _stop(
            cycle,
            CycleState.FAILED,
            f"{CycleStep(step).label} could not start: {field + ': ' if field else ''}{message}",
            step,
        )


def _stop(cycle: LoopCycle, state: str, reason: str, step: str | None = None) -> None:
    cycle.state = state
    cycle.reason = reason[:2000]
    if step is not None:
        cycle.step = step
    cycle.finished_at = timezone.now()
    cycle.save()


def step_job(cycle: LoopCycle) -> Any:
    field = STEP_JOBS.get(cycle.step)
    return getattr(cycle, field) if field else None


def cycle_advance(cycle_id: int) -> LoopCycle | None:
    """Move a running cycle on as far as its jobs allow: start the next step, finish, or stop with the reason."""
    with transaction.atomic():
        cycle = (
            LoopCycle.objects.select_for_update(of=("self",))
            .select_related("project", "policy", "snapshot", "reward_model_run", "policy_round", "sampling_job")
            .filter(pk=cycle_id)
            .first()
        )
        if cycle is None or cycle.is_finished:
            return cycle
        job = step_job(cycle)
        if job is None:
            _stop(cycle, CycleState.FAILED, f"the {cycle.get_step_display().lower()} job of this cycle was deleted")
            return cycle
        if not job.is_finished:
            return cycle
        label = cycle.get_step_display()
        if job.state == JobState.CANCELLED:
            _stop(cycle, CycleState.CANCELLED, f"{label} job {job.pk} was cancelled")
            return cycle
        if job.state != JobState.SUCCEEDED:
            _stop(cycle, CycleState.FAILED, f"{label} job {job.pk} failed: {job.error or 'no reason recorded'}")
            return cycle
        following = NEXT_STEP[cycle.step]
        if following == CycleStep.DONE:
            cycle.step = CycleStep.DONE
            cycle.state = CycleState.SUCCEEDED
            cycle.finished_at = timezone.now()
            cycle.save()
            return cycle
        _start_step(cycle, following)
    return cycle


def cycles_advance(*, project: Project | None = None) -> list[LoopCycle]:
    """The periodic catch-up: advance every running cycle (or those of ``project``)."""
    running = LoopCycle.objects.filter(state=CycleState.RUNNING)
    if project is not None:
        running = running.filter(project=project)
    return [c for c in (cycle_advance(pk) for pk in running.values_list("pk", flat=True)) if c is not None]


def cycle_cancel(*, cycle: LoopCycle, user: Any = None) -> LoopCycle:
    """Stop a running cycle: its current job is cancelled, and no later step starts."""
    with transaction.atomic():
        cycle = LoopCycle.objects.select_for_update().get(pk=cycle.pk)
        if cycle.is_finished:
            raise PolicyError(None, f"cycle {cycle.number} already {cycle.state}", code="already_finished", status=409)
        job = step_job(cycle)
        if job is not None and not job.is_finished:
            with contextlib.suppress(JobAlreadyFinished):
                job_cancel(job=job, user=user)
        who = f" by {user.get_username()}" if getattr(user, "is_authenticated", False) else ""
        _stop(cycle, CycleState.CANCELLED, f"cancelled{who} during the {cycle.get_step_display().lower()} step")
    return cycle


@on_job_finished
def _advance_on_finish(label: str, job_id: int) -> None:
    field = {"export": "snapshot", "reward_model": "reward_model_run", "policy_round": "policy_round",
             "sampling": "sampling_job"}.get(label)  # fmt: skip
    if field is None:
        return
    for cycle_id in LoopCycle.objects.filter(state=CycleState.RUNNING, **{f"{field}_id": job_id}).values_list(
        "pk", flat=True
    ):
        cycle_advance(cycle_id)


# --- the rule -----------------------------------------------------------------------------------


def loop_rule_check(*, rule: LoopRule, now: Any = None) -> str:
    """Start a cycle when ``min_new_pairs`` more agreed pairs exist than at the last cycle's export."""
    from exports.services import export_params_resolve, new_agreed_pairs

    project = rule.project
    if LoopCycle.objects.filter(project=project, state=CycleState.RUNNING).exists():
        return "a cycle is running"
    last = LoopCycle.objects.filter(project=project, snapshot__isnull=False).order_by("-number").first()
    since = last.snapshot if last is not None and last.snapshot.state == JobState.SUCCEEDED else None
    params = export_params_resolve(project=project, params=(rule.options or {}).get("export") or {})
    votes, added = new_agreed_pairs(project=project, since=since, params=params, at_least=rule.min_new_pairs)
    if added is None:
        return f"{votes} new pair votes since the last cycle; waiting for {rule.min_new_pairs} new pairs"
    if added < rule.min_new_pairs:
        return f"{added} new agreed pairs since the last cycle; waiting for {rule.min_new_pairs}"
    cycle = cycle_start(project=project, options=rule.options or None, trigger=JobTrigger.RULE)
    LoopRule.objects.filter(pk=rule.pk).update(last_cycle=cycle)
    return f"{added} new agreed pairs: started cycle {cycle.number}"


def loop_rules_check(*, now: Any = None) -> list[tuple[int, str]]:
    outcomes = []
    for rule in LoopRule.objects.filter(enabled=True).select_related("project"):
        try:
            outcome = loop_rule_check(rule=rule, now=now)
        except ServiceError as exc:
            outcome = f"not started: {exc.message}"
        except Exception as exc:  # one broken project must not stop the others
            logger.exception("loop rule of project %s crashed", rule.project_id)
            outcome = f"error: {type(exc).__name__}: {exc}"
        LoopRule.objects.filter(pk=rule.pk).update(last_checked_at=now or timezone.now(), last_outcome=outcome[:500])
        outcomes.append((rule.project_id, outcome))
    return outcomes


def loop_rule_set(*, project: Project, enabled: bool = True, min_new_pairs: int = 200, options: Any = None) -> LoopRule:
    """Create or replace the project's loop rule; its options are checked as a cycle's are."""
    options = _check_options(project, options)
    if isinstance(min_new_pairs, bool) or not isinstance(min_new_pairs, int) or min_new_pairs < 1:
        raise PolicyError("min_new_pairs", "must be an integer of at least 1")
    rule, _ = LoopRule.objects.update_or_create(
        project=project, defaults={"enabled": enabled, "min_new_pairs": min_new_pairs, "options": options}
    )
    return rule
