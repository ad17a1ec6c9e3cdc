"""The data-parallel tutorial trains on 2 gloo processes (spawned by itself, then under torchrun),
logs from rank 0 only, and resumes from its checkpoint where it stopped."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(ROOT / "examples" / "distributed_training.py"),
               "--quick", "--out", str(tmp_path), *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _epoch_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("epoch ")]


def test_train_interrupt_and_resume_under_torchrun(run_example, tmp_path):
    first = run_example("distributed_training", "--epochs", "2", timeout=240)
    assert len(_epoch_lines(first.stdout)) == 2  # rank 0 alone logs
    assert (tmp_path / "checkpoint.pt").exists()
    resumed = _torchrun(tmp_path, "--epochs", "4", "--resume")
    assert "epoch 1 done, step 6" in resumed.stdout  # 192 graphs, global batch 64: 3 steps per epoch
    assert [line.split(":")[0] for line in _epoch_lines(resumed.stdout)] == ["epoch 2", "epoch 3"]
    log = json.loads((tmp_path / "distributed_training.json").read_text())
    assert log["world_size"] == 2
    assert [e["step"] for e in log["epochs"]] == [3, 6, 9, 12]
    # the resumed run keeps learning: over seeds 0-4 (--seed, 4 epochs uninterrupted) the fourth
    # epoch's training MSE was 0.14-0.30 times the first's
    mse = [e["mse"] for e in log["epochs"]]
    assert mse[-1] < 0.5 * mse[0], mse


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(run_example, tmp_path):
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    run_example("distributed_training", "--epochs", "2", "--out", str(interrupted), timeout=240)
    run_example("distributed_training", "--epochs", "4", "--resume", "--out", str(interrupted), timeout=240)
    run_example("distributed_training", "--epochs", "4", "--out", str(whole), timeout=240)
    read = lambda d: json.loads((d / "distributed_training.json").read_text())["epochs"]  # noqa: E731
    assert read(interrupted) == read(whole)
