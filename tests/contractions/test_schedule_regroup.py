"""Regrouped chains (everygraph/contractions/regroup.py): a chain of one-index contractions
through ``[B, n, n, n]`` tensors run as one product per open vertex and one matrix product
summing both indices at once. Values are checked against brute-force homomorphism counts
(plain loops over all vertex maps), never against saved outputs."""

import itertools

import numpy as np
import pytest
import torch

import everygraph.contractions.schedule as schedule_module
from everygraph.contractions import Pattern, compile_plan, evaluate
from everygraph.contractions.plan import Step
from everygraph.contractions.regroup import regroup_wide_products
from homomorphism_reference import brute_force, random_batch  # tests/contractions/homomorphism_reference.py

# each plan sums two indices in two steps through a [B, n, n, n] tensor; the fourth has a
# product read by two chains (recomputed in each, then dropped)
STRINGS = [
    "ac,ad,bc,bd,cd->ab",  # K4 minus the edge ab: both sides share their product
    "ac,ad,bc,bd,cd->ba",
    "ab,ac,ad,bc,bd,cd->ab",
    "ac,bd,be,cd,ce,de->ab",
    "ac,ad,bc,be,ce,de->ab",
    "ab,bc,cd->ad",  # no [B, n, n, n] tensor: left as it is
]


def _assembled(plan) -> set[int]:
    return {t for a in plan.assemblies for t in (*a.scalars, *(t for t, _ in a.rooted))}


def _wide(steps) -> list[Step]:
    """Steps summing two indices at once into a ``[B, n, n]`` result."""
    wide = []
    for s in steps:
        lhs, lo = s.eq.split("->")
        if not s.is_view and len(lo) == 3 and len(set(lhs.replace(",", "")) - set(lo)) == 2:
            wide.append(s)
    return wide


@pytest.mark.parametrize("directed", [False, True])
def test_regrouped_plans_have_wide_products(directed):
    for string in STRINGS:
        plan = compile_plan([Pattern.from_string(string, directed=directed)])
        steps = regroup_wide_products(list(plan.steps), _assembled(plan))
        if string == "ab,bc,cd->ad":
            assert steps == list(plan.steps)
            continue
        assert not _wide(plan.steps) and len(_wide(steps)) == 1, string
        assert len(steps) < len(plan.steps) or string == "ac,ad,bc,be,ce,de->ab"


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 40])  # one graph per chunk; one chunk
@pytest.mark.parametrize("directed", [False, True])
def test_regrouped_schedule_equals_brute_force(monkeypatch, chunk_bytes, directed, symmetric):
    monkeypatch.setattr(schedule_module, "CHUNK_BYTES", chunk_bytes)
    patterns = [Pattern.from_string(s, directed=directed) for s in STRINGS]
    plan = compile_plan(patterns)
    x = random_batch(3, 5, seed=3, directed=directed)
    with torch.no_grad():
        out = evaluate(plan, x, symmetric=symmetric)
    (schedule,) = plan._schedules.values()
    chunked = [op for op in schedule.ops if op[0] == "chunked"]
    assert {len(op[2]) for op in chunked} == ({x.shape[0]} if chunk_bytes == 1 else {1})
    # the wide products run inside the chunked runs, whose buffers hold one chunk
    assert not any(op[0] == "bmm" and op[1].size[2] == 25 for op in schedule.ops)
    assert all(op[3] for op in chunked)
    for j, p in enumerate(patterns):
        got = out[..., plan.indices(p.output).index(j)]
        for g in range(x.shape[0]):
            torch.testing.assert_close(got[g], brute_force(p, x[g]), msg=lambda m: f"{p}, graph {g}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wide_products_run_through_numpy_on_cpu(monkeypatch, dtype):
    """On CPU the wide products are numpy matmuls (OpenBLAS); without numpy (every other
    device) they are torch.bmm, equal to it."""
    n = 9
    patterns = [Pattern.from_string(s) for s in STRINGS[:3]]
    x = random_batch(2, n, seed=5, directed=False, dtype=dtype)
    monkeypatch.setattr(schedule_module, "NUMPY_WIDE_INNER", n * n)
    results = {}
    for numpy_side in (True, False):
        if not numpy_side:
            monkeypatch.setattr(schedule_module, "NUMPY_WIDE_INNER", n * n + 1)
            monkeypatch.setattr(schedule_module, "NUMPY_MATMUL_MAX", 0)  # float64's small products
        plan = compile_plan(patterns)
        with torch.no_grad():
            results[numpy_side] = evaluate(plan, x)
        entry = next(iter(plan._workspace._entries.values()))
        (schedule,) = plan._schedules.values()
        kernels = [f for op, f in _kernels(schedule, entry["bound"]) if op[0] == "bmm" and op[1].size[2] == n * n]
        assert kernels and all((f.func is np.matmul) == numpy_side for f in kernels)
    torch.testing.assert_close(results[True], results[False])
    expected = brute_force(patterns[0], x[1].double())
    torch.testing.assert_close(results[True][1, ..., 0].double(), expected)


def _kernels(schedule, bound):
    """(op, bound kernel) pairs, the kernels of chunked runs one by one."""
    for op, f in zip(schedule.ops, bound):
        if op[0] == "chunked":
            yield from zip(itertools.cycle(op[1]), f.args[0])
        else:
            yield op, f


def test_wide_products_on_meta_keep_torch():
    assert not schedule_module._numpy_matmul_pays(*(torch.empty(2, 4, 1024, device="meta"), torch.empty(2, 1024, 4, device="meta"), torch.empty(2, 4, 4, device="meta")))
    cpu = (torch.empty(2, 4, 1024), torch.empty(2, 1024, 4), torch.empty(2, 4, 4))
    assert schedule_module._numpy_matmul_pays(*cpu)


def _chain(out_protected: bool = False, other_reader: bool = False) -> tuple[list[Step], set[int]]:
    """The K4-minus-edge chain on source 0 (a view of it as tensor 1)."""
    steps = [
        Step(1, "zab->zab", (0,), 2, True),
        Step(2, "zbd,zcd->zbcd", (1, 1), 3, False),
        Step(3, "zbc,zbcd->zbcd", (1, 2), 3, False),
        Step(4, "zad,zbcd->zbca", (1, 3), 3, False),
        Step(5, "zac,zbca->zab", (1, 4), 2, False),
    ]
    if other_reader:
        steps.append(Step(6, "zbcd->zb", (3,), 1, False))
    return steps, {5} | ({4} if out_protected else set())


def test_regroup_keeps_what_others_read():
    steps, protected = _chain()
    new = regroup_wide_products(steps, protected)
    assert [s.out for s in new if not s.is_view][-1] == 5 and len(_wide(new)) == 1
    assert {2, 3, 4}.isdisjoint(s.out for s in new)
    # an intermediate the assembly reads, or a contraction another step reads, stays
    steps, protected = _chain(out_protected=True)
    assert regroup_wide_products(steps, protected) == steps
    steps, protected = _chain(other_reader=True)
    new = regroup_wide_products(steps, protected | {6})
    assert any(s.out == 3 for s in new)


def test_regroup_refuses_a_factor_holding_both_open_vertices():
    steps = [
        Step(2, "zab,zbc->zabc", (0, 0), 3, False),
        Step(3, "zabc,zcd->zabd", (2, 0), 3, False),
        Step(4, "zabd,zad->zab", (3, 0), 2, False),
    ]
    assert regroup_wide_products(steps, {4}) == steps
