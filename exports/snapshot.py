"""Write one export snapshot of a project into a directory, streaming.

Reads the project's PairVotes through ``annotation.agreement_data`` (a few integers per
vote, all of them: the reliability estimate needs every vote at once), filters them with
``annotation.aggregate``, then walks the tasks that kept at least one pair in chunks of
``TASK_CHUNK`` by id, a few index-driven queries per chunk. The texts, which are what
grows, are never all in memory.

A chunk is written column-wise: the consensus of all its tasks in one numpy pass
(:func:`annotation.aggregate.consensus_orders`), the per-pair columns (chosen, rejected,
votes, share, weight) as arrays, each prompt and response text JSON-encoded once and
reused by ``groups.jsonl``, ``pairs.jsonl`` and the batch files (which get the very bytes
of ``pairs.jsonl``), and ``pairs.parquet`` from Arrow arrays built once per chunk. The
bytes are those the row-by-row writer produced (same content hash for the same input).

The snapshot reads the project as of one moment: the judgements counted at the start,
up to the highest judgement id then. Votes of later judgements are left out, so a
snapshot taken while annotators work is still the export of a definite state.

Files (see ``exports.formats`` for the row conventions):

* ``groups.jsonl``: one line per task that kept a pair: the prompt, all K responses, the
  consensus order and the kept pairs with their votes.
* ``pairs.jsonl`` and ``pairs.parquet``: one row per kept pair, both splits, ``split`` column.
* ``batches/<split>-NNNNN.jsonl``: the same rows packed into batches that keep groups whole.
* ``dropped.jsonl``: every pair that was voted on but not kept, with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from django.db import connections, router
from django.db.models import Count, Max

from annotation.aggregate import DROP_REASONS, MajorityResult, consensus_orders, majority_vote
from annotation.agreement_data import project_pair_votes
from annotation.models import Judgement, Project, Prompt, Response, Task, TaskResponse
from exports.formats import (
    FORMAT,
    MESSAGE_TYPE,
    PAIR_COLUMNS,
    PAIR_SCHEMA,
    SPLITS,
    Batches,
    JsonLines,
    ParquetPairs,
    chat,
    split_of,
)
from exports.params import ExportParams

TASK_CHUNK = 2_000
# Extra drop reason of the export: a kept pair whose text was never imported (MT-Bench
# placeholders) cannot train anything.
TEXT_UNAVAILABLE = "text_unavailable"
DROPPED_CHUNK = 50_000


@dataclass(frozen=True)
class SourceState:
    judgements: int
    max_judgement_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"judgements": self.judgements, "max_judgement_id": self.max_judgement_id}


def source_state(project: Project) -> SourceState:
    row = Judgement.objects.filter(task__project=project).aggregate(n=Count("id"), top=Max("id"))
    return SourceState(judgements=row["n"], max_judgement_id=row["top"])


@dataclass(frozen=True)
class Aggregated:
    """The majority vote of a project's pairs, with each unit's (task, a, b)."""

    result: MajorityResult
    margin: np.ndarray
    """The winner's support minus the loser's, per unit (computed once, read per task)."""
    task: np.ndarray
    response_a: np.ndarray
    response_b: np.ndarray
    votes_used: int
    raters: np.ndarray
    rater_votes: np.ndarray
    both_bad_tasks: np.ndarray
    """Sorted ids of the tasks with a counted "both are bad" judgement."""
    both_bad_counts: np.ndarray
    """How many such judgements each of ``both_bad_tasks`` has."""

    def both_bad_of(self, task_ids: np.ndarray) -> np.ndarray:
        """Counted "both are bad" judgements of each task id: the both-bad tie votes on each of its pairs."""
        if self.both_bad_tasks.size == 0:
            return np.zeros(np.shape(task_ids), dtype=np.int64)
        where = np.minimum(np.searchsorted(self.both_bad_tasks, task_ids), self.both_bad_tasks.size - 1)
        return np.where(self.both_bad_tasks[where] == task_ids, self.both_bad_counts[where], 0)


def aggregate_project(project: Project, params: ExportParams, source: SourceState) -> Aggregated:
    # Only the vote counts matter here (no lengths, times or gold), up to the source state.
    limit = source.max_judgement_id if source.max_judgement_id is not None else -1
    data = project_pair_votes(project, details=False, max_judgement_id=limit)
    votes = data.votes
    result = majority_vote(votes, params.majority_config())
    keys = data.units[result.units] if result.units.size else np.zeros((0, 3), dtype=np.int64)
    raters, rater_votes = np.unique(votes.rater, return_counts=True)
    # "Both are bad" judgements are full ties: each one is a tie vote on every pair of its task,
    # so a per-task count (of the judgements the votes above count) flags every pair.
    both_bad = (
        Judgement.objects.filter(task__project=project, both_bad=True, pk__lte=limit)
        .exclude(annotator_id__in=[int(r) for r in result.excluded_raters])
        .order_by()
        .values_list("task_id", flat=True)
    )
    both_bad_tasks, both_bad_counts = np.unique(np.fromiter(both_bad, dtype=np.int64), return_counts=True)
    return Aggregated(
        result=result,
        margin=result.margin,
        task=keys[:, 0],
        response_a=keys[:, 1],
        response_b=keys[:, 2],
        votes_used=int(np.count_nonzero(~np.isin(votes.rater, result.excluded_raters))),
        raters=raters,
        rater_votes=rater_votes,
        both_bad_tasks=both_bad_tasks,
        both_bad_counts=both_bad_counts.astype(np.int64),
    )


@dataclass(frozen=True)
class _Chunk:
    """The tasks of one chunk that still exist, with their responses in position order."""

    task_ids: np.ndarray
    """Sorted task ids (a subset of the wanted ones: a task deleted since the votes were read is absent)."""
    num_responses: np.ndarray
    external_ids: list[str]
    messages: list[Any]
    slot_task: np.ndarray
    """Task id of each response row, rows sorted by (task, position)."""
    slot_position: np.ndarray
    slot_response: np.ndarray
    texts: list[str]
    sources: list[str]
    unavailable: np.ndarray
    """Sorted ids of this chunk's responses whose text was never imported."""


