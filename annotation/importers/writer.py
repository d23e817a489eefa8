"""The write phase: store parsed prompts, responses, tasks and judgements in bulk.

Runs inside the importer's ``transaction.atomic()`` after the parse phase found no error.
It issues a fixed number of queries per batch of prompts, never one per row: 100k tasks
must import in seconds, not hours. That is why imported judgements are not recorded
through ``services.judgement_import`` (which locks and re-reads its task per judgement):
the same rows are written here directly, with the tiers checked by the same
``services.validate_tiers`` during parsing, PairVotes from ``services.pair_votes_for``,
and the task counters set to what the database constraints require.

Response order. Files list responses in an order that can carry the answer (HH-RLHF
puts the chosen reply first, OpenAssistant siblings often come in rank order), and ids
follow insertion order, so ids and task positions would tell an annotator which reply
the data set preferred. Each prompt's responses are therefore inserted in a shuffled
order, and each task stores its responses in that order too. The shuffle of a prompt is
drawn from the import's ``shuffle_seed`` and the prompt's external id alone: the same
file with the same seed gives the same order, whatever the batching. (Only the
agreement report on a file, whose temporary project nobody sees, keeps the file's order.)

Task order. The queue serves equal tasks (same priority and judgement count) by id, that
is in insertion order, and data sets such as PandaLM list several response pairs on one
instruction one after the other: an annotator would get the same prompt up to ten times
in a row. With option ``spread_same_prompts`` the prompts are inserted in an order where
two with the same messages are never neighbours, where the counts allow it
(:func:`spread_same_prompts`). The order is fixed at import, so the claim query and its
index stay as they are.

Whose judgements. Imported judgements belong to *import accounts* (``ImportedAccount``):
inactive, without a usable password, created by an import for a name in the file (after
the format's ``annotator`` / ``annotator_prefix`` option). For each name:

- no account has it: an import account is created and joins the project as annotator;
- it is an import account (say from the same data set in another project): it is used,
  and joins the project as annotator if it is not a member;
- it is anybody else's account: refused, naming the line, unless it is a member of this
  project and the importing manager set ``judgements_by_members`` (the member agreed to
  have these judgements recorded as theirs); the summary then names those members. A
  person outside the project is never pulled in by a file that names them.
"""

from __future__ import annotations

