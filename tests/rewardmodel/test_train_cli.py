"""``python -m rewardmodel.train``: a run killed with SIGKILL resumes to the uninterrupted weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rewardmodel.train import list_checkpoints
from tests.rewardmodel.tiny import synthetic_snapshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def command(base: Path, data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "rewardmodel.train", "--base", str(base), "--data", str(data), "--out", str(out),
        "--epochs", "6", "--learning-rate", "1e-3", "--groups-per-batch", "2", "--max-length", "64",
        "--checkpoint-every-steps", "4", "--weight-decay", "0.01", "--keep-dropout",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the trainer must not need Django
    return env


def run_to_end(args: list[str]) -> dict:
    done = subprocess.run(args, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reward model" in done.stderr  # the tqdm bar
    return json.loads(done.stdout)


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_weights(tiny_gpt2_dropout, tmp_path) -> None:
    data = synthetic_snapshot(tmp_path / "data", n_groups=120, k=3, seed=4)
    reference = run_to_end(command(tiny_gpt2_dropout, data, tmp_path / "reference"))
    assert reference["metrics"]["accuracy"] > 0.5

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        command(tiny_gpt2_dropout, data, out), cwd=REPO, env=environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(out / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model").exists()
    killed_at = list_checkpoints(out / "checkpoints")[0][0]
    total = 6 * 45  # 90 train groups / 2 per batch, 6 epochs
    assert 0 < killed_at < total

    resumed = run_to_end(command(tiny_gpt2_dropout, data, out))
    assert resumed["metrics"] == reference["metrics"]
    saved = json.loads((out / "model" / "metrics.json").read_text())
    assert saved["info"]["resumed_from_step"] == killed_at
    ref_w = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    got_w = load_file(out / "model" / "model.safetensors")
    assert set(ref_w) == set(got_w)
    assert all((ref_w[n] == got_w[n]).all() for n in ref_w)


def test_cli_refuses_bad_options_with_a_clear_message(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rewardmodel.train", "--base", str(tmp_path), "--data", str(tmp_path), "--out",
         str(tmp_path / "o"), "--epochs", "0", "--precision", "fp8"],
        cwd=REPO, env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "epochs must be an integer in [1, 1000]" in done.stderr and "precision must be" in done.stderr
    assert not (tmp_path / "o").exists()


def test_the_training_code_imports_neither_django_nor_celery() -> None:
    check = (
        "import sys, rewardmodel.train, rewardmodel.scoring, rewardmodel.data, rewardmodel.losses, trainio.trainstate, trainio.config;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'celery', 'rest_framework'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=environment(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
