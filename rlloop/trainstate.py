"""Checkpoints of a policy trainer (SFT, PPO): complete or absent, never half-written. No Django.

A checkpoint is a directory ``<root>/step-<NNNNNNNN>`` holding the trainable weights, the
optimizer state and every process's RNG state in safetensors, and the rest (step, history,
config, the data's hash, the optimizer's scalars, Python's RNG state) in ``state.json``.
Loading never unpickles. It is written to a temporary directory and renamed, so a reader
(a resumed attempt after SIGKILL) sees a complete checkpoint or none. The newest
``KEEP`` are kept.

The same habits as ``rewardmodel.train``'s checkpoints; the format differs (several
processes, a trainer-specific state), so the format string names the trainer.
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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
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


def write_rank_rng(tmp: Path, rank: int) -> None:
    """Every process saves its own RNG state (each samples its own rollouts)."""
    from safetensors.torch import save_file

    save_file(rng_state(), tmp / f"rng-{rank}.safetensors")


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
    rank: int,
    config: dict[str, Any],
    resumable_differences: frozenset[str],
    data_sha256: str,
) -> dict[str, Any]:
    """Restore weights, optimizer, this process's RNG and Python's RNG; the JSON state is returned."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    saved = state["config"]
    differing = sorted(
        k for k in set(saved) | set(config) if saved.get(k) != config.get(k) and k not in resumable_differences
    )
    if differing:
        raise ValueError(f"{path} was written with a different config ({', '.join(differing)}); use a new output_dir")
    if state["data_sha256"] != data_sha256:
        raise ValueError(f"{path} was written for different data; use a new output_dir")
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
    rng_file = path / f"rng-{rank}.safetensors"
    if not rng_file.is_file():
        raise ValueError(f"{path} has no RNG state for process {rank}; resume with the same number of processes")
    set_rng_state(load_file(rng_file))
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))
    return state
