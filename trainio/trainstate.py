"""Checkpoints of a trainer: complete or absent, never half-written. No Django.

A checkpoint is a directory ``<root>/step-<NNNNNNNN>`` holding the trainable weights
(``model.safetensors``), the optimizer's tensors (``optimizer.safetensors``) and the RNG state
of every process (``rng-<rank>.safetensors``; ``rng.safetensors`` for a single-process trainer,
the reward model's), and the rest in ``state.json``: format, step, the trainer's own state
(config, the data's hash, position, history, ...), the optimizer's scalars and Python's RNG
state. Loading never unpickles. It is assembled in ``<root>/.tmp-step-<NNNNNNNN>`` and renamed
into place, so a reader (a resumed attempt after SIGKILL) sees a complete checkpoint or none;
only ``state.json`` with ``"complete": true`` and the trainer's format string counts. The
newest ``KEEP`` are kept.

Writing one: :func:`begin` (main process), :func:`write_rng` (every process),
:func:`write_main` (main process), :func:`commit` (main process). The format strings
(``arpad-rm-checkpoint/1``, ``arpad-sft-checkpoint/1``, ``arpad-ppo-checkpoint/1``) name the
trainer, so one trainer never resumes from another's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

KEEP = 2


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file: what identifies a run's data, so a resumed run knows it is the same."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (best effort: skipped where a directory cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON and fsync it; NaN or infinity is an error, not invalid JSON."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump(obj, out, indent=2, sort_keys=True, allow_nan=False)
        out.flush()
        os.fsync(out.fileno())


def list_checkpoints(root: Path, fmt: str) -> list[tuple[int, Path]]:
    """Complete checkpoints of format ``fmt`` under ``root``, newest first."""
    found = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        if not (path.is_dir() and path.name.startswith("step-")):
            continue
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if state.get("format") == fmt and state.get("complete") is True:
            found.append((int(state["step"]), path))
    return sorted(found, reverse=True)


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        cuda = [state[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in state]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def temporary_dir(root: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is assembled; every process of a run writes into the same one."""
    return root / f".tmp-step-{step:08d}"


def begin(root: Path, step: int) -> Path:
    """Create an empty temporary directory for the checkpoint of ``step`` (main process only)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def rng_file(rank: int | None) -> str:
    """The RNG file of process ``rank``; None: the one process of a single-process trainer."""
    return "rng.safetensors" if rank is None else f"rng-{rank}.safetensors"


def write_rng(tmp: Path, rank: int | None) -> None:
    """Every process saves its own RNG state (each samples its own rollouts)."""
    from safetensors.torch import save_file

    save_file(rng_state(), tmp / rng_file(rank))


def write_main(
    tmp: Path,
    *,
    fmt: str,
    step: int,
    params: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """The main process's part: weights, optimizer, JSON state."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in params.items()}, tmp / "model.safetensors")
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in opt["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, tmp / "optimizer.safetensors")
    version, internal, gauss = random.getstate()
    write_json(
        tmp / "state.json",
        {
            **state,
            "format": fmt,
            "step": step,
            "param_groups": opt["param_groups"],
            "optimizer_scalars": scalars,
            "python_random": [version, list(internal), gauss],
            "complete": True,
        },
    )


def commit(root: Path, step: int) -> Path:
    """Rename the temporary directory into place (atomic) and drop old checkpoints (main process only)."""
    tmp = temporary_dir(root, step)
    final = root / f"step-{step:08d}"
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    fmt = json.loads((final / "state.json").read_text(encoding="utf-8"))["format"]
    for _, old in list_checkpoints(root, fmt)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load(
    path: Path,
    *,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    rank: int | None,
    config: dict[str, Any],
    resumable_differences: frozenset[str],
    data_sha256: str,
    data_name: str | None = None,
) -> dict[str, Any]:
    """Restore weights, optimizer, this process's RNG and Python's RNG; the JSON state is returned.

    A checkpoint written with another config (but for ``resumable_differences``) or for other
    data (``data_sha256``; ``data_name``, when given, says which file changed) is refused.
    """
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    saved = state["config"]
    differing = sorted(
        k for k in set(saved) | set(config) if saved.get(k) != config.get(k) and k not in resumable_differences
    )
    if differing:
        raise ValueError(f"{path} was written with a different config ({', '.join(differing)}); use a new output_dir")
    if state["data_sha256"] != data_sha256:
        changed = f" ({data_name} changed)" if data_name else ""
        raise ValueError(f"{path} was written for different data{changed}; use a new output_dir")
    weights = load_file(path / "model.safetensors")
    if set(weights) != set(params):
        raise ValueError(f"{path} does not hold this model's trainable weights")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    tensors = load_file(path / "optimizer.safetensors")
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(state["optimizer_scalars"].items()):
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    rng = path / rng_file(rank)
    if not rng.is_file():
        raise ValueError(f"{path} has no RNG state for process {rank}; resume with the same number of processes")
    set_rng_state(load_file(rng))
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))
    return state