import heapq
import json
import random
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
    ImportedAccount,
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
    """Find or create the accounts the judgements name, by the rule in the module docstring.

    Returns username -> user id; a name the rule refuses is an error on the line that
    first uses it, and nothing is created.
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
    users = list(existing.values())
    import_accounts = set(ImportedAccount.objects.filter(user__in=users).values_list("user_id", flat=True))
    members = set(Membership.objects.filter(project=ctx.project, user__in=users).values_list("user_id", flat=True))
    by_members = ctx.options.get("judgements_by_members", False)
    to_join = []
    member_names = []
    for name, user in sorted(existing.items()):
        line, field = first_use[name]
        if user.pk in import_accounts:
            if user.pk not in members:
                to_join.append(user)
        elif user.pk in members and by_members:
            member_names.append(name)
        elif user.pk in members:
            ctx.errors.add(
                line,
                field,
                f"annotator {name!r} is the account of a member of this project, and imported judgements go to "
                "import accounts; import under other names (option annotator or annotator_prefix), or, with "
                "that member's consent, set option judgements_by_members",
            )
        else:
            ctx.errors.add(
                line,
                field,
                f"annotator {name!r} is an existing account, not an import account and not a member of this "
                "project; import under other names (option annotator or annotator_prefix)",
            )
    if ctx.errors:
        return {}
    new_users = []
    for name in sorted(set(first_use) - set(existing)):
        # Inactive as well as passwordless: a password set by mistake later still opens nothing.
        user = user_model(username=name, is_active=False)
        user.set_unusable_password()
        new_users.append(user)
    user_model.objects.bulk_create(new_users, batch_size=ROW_BATCH)
    ImportedAccount.objects.bulk_create(
        [
            ImportedAccount(user=user, project=ctx.project, format=ctx.format, file_name=ctx.display_name[:255])
            for user in new_users
        ],
        batch_size=ROW_BATCH,
    )
    Membership.objects.bulk_create(
        [Membership(project=ctx.project, user=user, role=Role.ANNOTATOR) for user in [*to_join, *new_users]],
        batch_size=ROW_BATCH,
    )
    ctx.summary.annotators_created = len(new_users)
    if to_join:
        ctx.summary.notes.append(
            f"{len(to_join)} existing import account(s) added to the project: {', '.join(u.username for u in to_join)}"
        )
    if member_names:
        ctx.summary.notes.append(
            f"judgements written in the name of {len(member_names)} member(s) (judgements_by_members): "
            + ", ".join(member_names)
        )
    return {user.username: user.pk for user in [*existing.values(), *new_users]}


def shuffled_positions(seed: str, external_id: str, count: int) -> list[int]:
    """The order to store a prompt's ``count`` responses in, as positions in the file.

    Seeded by the import's seed and the prompt's id only, so that it does not depend on
    which batch the prompt falls in. Not for secrets: the seed itself is the secret part.
    """
    order = list(range(count))
    random.Random(f"{seed}\0{external_id}").shuffle(order)  # noqa: S311
    return order


def spread_same_prompts(prompts: list[PromptSpec]) -> list[PromptSpec]:
    """``prompts`` reordered so that two with the same messages are not neighbours, where possible.

    Greedy: next comes the prompt text with the most entries left that differs from the last
    one placed (ties: the text met first in the file, entries in file order). That leaves no
    two neighbours alike whenever no text holds more than half the entries (rounded up);
    otherwise the surplus of the largest text ends up together at the end. Deterministic.
    """
    groups: dict[str, list[PromptSpec]] = {}
    for spec in prompts:
        groups.setdefault(json.dumps(spec.messages, sort_keys=True), []).append(spec)
    if len(groups) == len(prompts):
        return list(prompts)
    queues = [list(reversed(group)) for group in groups.values()]  # pop() takes them in file order
    heap = [(-len(queue), index) for index, queue in enumerate(queues)]  # most left first, then met first
    heapq.heapify(heap)
    out: list[PromptSpec] = []
    last = None
    while heap:
        left, index = heapq.heappop(heap)
        if index == last and heap:
            # The text just placed again: take the next one and put this one back.
            left, index = heapq.heapreplace(heap, (left, index))
        out.append(queues[index].pop())
        last = index
        if left + 1 < 0:
            heapq.heappush(heap, (left + 1, index))
    return out


def write(ctx: ImportContext, *, users: dict[str, int]) -> None:
    """Insert everything the parse phase produced, a batch of prompts at a time."""
    if not connection.features.can_return_rows_from_bulk_insert:
        raise ImproperlyConfigured("imports need a database that returns ids from bulk inserts (SQLite 3.35+)")
    if ctx.options.get("spread_same_prompts"):
        ctx.prompts = spread_same_prompts(ctx.prompts)
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

    # Each prompt's responses in file order (what the specs' positions index), inserted in
    # shuffled order so that their ids, assigned in insertion order, do not follow the file.
    responses_by_prompt: list[list[Response]] = []
    ranks_by_prompt: list[list[int]] = []
    inserted: list[Response] = []
    seed = ctx.options["shuffle_seed"]
    for spec, prompt in zip(chunk, prompts, strict=True):
        rows = [
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
        order = list(range(len(rows))) if seed is None else shuffled_positions(seed, spec.external_id, len(rows))
        ranks = [0] * len(rows)
        for rank, position in enumerate(order):
            ranks[position] = rank
        responses_by_prompt.append(rows)
        ranks_by_prompt.append(ranks)
        inserted.extend(rows[position] for position in order)
    Response.objects.bulk_create(inserted, batch_size=ROW_BATCH)

    # (task row, its response ids in file order, in stored order, its spec)
    planned: list[tuple[Task, list[int], list[int], Any]] = []
    for spec, prompt, responses, ranks in zip(chunk, prompts, responses_by_prompt, ranks_by_prompt, strict=True):
        for task_spec in spec.tasks:
            # Tiers and gold index the file order; the task keeps the shuffled one.
            ids = [responses[position].pk for position in task_spec.responses]
            stored = [responses[position].pk for position in sorted(task_spec.responses, key=ranks.__getitem__)]
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
            planned.append((task, ids, stored, task_spec))
    Task.objects.bulk_create([task for task, _, _, _ in planned], batch_size=ROW_BATCH)
    TaskResponse.objects.bulk_create(
        [
            TaskResponse(task_id=task.pk, response_id=response_id, position=position)
            for task, _, stored, _ in planned
            for position, response_id in enumerate(stored)
        ],
        batch_size=ROW_BATCH,
    )

    judgements: list[Judgement] = []
    for task, ids, _, task_spec in planned:
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
