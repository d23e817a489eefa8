"""Reading an export snapshot's groups and turning (prompt, response) into token ids.

No Django here. :class:`Formatter` is the one place that renders and truncates an example;
training and :mod:`rewardmodel.scoring` both go through it, so a scored response sees the
exact input it would have seen in training.

**Formatting.** When the tokenizer has a chat template, the conversation is the prompt's
messages followed by one assistant message; the prompt part is the template rendered with
``add_generation_prompt=True`` and the response part is what the full rendering adds after
it (no special tokens are added on top: the template writes them). Without a chat template,
the documented plain format is the HH-RLHF one::

    prompt:   "\\n\\nHuman: {user turn}\\n\\nAssistant: {assistant turn}...\\n\\nAssistant:"
    response: " {response}"

(system turns are written ``System:``), and the two parts are joined by the tokenizer's own
pair post-processor: ``[CLS] prompt [SEP] response [SEP]`` with segment ids for BERT-like
encoders, plain concatenation for GPT-2-like decoders.

**Truncation** keeps the response and cuts the prompt from the left (the most recent turns
stay; a leading BOS token of a templated prompt is kept). If the response alone does not
fit, its end is cut and the example is counted separately as ``response_truncated``; an
example is never dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROLE_LABELS = {"user": "Human", "human": "Human", "assistant": "Assistant", "system": "System"}


def as_messages(prompt: list[dict[str, Any]] | str) -> list[dict[str, str]]:
    """A prompt as chat messages: plain text is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not all(isinstance(m, dict) for m in prompt):
        raise ValueError(f"a prompt must be a string or a list of messages, not {type(prompt).__name__}")
    return [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in prompt]


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """The documented plain format of a conversation, ending where the assistant's answer starts."""
    turns = "".join(f"\n\n{ROLE_LABELS.get(m['role'].lower(), m['role'].title())}: {m['content']}" for m in messages)
    return turns + "\n\nAssistant:"


@dataclass
class Encoded:
    input_ids: list[int]
    token_type_ids: list[int] | None
    prompt_truncated: bool
    response_truncated: bool


