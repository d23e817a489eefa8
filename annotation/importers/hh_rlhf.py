"""Anthropic HH-RLHF ("hh-rlhf"): lines ``{"chosen": dialogue, "rejected": dialogue}``.

A dialogue is a run of turns ``"\\n\\nHuman: ..."`` and ``"\\n\\nAssistant: ..."``. Normally
the two dialogues agree up to their last ``"\\n\\nAssistant:"``: that common part is the
prompt (parsed into user/assistant messages) and the two final assistant replies are the
responses (chosen first in the file, stored in shuffled order: see ``writer.py``). Each
line becomes one pairwise task with source "hh-rlhf"; the prompt id is ``hh-`` and 20
hex digits of the SHA-256 of the two dialogues.

Divergent pairs. In a few pairs the dialogues already differ before their last assistant
turn (5 of the 2,312 pairs in harmless-base test). Splitting them at the last assistant
turn would pair a reply with a conversation it never answered, so option ``divergent``
decides:

- ``prefix`` (default): the prompt is the longest run of whole turns the two share that
  ends just before an assistant turn where they part (if they part at a human turn, the
  split moves back to the assistant turn before it). Each response is the rest of its
  dialogue after that prefix, verbatim, later turn markers included. The task gets
  metadata ``{"hh_divergent": true}`` and the summary notes how many there were.
- ``skip``: the pair is left out and listed in ``summary.skipped`` with its line.
- ``error``: the pair is an error.

A pair that cannot be split at all (no shared human turn before the first difference,
or identical dialogues) is always an error.

Empty replies. Some final assistant replies are empty (4 chosen replies in harmless-base
test): the labeler preferred saying nothing. They are real data, so option
``empty_responses`` defaults to ``keep`` (response metadata ``{"empty": true}``, counted
in the notes); ``skip`` and ``error`` are the alternatives.

With ``import_preference`` the original label becomes an imported judgement (chosen over
rejected) by the account named by option ``annotator``. Which reply was chosen is also
kept in each response's metadata (``hh_label``); it must not be shown to annotators, and
neither must the prompt id, whose hash is over chosen, then rejected.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

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
from annotation.importers.reader import InputFile, parse_json

DESCRIPTION = "Anthropic HH-RLHF JSONL (chosen/rejected dialogues), optionally gzipped"
LABEL = "hh-rlhf"
OPTIONS = [
    Option(
        "divergent",
        "choice",
        "prefix",
        "pairs whose dialogues differ before the last assistant turn: prefix, skip or error",
        ("prefix", "skip", "error"),
    ),
    Option("import_preference", "bool", False, "record chosen > rejected as a judgement"),
    Option("annotator", "username", "hh-rlhf-labeler", "username for the imported preference judgements"),
    Option("empty_responses", "choice", "keep", "empty final replies: keep, skip the pair, or error", EMPTY_POLICIES),
]

_TURN = re.compile(r"\n\n(Human|Assistant):")
ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Turn:
    role: str  # "Human" or "Assistant"
    text: str  # verbatim, without the marker
    start: int  # offset of the text in the dialogue


def parse_dialogue(ctx: ImportContext, value: object, field: str) -> tuple[str, list[Turn]]:
    if not isinstance(value, str):
        raise RecordError(field, f"must be a dialogue string, not {json_type(value)}")
    ctx.text(value, field)
    pieces = _TURN.split(value)
    if pieces[0].strip():
        raise RecordError(field, 'must start with a "\\n\\nHuman:" turn')
    turns = []
    offset = len(pieces[0])
    for role, text in zip(pieces[1::2], pieces[2::2], strict=True):
        offset += len(role) + 3  # "\n\n" + role + ":"
        turns.append(Turn(role=role, text=text, start=offset))
        offset += len(text)
    if not turns or turns[0].role != "Human":
        raise RecordError(field, 'must start with a "\\n\\nHuman:" turn')
    if turns[-1].role != "Assistant":
        raise RecordError(field, 'must end with an "\\n\\nAssistant:" turn')
    return value, turns


def parse(ctx: ImportContext) -> None:
    divergent = 0
    empty = 0
    for line, text in InputFile(ctx).lines():
        ctx.records += 1
        with ctx.record(line):
            try:
                item = parse_json(text)
            except (ValueError, RecursionError) as exc:
                raise RecordError("json", f"invalid JSON: {exc}") from None
            item = require_object(item, "record")
            for key in ("chosen", "rejected"):
                if key not in item:
                    raise RecordError(key, "is missing")
            unknown = sorted(set(item) - {"chosen", "rejected"})
            if unknown:
                raise RecordError(unknown[0], "unknown field (HH-RLHF lines hold chosen and rejected only)")
            chosen, chosen_turns = parse_dialogue(ctx, item["chosen"], "chosen")
            rejected, rejected_turns = parse_dialogue(ctx, item["rejected"], "rejected")
            if chosen == rejected:
                raise RecordError("rejected", "is identical to chosen")

            split = _split_point(chosen_turns, rejected_turns)
            is_divergent = split != len(chosen_turns) - 1 or split != len(rejected_turns) - 1
            if is_divergent:
                policy = ctx.options["divergent"]
                if policy == "error":
                    raise RecordError(
                        "rejected",
                        "chosen and rejected differ before the last assistant turn (option divergent=prefix or skip)",
                    )
                if policy == "skip":
                    ctx.skip(line, "chosen and rejected differ before the last assistant turn (divergent=skip)")
                    continue

            messages = []
            for index, turn in enumerate(chosen_turns[:split]):
                content = turn.text.strip()
                if not content:
                    raise RecordError("chosen", f"turn {index + 1} ({turn.role}) is empty")
                messages.append({"role": ROLES[turn.role], "content": content})

            responses = []
            for label, dialogue, turns in (("chosen", chosen, chosen_turns), ("rejected", rejected, rejected_turns)):
                reply = dialogue[turns[split].start :].strip()
                metadata: dict[str, object] = {"hh_label": label}
                if not reply:
                    if not ctx.empty_response(line, f"{label} (final reply)"):
                        break
                    metadata["empty"] = True
                responses.append(ResponseSpec(text=reply, source=LABEL, metadata=metadata))
            if len(responses) < 2:
                continue  # skipped for an empty reply, and listed as such

            judgements = []
            if ctx.options["import_preference"]:
                annotator = ctx.options["annotator"]  # checked with the options
                judgements.append(JudgementSpec(annotator=annotator, tiers=[[0], [1]], field="chosen"))
            digest = hashlib.sha256(f"{chosen}\0{rejected}".encode()).hexdigest()[:20]
            ctx.add_prompt(
                PromptSpec(
                    external_id=f"hh-{digest}",
                    messages=messages,
                    line=line,
                    responses=responses,
                    metadata=ctx.provenance(line),
                    id_field="chosen",
                    tasks=[
                        TaskSpec(
                            responses=[0, 1],
                            line=line,
                            source=LABEL,
                            metadata={"hh_divergent": True} if is_divergent else {},
                            judgements=judgements,
                            field="chosen",
                        )
                    ],
                )
            )
            divergent += is_divergent
            empty += any(response.metadata.get("empty") for response in responses)
    if divergent:
        ctx.summary.notes.append(
            f"{divergent} pair(s) differ before the last assistant turn: prompt = shared turns, "
            'responses = the rest of each dialogue (task metadata "hh_divergent": true)'
        )
    if empty:
        ctx.summary.notes.append(f'{empty} pair(s) have an empty final reply, kept as empty responses ("empty": true)')


def _split_point(chosen: list[Turn], rejected: list[Turn]) -> int:
    """Index of the assistant turn where the responses start; the prompt is the turns before.

    Normally the last turn of both. Otherwise the first turn where the dialogues differ,
    moved back to an assistant turn so that the prompt ends with a human turn.
    """
    same_before_last = len(chosen) == len(rejected) and all(
        (a.role, a.text) == (b.role, b.text) for a, b in zip(chosen[:-1], rejected[:-1], strict=True)
    )
    if same_before_last:
        return len(chosen) - 1
    first_difference = 0
    while first_difference < min(len(chosen), len(rejected)) and (
        chosen[first_difference].role,
        chosen[first_difference].text,
    ) == (rejected[first_difference].role, rejected[first_difference].text):
        first_difference += 1
    split = first_difference
    # Both dialogues are the same up to ``first_difference``; step back to an assistant
    # turn present in both (at the difference itself only if both have one there).
    while split > 0 and not (
        split < len(chosen)
        and split < len(rejected)
        and chosen[split].role == "Assistant"
        and rejected[split].role == "Assistant"
    ):
        split -= 1
    if split == 0:
        raise RecordError("rejected", "chosen and rejected share no human turn before they differ; cannot split them")
    return split
