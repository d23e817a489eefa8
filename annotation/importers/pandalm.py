"""PandaLM human test set ("pandalm"): a JSON list (not JSONL) of comparison items.

``[{"idx", "instruction", "input", "response1", "response2", "annotator1", "annotator2",
"annotator3", ...}, ...]``; each ``annotatorN`` label is 1 (response1 better), 2
(response2 better) or 0 (a tie, which needs a project that allows ties); ``null`` means
that annotator gave no label.

One prompt and one pairwise task per item: the prompt is the instruction, followed by the
input after a blank line when there is one, as a single user turn; its id is
``pandalm-<idx>``. Every ``annotatorN`` key gives one imported judgement by the account
``annotator_prefix`` + key (``pandalm-annotator1`` ...), created when missing. The
task's ``required_annotations`` is raised to the number of judgements when the project's
overlap is lower, so the judgements always fit.

Errors carry the line each item starts on, and the item's index in the list as the
field prefix (``[17].response1``).

Quirks of the published file, handled on purpose:

- some responses are empty (the model said nothing). Option ``empty_responses``
  defaults to ``keep``: the labels judge exactly those empty outputs.
- a few responses are the JSON value ``true`` rather than a string (the model's answer
  "True" was stored as a boolean). Booleans and numbers are imported as their JSON text
  (``"true"``), with response metadata ``{"pandalm_original_type": ...}``, and counted in
  the notes; lists, objects and null are errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

from annotation.importers.base import (
    EMPTY_POLICIES,
    ImportContext,
    JudgementSpec,
    Option,
    PromptSpec,
    RecordError,
    ResponseSpec,
    TaskSpec,
    json_type,
    require_object,
)
from annotation.importers.reader import InputFile

DESCRIPTION = "PandaLM human test set: JSON list of items with response1/response2 and annotator labels"
LABEL = "pandalm"
OPTIONS = [
    Option("annotator_prefix", "prefix", "pandalm-", "prefix for the annotator usernames"),
    Option("empty_responses", "choice", "keep", "empty responses: keep, skip the item, or error", EMPTY_POLICIES),
]
_ANNOTATOR_KEY = re.compile(r"^annotator\d+$")
# label -> tiers over (response1, response2)
_TIERS = {1: [[0], [1]], 2: [[1], [0]], 0: [[0, 1]]}


def parse(ctx: ImportContext) -> None:
    coerced = 0
    empty = 0
    with ctx.record(1):
        for line, index, item in InputFile(ctx).json_list():
            ctx.records += 1
            with ctx.record(line):
                spec, item_coerced = parse_item(ctx, item, line=line, index=index)
                if spec is not None:
                    ctx.add_prompt(spec)
                    coerced += item_coerced
                    empty += any(r.metadata.get("empty") for r in spec.responses)
    if coerced:
        ctx.summary.notes.append(
            f'{coerced} response(s) were JSON booleans or numbers, imported as their JSON text (e.g. "true")'
        )
    if empty:
        ctx.summary.notes.append(f'{empty} item(s) have an empty response, kept as empty responses ("empty": true)')


def _response(ctx: ImportContext, item: dict[str, Any], key: str, field: str) -> tuple[ResponseSpec, bool]:
    if key not in item:
        raise RecordError(field, "is missing")
    value = item[key]
    metadata: dict[str, Any] = {"pandalm_field": key}
    coerced = False
    if isinstance(value, bool | int | float):
        metadata["pandalm_original_type"] = json_type(value).removeprefix("a ")
        value = json.dumps(value)
        coerced = True
    text = ctx.text(value, field, allow_empty=True)
    if not text.strip():
        metadata["empty"] = True
    return ResponseSpec(text=text, source=LABEL, metadata=metadata), coerced


def parse_item(ctx: ImportContext, item: Any, *, line: int, index: int) -> tuple[PromptSpec | None, int]:
    prefix = f"[{index}]."
    item = require_object(item, f"[{index}]")
    if "idx" not in item:
        raise RecordError(f"{prefix}idx", "is missing")
    idx = ctx.external_id(item["idx"], f"{prefix}idx")
    if "instruction" not in item:
        raise RecordError(f"{prefix}instruction", "is missing")
    instruction = ctx.text(item["instruction"], f"{prefix}instruction", allow_empty=True).strip()
    given_input = ctx.text(item.get("input", ""), f"{prefix}input", allow_empty=True).strip()
    prompt = "\n\n".join(part for part in (instruction, given_input) if part)
    if not prompt:
        raise RecordError(f"{prefix}instruction", "is empty (and so is input)")

    first, first_coerced = _response(ctx, item, "response1", f"{prefix}response1")
    second, second_coerced = _response(ctx, item, "response2", f"{prefix}response2")
    judgements = []
    keys = sorted((key for key in item if _ANNOTATOR_KEY.match(key)), key=lambda key: int(key[len("annotator") :]))
    if not keys:
        raise RecordError(f"{prefix}annotator1", "no annotator labels (annotator1, annotator2, ...) in this item")
    for key in keys:
        label = item[key]
        field = f"{prefix}{key}"
        if label is None:
            continue
        if isinstance(label, bool) or label not in _TIERS:
            raise RecordError(
                field, f"unknown label {label!r}: use 1 (response1 better), 2 (response2 better) or 0 (tie)"
            )
        if label == 0 and not ctx.project.allow_ties:
            raise RecordError(field, "label 0 is a tie, but this project does not allow ties")
        annotator = ctx.username(ctx.options["annotator_prefix"] + key, field)
        judgements.append(JudgementSpec(annotator=annotator, tiers=_TIERS[label], field=field))

    # Last, so that an item skipped for an empty response has no other problem left unreported.
    for key, response in (("response1", first), ("response2", second)):
        if response.metadata.get("empty") and not ctx.empty_response(line, f"{prefix}{key}"):
            return None, 0

    task_metadata = {
        key: item[key] for key in ("motivation_app", "cmp_key") if isinstance(item.get(key), str | int | float)
    }
    prompt_metadata = ctx.provenance(line, item=index)
    prompt_metadata["pandalm"] = {"idx": item["idx"], "instruction": item["instruction"], "input": item.get("input")}
    spec = PromptSpec(
        external_id=f"pandalm-{idx}",
        messages=[{"role": "user", "content": prompt}],
        line=line,
        responses=[first, second],
        metadata=prompt_metadata,
        id_field=f"{prefix}idx",
        tasks=[
            TaskSpec(
                responses=[0, 1],
                line=line,
                source=LABEL,
                metadata=task_metadata,
                judgements=judgements,
                field=f"{prefix}response2",
            )
        ],
    )
    return spec, int(first_coerced) + int(second_coerced)
