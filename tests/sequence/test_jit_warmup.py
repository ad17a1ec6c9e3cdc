"""everygraph.sequence.jit_warmup: the groups cover every cached numba kernel of the package, a
fresh process then loads all of them from numba's on-disk cache (no compilation), the groups
are shared among processes by compile time, and nothing is compiled or started without the JIT."""

import importlib.util
import itertools
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from everygraph.sequence import jit_warmup
from everygraph.sequence.mamba import fused_cpu

needs_numba = pytest.mark.skipif(not fused_cpu.NUMBA_AVAILABLE, reason="numba (everygraph[cpu]) not installed")
PACKAGE = Path(jit_warmup.__file__).resolve().parents[1]  # everygraph/
#: cached kernels that only tests call (the float32 exp on its own)
TEST_ONLY = {"everygraph.sequence.mamba.fused_cpu._exp_lanes"}

# Runs in a fresh interpreter: warm_up(), then for every cached numba function of the modules
# given, whether this process compiled it (a cache miss) or loaded it, and which functions it is
# called from inside compiled code (those are compiled into their callers, not on their own).
PROBE = r"""
import importlib, json, sys
from numba.core.dispatcher import Dispatcher
from everygraph.sequence.jit_warmup import warm_up

warm_up()
found = {}
for module_name in sys.argv[1:]:
    module = importlib.import_module(module_name)
    kernels = {n: d for n, d in vars(module).items() if isinstance(d, Dispatcher) and d.py_func.__module__ == module_name}
    for name, d in kernels.items():
        if type(d._cache).__name__ == "NullCache":
            continue
        found[f"{module_name}.{name}"] = dict(
            loaded=len(d.overloads), misses=sum(d.stats.cache_misses.values()),
            callers=[c for c, other in kernels.items() if name in other.py_func.__code__.co_names],
        )
print(json.dumps(found))
"""


def _modules_with_cached_kernels() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if "@_cached_njit(" in text or "cache=True" in text:
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@needs_numba
def test_a_fresh_process_loads_every_kernel_from_the_cache(jit_warmup_done, monkeypatch):
    """After the warm-up (the test session's, or here) a new process compiles nothing: each
    cached kernel of the package is loaded from the cache by some group (or compiled into the
    kernels that call it). A new kernel outside every group fails here."""
    monkeypatch.delenv(fused_cpu.DISABLE_ENV, raising=False)
    if not jit_warmup_done:
        assert jit_warmup.warm_up_in_processes(timeout=600)
    modules = _modules_with_cached_kernels()
    assert "everygraph.sequence.mamba.fused_cpu" in modules and "everygraph.sequence.plstm.grid_gating" in modules
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(found) >= 10, found
    compiled_here = {name: k["misses"] for name, k in found.items() if k["misses"]}
    assert not compiled_here, f"compiled instead of loaded from the cache: {compiled_here}"
    uncovered = [name for name, k in found.items() if not k["loaded"] and not k["callers"] and name not in TEST_ONLY]
    assert not uncovered, f"cached kernels that no group of jit_warmup.GROUPS runs: {uncovered}"


@pytest.mark.parametrize("how", ["env", "no-numba"])
def test_nothing_is_compiled_or_started_without_the_jit(how, monkeypatch, capsys):
    if how == "env":
        monkeypatch.setenv(fused_cpu.DISABLE_ENV, "1")
    else:
        monkeypatch.setattr(fused_cpu, "NUMBA_AVAILABLE", False)

    def refuse(*args, **kwargs):
        raise AssertionError("a warm-up process was started without the JIT")

    monkeypatch.setattr(jit_warmup.subprocess, "Popen", refuse)
    monkeypatch.setattr(jit_warmup, "GROUPS", {name: jit_warmup.WarmupGroup(refuse, g.seconds) for name, g in jit_warmup.GROUPS.items()})
    assert jit_warmup.warm_up() == {}
    assert jit_warmup.start_in_processes(processes=2) == []
    assert jit_warmup.warm_up_in_processes(timeout=1.0)
    assert jit_warmup.main([]) == 0
    assert "nothing to compile" in capsys.readouterr().out


