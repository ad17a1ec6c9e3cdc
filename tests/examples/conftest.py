"""Runs a tutorial script as a user would: a fresh interpreter, ``--quick``, output to a tmp dir."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_example(tmp_path):
    """``run_example(name, *args, timeout=300)`` runs ``examples/<name>.py --quick --out tmp_path
    *args``, asserts it exits 0 (showing the end of its stderr otherwise) and returns the
    ``CompletedProcess``. The repository root goes on ``PYTHONPATH`` so the checkout under
    test is the one imported; plots use Agg, progress bars are off, the basis cache is fresh."""

    def run(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            MPLBACKEND="Agg",
            TQDM_DISABLE="1",
            EVERYGRAPH_CACHE_DIR=str(tmp_path / "cache"),
        )
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(tmp_path), *args],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    return run


@pytest.fixture
def load_example():
    """``load_example(name)`` imports ``examples/<name>.py`` as a module (its ``__main__``
    block does not run), for tests of the tutorial's own functions."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_example", ROOT / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