def _sql_names(connection: Any) -> dict[str, str]:
    """Quoted table and column names of the models the chunk queries read (from model metadata)."""
    quote = connection.ops.quote_name

    def column(model: type, field: str) -> str:
        return quote(model._meta.get_field(field).column)

    return {
        "task": quote(Task._meta.db_table),
        "prompt": quote(Prompt._meta.db_table),
        "task_response": quote(TaskResponse._meta.db_table),
        "response": quote(Response._meta.db_table),
        "t_id": column(Task, "id"),
        "t_project": column(Task, "project"),
        "t_prompt": column(Task, "prompt"),
        "t_k": column(Task, "num_responses"),
        "p_id": column(Prompt, "id"),
        "p_external": column(Prompt, "external_id"),
        "p_messages": column(Prompt, "messages"),
        "tr_task": column(TaskResponse, "task"),
        "tr_position": column(TaskResponse, "position"),
        "tr_response": column(TaskResponse, "response"),
        "r_id": column(Response, "id"),
        "r_text": column(Response, "text"),
        "r_source": column(Response, "source"),
        "r_metadata": column(Response, "metadata"),
    }


def _read_chunk(project: Project, wanted: np.ndarray, connection: Any, names: dict[str, str]) -> _Chunk:
    """Tasks ``wanted`` (sorted ids) with prompts and responses: three index-driven queries.

    Tasks and their responses are read over the id range [first, last] (the primary key
    and ``TaskResponse.task`` indexes), filtered to ``wanted`` here; prompts by the ids
    those tasks name. No query joins the project's whole task or prompt table, so a chunk
    costs the same early and late in a large project. Texts come back as plain strings:
    nothing is decoded per row but the prompt.
    """
    low, high = int(wanted[0]), int(wanted[-1])
    n = names
    task_sql = (
        f"SELECT t.{n['t_id']}, t.{n['t_k']}, t.{n['t_prompt']} FROM {n['task']} t "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"WHERE t.{n['t_project']} = %s AND t.{n['t_id']} >= %s AND t.{n['t_id']} <= %s "
        f"ORDER BY t.{n['t_id']}"
    )
    response_sql = (
        f"SELECT tr.{n['tr_task']}, tr.{n['tr_position']}, tr.{n['tr_response']}, r.{n['r_text']}, "  # noqa: S608 (names from model metadata, quoted; values as parameters)
        f"r.{n['r_source']}, r.{n['r_metadata']} "
        f"FROM {n['task_response']} tr JOIN {n['response']} r ON tr.{n['tr_response']} = r.{n['r_id']} "
        f"WHERE tr.{n['tr_task']} >= %s AND tr.{n['tr_task']} <= %s "
        f"ORDER BY tr.{n['tr_task']}, tr.{n['tr_position']}"
    )
    with connection.cursor() as cursor:
        cursor.execute(task_sql, [project.pk, low, high])
        task_rows = cursor.fetchall()
        task_ids = np.array([row[0] for row in task_rows], dtype=np.int64)
        wanted_mask = np.isin(task_ids, wanted)
        if not wanted_mask.all():  # tasks in the id range that kept no pair
            task_rows = [row for row, use in zip(task_rows, wanted_mask.tolist(), strict=True) if use]
            task_ids = task_ids[wanted_mask]
        prompt_ids = sorted({row[2] for row in task_rows})
        prompts: dict[int, tuple[str, Any]] = {}
        for start in range(0, len(prompt_ids), _IN_LIST):
            batch = prompt_ids[start : start + _IN_LIST]
            cursor.execute(
                f"SELECT p.{n['p_id']}, p.{n['p_external']}, p.{n['p_messages']} FROM {n['prompt']} p "  # noqa: S608 (names from model metadata, quoted; values as parameters)
                f"WHERE p.{n['p_id']} IN ({', '.join(['%s'] * len(batch))})",
                batch,
            )
            prompts.update((row[0], (row[1], row[2])) for row in cursor.fetchall())
        cursor.execute(response_sql, [low, high])
        response_rows = cursor.fetchall()
    slot_task = np.array([row[0] for row in response_rows], dtype=np.int64)
    keep = np.isin(slot_task, task_ids)
    if not keep.all():
        response_rows = [row for row, kept in zip(response_rows, keep.tolist(), strict=True) if kept]
        slot_task = slot_task[keep]
    unavailable = np.unique(np.array([row[2] for row in response_rows if _text_unavailable(row[5])], dtype=np.int64))
    task_prompts = [prompts[row[2]] for row in task_rows]
    return _Chunk(
        task_ids=task_ids,
        num_responses=np.array([row[1] for row in task_rows], dtype=np.int64),
        external_ids=[prompt[0] for prompt in task_prompts],
        messages=[json.loads(p[1]) if isinstance(p[1], str | bytes) else p[1] for p in task_prompts],
        slot_task=slot_task,
        slot_position=np.array([row[1] for row in response_rows], dtype=np.int64),
        slot_response=np.array([row[2] for row in response_rows], dtype=np.int64),
        texts=[row[3] for row in response_rows],
        sources=[row[4] for row in response_rows],
        unavailable=unavailable,
    )


