"""Prompt files of policy training and sampling: JSONL, one prompt per line. No Django here.

Each line is an object with ``prompt``: a string (one user turn) or a list of chat messages
(``{"role": "system"|"user"|"assistant", "content": str}``, the last one not the
assistant's); an optional ``id`` and, for SFT, a ``response``. A bad line is an error that
names the file, the line and the field; nothing is half read.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

ROLES = frozenset({"system", "user", "assistant"})
MAX_PROMPTS = 1_000_000


def check_prompt(prompt: Any, where: str) -> list[dict[str, str]] | str:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{where}: prompt is empty")
        return prompt
    if not isinstance(prompt, list) or not prompt:
        raise ValueError(f"{where}: prompt must be a string or a non-empty list of messages")
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or not {"role", "content"} <= set(m):
            raise ValueError(f"{where}: prompt[{i}] must be an object with role and content")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: prompt[{i}].role must be one of {', '.join(sorted(ROLES))}")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}: prompt[{i}].content must be a string")
    if prompt[-1]["role"] == "assistant":
        raise ValueError(f"{where}: prompt ends with an assistant turn; the policy answers the last user turn")
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def read_records(path: str | Path, *, need_response: bool = False) -> list[dict[str, Any]]:
    """Every line of a prompt file as ``{"prompt", "id", "response"?}``, checked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(item, dict) or "prompt" not in item:
                raise ValueError(f"{where}: missing field prompt")
            record = {"prompt": check_prompt(item["prompt"], where), "id": item.get("id", number)}
            if need_response:
                response = item.get("response")
                if not isinstance(response, str) or not response.strip():
                    raise ValueError(f"{where}: response must be a non-empty string")
                record["response"] = response
            records.append(record)
            if len(records) > MAX_PROMPTS:
                raise ValueError(f"{path}: more than {MAX_PROMPTS} prompts")
    if not records:
        raise ValueError(f"{path} holds no prompts")
    return records


def read_prompts(path: str | Path) -> list[list[dict[str, str]] | str]:
    return [r["prompt"] for r in read_records(path)]


def write_records(path: str | Path, records: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    tmp.replace(path)
    return path


def seeded_sample(records: list[Any], limit: int, seed: int) -> list[Any]:
    """At most ``limit`` of ``records``, a sample fixed by ``seed``, in their original order."""
    if len(records) <= limit:
        return records
    chosen = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in chosen]
