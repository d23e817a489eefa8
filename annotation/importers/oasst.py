"""OpenAssistant message trees ("oasst"): one tree per line, as in the OASST1 ``*_tree.jsonl``.

``{"message_tree_id", "tree_state", "prompt": {message_id, text, role: prompter|assistant,
rank?, synthetic, model_name?, deleted?, replies: [...]}}``

Every message with two or more assistant replies becomes one K-way ranking task: the
prompt is the conversation from the root down to that message (prompter -> user,
assistant -> assistant), its id is the message's ``message_id``, and the responses are
the sibling replies (in file order here, stored shuffled: see ``writer.py``), with
``external_id`` = their ``message_id`` and ``source`` = ``model_name`` for synthetic
messages, else "human". K larger than the project's ``responses_per_task`` (or not 2 in
a pairwise project) is an error naming the message. Messages with a single assistant reply give no task.

Ranks. The consensus ``rank`` (0 = best) of each reply is kept in its metadata
(``oasst_rank``). With ``import_consensus`` it also becomes an imported judgement by the
account named by option ``annotator`` (default "oasst-consensus"), but only when every
sibling has a rank: a partly ranked or unranked group becomes a task without a
judgement, and the notes say how many. Equal ranks become a tie, which needs a project
that allows ties.

Deleted messages (``"deleted": true``) were withdrawn by OpenAssistant's moderators,
so they are not imported: neither as a response nor as part of a prompt, and their whole
subtree goes with them (its conversation no longer exists). Each one is listed in
``summary.skipped`` with its line and message id; if that leaves fewer than two replies
in a group, the group gives no task. The ranks of the remaining siblings are used as they
are (their order is still the consensus order).

Options ``lang`` and ``max_trees`` take a slice of a large dump (the full OASST1 trees
file holds every language): trees of other languages are counted in the notes, and
reading stops after ``max_trees`` imported trees.
"""

from __future__ import annotations

from typing import Any