_IN_LIST = 900
"""Most ids in one ``IN (...)`` list (below SQLite's historical limit of 999 parameters)."""


def _text_unavailable(metadata: Any) -> bool:
    """Whether a response's metadata marks its text as never imported (``text_available`` false).

    The column arrives as JSON text from a raw query: it is decoded only when it names the
    key at all, so the common ``{}`` costs a substring test.
    """
    if isinstance(metadata, bytes | bytearray):
        metadata = metadata.decode()
    if isinstance(metadata, str):
        if "text_available" not in metadata:
            return False
        metadata = json.loads(metadata)
    return isinstance(metadata, dict) and metadata.get("text_available") is False


_encode_string = json.encoder.encode_basestring
"""A str as a JSON string literal, as :func:`exports.formats.json_line` writes it (``ensure_ascii=False``)."""


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass
class _Writers:
    groups: JsonLines
    pairs: JsonLines
    parquet: ParquetPairs
    batches: dict[str, Batches]
    counts: dict[str, Any]


def _write_chunk(chunk: _Chunk, agg: Aggregated, unavailable: np.ndarray, params: ExportParams, out: _Writers) -> None:
    """Every group of one chunk: vectorised per-pair columns, each text JSON-encoded once."""
    result = agg.result
    task_ids = chunk.task_ids
    n_groups = task_ids.size
    if n_groups == 0:
        return
    # The units of these tasks: each task's units are one contiguous run of the sorted units.
    starts = np.searchsorted(agg.task, task_ids, side="left")
    ends = np.searchsorted(agg.task, task_ids, side="right")
    lengths = ends - starts
    unit = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    unit_group = np.repeat(np.arange(n_groups), lengths)
    slot_group = np.searchsorted(task_ids, chunk.slot_task)
    first, second = agg.response_a[unit], agg.response_b[unit]
    kept = result.kept[unit]
    consensus = consensus_orders(
        slot_group,
        chunk.slot_response,
        unit_group,
        first,
        second,
        np.where(kept, result.winner[unit], 0),
        agg.margin[unit],
    )

    # Kept pairs whose two texts exist become rows; the others are dropped as unavailable.
    if chunk.unavailable.size:
        missing_text = np.isin(first, chunk.unavailable) | np.isin(second, chunk.unavailable)
        unavailable[unit[kept & missing_text]] = True
        kept &= ~missing_text
    rows = unit[kept]
    row_group = unit_group[kept]
    a_wins = result.winner[rows] > 0
    chosen = np.where(a_wins, agg.response_a[rows], agg.response_b[rows])
    rejected = np.where(a_wins, agg.response_b[rows], agg.response_a[rows])
    votes_chosen = np.where(a_wins, result.votes_a[rows], result.votes_b[rows])
    votes_rejected = np.where(a_wins, result.votes_b[rows], result.votes_a[rows])
    votes_tie = result.votes_tie[rows]
    group_both_bad = agg.both_bad_of(task_ids)
    votes_both_bad = group_both_bad[row_group]
    share = result.share[rows].astype(float)
    slots_per_group = np.bincount(slot_group, minlength=n_groups)
    k = np.where(slots_per_group > 0, slots_per_group, chunk.num_responses)
    weight = _pair_weights(params.pair_weight, k[row_group], share)
    # Slot of each chosen / rejected response, for its encoded text.
    # (consensus_orders has checked that every pair's responses are among its task's.)
    slot_key = np.lexsort((chunk.slot_response, slot_group))
    width = int(chunk.slot_response.max(initial=0)) + 1
    keys = slot_group[slot_key] * width + chunk.slot_response[slot_key]
    chosen_slot = slot_key[np.searchsorted(keys, row_group * width + chosen)]
    rejected_slot = slot_key[np.searchsorted(keys, row_group * width + rejected)]

    rows_per_group = np.bincount(row_group, minlength=n_groups)
    group_row_start = np.cumsum(rows_per_group) - rows_per_group
    group_slot_start = np.cumsum(slots_per_group) - slots_per_group

    texts = [_encode_string(text) for text in chunk.texts]
    encoded_sources: dict[Any, str] = {}  # a handful of distinct model names
    sources = [
        encoded_sources.get(source) or encoded_sources.setdefault(source, _compact(source)) for source in chunk.sources
    ]
    assistant_json = ['[{"role":"assistant","content":' + text + "}]" for text in texts]
    prompts = [chat(messages) for messages in chunk.messages]
    prompt_json = [_compact(prompt) for prompt in prompts]
    prompt_ids = [_encode_string(external_id) for external_id in chunk.external_ids]
    seed, fraction = params.split_seed, params.validation_fraction
    splits = [split_of(external_id, seed=seed, validation_fraction=fraction) for external_id in chunk.external_ids]

    tasks_l, chosen_l, rejected_l = task_ids.tolist(), chosen.tolist(), rejected.tolist()
    chosen_slot_l, rejected_slot_l = chosen_slot.tolist(), rejected_slot.tolist()
    weight_l, share_l = weight.tolist(), share.tolist()
    vc_l, vr_l, vt_l = votes_chosen.tolist(), votes_rejected.tolist(), votes_tie.tolist()
    group_bad_l = group_both_bad.tolist()
    slot_ids, positions = chunk.slot_response.tolist(), chunk.slot_position.tolist()
    copeland, rank = consensus.copeland.tolist(), consensus.rank.tolist()
    counts = out.counts
    groups_out: list[str] = []
    pairs_out: list[bytes] = []
    written = np.zeros(n_groups, dtype=bool)
    for g in range(n_groups):
        n_rows = int(rows_per_group[g])
        if n_rows == 0:
            continue
        written[g] = True
        task_id, split, prompt, prompt_id = tasks_l[g], splits[g], prompt_json[g], prompt_ids[g]
        head = f'{{"prompt":{prompt},"chosen":'
        middle = f',"group_id":{task_id},"prompt_id":{prompt_id},"chosen_id":'
        bad = group_bad_l[g]  # every pair of a group has the same both-bad votes
        lines = []
        pair_entries = []
        for r in range(int(group_row_start[g]), int(group_row_start[g]) + n_rows):
            c, j, w, s = chosen_l[r], rejected_l[r], weight_l[r], share_l[r]
            vc, vr, vt = vc_l[r], vr_l[r], vt_l[r]
            lines.append(
                f"{head}{assistant_json[chosen_slot_l[r]]},"
                f'"rejected":{assistant_json[rejected_slot_l[r]]}{middle}{c},"rejected_id":{j},'
                f'"split":"{split}","weight":{w!r},"vote_share":{s!r},"votes_chosen":{vc},'
                f'"votes_rejected":{vr},"votes_tie":{vt},"votes_both_bad":{bad}}}\n'
            )
            pair_entries.append(
                f'{{"chosen":{c},"rejected":{j},"votes_chosen":{vc},"votes_rejected":{vr},'
                f'"votes_tie":{vt},"votes_both_bad":{bad},"vote_share":{s!r},"weight":{w!r}}}'
            )
        block = "".join(lines).encode()
        pairs_out.append(block)
        out.batches[split].add_block(block, n_rows)
        first_slot = int(group_slot_start[g])
        n_slots = int(slots_per_group[g])
        members = range(first_slot, first_slot + n_slots)
        responses = ",".join(
            f'{{"id":{slot_ids[i]},"position":{positions[i]},"text":{texts[i]},"source":{sources[i]},'
            f'"copeland":{copeland[i]},"rank":{rank[i]}}}'
            for i in members
        )
        consensus_ids = ",".join(str(slot_ids[i]) for i in sorted(members, key=rank.__getitem__))
        groups_out.append(
            f'{{"group_id":{task_id},"prompt_id":{prompt_id},"split":"{split}","prompt":{prompt},'
            f'"responses":[{responses}],"consensus":[{consensus_ids}],"both_bad":{bad},'
            f'"pairs":[{",".join(pair_entries)}]}}\n'
        )
        counts["groups"][split] += 1
        counts["pairs"][split] += n_rows
        size = str(n_slots)
        counts["group_sizes"][size] = counts["group_sizes"].get(size, 0) + 1
    if not groups_out:
        return
    out.groups.write_block("".join(groups_out).encode(), len(groups_out))
    out.pairs.write_block(b"".join(pairs_out), int(rows_per_group.sum()))
    out.parquet.write_table(
        _pair_table(
            prompts=prompts,
            texts=chunk.texts,
            row_group=row_group,
            chosen_slot=chosen_slot,
            rejected_slot=rejected_slot,
            task_ids=task_ids,
            external_ids=chunk.external_ids,
            splits=splits,
            chosen=chosen,
            rejected=rejected,
            weight=weight,
            share=share,
            votes_chosen=votes_chosen,
            votes_rejected=votes_rejected,
            votes_tie=votes_tie,
            votes_both_bad=votes_both_bad,
        )
    )


