"""Generic JSONL ("jsonl"): one object per line, one task per line.

::

    {"id": "q1",                                  # optional, see below
     "prompt": "text"  or  "messages": [{"role": "user"|"assistant"|"system", "content": "..."}],
     "responses": ["text", {"text": "...", "source" or "model": "...", "id": "...", "metadata": {}}],
     "metadata": {...},                           # optional, stored on the task
     "priority": 0,                               # optional integer, higher is served first
     "gold": [[0], [1]],                          # optional: the answer, tiers of response indexes
     "judgements": [{"annotator": "name", "ranking": [[1], [0]], "rationale": "..."}]}  # optional

Responses are numbered 0..K-1 in file order; ``gold`` and ``ranking`` use those numbers,
best tier first (``[[1], [0, 2]]``: response 1 best, 0 and 2 tied). ``gold`` marks the
task as a gold question.

Without ``"id"`` the prompt's id is ``sha256:`` and the first 20 hex digits of the
SHA-256 of the line's prompt and response texts (canonical JSON). It is stable: the same
content always gets the same id, so importing a file twice is refused as a duplicate
instead of doubling the tasks, and two identical lines in one file are reported.

Unknown fields are an error rather than ignored, so that a misspelt ``"respones"`` is
noticed. Empty response texts are an error unless option ``empty_responses`` says
``keep`` or ``skip`` (the whole line is then skipped and listed in the summary).
Judgement annotators get import accounts named ``annotator_prefix`` + name, which cannot
log in; a name that is a real person's account is refused (``writer.py`` has the rule).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from annotation.importers.base import (
    EMPTY_POLICIES,
    PRIORITY_RANGE,
    ImportContext,
    JudgementSpec,
    Option,
    PromptSpec,
    RecordError,
    ResponseSpec,
    TaskSpec,
    json_type,
    reject_unknown_keys,
    require_object,
)
from annotation.importers.reader import InputFile, parse_json

DESCRIPTION = "Generic JSONL: one object per line with prompt or messages, responses, optional gold and judgements"
OPTIONS = [
    Option("empty_responses", "choice", "error", "empty response text: error, skip the line, or keep", EMPTY_POLICIES),
    Option("annotator_prefix", "prefix", "", "prefix for the usernames of judgement annotators"),
]

ROLES = ("user", "assistant", "system")
ITEM_KEYS = {"id", "prompt", "messages", "responses", "metadata", "priority", "gold", "judgements"}
RESPONSE_KEYS = {"text", "source", "model", "id", "metadata"}
JUDGEMENT_KEYS = {"annotator", "ranking", "rationale"}


def parse(ctx: ImportContext) -> None:
    for line, text in InputFile(ctx).lines():
        ctx.records += 1
        with ctx.record(line):
            if ctx.records == 1 and text.lstrip().startswith("["):
                raise RecordError("json", "this looks like a JSON list; the jsonl format wants one object per line")
            try:
                item = parse_json(text)
            except (ValueError, RecursionError) as exc:
                raise RecordError("json", f"invalid JSON: {exc}") from None
            spec = parse_item(ctx, item, line=line)
            if spec is not None:
                ctx.add_prompt(spec)


def parse_messages(ctx: ImportContext, value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RecordError(field, "must be a non-empty list of {role, content} objects")
    messages = []
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        require_object(message, where)
        reject_unknown_keys(message, {"role", "content"}, prefix=f"{where}.")
        role = message.get("role")
        if role not in ROLES:
            raise RecordError(f"{where}.role", f"must be one of {', '.join(ROLES)}, not {role!r}")
        messages.append({"role": role, "content": ctx.text(message.get("content"), f"{where}.content")})
    return messages


def parse_item(ctx: ImportContext, item: Any, *, line: int) -> PromptSpec | None:
    item = require_object(item, "record")
    reject_unknown_keys(item, ITEM_KEYS)

    if "prompt" in item and "messages" in item:
        raise RecordError("prompt", "give either prompt or messages, not both")
    if "prompt" in item:
        messages = [{"role": "user", "content": ctx.text(item["prompt"], "prompt")}]
    elif "messages" in item:
        messages = parse_messages(ctx, item["messages"], "messages")
    else:
        raise RecordError("prompt", "is missing (give prompt or messages)")

    raw_responses = item.get("responses")
    if not isinstance(raw_responses, list):
        raise RecordError("responses", f"must be a list of responses, not {json_type(raw_responses)}")
    responses: list[ResponseSpec] = []
    for index, raw in enumerate(raw_responses):
        responses.append(parse_response(ctx, raw, f"responses[{index}]"))
    k = len(responses)
    ctx.check_k(k, field="responses")

    if "id" in item:
        external_id = ctx.external_id(item["id"], "id")
    else:
        content = json.dumps([messages, [r.text for r in responses]], sort_keys=True, ensure_ascii=False)
        external_id = "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:20]

    metadata = require_object(item.get("metadata", {}), "metadata")
    priority = item.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RecordError("priority", f"must be an integer, not {json_type(priority)}")
    if not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise RecordError("priority", "is out of range")

    gold = ctx.tiers(item["gold"], k=k, field="gold") if "gold" in item else None

    raw_judgements = item.get("judgements", [])
    if not isinstance(raw_judgements, list):
        raise RecordError("judgements", f"must be a list, not {json_type(raw_judgements)}")
    judgements = []
    prefix = ctx.options["annotator_prefix"]
    for index, raw in enumerate(raw_judgements):
        where = f"judgements[{index}]"
        require_object(raw, where)
        reject_unknown_keys(raw, JUDGEMENT_KEYS, prefix=f"{where}.")
        name = raw.get("annotator")
        if not isinstance(name, str) or not name:
            raise RecordError(f"{where}.annotator", "must be a non-empty annotator name")
        judgements.append(
            JudgementSpec(
                annotator=ctx.username(prefix + name, f"{where}.annotator"),
                tiers=ctx.tiers(raw.get("ranking"), k=k, field=f"{where}.ranking"),
                rationale=ctx.text(raw.get("rationale", ""), f"{where}.rationale", allow_empty=True),
                field=where,
            )
        )

    # Last, so that a line skipped for an empty response has no other problem left unreported.
    for index, response in enumerate(responses):
        if not response.text.strip() and not ctx.empty_response(line, f"responses[{index}]"):
            return None
    return PromptSpec(
        external_id=external_id,
        messages=messages,
        line=line,
        responses=responses,
        metadata=ctx.provenance(line, id_generated="id" not in item),
        tasks=[
            TaskSpec(
                responses=list(range(k)),
                line=line,
                source=ctx.label,
                priority=priority,
                metadata=metadata,
                gold_tiers=gold,
                judgements=judgements,
            )
        ],
    )


def parse_response(ctx: ImportContext, raw: Any, field: str) -> ResponseSpec:
    if isinstance(raw, str):
        return ResponseSpec(text=ctx.text(raw, field, allow_empty=True))
    if not isinstance(raw, dict):
        raise RecordError(field, f"must be a string or an object with text, not {json_type(raw)}")
    reject_unknown_keys(raw, RESPONSE_KEYS, prefix=f"{field}.")
    if "text" not in raw:
        raise RecordError(f"{field}.text", "is missing")
    if "source" in raw and "model" in raw:
        raise RecordError(f"{field}.model", "give either source or model, not both")
    source = raw.get("source", raw.get("model", ""))
    if not isinstance(source, str):
        raise RecordError(f"{field}.source", f"must be a string, not {json_type(source)}")
    return ResponseSpec(
        text=ctx.text(raw["text"], f"{field}.text", allow_empty=True),
        source=source,
        external_id=ctx.external_id(raw["id"], f"{field}.id") if "id" in raw else "",
        metadata=require_object(raw.get("metadata", {}), f"{field}.metadata"),
    )
