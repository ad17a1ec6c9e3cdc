"""Elementwise products of the scheduled plan: ``numpy.multiply`` for CPU tensors without a
broadcast operand, ``torch.mul`` otherwise (and on every other device). Both kernels are
checked against brute-force homomorphism counts (plain loops over all vertex maps)."""

import itertools

import numpy as np
import pytest
import torch

import everygraph.contractions.schedule as schedule_module
from everygraph.contractions import Pattern, Workspace, compile_plan, evaluate

PATTERNS = ["ab,bc,ca,cd->ab", "ab,bc,ca,cd->ba", "ab,bc,ca->ab", "ab,ac,ad,bc,bd,cd->ab", "ab,bc,cd->ad", "ab,bc->a"]


def _brute_force(p: Pattern, x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    a = x.tolist()
    if not p.directed:
        a = [[0.5 * (a[i][j] + a[j][i]) for j in range(n)] for i in range(n)]
    shape = {"invariant": (), "node": (n,), "edge": (n, n)}[p.output]
    out = torch.zeros(shape, dtype=torch.float64)
    for assignment in itertools.product(range(n), repeat=p.num_vertices):
        value = 1.0
        for u, v in p.edges:
            value *= a[assignment[u]][assignment[v]]
        out[tuple(assignment[s] for s in p.special)] += value
    return out


def _mul_kernels(plan, ws):
    (schedule,) = plan._schedules.values()
    entry = next(iter(ws._entries.values()))
    for op, bound in zip(schedule.ops, entry["bound"]):
        if op[0] == "chunked":
            yield from (k for inner, k in zip(itertools.cycle(op[1]), bound.args[0]) if inner[0] == "mul")
        elif op[0] == "mul":
            yield bound


def test_numpy_multiply_only_without_broadcast_on_cpu():
    a = torch.zeros(2, 3, 3)
    assert schedule_module._numpy_mul_pays(a, a.transpose(1, 2), a)
    assert schedule_module._numpy_mul_pays(a.double(), a.double(), a.double())
    assert not schedule_module._numpy_mul_pays(a, a[:, :1].expand(2, 3, 3), a)  # broadcast
    assert not schedule_module._numpy_mul_pays(a.bfloat16(), a.bfloat16(), a.bfloat16())
    meta = torch.zeros(2, 3, 3, device="meta")
    assert not schedule_module._numpy_mul_pays(meta, meta, meta)


@pytest.mark.parametrize("numpy_kernel", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_equal_brute_force(monkeypatch, numpy_kernel, dtype):
    if not numpy_kernel:
        monkeypatch.setattr(schedule_module, "_numpy_mul_pays", lambda *tensors: False)
    patterns = [Pattern.from_string(s) for s in PATTERNS]
    plan = compile_plan(patterns)
    gen = torch.Generator().manual_seed(7)
    upper = (torch.rand(2, 5, 5, generator=gen) < 0.6).double().triu(1)
    x = upper + upper.transpose(1, 2)
    ws = Workspace()
    with torch.no_grad():
        out = evaluate(plan, x.to(dtype), workspace=ws)
    funcs = {k.func for k in _mul_kernels(plan, ws)}
    assert funcs == ({np.multiply, torch.mul} if numpy_kernel else {torch.mul})
    for j, p in enumerate(patterns):
        got = out[p.output][..., plan.indices(p.output).index(j)]
        for g in range(2):
            torch.testing.assert_close(got[g].double(), _brute_force(p, x[g]), msg=lambda m: f"{p}, graph {g}: {m}")