from annotation.importers.base import (
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

DESCRIPTION = "OpenAssistant message trees (JSONL, one tree per line): sibling replies become K-way tasks"
LABEL = "oasst"
OPTIONS = [
    Option("import_consensus", "bool", False, "record the consensus ranks as a judgement"),
    Option("annotator", "username", "oasst-consensus", "username for the consensus judgements"),
    Option("lang", "str", None, "import only trees whose root message has this language code (e.g. en)"),
    Option("max_trees", "int", None, "stop after this many trees have been imported"),
]
ROLES = {"prompter": "user", "assistant": "assistant"}


class _Tree:
    """Walks one tree line, collecting its tasks and counts."""

    def __init__(self, ctx: ImportContext, line: int, tree: dict[str, Any]) -> None:
        self.ctx = ctx
        self.line = line
        self.tree_id = tree.get("message_tree_id")
        self.tree_state = tree.get("tree_state")
        self.prompts: list[PromptSpec] = []
        self.partial = 0
        self.unranked = 0
        self.deleted = 0

    def message(self, value: Any, field: str) -> dict[str, Any]:
        message = require_object(value, field)
        for key in ("message_id", "text", "role"):
            if key not in message:
                raise RecordError(f"{field}.{key}", "is missing")
        if message["role"] not in ROLES:
            raise RecordError(f"{field}.role", f"must be prompter or assistant, not {message['role']!r}")
        self.ctx.external_id(message["message_id"], f"{field}.message_id")
        if not isinstance(message.get("deleted", False), bool):
            raise RecordError(f"{field}.deleted", f"must be true or false, not {json_type(message['deleted'])}")
        replies = message.get("replies", [])
        if not isinstance(replies, list):
            raise RecordError(f"{field}.replies", f"must be a list, not {json_type(replies)}")
        return message

    def walk(self, message: dict[str, Any], field: str, path: list[dict[str, str]]) -> None:
        """``message`` is live and checked; ``path`` is the conversation before it."""
        role = ROLES[message["role"]]
        here = [*path, {"role": role, "content": self.ctx.text(message["text"], f"{field}.text")}]
        live: list[tuple[dict[str, Any], str]] = []
        for index, reply in enumerate(message.get("replies", [])):
            reply_field = f"{field}.replies[{index}]"
            reply = self.message(reply, reply_field)
            if reply.get("deleted", False):
                self.deleted += 1
                self.ctx.skip(self.line, f"deleted message {reply['message_id']} ({reply_field}) and its replies")
                continue
            if reply["role"] == message["role"]:
                raise RecordError(
                    f"{reply_field}.role",
                    f"message {reply['message_id']} is a {reply['role']} reply to a {message['role']} message",
                )
            live.append((reply, reply_field))
        assistants = [(reply, reply_field) for reply, reply_field in live if reply["role"] == "assistant"]
        if len(assistants) >= 2:
            self.group(message, field, here, assistants)
        for reply, reply_field in live:
            self.walk(reply, reply_field, here)

    def group(
        self,
        parent: dict[str, Any],
        field: str,
        messages: list[dict[str, str]],
        siblings: list[tuple[dict[str, Any], str]],
    ) -> None:
        ctx = self.ctx
        parent_id = parent["message_id"]
        ctx.check_k(len(siblings), field=f"{field}.replies", what=f"message {parent_id}")
        responses = []
        ranks: list[int | None] = []
        for reply, reply_field in siblings:
            rank = reply.get("rank")
            if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
                raise RecordError(f"{reply_field}.rank", f"must be a non-negative integer or null, not {rank!r}")
            ranks.append(rank)
            synthetic = reply.get("synthetic", False)
            model = reply.get("model_name") or ""
            if not isinstance(model, str):
                raise RecordError(f"{reply_field}.model_name", f"must be a string, not {json_type(model)}")
            responses.append(
                ResponseSpec(
                    text=ctx.text(reply["text"], f"{reply_field}.text"),
                    source=(model or "model") if synthetic else "human",
                    external_id=reply["message_id"],
                    metadata={
                        "oasst_rank": rank,
                        "synthetic": bool(synthetic),
                        "model_name": model or None,
                        "lang": reply.get("lang"),
                        "review_result": reply.get("review_result"),
                    },
                )
            )
        judgements = []
        if all(rank is not None for rank in ranks):
            if ctx.options["import_consensus"]:
                by_rank: dict[int, list[int]] = {}
                for position, rank in enumerate(ranks):
                    by_rank.setdefault(rank, []).append(position)  # type: ignore[arg-type]
                tiers = ctx.tiers([by_rank[rank] for rank in sorted(by_rank)], k=len(ranks), field=f"{field}.replies")
                annotator = ctx.options["annotator"]  # checked with the options
                judgements.append(JudgementSpec(annotator=annotator, tiers=tiers, field=f"{field}.replies"))
        elif any(rank is not None for rank in ranks):
            self.partial += 1
        else:
            self.unranked += 1
        self.prompts.append(
            PromptSpec(
                external_id=parent_id,
                messages=messages,
                line=self.line,
                responses=responses,
                metadata=ctx.provenance(
                    self.line, message_tree_id=self.tree_id, tree_state=self.tree_state, field=field
                ),
                id_field=f"{field}.message_id",
                tasks=[
                    TaskSpec(
                        responses=list(range(len(responses))),
                        line=self.line,
                        source=LABEL,
                        metadata={"oasst_parent_id": parent_id, "oasst_ranked": all(r is not None for r in ranks)},
                        judgements=judgements,
                        field=f"{field}.replies",
                    )
                ],
            )
        )


def parse(ctx: ImportContext) -> None:
    partial = unranked = deleted = other_lang = trees = 0
    lang, max_trees = ctx.options.get("lang"), ctx.options.get("max_trees")
    for line, text in InputFile(ctx).lines():
        if max_trees is not None and trees >= max_trees:
            ctx.summary.notes.append(f"stopped after {max_trees} trees (option max_trees); later lines not read")
            break
        ctx.records += 1
        with ctx.record(line):
            try:
                item = parse_json(text)
            except (ValueError, RecursionError) as exc:
                raise RecordError("json", f"invalid JSON: {exc}") from None
            item = require_object(item, "record")
            if "prompt" not in item:
                raise RecordError("prompt", "is missing (each line must be one message tree)")
            tree = _Tree(ctx, line, item)
            root = tree.message(item["prompt"], "prompt")
            if root["role"] != "prompter":
                raise RecordError("prompt.role", "the root of a tree must be a prompter message")
            if root.get("deleted", False):
                ctx.skip(line, f"deleted root message {root['message_id']}: the whole tree")
                deleted += 1
                continue
            if lang is not None and root.get("lang") != lang:
                # A filter the caller asked for, counted in the notes rather than listed line by line.
                other_lang += 1
                continue
            tree.walk(root, "prompt", [])
            trees += 1
            # Add only after the whole tree was read, so that a bad tree adds nothing.
            for prompt in tree.prompts:
                ctx.add_prompt(prompt)
            partial += tree.partial
            unranked += tree.unranked
            deleted += tree.deleted
    if partial:
        ctx.summary.notes.append(
            f"{partial} group(s) of replies are only partly ranked: imported as tasks without a consensus judgement"
        )
    if unranked:
        ctx.summary.notes.append(f"{unranked} group(s) of replies have no ranks at all: imported as tasks only")
    if deleted:
        ctx.summary.notes.append(f"{deleted} deleted message(s) left out with their replies (see skipped)")
    if other_lang:
        ctx.summary.notes.append(f"{other_lang} tree(s) in languages other than {lang!r} left out (option lang)")
