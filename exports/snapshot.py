"""Write one export snapshot of a project into a directory, streaming.

Reads the project's PairVotes through ``annotation.agreement_data`` (a few integers per
vote, all of them: the reliability estimate needs every vote at once), filters them with
``annotation.aggregate``, then walks the tasks that kept at least one pair in chunks of
``TASK_CHUNK`` by id, two queries per chunk, and writes each group's lines as it goes. The
texts, which are what grows, are never all in memory.

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

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.db.models import Count, Max

from annotation.aggregate import DROP_REASONS, MajorityResult, consensus_order, majority_vote
from annotation.agreement import PairVotes
from annotation.agreement_data import project_pair_votes
from annotation.models import Judgement, Project, Task, TaskResponse
from exports.formats import (
    FORMAT,
    PAIR_COLUMNS,
    SPLITS,
    Batches,
    JsonLines,
    ParquetPairs,
    assistant,
    chat,
    json_line,
    pair_weight,
    split_of,
)
from exports.params import ExportParams

TASK_CHUNK = 500
# Extra drop reason of the export: a kept pair whose text was never imported (MT-Bench
# placeholders) cannot train anything.
TEXT_UNAVAILABLE = "text_unavailable"


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


def aggregate_project(project: Project, params: ExportParams, source: SourceState) -> Aggregated:
    data = project_pair_votes(project)
    votes = data.votes
    limit = source.max_judgement_id if source.max_judgement_id is not None else -1
    mask = votes.judgement <= limit
    votes = PairVotes(unit=votes.unit[mask], rater=votes.rater[mask], outcome=votes.outcome[mask])
    result = majority_vote(votes, params.majority_config())
    keys = data.units[result.units] if result.units.size else np.zeros((0, 3), dtype=np.int64)
    raters, rater_votes = np.unique(votes.rater, return_counts=True)
    return Aggregated(
        result=result,
        margin=result.margin,
        task=keys[:, 0],
        response_a=keys[:, 1],
        response_b=keys[:, 2],
        votes_used=int(np.count_nonzero(~np.isin(votes.rater, result.excluded_raters))),
        raters=raters,
        rater_votes=rater_votes,
    )


def _task_chunks(task_ids: np.ndarray) -> Iterator[tuple[list[int], dict[int, Any], dict[int, list[Any]]]]:
    """(ids, tasks by id, responses by task id in position order) for ``TASK_CHUNK`` tasks at a time."""
    for start in range(0, task_ids.size, TASK_CHUNK):
        chunk = [int(t) for t in task_ids[start : start + TASK_CHUNK]]
        tasks = {
            row[0]: row
            for row in Task.objects.filter(pk__in=chunk)
            .order_by()
            .values_list("pk", "num_responses", "prompt__external_id", "prompt__messages")
        }
        responses: dict[int, list[Any]] = {}
        rows = (
            TaskResponse.objects.filter(task_id__in=chunk)
            .order_by("task_id", "position")
            .values_list(
                "task_id", "position", "response_id", "response__text", "response__source", "response__metadata"
            )
        )
        for row in rows:
            responses.setdefault(row[0], []).append(row)
        yield chunk, tasks, responses


def write_snapshot(
    *,
    project: Project,
    params: ExportParams,
    directory: Path,
    source: SourceState,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Write the files into ``directory`` (which must be empty) and return the manifest's hashed part."""
    report = progress or (lambda fraction: None)
    agg = aggregate_project(project, params, source)
    result = agg.result
    kept = result.kept
    unavailable = np.zeros(kept.size, dtype=bool)
    # Units are sorted by (task, a, b): each task's units are one contiguous run.
    task_starts = np.flatnonzero(np.r_[True, agg.task[1:] != agg.task[:-1]]) if agg.task.size else np.zeros(0, int)
    task_ends = np.r_[task_starts[1:], agg.task.size].astype(np.int64) if agg.task.size else np.zeros(0, int)
    run_of = {int(agg.task[s]): (int(s), int(e)) for s, e in zip(task_starts, task_ends, strict=True)}
    kept_tasks = np.unique(agg.task[kept])
    report(0.05)

    groups_file = JsonLines(directory / "groups.jsonl")
    pairs_file = JsonLines(directory / "pairs.jsonl")
    parquet = ParquetPairs(directory / "pairs.parquet")
    batches = {split: Batches(directory, split, params.batch_pairs) for split in SPLITS}
    counts: dict[str, Any] = {
        "groups": dict.fromkeys(SPLITS, 0),
        "pairs": dict.fromkeys(SPLITS, 0),
        "group_sizes": {},
    }
    done = 0
    for chunk, tasks, responses in _task_chunks(kept_tasks):
        for task_id in chunk:
            if task_id not in tasks:  # deleted since the votes were read
                continue
            _, k, prompt_id, messages = tasks[task_id]
            start, end = run_of[task_id]
            group = _write_group(
                task_id=task_id,
                k=k,
                prompt_id=prompt_id,
                messages=messages,
                responses=responses.get(task_id, []),
                agg=agg,
                units=range(start, end),
                unavailable=unavailable,
                params=params,
            )
            if group is None:
                continue
            line, rows = group
            split = line["split"]
            groups_file.write(line)
            encoded = [json_line(row) for row in rows]
            for row, data in zip(rows, encoded, strict=True):
                pairs_file.write_line(data)
                parquet.write(row)
            batches[split].add_group(encoded)
            counts["groups"][split] += 1
            counts["pairs"][split] += len(rows)
            size = str(len(line["responses"]))
            counts["group_sizes"][size] = counts["group_sizes"].get(size, 0) + 1
        done += len(chunk)
        report(0.05 + 0.9 * done / max(kept_tasks.size, 1))

    files = {
        "groups.jsonl": groups_file.close(),
        "pairs.jsonl": pairs_file.close(),
        "pairs.parquet": parquet.close(),
    }
    for split in SPLITS:
        files.update(batches[split].close())
    files["dropped.jsonl"], dropped = _write_dropped(directory / "dropped.jsonl", agg, unavailable)

    counts["group_sizes"] = dict(sorted(counts["group_sizes"].items(), key=lambda item: int(item[0])))
    counts.update(
        {
            "tasks_with_votes": int(np.unique(agg.task).size),
            "pairs_voted": int(kept.size),
            "pairs_kept": int(sum(counts["pairs"].values())),
            "pairs_dropped": dropped,
            "votes": agg.votes_used,
            "votes_excluded": int(agg.rater_votes[np.isin(agg.raters, result.excluded_raters)].sum()),
            "batches": {split: sum(1 for name in files if name.startswith(f"batches/{split}-")) for split in SPLITS},
            "oversized_batches": sum(b.oversized for b in batches.values()),
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


def _write_group(
    *,
    task_id: int,
    k: int,
    prompt_id: str,
    messages: Any,
    responses: list[Any],
    agg: Aggregated,
    units: range,
    unavailable: np.ndarray,
    params: ExportParams,
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    result = agg.result
    index = np.arange(units.start, units.stop)
    winner = np.where(result.kept[index], result.winner[index], 0)
    ids = [row[2] for row in responses]
    consensus = consensus_order(ids, agg.response_a[index], agg.response_b[index], winner, agg.margin[index])
    rank = dict(zip(ids, consensus.rank.tolist(), strict=True))
    copeland = dict(zip(ids, consensus.copeland.tolist(), strict=True))
    by_id = {row[2]: row for row in responses}
    split = split_of(prompt_id, seed=params.split_seed, validation_fraction=params.validation_fraction)
    prompt = chat(messages)
    k = len(ids) or k

    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for unit in index[result.kept[index]]:
        a, b = int(agg.response_a[unit]), int(agg.response_b[unit])
        if (by_id[a][5] or {}).get("text_available") is False or (by_id[b][5] or {}).get("text_available") is False:
            unavailable[unit] = True
            continue
        chosen, rejected = (a, b) if result.winner[unit] > 0 else (b, a)
        votes_chosen, votes_rejected = (
            (int(result.votes_a[unit]), int(result.votes_b[unit]))
            if result.winner[unit] > 0
            else (int(result.votes_b[unit]), int(result.votes_a[unit]))
        )
        share = float(result.share[unit])
        weight = pair_weight(params.pair_weight, k=k, vote_share=share)
        pairs.append(
            {
                "chosen": chosen,
                "rejected": rejected,
                "votes_chosen": votes_chosen,
                "votes_rejected": votes_rejected,
                "votes_tie": int(result.votes_tie[unit]),
                "vote_share": share,
                "weight": weight,
            }
        )
        rows.append(
            {
                "prompt": prompt,
                "chosen": assistant(by_id[chosen][3]),
                "rejected": assistant(by_id[rejected][3]),
                "group_id": task_id,
                "prompt_id": prompt_id,
                "chosen_id": chosen,
                "rejected_id": rejected,
                "split": split,
                "weight": weight,
                "vote_share": share,
                "votes_chosen": votes_chosen,
                "votes_rejected": votes_rejected,
                "votes_tie": int(result.votes_tie[unit]),
            }
        )
    if not rows:
        return None
    line = {
        "group_id": task_id,
        "prompt_id": prompt_id,
        "split": split,
        "prompt": prompt,
        "responses": [
            {
                "id": row[2],
                "position": row[1],
                "text": row[3],
                "source": row[4],
                "copeland": copeland[row[2]],
                "rank": rank[row[2]],
            }
            for row in responses
        ],
        "consensus": consensus.order,
        "pairs": pairs,
    }
    return line, rows


def _write_dropped(path: Path, agg: Aggregated, unavailable: np.ndarray) -> tuple[dict[str, Any], dict[str, int]]:
    result = agg.result
    reasons = result.reason.copy()
    reasons[unavailable] = TEXT_UNAVAILABLE
    out = JsonLines(path)
    for unit in np.flatnonzero(reasons != ""):
        out.write(
            {
                "group_id": int(agg.task[unit]),
                "response_a": int(agg.response_a[unit]),
                "response_b": int(agg.response_b[unit]),
                "reason": reasons[unit],
                "votes_a": int(result.votes_a[unit]),
                "votes_b": int(result.votes_b[unit]),
                "votes_tie": int(result.votes_tie[unit]),
                "share": None if np.isnan(result.share[unit]) else float(result.share[unit]),
            }
        )
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
