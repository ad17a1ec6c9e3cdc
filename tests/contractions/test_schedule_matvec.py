"""Matrix-vector steps of the scheduled plan (one summed letter, free letters on one side):
``numpy.matmul`` (one BLAS gemv per matrix) for CPU tensors, the broadcast product and sum on
every other device. Both kernels are checked against brute-force homomorphism counts (plain
loops over all vertex maps), in float64, inside and outside graph-chunked runs.
"""

import functools
import itertools

import numpy as np
import pytest
import torch

import everygraph.contractions.schedule as schedule_module
from everygraph.contractions import Pattern, Workspace, compile_plan, evaluate
from homomorphism_reference import brute_force, random_batch  # tests/contractions/homomorphism_reference.py

PATTERNS = [
    "ab,ac,ad,bc,bd,cd->ab",  # K4 edge pattern: a matrix-vector step on a 3-axis tensor (chunked run)
    "ab,ac,ad,bc,bd,cd->a",
    "ab,bc,ca,cd->a",  # node outputs summed from an edge intermediate
    "ab,bc,cd,de->a",
    "ab,bc,cd,da->ab",
    "ab,bc,cd->ad",
    "ab,bc->a",
    "ac,ad,bc,be,ce,de->ab",  # its 3-axis product is stored for the matrix-vector step that reads it
]


@pytest.fixture(autouse=True)
def one_index_chains(monkeypatch):
    # the chains these patterns exercise (matrix-vector steps on [B, n, n, n] tensors) are
    # otherwise regrouped into wide products (tests/contractions/test_schedule_regroup.py)
    monkeypatch.setattr(schedule_module, "regroup_wide_products", lambda steps, protected: steps)


def _matvec_kernels(plan, ws):
    (schedule,) = plan._schedules.values()
    entry = next(iter(ws._entries.values()))
    kernels = []
    for op, bound in zip(schedule.ops, entry["bound"]):
        if op[0] == "matvec":
            kernels.append(bound)
        elif op[0] == "chunked":
            kernels.extend(k for inner, k in zip(itertools.cycle(op[1]), bound.args[0]) if inner[0] == "matvec")
    return kernels


@pytest.mark.parametrize("numpy_kernel", [True, False])
@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
def test_matvec_steps_equal_brute_force(monkeypatch, numpy_kernel, directed, layout):
    monkeypatch.setattr(schedule_module, "CHUNK_BYTES", 1)  # one graph per chunk
    if not numpy_kernel:
        monkeypatch.setattr(schedule_module, "_numpy_matvec_pays", lambda *tensors: False)
    patterns = [Pattern.from_string(s, directed=directed) for s in PATTERNS]
    plan = compile_plan(patterns)
    x = random_batch(2, 5, seed=2, directed=directed)
    ws = Workspace()
    with torch.no_grad():
        out = evaluate(plan, x, layout=layout, workspace=ws)
        kernels = _matvec_kernels(plan, ws)
        assert kernels, "the plan should have matrix-vector steps"
        expected_func = np.matmul if numpy_kernel else schedule_module._mul_sum
        assert all(isinstance(k, functools.partial) and k.func is expected_func for k in kernels)
        (schedule,) = plan._schedules.values()
        assert any(op[0] == "chunked" and any(inner[0] == "matvec" for inner in op[1]) for op in schedule.ops)
        for repeat in range(2):  # the second call reuses output, workspace and bound kernels
            for j, p in enumerate(patterns):
                k = plan.indices(p.output).index(j)
                got = out[p.output][..., k] if layout == "channel_last" else out[p.output][:, k]
                for g in range(x.shape[0]):
                    torch.testing.assert_close(got[g], brute_force(p, x[g]), msg=lambda m: f"{p}, graph {g}: {m}")
            for t in out.values():
                t.fill_(float("nan"))
            evaluate(plan, x, layout=layout, workspace=ws, out=out)


def test_matvec_kernel_is_numpy_only_for_cpu_float_tensors():
    cpu = torch.zeros(2, 3, 3, dtype=torch.float64)
    assert schedule_module._numpy_matvec_pays(cpu, cpu[..., :1], cpu[..., :1])
    assert schedule_module._numpy_matvec_pays(cpu.float(), cpu[..., :1].float(), cpu[..., :1].float())
    meta = torch.zeros(2, 3, 3, device="meta")
    assert not schedule_module._numpy_matvec_pays(meta, meta[..., :1], meta[..., :1])
    half = cpu.to(torch.bfloat16)
    assert not schedule_module._numpy_matvec_pays(half, half[..., :1], half[..., :1])
    # the meta device (the device-generic path a GPU takes) binds the product and the sum
    plan = compile_plan(PATTERNS)
    ws = Workspace()
    evaluate(plan, torch.zeros(2, 4, 4, device="meta", dtype=torch.float64), workspace=ws, memory_limit=float("inf"))
    kernels = _matvec_kernels(plan, ws)
    assert kernels and all(k.func is schedule_module._mul_sum for k in kernels)


def test_storage_order_lets_matrix_vector_steps_run_as_one():
    # the intermediate this step reads is written by a broadcast product free to choose its
    # storage order; an order without a unit stride in the step's matrix would leave a
    # product and a sum over a [B, n, n, n] tensor
    plan = compile_plan(["ac,ad,bc,be,ce,de->ab"])
    evaluate(plan, random_batch(2, 5, seed=0, directed=False), workspace=Workspace())
    (schedule,) = plan._schedules.values()
    inner = [op[0] for chunked in schedule.ops if chunked[0] == "chunked" for op in chunked[1]]
    assert "matvec" in inner and "sum" not in inner