def _pair_weights(kind: str, k: np.ndarray, share: np.ndarray) -> np.ndarray:
    """:func:`exports.formats.pair_weight` for many pairs (the same float operations)."""
    pairs = (k * (k - 1) // 2).astype(float)
    if kind == "uniform":
        return np.ones(share.size)
    if kind == "group":
        return 1.0 / pairs
    if kind == "vote_margin":
        return (2.0 * share - 1.0) / pairs
    raise ValueError(f"unknown pair weight {kind!r}")


def _messages_array(roles: list[str], contents: list[str], offsets: np.ndarray) -> pa.ListArray:
    values = pa.StructArray.from_arrays(
        [pa.array(roles, pa.string()), pa.array(contents, pa.string())], fields=list(MESSAGE_TYPE)
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=pa.list_(MESSAGE_TYPE))


def _pair_table(
    *,
    prompts: list[list[dict[str, str]]],
    texts: list[str],
    row_group: np.ndarray,
    chosen_slot: np.ndarray,
    rejected_slot: np.ndarray,
    task_ids: np.ndarray,
    external_ids: list[str],
    splits: list[str],
    chosen: np.ndarray,
    rejected: np.ndarray,
    weight: np.ndarray,
    share: np.ndarray,
    votes_chosen: np.ndarray,
    votes_rejected: np.ndarray,
    votes_tie: np.ndarray,
    votes_both_bad: np.ndarray,
) -> pa.Table:
    """The chunk's pair rows as an Arrow table: each prompt and text converted once, then taken per row."""
    prompt_offsets = np.zeros(len(prompts) + 1, dtype=np.int64)
    prompt_offsets[1:] = np.cumsum([len(prompt) for prompt in prompts])
    group_prompts = _messages_array(
        [m["role"] for prompt in prompts for m in prompt],
        [m["content"] for prompt in prompts for m in prompt],
        prompt_offsets,
    )
    replies = _messages_array(["assistant"] * len(texts), texts, np.arange(len(texts) + 1))
    take_group = pa.array(row_group, pa.int64())
    columns = [
        group_prompts.take(take_group),
        replies.take(pa.array(chosen_slot, pa.int64())),
        replies.take(pa.array(rejected_slot, pa.int64())),
        pa.array(task_ids[row_group], pa.int64()),
        pa.array(external_ids, pa.string()).take(take_group),
        pa.array(chosen, pa.int64()),
        pa.array(rejected, pa.int64()),
        pa.array(splits, pa.string()).take(take_group),
        pa.array(weight, pa.float64()),
        pa.array(share, pa.float64()),
        pa.array(votes_chosen, pa.int64()),
        pa.array(votes_rejected, pa.int64()),
        pa.array(votes_tie, pa.int64()),
        pa.array(votes_both_bad, pa.int64()),
    ]
    return pa.Table.from_arrays(columns, schema=PAIR_SCHEMA)


def write_snapshot(
    *,
    project: Project,
    params: ExportParams,
    directory: Path,
    source: SourceState,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Write the files into ``directory`` (which must be empty) and return the manifest's hashed part.

    ``progress`` is called once per chunk with the fraction done; an exception it raises
    (a cancel) stops the export there, leaving ``directory`` to the caller.
    """
    report = progress or (lambda fraction: None)
    agg = aggregate_project(project, params, source)
    result = agg.result
    kept = result.kept
    unavailable = np.zeros(kept.size, dtype=bool)
    kept_tasks = np.unique(agg.task[kept])
    report(0.05)

    out = _Writers(
        groups=JsonLines(directory / "groups.jsonl"),
        pairs=JsonLines(directory / "pairs.jsonl"),
        parquet=ParquetPairs(directory / "pairs.parquet"),
        batches={split: Batches(directory, split, params.batch_pairs) for split in SPLITS},
        counts={"groups": dict.fromkeys(SPLITS, 0), "pairs": dict.fromkeys(SPLITS, 0), "group_sizes": {}},
    )
    connection = connections[router.db_for_read(Task)]
    names = _sql_names(connection)
    for start in range(0, kept_tasks.size, TASK_CHUNK):
        wanted = kept_tasks[start : start + TASK_CHUNK]
        _write_chunk(_read_chunk(project, wanted, connection, names), agg, unavailable, params, out)
        report(0.05 + 0.9 * (start + wanted.size) / max(kept_tasks.size, 1))

    counts = out.counts
    files = {
        "groups.jsonl": out.groups.close(),
        "pairs.jsonl": out.pairs.close(),
        "pairs.parquet": out.parquet.close(),
    }
    for split in SPLITS:
        files.update(out.batches[split].close())
    files["dropped.jsonl"], dropped = _write_dropped(directory / "dropped.jsonl", agg, unavailable)

    counts["group_sizes"] = dict(sorted(counts["group_sizes"].items(), key=lambda item: int(item[0])))
    counts.update(
        {
            "tasks_with_votes": int(np.unique(agg.task).size),
            "pairs_voted": int(kept.size),
            "pairs_kept": int(sum(counts["pairs"].values())),
            "pairs_dropped": dropped,
            "votes": agg.votes_used,
            "both_bad_judgements": int(agg.both_bad_counts.sum()),
            "votes_excluded": int(agg.rater_votes[np.isin(agg.raters, result.excluded_raters)].sum()),
            "batches": {split: sum(1 for name in files if name.startswith(f"batches/{split}-")) for split in SPLITS},
            "oversized_batches": sum(b.oversized for b in out.batches.values()),
        }
    )
    report(1.0)
    return {
        "format": FORMAT,
        "project_id": project.pk,
        "parameters": params.to_dict(),
        "source": source.as_dict(),
        "counts": counts,
        "annotators": _annotators(agg),
        "columns": {"pairs": list(PAIR_COLUMNS)},
        "files": dict(sorted(files.items())),
    }


def _write_dropped(path: Path, agg: Aggregated, unavailable: np.ndarray) -> tuple[dict[str, Any], dict[str, int]]:
    result = agg.result
    reasons = result.reason.copy()
    reasons[unavailable] = TEXT_UNAVAILABLE
    out = JsonLines(path)
    dropped = np.flatnonzero(reasons != "")
    for start in range(0, dropped.size, DROPPED_CHUNK):
        units = dropped[start : start + DROPPED_CHUNK]
        share = result.share[units]
        shares = ["null" if value != value else repr(value) for value in share.tolist()]  # NaN: null
        columns = zip(
            agg.task[units].tolist(),
            agg.response_a[units].tolist(),
            agg.response_b[units].tolist(),
            reasons[units].tolist(),
            result.votes_a[units].tolist(),
            result.votes_b[units].tolist(),
            result.votes_tie[units].tolist(),
            agg.both_bad_of(agg.task[units]).tolist(),
            shares,
            strict=True,
        )
        block = "".join(
            f'{{"group_id":{task},"response_a":{a},"response_b":{b},"reason":"{reason}","votes_a":{va},'
            f'"votes_b":{vb},"votes_tie":{vt},"votes_both_bad":{bad},"share":{share}}}\n'
            for task, a, b, reason, va, vb, vt, bad, share in columns
        )
        out.write_block(block.encode(), units.size)
    by_reason = {reason: int(np.count_nonzero(reasons == reason)) for reason in (*DROP_REASONS, TEXT_UNAVAILABLE)}
    return out.close(), by_reason


def _annotators(agg: Aggregated) -> list[dict[str, Any]]:
    """Per annotator (by user id, so renaming one changes nothing): votes, exclusion, reliability."""
    reliability = agg.result.reliability
    excluded = set(agg.result.excluded_raters.tolist())
    rows = []
    for rater, n in zip(agg.raters.tolist(), agg.rater_votes.tolist(), strict=True):
        row: dict[str, Any] = {"id": rater, "votes": n, "excluded": rater in excluded}
        if reliability is not None:
            accuracy = reliability.accuracy_of(np.array([rater]))[0]
            weight = reliability.weight_of(np.array([rater]))[0]
            row["accuracy"] = None if np.isnan(accuracy) else float(accuracy)
            row["weight"] = None if np.isnan(weight) else float(weight)
        rows.append(row)
    return rows
