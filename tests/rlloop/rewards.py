"""Rule-based rewards with a known optimum, for PPO tests (``reward_function="tests.rlloop.rewards:good_share"``)."""

from __future__ import annotations

from typing import Any


def good_share(prompts: list[Any], responses: list[str]) -> list[float]:
    """The share of a response's characters that spell ``good``: 1.0 at the optimum ("goodgood...")."""
    return [4 * text.count("good") / max(len(text), 1) for text in responses]


def o_share(prompts: list[Any], responses: list[str]) -> list[float]:
    """The share of a response's characters that are the letter ``o``: dense, 1.0 at the optimum."""
    return [text.count("o") / max(len(text), 1) for text in responses]


def legible(messages: Any, text: str) -> float:
    """A simulated annotator's gold (prompt messages, response text): the share of plain letters and spaces.

    A random tiny policy writes mostly byte-level junk with a few words; readers prefer words.
    """
    return sum(c.isascii() and (c.isalpha() or c == " ") for c in text) / max(len(text), 1)
