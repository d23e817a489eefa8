"""Tiny models, tokenizers and export-snapshot directories built in code, for reward-model tests.

Everything here is deterministic given its seed and runs in seconds on a CPU:

* :func:`build_tokenizer`: a byte-level BPE trained in memory with ``tokenizers`` on the
  synthetic vocabulary, wrapped as a ``PreTrainedTokenizerFast``.
* :func:`build_gpt2` / :func:`build_llama`: a 2-layer decoder with random weights and that
  tokenizer, saved with ``save_pretrained`` into a directory, as a real base checkpoint is
  (a causal-LM checkpoint: the reward head is created when training loads it).
* :func:`synthetic_groups` and :func:`write_snapshot`: an export-snapshot-like directory
  (``groups.jsonl`` in the ``exports.snapshot`` layout, plus a ``manifest.json``) for a
  preference task with a known rule: a response is better the more ``good`` words it holds.

Other test modules (the Django job's tests included) reuse these builders.
"""

from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path
from typing import Any

FILLER = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "lambda"]
GOOD = "good"
PROMPT_WORDS = ["tell", "me", "about", "the", "river", "mountain", "city", "story", "please", "why", "how"]
SPECIALS = ["<|endoftext|>", "<pad>", "<unk>"]


def _corpus() -> list[str]:
    words = FILLER + [GOOD] + PROMPT_WORDS + ["Human:", "Assistant:", "User:", "System:"]
    rng = random.Random(0)
    lines = [" ".join(words)]
    for _ in range(400):
        lines.append(" ".join(rng.choice(words) for _ in range(12)))
    lines.append("\n\nHuman: tell me\n\nAssistant: good alpha")
    return lines


def build_tokenizer(*, pad_token: bool = True, chat_template: str | None = None) -> Any:
    """A byte-level BPE tokenizer trained in memory; ``pad_token=False`` leaves the pad unset (GPT-2 style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer=trainer)
    kwargs: dict[str, Any] = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}
    if pad_token:
        kwargs["pad_token"] = "<pad>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.model_max_length = 512
    return tokenizer


# A small Jinja chat template in the ChatML style, for tests of the chat-template path.
CHATML = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)


def build_gpt2(
    directory: Path | str,
    *,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    pad_token: bool = True,
    chat_template: str | None = None,
    seed: int = 0,
    dropout: float = 0.0,
) -> Path:
    """A random GPT-2 causal LM + tokenizer saved in ``directory``; returns the directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = Path(directory)
    tokenizer = build_tokenizer(pad_token=pad_token, chat_template=chat_template)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def build_llama(
    directory: Path | str,
    *,
    hidden_size: int = 32,
    seed: int = 0,
    pad_token: bool = False,
    chat_template: str | None = None,
) -> Path:
    """A random 2-layer Llama causal LM (RMSNorm, no biases anywhere) + tokenizer in ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    tokenizer = build_tokenizer(pad_token=pad_token, chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def response_text(n_good: int, length: int, rng: random.Random) -> str:
    """``length`` words of which ``n_good`` are ``good``, the rest filler, shuffled."""
    words = [GOOD] * n_good + [rng.choice(FILLER) for _ in range(length - n_good)]
    rng.shuffle(words)
    return " ".join(words)


def synthetic_groups(
    n_groups: int,
    *,
    k: int = 2,
    length: int = 6,
    prompt_words: int = 5,
    validation_fraction: float = 0.25,
    seed: int = 0,
    weight: str = "group",
    votes: int = 1,
    split_votes: float = 0.0,
) -> list[dict[str, Any]]:
    """Groups of K responses ranked by their number of ``good`` words (more is better).

    Every pair of a group is kept, chosen = more ``good`` words. ``votes`` annotators voted on
    each pair; with probability ``split_votes`` one of them dissented (so ``vote_share`` < 1,
    the rule still decides the majority). ``weight`` follows ``exports.formats.pair_weight``.
    """
    if not 2 <= k <= length + 1:
        raise ValueError("k must be between 2 and length + 1")
    rng = random.Random(seed)
    groups = []
    next_response = 1
    n_validation = round(n_groups * validation_fraction)
    for g in range(n_groups):
        goods = rng.sample(range(length + 1), k)
        prompt = " ".join(rng.choice(PROMPT_WORDS) for _ in range(prompt_words))
        responses = []
        for position, n_good in enumerate(goods):
            responses.append(
                {
                    "id": next_response,
                    "position": position,
                    "text": response_text(n_good, length, rng),
                    "source": "synthetic",
                    "good": n_good,
                }
            )
            next_response += 1
        order = sorted(responses, key=lambda r: -r["good"])
        for rank, r in enumerate(order):
            r["rank"] = rank
            r["copeland"] = float(k - 1 - 2 * rank)
        pairs = []
        n_pairs = k * (k - 1) // 2
        for a, b in combinations(order, 2):
            dissent = 1 if votes >= 3 and rng.random() < split_votes else 0
            chosen_votes, rejected_votes = votes - dissent, dissent
            share = chosen_votes / votes
            w = {"group": 1.0 / n_pairs, "uniform": 1.0, "vote_margin": (2 * share - 1) / n_pairs}[weight]
            pairs.append(
                {
                    "chosen": a["id"],
                    "rejected": b["id"],
                    "votes_chosen": chosen_votes,
                    "votes_rejected": rejected_votes,
                    "votes_tie": 0,
                    "vote_share": share,
                    "weight": w,
                }
            )
        groups.append(
            {
                "group_id": g + 1,
                "prompt_id": f"syn-{g}",
                "split": "validation" if g < n_validation else "train",
                "prompt": [{"role": "user", "content": prompt}],
                "responses": [
                    {key: r[key] for key in ("id", "position", "text", "source", "copeland", "rank")} for r in responses
                ],
                "consensus": [r["id"] for r in order],
                "pairs": pairs,
            }
        )
    return groups


def write_snapshot(directory: Path | str, groups: list[dict[str, Any]]) -> Path:
    """Write ``groups`` as an export-snapshot-like directory (``groups.jsonl`` + ``manifest.json``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "groups.jsonl", "w", encoding="utf-8") as out:
        for group in groups:
            out.write(json.dumps(group, ensure_ascii=False, separators=(",", ":")) + "\n")
    counts = {
        "groups": {s: sum(1 for g in groups if g["split"] == s) for s in ("train", "validation")},
        "pairs": {s: sum(len(g["pairs"]) for g in groups if g["split"] == s) for s in ("train", "validation")},
    }
    manifest = {"format": "arpad-export/1", "content_hash": "synthetic", "counts": counts}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return directory


def synthetic_snapshot(directory: Path | str, n_groups: int = 64, **kwargs: Any) -> Path:
    return write_snapshot(directory, synthetic_groups(n_groups, **kwargs))
