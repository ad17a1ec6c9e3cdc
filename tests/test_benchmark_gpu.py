"""benchmarks/gpu.py runs end to end: without a GPU it says so and exits cleanly, and its
smoke mode drives every code path on tiny sizes (the kernels under Triton's interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_benchmark_without_gpu_says_so_and_exits_cleanly():
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "No CUDA GPU" in result.stdout or "triton is not installed" in result.stdout


def test_gpu_benchmark_smoke_run_of_the_chunk_kernel(capsys, monkeypatch):
    pytest.importorskip("triton", reason="the optional extra everygraph[gpu] is not installed")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu

    assert gpu.main(["--smoke", "--only", "chunk"]) == 0
    out = capsys.readouterr().out
    assert "everygraph triton chunk" in out and "everygraph lattice (eager chunked)" in out
