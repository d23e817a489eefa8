"""The write phase: store parsed prompts, responses, tasks and judgements in bulk.

Runs inside the importer's ``transaction.atomic()`` after the parse phase found no error.
It issues a fixed number of queries per batch of prompts, never one per row: 100k tasks
must import in seconds, not hours. That is why imported judgements are not recorded
through ``services.judgement_import`` (which locks and re-reads its task per judgement):
the same rows are written here directly, with the tiers checked by the same
``services.validate_tiers`` during parsing, PairVotes from ``services.pair_votes_for``,
and the task counters set to what the database constraints require.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from annotation import services
from annotation.importers.base import ImportContext, PromptSpec
from annotation.models import (
    Judgement,
    JudgementSource,
    Membership,
    PairVote,
    Prompt,
    Response,
    Role,
    Task,
    TaskResponse,
    TaskState,
)

# Prompts per round of bulk inserts. Bounded so that memory stays flat for big files.
PROMPT_BATCH = 1000
# Rows per INSERT statement; Django lowers it further where the database needs.
ROW_BATCH = 1000
# Values per ``IN (...)`` lookup, well under SQLite's variable limit.
LOOKUP_BATCH = 500

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def check_existing(ctx: ImportContext) -> None:
    """Refuse prompt ids the project already has; runs inside the transaction."""
    by_id = {prompt.external_id: prompt for prompt in ctx.prompts}
    for chunk in batched(by_id, LOOKUP_BATCH):
        taken = Prompt.objects.filter(project=ctx.project, external_id__in=chunk).values_list("external_id", flat=True)
        for external_id in sorted(taken):
            prompt = by_id[external_id]
            ctx.errors.add(
                prompt.line, prompt.id_field, f"id {external_id!r} already exists in this project (imported before?)"
            )


def resolve_annotators(ctx: ImportContext) -> dict[str, int]:
    """Find or create the annotator accounts the judgements name; return username -> user id.

    New accounts get unusable passwords: they stand for people outside the platform and
    cannot log in. An existing account is used when it is a member of the project already,
    or when it has no usable password (an account an earlier import created, say for the
    same data set in another project). A real person's account is never pulled into a
    project by an import file naming them; that is an error.
    """
    first_use: dict[str, tuple[int | None, str]] = {}
    for prompt in ctx.prompts:
        for task in prompt.tasks:
            for judgement in task.judgements:
                line = judgement.line if judgement.line is not None else task.line
                first_use.setdefault(judgement.annotator, (line, judgement.field))
    if not first_use:
        return {}
    user_model = get_user_model()
    existing: dict[str, Any] = {}
    for chunk in batched(first_use, LOOKUP_BATCH):
        existing.update((user.username, user) for user in user_model.objects.filter(username__in=chunk))
    members = set(
        Membership.objects.filter(project=ctx.project, user__in=list(existing.values())).values_list(
            "user_id", flat=True
        )
    )
    to_join = []
    for name, user in sorted(existing.items()):
        if user.pk in members:
            continue
        if user.has_usable_password():
            line, field = first_use[name]
            ctx.errors.add(
                line,
                field,
                f"annotator {name!r} is an existing account that is not a member of this project; "
                "add them to the project first, or import under other names (option annotator/annotator_prefix)",
            )
            continue
        to_join.append(user)
    if ctx.errors:
        return {}
    new_users = []
    for name in sorted(set(first_use) - set(existing)):
        user = user_model(username=name)
        user.set_unusable_password()
        new_users.append(user)
    user_model.objects.bulk_create(new_users, batch_size=ROW_BATCH)
    Membership.objects.bulk_create(
        [Membership(project=ctx.project, user=user, role=Role.ANNOTATOR) for user in [*to_join, *new_users]],
        batch_size=ROW_BATCH,
    )
    ctx.summary.annotators_created = len(new_users)
    if to_join:
        ctx.summary.notes.append(
            f"{len(to_join)} existing import account(s) added to the project: {', '.join(u.username for u in to_join)}"
        )
    return {user.username: user.pk for user in [*existing.values(), *new_users]}


def write(ctx: ImportContext, *, users: dict[str, int]) -> None:
    """Insert everything the parse phase produced, a batch of prompts at a time."""
    if not connection.features.can_return_rows_from_bulk_insert:
        raise ImproperlyConfigured("imports need a database that returns ids from bulk inserts (SQLite 3.35+)")
    total = max(1, len(ctx.prompts))
    done = 0
    for chunk in batched(ctx.prompts, PROMPT_BATCH):
        _write_batch(ctx, chunk, users=users)
        done += len(chunk)
        ctx.progress(done / total)


def _write_batch(ctx: ImportContext, chunk: list[PromptSpec], *, users: dict[str, int]) -> None:
    project = ctx.project
    now = timezone.now()
    summary = ctx.summary

    prompts = [
        Prompt(
            project_id=project.pk,
            external_id=spec.external_id,
            messages=spec.messages,
            metadata=spec.metadata,
            created_at=now,
        )
        for spec in chunk
    ]
    Prompt.objects.bulk_create(prompts, batch_size=ROW_BATCH)
    # Rows are linked by the primary keys bulk_create hands back (PostgreSQL, SQLite 3.35+);
    # the ``*_id`` attributes below skip the ORM's per-object relation bookkeeping.

    responses_by_prompt: list[list[Response]] = []
    for spec, prompt in zip(chunk, prompts, strict=True):
        responses_by_prompt.append(
            [
                Response(
                    prompt_id=prompt.pk,
                    text=response.text,
                    source=response.source,
                    external_id=response.external_id,
                    metadata=response.metadata,
                    created_at=now,
                )
                for response in spec.responses
            ]
        )
    Response.objects.bulk_create([r for group in responses_by_prompt for r in group], batch_size=ROW_BATCH)

    # (task row, its response ids in order, its spec)
    planned: list[tuple[Task, list[int], Any]] = []
    for spec, prompt, responses in zip(chunk, prompts, responses_by_prompt, strict=True):
        for task_spec in spec.tasks:
            ids = [responses[position].pk for position in task_spec.responses]
            count = len(task_spec.judgements)
            # The task must be able to hold every imported judgement (check constraint
            # task_not_over_judged), even where the file has more than the project's overlap.
            required = max(project.annotations_per_task, count)
            complete = count >= required
            gold = None
            if task_spec.gold_tiers is not None:
                gold = [sorted(ids[position] for position in tier) for tier in task_spec.gold_tiers]
            task = Task(
                project_id=project.pk,
                prompt_id=prompt.pk,
                num_responses=len(ids),
                priority=task_spec.priority,
                required_annotations=required,
                judgement_count=count,
                state=TaskState.COMPLETE if complete else TaskState.OPEN,
                completed_at=now if complete else None,
                source=task_spec.source,
                is_gold=gold is not None,
                gold_tiers=gold,
                metadata=task_spec.metadata,
                created_at=now,
            )
            planned.append((task, ids, task_spec))
    Task.objects.bulk_create([task for task, _, _ in planned], batch_size=ROW_BATCH)
    TaskResponse.objects.bulk_create(
        [
            TaskResponse(task_id=task.pk, response_id=response_id, position=position)
            for task, ids, _ in planned
            for position, response_id in enumerate(ids)
        ],
        batch_size=ROW_BATCH,
    )

    judgements: list[Judgement] = []
    for task, ids, task_spec in planned:
        for judgement_spec in task_spec.judgements:
            tiers = [sorted(ids[position] for position in tier) for tier in judgement_spec.tiers]
            judgements.append(
                Judgement(
                    task_id=task.pk,
                    annotator_id=users[judgement_spec.annotator],
                    tiers=tiers,
                    rationale=judgement_spec.rationale,
                    source=JudgementSource.IMPORT,
                    created_at=now,
                )
            )
    Judgement.objects.bulk_create(judgements, batch_size=ROW_BATCH)
    votes = [
        PairVote(
            judgement_id=judgement.pk,
            task_id=judgement.task_id,
            annotator_id=judgement.annotator_id,
            response_a_id=a,
            response_b_id=b,
            winner=winner,
            a_shown_first=None,  # imported judgements carry no display order
        )
        for judgement in judgements
        for a, b, winner, _ in services.pair_votes_for(judgement.tiers)
    ]
    PairVote.objects.bulk_create(votes, batch_size=ROW_BATCH)

    summary.prompts += len(prompts)
    summary.responses += sum(len(group) for group in responses_by_prompt)
    summary.tasks += len(planned)
    summary.judgements += len(judgements)