def _best_makespan(costs: list[float], processes: int) -> float:
    """Brute force: the least possible largest share over every assignment."""
    return min(max(sum(c for c, p in zip(costs, assign) if p == i) for i in range(processes))
               for assign in itertools.product(range(processes), repeat=len(costs)))


@pytest.mark.parametrize("costs,processes", [
    ([66, 28, 32, 25], 2), ([66, 28, 32, 25], 3), ([66, 28, 32, 25], 8), ([10], 2),
    ([5, 5, 4, 3, 3, 3], 2), ([7, 7, 6, 6, 5, 4, 4], 3), ([1, 2, 3, 4, 5, 6, 7], 2),
])
def test_share_splits_groups_by_compile_time(costs, processes, monkeypatch):
    groups = {f"g{i}": jit_warmup.WarmupGroup(lambda: None, float(c)) for i, c in enumerate(costs)}
    monkeypatch.setattr(jit_warmup, "GROUPS", groups)
    shares = jit_warmup.share(groups, processes)
    assert sorted(itertools.chain(*shares)) == sorted(groups)  # each group in exactly one share
    assert 1 <= len(shares) <= min(processes, len(costs)) and all(shares)
    makespan = max(sum(groups[g].seconds for g in s) for s in shares)
    # longest-first assignment is within 4/3 - 1/(3m) of the best (Graham's bound)
    assert makespan <= (4 / 3 - 1 / (3 * processes)) * _best_makespan(costs, processes) + 1e-9


def test_the_default_groups_are_shared_by_measured_time():
    shares = jit_warmup.share(jit_warmup.GROUPS, 2)
    assert sorted(itertools.chain(*shares)) == sorted(jit_warmup.GROUPS)
    assert len(shares) == 2


def test_wait_kills_what_runs_past_the_timeout_and_reports_failures():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    assert not jit_warmup.wait([sleeper], timeout=0.5)
    assert sleeper.poll() is not None  # killed, not left running
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    passing = subprocess.Popen([sys.executable, "-c", "pass"])
    assert not jit_warmup.wait([passing, failing], timeout=60)
    assert jit_warmup.wait([subprocess.Popen([sys.executable, "-c", "pass"])], timeout=60)
    assert jit_warmup.wait([], timeout=0.0)


@pytest.mark.parametrize("call,argument", [
    (lambda: jit_warmup.warm_up(["selective_scan", "no_such_group"]), "groups"),
    (lambda: jit_warmup.share(jit_warmup.GROUPS, 0), "processes"),
    (lambda: jit_warmup.share(jit_warmup.GROUPS, 1.5), "processes"),
    (lambda: jit_warmup.start_in_processes(["nope"]), "groups"),
    (lambda: jit_warmup.wait([], timeout=-1.0), "timeout"),
    (lambda: jit_warmup.warm_up_in_processes(timeout=-1.0), "timeout"),
])
def test_bad_arguments_are_refused_by_name(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()



@needs_numba
@pytest.mark.filterwarnings("ignore:'everygraph.sequence.jit_warmup' found in sys.modules:RuntimeWarning")
def test_the_script_starts_subprocesses_of_an_importable_module(monkeypatch):
    """``python -m everygraph.sequence.jit_warmup`` runs as ``__main__``; the processes it starts
    must import the module by its real name."""
    monkeypatch.delenv(fused_cpu.DISABLE_ENV, raising=False)
    started = []

    class Finished:
        def __init__(self, command, **kwargs):
            started.append(command)

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Finished)
    monkeypatch.setattr(sys, "argv", ["jit_warmup", "--processes", "2"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("everygraph.sequence.jit_warmup", run_name="__main__")
    assert exit_info.value.code == 0
    assert len(started) == 2
    for command in started:
        module = command[command.index("-m") + 1]
        assert module == "everygraph.sequence.jit_warmup" and importlib.util.find_spec(module) is not None