class Formatter:
    """Renders, tokenizes and truncates (prompt, response) examples for one tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError("the base checkpoint's tokenizer has no fast (tokenizers) backend; save a tokenizer.json")
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        # A private copy: its truncation and padding settings must not apply to our encodings.
        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.uses_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._special_pair = 0 if self.uses_chat_template else tokenizer.num_special_tokens_to_add(pair=True)
        self.returns_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])
        if max_length <= self._special_pair + 1:
            raise ValueError(f"max_length {max_length} leaves no room next to {self._special_pair} special tokens")

    def render(self, prompt: list[dict[str, Any]] | str, response: str) -> tuple[str, str]:
        messages = as_messages(prompt)
        if not self.uses_chat_template:
            return plain_prompt(messages), " " + response
        head = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(head):
            # Templates that rewrite earlier turns once an answer follows (rare): fall back
            # to the generation prompt followed by the bare response.
            return head, response
        return head, full[len(head) :]

    def encode(self, prompt: list[dict[str, Any]] | str, response: str) -> Encoded:
        head, tail = self.render(prompt, response)
        p = self._backend.encode(head, add_special_tokens=False)
        r = self._backend.encode(tail, add_special_tokens=False)
        budget = self.max_length - self._special_pair
        response_truncated = len(r.ids) > budget - 1
        if response_truncated:
            # Keep at least one prompt token so the model still sees where the answer starts.
            r.truncate(budget - 1, direction="right")
        room = budget - len(r.ids)
        prompt_truncated = len(p.ids) > room
        keep_bos = (
            self.uses_chat_template
            and prompt_truncated
            and room >= 2
            and p.ids
            and self.tokenizer.bos_token_id is not None
            and p.ids[0] == self.tokenizer.bos_token_id
        )
        if prompt_truncated:
            p.truncate(room - 1 if keep_bos else room, direction="left")
        if self.uses_chat_template:
            ids = ([self.tokenizer.bos_token_id] if keep_bos else []) + p.ids + r.ids
            types = [0] * len(ids) if self.returns_token_types else None
        else:
            joined = self._backend.post_process(p, r, add_special_tokens=True)
            ids = list(joined.ids)
            types = list(joined.type_ids) if self.returns_token_types else None
        assert len(ids) <= self.max_length, (len(ids), self.max_length)
        return Encoded(ids, types, bool(prompt_truncated), bool(response_truncated))


def pad_batch(
    encoded: list[Encoded], *, pad_token_id: int, padding_side: str = "right", device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Pad a list of encodings into model inputs (``input_ids``, ``attention_mask``, maybe ``token_type_ids``)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    types = torch.zeros((len(encoded), width), dtype=torch.long) if encoded[0].token_type_ids is not None else None
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[row, cols] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[row, cols] = 1
        if types is not None:
            types[row, cols] = torch.tensor(e.token_type_ids, dtype=torch.long)
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if types is not None:
        batch["token_type_ids"] = types.to(device)
    return batch


@dataclass
class Group:
    """One prompt group: its responses that take part in a kept pair, each encoded once, and its pairs."""

    group_id: Any
    split: str
    response_ids: list[Any]
    encoded: list[Encoded]
    chosen: list[int]  # indices into ``encoded``
    rejected: list[int]
    weight: list[float]
    vote_share: list[float]
    votes_chosen: list[int]
    votes_rejected: list[int]
    votes_tie: list[int]
    k: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.chosen)


REQUIRED_GROUP_KEYS = ("split", "prompt", "responses", "pairs")
REQUIRED_PAIR_KEYS = ("chosen", "rejected")


def read_groups(data_dir: str | Path) -> list[dict[str, Any]]:
    """The raw lines of ``groups.jsonl``, checked for the keys training needs."""
    path = Path(data_dir) / "groups.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: data_dir must be an export snapshot directory")
    groups = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                group = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            missing = [k for k in REQUIRED_GROUP_KEYS if k not in group]
            if missing:
                raise ValueError(f"{path}:{number}: missing {', '.join(missing)}")
            if group["split"] not in ("train", "validation"):
                raise ValueError(f"{path}:{number}: unknown split {group['split']!r}")
            ids = {r["id"] for r in group["responses"]}
            for pair in group["pairs"]:
                if any(k not in pair for k in REQUIRED_PAIR_KEYS):
                    raise ValueError(f"{path}:{number}: a pair lacks chosen/rejected")
                if pair["chosen"] not in ids or pair["rejected"] not in ids:
                    raise ValueError(f"{path}:{number}: a pair names a response the group does not hold")
                if pair["chosen"] == pair["rejected"]:
                    raise ValueError(f"{path}:{number}: a pair compares a response with itself")
            groups.append(group)
    return groups


def encode_group(raw: dict[str, Any], formatter: Formatter) -> Group:
    """Encode each response of a group that takes part in a pair, once."""
    texts = {r["id"]: r["text"] for r in raw["responses"]}
    used: list[Any] = []
    index: dict[Any, int] = {}
    for pair in raw["pairs"]:
        for rid in (pair["chosen"], pair["rejected"]):
            if rid not in index:
                index[rid] = len(used)
                used.append(rid)
    k = len(raw["responses"])
    n_pairs = max(k * (k - 1) // 2, 1)
    pairs = raw["pairs"]
    return Group(
        group_id=raw.get("group_id"),
        split=raw["split"],
        response_ids=used,
        encoded=[formatter.encode(raw["prompt"], texts[rid]) for rid in used],
        chosen=[index[p["chosen"]] for p in pairs],
        rejected=[index[p["rejected"]] for p in pairs],
        # Without a weight column, InstructGPT's 1/C(K,2).
        weight=[float(p.get("weight", 1.0 / n_pairs)) for p in pairs],
        vote_share=[float(p.get("vote_share", 1.0)) for p in pairs],
        votes_chosen=[int(p.get("votes_chosen", 1)) for p in pairs],
        votes_rejected=[int(p.get("votes_rejected", 0)) for p in pairs],
        votes_tie=[int(p.get("votes_tie", 0)) for p in pairs],
        k=k,
    )


def truncation_counts(groups: list[Group]) -> dict[str, int]:
    encoded = [e for g in groups for e in g.encoded]
    return {
        "examples": len(encoded),
        "prompt_truncated": sum(e.prompt_truncated for e in encoded),
        "response_truncated": sum(e.response_truncated for e in encoded),
        "max_tokens": max((len(e.input_ids) for e in encoded), default=0),
        "mean_tokens": round(sum(len(e.input_ids) for e in encoded) / max(len(encoded), 1), 2),
    }


@dataclass
class Batch:
    """Model inputs for every response of some groups, and their pairs as indices into them."""

    inputs: dict[str, torch.Tensor]
    chosen: torch.Tensor
    rejected: torch.Tensor
    weight: torch.Tensor
    vote_share: torch.Tensor
    votes_chosen: torch.Tensor
    votes_rejected: torch.Tensor
    votes_tie: torch.Tensor
    n_responses: int


def collate(
    groups: list[Group], *, pad_token_id: int, padding_side: str = "right", device: torch.device | str = "cpu"
) -> Batch:
    encoded: list[Encoded] = []
    chosen: list[int] = []
    rejected: list[int] = []
    for g in groups:
        offset = len(encoded)
        encoded.extend(g.encoded)
        chosen.extend(offset + i for i in g.chosen)
        rejected.extend(offset + i for i in g.rejected)

    def cat(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([v for g in groups for v in getattr(g, name)], dtype=dtype, device=device)

    return Batch(
        inputs=pad_batch(encoded, pad_token_id=pad_token_id, padding_side=padding_side, device=device),
        chosen=torch.tensor(chosen, dtype=torch.long, device=device),
        rejected=torch.tensor(rejected, dtype=torch.long, device=device),
        weight=cat("weight", torch.float32),
        vote_share=cat("vote_share", torch.float32),
        votes_chosen=cat("votes_chosen", torch.long),
        votes_rejected=cat("votes_rejected", torch.long),
        votes_tie=cat("votes_tie", torch.long),
        n_responses=len(encoded),
    )


def flatten_pairs(groups: list[Group]) -> list[Group]:
    """Each pair as a group of its own (both responses encoded again): the flat pairwise baseline."""
    flat = []
    for g in groups:
        for i in range(g.n_pairs):
            c, r = g.chosen[i], g.rejected[i]
            flat.append(
                Group(
                    group_id=g.group_id,
                    split=g.split,
                    response_ids=[g.response_ids[c], g.response_ids[r]],
                    encoded=[g.encoded[c], g.encoded[r]],
                    chosen=[0],
                    rejected=[1],
                    weight=[g.weight[i]],
                    vote_share=[g.vote_share[i]],
                    votes_chosen=[g.votes_chosen[i]],
                    votes_rejected=[g.votes_rejected[i]],
                    votes_tie=[g.votes_tie[i]],
                    k=2,
                )
            )
    return flat
