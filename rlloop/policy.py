"""A policy checkpoint: loading it, rendering prompts for it, and sampling from it. No Django here.

A policy is any Hugging Face causal-LM checkpoint directory (``AutoModelForCausalLM`` +
a fast tokenizer). Prompts are chat messages; they are rendered through the tokenizer's chat
template with the generation prompt, or, for a tokenizer without one, in the documented
plain format of :mod:`rewardmodel.data` (``"\\n\\nHuman: ...\\n\\nAssistant:"``), so the policy
and the reward model read a conversation the same way.

Sampling goes through one small interface, :class:`Generator`: token ids of the prompts
in, one :class:`Completion` per prompt out (the response's token ids, cut after its first
end-of-sequence token, and whether it ended on its own). :class:`HFGenerator` implements it
with ``model.generate``; a faster backend (vLLM, SGLang) can replace it without touching PPO,
which only reads completions and recomputes every log-probability itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rewardmodel.data import as_messages, plain_prompt

POLICY_SIDECAR = "arpad_policy.json"


def load_tokenizer(path: str | Path) -> Any:
    """The checkpoint's fast tokenizer, with a pad token (eos when it has none) and left padding."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise ValueError(f"policy {str(path)!r} is not a directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot load a tokenizer from {path}: {exc}") from None
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(f"{path}: the tokenizer has no fast (tokenizers) backend; save a tokenizer.json")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no eos token; a policy must be able to end its answer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(path: str | Path, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The checkpoint as a causal LM, dropout off (see :func:`disable_dropout`), no KV cache in training."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot load {path} as a causal language model: {exc}") from None
    disable_dropout(model)
    return model


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere: PPO's ratio must be 1 before the first update (N+ details, #4)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The policy's ``arpad_policy.json`` (lineage, generation defaults), or {} when it has none."""
    file = Path(path) / POLICY_SIDECAR
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{file}: not JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def render_prompt(tokenizer: Any, prompt: list[dict[str, Any]] | str) -> str:
    """The text a policy continues: the chat template with the generation prompt, or the plain format."""
    messages = as_messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(messages)


def encode_prompt(tokenizer: Any, prompt: list[dict[str, Any]] | str, max_length: int) -> tuple[list[int], bool]:
    """Token ids of the rendered prompt, cut from the left to ``max_length``; and whether it was cut."""
    text = render_prompt(tokenizer, prompt)
    ids = tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]
    if len(ids) <= max_length:
        return list(ids), False
    return list(ids[-max_length:]), True


@dataclass
class Completion:
    tokens: list[int]
    """The response's token ids, ending with the eos token when ``finished``."""
    finished: bool
    """The response ended by itself (eos or a stop string), not at the token limit."""


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()

    def validate(self) -> None:
        problems = []
        if not (isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= 4096):
            problems.append("max_new_tokens must be an integer in [1, 4096]")
        if not (isinstance(self.temperature, int | float) and 0 < self.temperature <= 5):
            problems.append("temperature must be in (0, 5]")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            problems.append("top_p must be in (0, 1]")
        if not all(isinstance(s, str) and s for s in self.stop) or len(self.stop) > 8:
            problems.append("stop must be at most 8 non-empty strings")
        if problems:
            raise ValueError("; ".join(problems))


class Generator(Protocol):
    """Samples one response per prompt. Randomness comes from torch's global generator."""

    def generate(self, queries: list[list[int]], sampling: Sampling) -> list[Completion]: ...


class HFGenerator:
    """:class:`Generator` through ``transformers``' ``generate`` (left padding, KV cache)."""

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @torch.no_grad()
    def generate(self, queries: list[list[int]], sampling: Sampling) -> list[Completion]:
        if not queries:
            return []
        device = next(self.model.parameters()).device
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        width = max(len(q) for q in queries)
        ids = torch.full((len(queries), width), pad, dtype=torch.long)
        mask = torch.zeros((len(queries), width), dtype=torch.long)
        for row, q in enumerate(queries):
            ids[row, width - len(q) :] = torch.tensor(q, dtype=torch.long)
            mask[row, width - len(q) :] = 1
        kwargs: dict[str, Any] = {
            "do_sample": True,
            "temperature": float(sampling.temperature),
            "top_p": float(sampling.top_p),
            "top_k": 0,
            "max_new_tokens": sampling.max_new_tokens,
            "min_new_tokens": 1,
            "pad_token_id": pad,
            "eos_token_id": eos,
            "use_cache": True,
        }
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        finally:
            self.model.train(was_training)
        completions = []
        for row in out[:, width:].tolist():
            completions.append(self._cut(row, eos, sampling.stop))
        return completions

    def _cut(self, row: list[int], eos: int, stop: tuple[str, ...]) -> Completion:
        end = row.index(eos) + 1 if eos in row else None
        if stop:
            # generate stops a row after a stop string's last token and pads the rest; with
            # pad = eos that padding looks like an eos the model never sampled: cut before it.
            for n in range(1, (end or len(row)) + 1):
                text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
                if any(text.endswith(s) for s in stop):
                    return Completion(row[:n], True)
        if end is not None:
            return Completion(row[:end], True)
        return Completion(row, False)
