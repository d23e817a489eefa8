"""Sample responses from a policy checkpoint for annotators, with each sample's KL from a reference. No Django here.

The sampling job (``rlloop.jobs``) turns these into tasks; this module only loads models
and samples. Prompts are rendered exactly as PPO renders them (``rlloop.policy``), so what
annotators compare is what training optimised.

Reproducible: each call seeds torch from ``seed`` alone, so the same checkpoint, prompts,
options and seed give the same texts on the same hardware. The job derives one seed per
(policy, batch) from its own seed and records it with every response.

KL: with a ``reference`` checkpoint, each sample also gets
``sum_t log pi(y_t) - log pi_ref(y_t)`` over its tokens, both distributions scaled by
the sampling temperature as PPO scales them (``rlloop.ppo.logprobs_of``): the k1 estimate
of the sequence KL that PPO's ``objective/kl`` reports, measured here on fresh prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlloop.policy import HFGenerator, Sampling, encode_prompt, load_causal_lm, load_tokenizer
from trainio.runtime import seed_everything


@dataclass(frozen=True)
class Sample:
    text: str
    tokens: int
    finished: bool
    """The response ended by itself (eos or a stop string), not at ``max_new_tokens``."""
    kl: float | None
    """k1 estimate of KL(policy || reference) over the response's tokens; None without a reference."""
    truncated_prompt: bool


def load_model(path: str | Path, device: torch.device) -> nn.Module:
    """A checkpoint in eval mode on ``device`` (bfloat16 on a GPU that has it, else float32)."""
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return load_causal_lm(path, dtype=dtype).to(device).eval()


class PolicySampler:
    """One loaded policy that samples batches of prompts, and measures each sample's KL from ``reference``.

    ``reference`` is a loaded model shared by the samplers of one job (or None: no KL);
    ``is_reference`` says the policy is the reference itself (KL 0, nothing to compute).
    """

    def __init__(
        self,
        policy_dir: str | Path,
        *,
        device: torch.device,
        reference: nn.Module | None = None,
        is_reference: bool = False,
        max_prompt_length: int = 1024,
    ) -> None:
        self.device = device
        self.tokenizer = load_tokenizer(policy_dir)
        self.model = load_model(policy_dir, device)
        if reference is not None and reference.config.vocab_size != self.model.config.vocab_size:
            raise ValueError("the reference has another vocabulary than the policy: no KL can be measured")
        self.reference = None if is_reference else reference
        self.same_as_reference = is_reference
        self.generator = HFGenerator(self.model, self.tokenizer)
        self.max_prompt_length = max_prompt_length

    @torch.no_grad()
    def sample(
        self, prompts: list[Any], *, per_prompt: int, sampling: Sampling, seed: int, batch_size: int = 16
    ) -> list[list[Sample]]:
        """``per_prompt`` samples of each prompt (list of messages or text), in prompt order."""
        sampling.validate()
        if per_prompt < 1:
            raise ValueError("per_prompt must be >= 1")
        seed_everything(seed)
        encoded = [encode_prompt(self.tokenizer, p, self.max_prompt_length) for p in prompts]
        flat = [(i, ids, cut) for i, (ids, cut) in enumerate(encoded) for _ in range(per_prompt)]
        out: list[list[Sample]] = [[] for _ in prompts]
        for start in range(0, len(flat), batch_size):
            chunk = flat[start : start + batch_size]
            queries = [ids for _, ids, _ in chunk]
            completions = self.generator.generate(queries, sampling)
            kls = self._kl(queries, [c.tokens for c in completions], sampling.temperature)
            for (i, _, cut), completion, kl in zip(chunk, completions, kls, strict=True):
                # NUL is dropped: no database text column stores it (PostgreSQL refuses the row).
                text = self.tokenizer.decode(completion.tokens, skip_special_tokens=True).replace("\x00", "").strip()
                out[i].append(Sample(text, len(completion.tokens), completion.finished, kl, cut))
        return out

    def _kl(self, queries: list[list[int]], responses: list[list[int]], temperature: float) -> list[float | None]:
        if self.same_as_reference:
            return [0.0] * len(queries)
        if self.reference is None:
            return [None] * len(queries)
        from rlloop.ppo import logprobs_of, positions_of

        pad = self.tokenizer.pad_token_id
        context = max(len(q) for q in queries)
        width = max(len(r) for r in responses)
        ids = torch.full((len(queries), context + width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        mask = torch.zeros((len(queries), width))
        for row, (q, r) in enumerate(zip(queries, responses, strict=True)):
            ids[row, context - len(q) : context + len(r)] = torch.tensor(q + r, dtype=torch.long)
            attention[row, context - len(q) : context + len(r)] = 1
            mask[row, : len(r)] = 1.0
        ids, attention, mask = ids.to(self.device), attention.to(self.device), mask.to(self.device)
        tokens = ids[:, context:]
        positions = positions_of(attention)
        sums = []
        for model in (self.model, self.reference):
            logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
            logp = logprobs_of(logits[:, context - 1 : -1], tokens, temperature)
            sums.append((logp * mask).sum(-1))
        return [float(x) for x in (sums[0] - sums[1]).cpu()]
