"""compile: path cache, sharing across patterns, FLOP and memory estimates."""

import importlib

import opt_einsum
import pytest
import torch

from everygraph.contractions import Pattern, basis, compile, evaluate

plan_module = importlib.import_module("everygraph.contractions.plan")


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVERYGRAPH_CACHE_DIR", str(tmp_path))


def test_paths_found_once_per_component(monkeypatch):
    plan_module.clear_path_cache()
    calls = []
    real = opt_einsum.contract_path

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module.opt_einsum, "contract_path", counting)
    patterns = basis(4, "node")
    compile(patterns)
    first = len(calls)
    assert 0 < first <= len(patterns)
    compile(patterns + patterns[::-1])  # same components: served from the cache
    assert len(calls) == first
    compile(patterns, n_hint=64)  # another size class: searched again
    assert len(calls) == 2 * first


def test_sharing_components_and_intermediates():
    # "ab,bc->a" (row sums of A^2) appears as a component of many patterns
    patterns = [Pattern.from_string(s) for s in ["ab,bc->a", "ab,bc,de->a", "ab,bc,de,ef->a", "ab,bc,dd->a"]]
    plan = compile(patterns)
    assert plan.stats["components"] == 4  # ab,bc->a; de->; de,ef->; dd-> (a loop)
    # the matrix product A @ A is one step shared by the triangle and the 4-cycle
    plan2 = compile(["ab,bc,ca->", "ab,bc,cd,da->"])
    leaf = [s.out for s in plan2.steps if s.is_view][0]
    squares = [s for s in plan2.steps if s.inputs == (leaf, leaf) and s.num_axes == 2]
    assert len(squares) == 1
    separate = len(compile(["ab,bc,ca->"]).steps) + len(compile(["ab,bc,cd,da->"]).steps)
    assert len(plan2.steps) == separate - 2  # the leaf A and A @ A are not repeated
    x = torch.rand(2, 5, 5, dtype=torch.float64)
    x = x + x.transpose(1, 2)
    out = evaluate(plan2, x)
    a2 = x @ x
    torch.testing.assert_close(out[:, 0], torch.einsum("bii->b", a2 @ x))
    torch.testing.assert_close(out[:, 1], torch.einsum("bii->b", a2 @ a2))


def test_flop_and_memory_estimates():
    tri = compile(["ab,bc,ca->"])
    assert tri.flops(20) / tri.flops(10) == pytest.approx(8, rel=0.05)
    assert tri.flops(10, batch=4) == 4 * tri.flops(10)
    plan = compile(basis(3, "edge"))
    assert plan.peak_memory(16, 8) < plan.peak_memory(32, 8) < plan.peak_memory(32, 16)
    # the output alone: k edge channels of [B, n, n] float32
    assert plan.peak_memory(32, 8) >= plan.num_patterns * 8 * 32 * 32 * 4
    assert plan.flops(32) < plan.flops_per_pattern_optimal(32) < plan.flops_left_to_right(32)
    assert "ContractionPlan" in repr(plan)


def test_compile_bad_input():
    with pytest.raises(TypeError):
        compile([42])
    with pytest.raises(ValueError, match="n_hint"):
        compile(["ab->"], n_hint=0)
    with pytest.raises(ValueError, match="position"):
        compile(["ab,,->"])


def test_flops_and_peak_memory_worked_out_by_hand():
    n, batch = 5, 3
    unit = batch * 4  # float32 bytes per node slot of every graph of the batch
    # A itself, edge output: no arithmetic step (a view of the input), the assembly copies n^2.
    # Memory: masked input + its symmetrised copy (2 n^2), mask (n), output (n^2), and the
    # assembly's temporary (n^2).
    plan = compile(["ab->ab"])
    assert plan.flops(n) == n * n
    assert plan.peak_memory(n, batch) == unit * (4 * n * n + n)
    # A @ A, edge output: one einsum zac,zbc->zab, n^3 multiply-adds = 2 n^3 FLOPs, plus the
    # n^2 assembly copy. Memory as above plus the n^2 product, live until the end.
    plan = compile(["ab,bc->ac"])
    assert plan.flops(n) == 2 * n**3 + n * n
    assert plan.peak_memory(n, batch) == unit * (5 * n * n + n)
    # triangles, invariant: A @ A (2 n^3), then <A, A^2> summed to a scalar (2 n^2), plus one
    # scalar assembly. Memory peaks in the last einsum: inputs and mask (2 n^2 + n), the
    # scalar output (1), A^2 still live (n^2), the new scalar (1) and a copy of the operand
    # A^2 that einsum may make (n^2).
    plan = compile(["ab,bc,ca->"])
    assert plan.flops(n) == 2 * n**3 + 2 * n * n + 1
    assert plan.peak_memory(n, batch) == unit * (2 * n * n + n + 1 + n * n + 1 + n * n)
    assert plan.peak_memory(n, batch, element_size=8) == 2 * plan.peak_memory(n, batch)
    assert plan.flops(n, batch=batch) == batch * plan.flops(n)


@pytest.mark.parametrize("pattern", ["ab,bc->ac", "ab,bc,ca->", "ab,bc,ca->a", "ab,bc,cd,da->", "ab,ac,ad,bc,bd,cd->"])
def test_flops_of_one_component_is_opt_einsums_cost(pattern):
    """For one connected pattern whose edges are plain views of A, the plan's FLOPs are
    opt_einsum's optimal cost for the pattern's own einsum, plus the n^|output| assembly."""
    n = 32
    plan = compile([pattern], n_hint=n)
    operands = pattern.split("->")[0].split(",")
    cost = opt_einsum.contract_path(pattern, *[(n, n)] * len(operands), shapes=True, optimize="dp")[1].opt_cost
    assert plan.flops(n) == int(cost) + n ** len(pattern.split("->")[1])
