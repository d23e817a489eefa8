"""``rlloop.ppo`` as separate processes: two DDP ranks over gloo, and a run killed with SIGKILL then rerun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(REPO),  # tests.rlloop.rewards:o_share
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": "",  # CPU processes even where GPUs exist
        }
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the trainer must not need Django
    return env


def trainer_args(policy: Path, prompts: Path, out: Path, **options) -> list[str]:
    sets = {
        "lora": {"r": 4, "alpha": 8},
        "rollouts_per_update": 4,
        "minibatch_size": 2,
        "ppo_epochs": 2,
        "max_new_tokens": 6,
        "learning_rate": 1e-2,
        "temperature": 1.0,
        "kl_coef": 0.01,
        "device": "cpu",
        "checkpoint_every": 1,
        "seed": 0,
        **options,
    }
    args = ["--policy", str(policy), "--prompts", str(prompts), "--out", str(out)]
    args += ["--reward-function", "tests.rlloop.rewards:o_share"]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def run_to_end(args: list[str], timeout: float = 300) -> None:
    done = subprocess.run(args, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(args: list[str]) -> list[str]:
    """``accelerate launch`` of two CPU processes on this machine (DDP over gloo).

    ``--cpu --num_processes 2`` is not it: accelerate's CPU launcher starts more than one
    process only through mpirun (``--mpirun_hostfile``). ``--multi_gpu`` launches through
    torchrun, and the trainer's ``device=cpu`` makes each process a gloo CPU rank.
    """
    accelerate = Path(sys.executable).parent / "accelerate"
    return [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
        "-m", "rlloop.ppo", *args,
    ]  # fmt: skip


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def assert_same_weights(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert set(want) == set(got)
    different = [name for name in want if not torch.equal(want[name], got[name])]
    assert different == []


def metrics(out: Path) -> dict:
    return json.loads((out / "model" / "metrics.json").read_text(encoding="utf-8"))


def test_two_gloo_processes_keep_identical_weights_and_resume_exactly(
    tiny_policy, prompt_file, gold_model, tmp_path
) -> None:
    out = tmp_path / "two"
    # With a gold reward model watching: every process scores its own rollouts with it too.
    command = two_processes(
        [*trainer_args(tiny_policy, prompt_file, out, updates=3), "--gold-reward-model", str(gold_model)]
    )
    run_to_end(command)

    saved = metrics(out)
    info = saved["info"]
    assert info["processes"] == 2
    assert info["episodes_per_update"] == 2 * 4
    assert info["weights_identical_across_processes"] is True
    first, second = info["weights_checksums"]
    assert first == second and len(first) == 2
    history = saved["history"]
    assert [h["step"] for h in history] == [1, 2, 3]
    for h in history:
        for key in (
            "objective/scores",
            "objective/gold_scores",
            "objective/kl",
            "losses/policy_loss",
            "val/first_ratio",
        ):
            assert isinstance(h[key], float), (h["step"], key)
        assert h["val/first_ratio"] == pytest.approx(1.0, abs=1e-5)
        assert h["eps"] > 0
    assert len({h["objective/scores"] for h in history}) > 1  # the rollouts change as the policy trains
    for step in (2, 3):  # the newest two are kept
        checkpoint = out / "checkpoints" / f"step-{step:08d}"
        assert (checkpoint / "rng-0.safetensors").is_file() and (checkpoint / "rng-1.safetensors").is_file()
        assert json.loads((checkpoint / "state.json").read_text())["processes"] == 2
    rng = [load_file(out / "checkpoints" / "step-00000003" / f"rng-{rank}.safetensors")["torch"] for rank in (0, 1)]
    assert not torch.equal(rng[0], rng[1])  # each process samples its own rollouts

    # Resume with two processes: drop the last checkpoint and the result, rerun the same
    # command; update 3 is done again from step 2 (both ranks' RNG) and ends where it did.
    reference = weights(out / "model")
    (out / "model").rename(tmp_path / "first-model")
    shutil.rmtree(out / "checkpoints" / "step-00000003")
    run_to_end(command)
    again = metrics(out)
    assert again["info"]["resumed_from_step"] == 2
    assert again["info"]["weights_identical_across_processes"] is True
    assert again["info"]["weights_checksums"] == info["weights_checksums"]
    for key in ("objective/scores", "objective/gold_scores"):
        assert [h[key] for h in again["history"]] == [h[key] for h in history], key
    assert_same_weights(reference, weights(out / "model"))


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_weights(tiny_policy, prompt_file, tmp_path) -> None:
    updates = 8
    options = {"updates": updates, "rollouts_per_update": 8, "minibatch_size": 4, "max_new_tokens": 8}
    options["adaptive_kl"], options["target_kl"], options["kl_horizon"] = True, 0.5, 200  # beta moves too

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "rlloop.ppo", *trainer_args(tiny_policy, prompt_file, out, **options)]

    run_to_end(command(tmp_path / "reference"))
    reference = metrics(tmp_path / "reference")

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        command(out), cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "step-00000003").is_dir() and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before step 3 was seen"
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model").exists()
    steps = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert steps and 3 <= steps[-1] < updates, steps

    run_to_end(command(out))
    resumed = metrics(out)
    assert resumed["info"]["resumed_from_step"] == steps[-1]
    assert_same_weights(weights(tmp_path / "reference" / "model"), weights(out / "model"))
    for key in ("objective/scores", "objective/kl", "objective/beta", "losses/policy_loss"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in reference["history"]], key
    assert reference["history"][-1]["objective/beta"] != reference["history"][0]["objective/beta"]
