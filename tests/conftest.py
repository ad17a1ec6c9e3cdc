import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels are tested through Triton's interpreter, which must be
# switched on before any kernel is defined (kernels are defined when their module is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Two cores: keep tests from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _basis_cache_in_tmp(tmp_path_factory):
    """Keep the on-disk basis cache (contractions.basis) out of the user's home directory."""
    old = os.environ.get("EVERYGRAPH_CACHE_DIR")
    os.environ["EVERYGRAPH_CACHE_DIR"] = str(tmp_path_factory.mktemp("everygraph_cache"))
    yield
    if old is None:
        del os.environ["EVERYGRAPH_CACHE_DIR"]
    else:
        os.environ["EVERYGRAPH_CACHE_DIR"] = old


# ----------------------------------------------------------------------------- numba kernels
# A long run compiles the numba kernels in two processes at once while the tests are collected
# (everygraph.sequence.jit_warmup): they land in numba's on-disk cache, from which this process
# and the spawned processes of tests/distributed load them instead of compiling them one after
# the other (or twice at once). A short run (single test files, or few tests) compiles lazily
# what it uses, as without this.
_WARMUP_MIN_TESTS = 400
_WARMUP_TIMEOUT_S = 480.0
_warmup_children: list = []
_warmup_succeeded: list[bool] = []


def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: the controller warms up
        return
    if not any(Path(str(arg).split("::")[0]).is_dir() for arg in session.config.args):
        return  # single test files: a short run
    try:
        from everygraph.sequence.jit_warmup import start_in_processes
    except Exception:  # a broken import fails the tests that import it, with their own report
        return
    _warmup_children.extend(start_in_processes(processes=min(2, os.cpu_count() or 1)))  # none without the JIT


def pytest_collection_finish(session):
    # waiting also keeps a test from compiling a kernel while a warm-up process compiles it
    long_run = len(session.items) >= _WARMUP_MIN_TESTS and not session.config.option.collectonly
    if _warmup_children:
        from everygraph.sequence.jit_warmup import wait

        _warmup_succeeded.append(wait(_warmup_children, _WARMUP_TIMEOUT_S if long_run else 0.0))
        _warmup_children.clear()


@pytest.fixture(scope="session")
def jit_warmup_done() -> bool:
    """Whether this session's warm-up of the numba kernels finished (all of them are cached)."""
    return bool(_warmup_succeeded) and all(_warmup_succeeded)
