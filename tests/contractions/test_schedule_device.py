"""Device selection of the scheduled execution: every tensor a call creates follows the input's
device and dtype; the CPU-only fast copy is chosen only for CPU tensors; the memory guard asks
the input's device. The ``meta`` device runs the device-generic path a GPU takes; the CUDA tests
run where a GPU exists (skipped otherwise) and compare with the CPU result.
"""

import functools
import importlib

import numpy as np
import pytest
import torch

from everygraph.contractions import Pattern, Workspace, compile_plan, evaluate
from everygraph.contractions.evaluate import available_memory
from everygraph.contractions.schedule import copy_kernel

# the package re-exports functions named like these modules: import the modules themselves
evaluate_module = importlib.import_module("everygraph.contractions.evaluate")
schedule_module = importlib.import_module("everygraph.contractions.schedule")

PATTERNS = [
    "ab,ac,ad,bc,bd,cd->ab",  # a 3-axis intermediate: a chunked run
    "ab,ac,ad,bc,bd,cd->",
    "ab,bc,cd->ad",
    "ab,bc,cd->da",
    "ab,bc,ca,cd->ab",
    "ab,bc,ca,cd->ba",
    "ab,bc->ac",
    "ab->a",
    "a->",
]


def _batch(B, n, seed=0, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    upper = (torch.rand(B, n, n, generator=gen) < 0.5).to(dtype).triu(1)
    return (upper + upper.transpose(1, 2)).to(device)


def test_copy_kernel_uses_numpy_only_for_cpu_tensors():
    src = torch.arange(24.0).view(2, 3, 4)
    dst = torch.empty(2, 4, 3)
    kernel = copy_kernel(dst, src.transpose(1, 2))
    assert isinstance(kernel, functools.partial) and kernel.func is np.copyto
    kernel()
    torch.testing.assert_close(dst, src.transpose(1, 2))
    meta_dst = torch.empty(2, 4, 3, device="meta")
    kernel = copy_kernel(meta_dst, torch.empty(2, 3, 4, device="meta").transpose(1, 2))
    assert kernel.func.__name__ == "copy_" and kernel.func.__self__ is meta_dst
    kernel()
    # a dtype numpy would not convert like torch does: torch's copy
    half = torch.empty(2, 4, 3, dtype=torch.bfloat16)
    kernel = copy_kernel(half, src.transpose(1, 2))
    assert kernel.func.__name__ == "copy_"
    kernel()
    torch.testing.assert_close(half.float(), src.transpose(1, 2))


def test_memory_guard_asks_the_input_device(monkeypatch):
    asked = []

    def fake_mem_get_info(device):
        asked.append(torch.device(device))
        return (12345, 99999)

    monkeypatch.setattr(torch.cuda, "mem_get_info", fake_mem_get_info)
    assert available_memory("cuda:0") == 12345
    assert asked == [torch.device("cuda:0")]
    assert available_memory("cpu") > 0 and len(asked) == 1
    # evaluate passes the input's device to the guard
    seen = []
    monkeypatch.setattr(evaluate_module, "available_memory", lambda device: seen.append(torch.device(device)) or 2**40)
    plan = compile_plan(PATTERNS)
    evaluate(plan, torch.zeros(1, 4, 4, device="meta"))
    assert seen == [torch.device("meta")]


@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
def test_every_created_tensor_follows_the_input_device(monkeypatch, layout):
    monkeypatch.setattr(schedule_module, "CHUNK_BYTES", 1)  # chunked runs, shrunk buffers
    plan = compile_plan(PATTERNS)
    ws = Workspace()
    x = torch.zeros(3, 5, 5, device="meta", dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)  # a CPU mask is moved to the input's device
    out = evaluate(plan, x, mask, layout=layout, workspace=ws, memory_limit=float("inf"))
    (schedule,) = plan._schedules.values()
    assert any(op[0] == "chunked" for op in schedule.ops)
    evaluate(plan, x, mask, layout=layout, workspace=ws, out=out, memory_limit=float("inf"))
    entry = next(iter(ws._entries.values()))
    created = entry["buffers"] + entry["sources"] + [entry["pair"], entry["masked"]] + list(out.values())
    for t in created:
        assert t.device.type == "meta" and t.dtype == torch.float64
    matrix = evaluate(plan, x, as_matrix=True, memory_limit=float("inf"))
    assert matrix.device.type == "meta" and matrix.dtype == torch.float64


def test_out_on_another_device_is_refused():
    plan = compile_plan(["ab,bc->ac"])
    x = _batch(2, 4)
    with pytest.raises(ValueError, match="on meta|on cpu"):
        evaluate(plan, x, out=torch.empty(2, 4, 4, 1, dtype=x.dtype, device="meta"))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_end_to_end_equals_cpu(monkeypatch, layout, symmetric):
    monkeypatch.setattr(schedule_module, "CHUNK_BYTES", 1)
    patterns = [Pattern.from_string(s) for s in PATTERNS]
    plan = compile_plan(patterns)
    x = _batch(3, 6, seed=1)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    want = evaluate(plan, x, mask, layout=layout, symmetric=symmetric)
    ws = Workspace()
    got = evaluate(plan, x.cuda(), mask.cuda(), layout=layout, symmetric=symmetric, workspace=ws)
    out = {o: torch.full_like(v, float("nan")) for o, v in got.items()}
    evaluate(plan, x.cuda(), mask.cuda(), layout=layout, symmetric=symmetric, workspace=ws, out=out)
    entry = next(iter(ws._entries.values()))
    assert all(t.is_cuda for t in entry["buffers"] + entry["sources"])
    for o in plan.outputs:
        assert got[o].is_cuda and out[o].is_cuda
        torch.testing.assert_close(got[o].cpu(), want[o])
        torch.testing.assert_close(out[o].cpu(), want[o])


@needs_cuda
def test_cuda_float32_and_as_matrix():
    plan = compile_plan(PATTERNS)
    x = _batch(2, 7, seed=2, dtype=torch.float32)
    want = evaluate(plan, x, as_matrix=True)
    got = evaluate(plan, x.cuda(), as_matrix=True)
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), want)


def test_matrix_products_use_numpy_only_for_small_cpu_batches():
    from everygraph.contractions.schedule import NUMPY_MATMUL_MAX, Ref, _bind_op

    def bound(x, y, out):
        tensors = {"x": x, "y": y, "out": out}

        def view(r):
            t = tensors[r.kind]
            return t.as_strided(r.size, r.stride, t.storage_offset() + r.offset)

        refs = [Ref(k, 0, tuple(t.shape), t.stride()) for k, t in tensors.items()]
        return _bind_op(("bmm", *refs), view)

    gen = torch.Generator().manual_seed(0)
    for dtype, func in ((torch.float64, np.matmul), (torch.float32, torch.bmm)):  # numpy pays in float64
        x = torch.randn(3, 8, 8, generator=gen, dtype=dtype)
        y = torch.randn(3, 8, 8, generator=gen, dtype=dtype).transpose(1, 2)  # column-major operand
        out = torch.empty(3, 8, 8, dtype=dtype)
        kernel = bound(x, y, out)
        assert kernel.func is func
        kernel()
        torch.testing.assert_close(out, torch.bmm(x, y))
    wide = torch.randn(2, 8, NUMPY_MATMUL_MAX // 64 + 1, generator=gen, dtype=torch.float64)
    kernel = bound(torch.randn(2, 8, 8, generator=gen, dtype=torch.float64), wide, torch.empty(2, 8, wide.shape[2], dtype=torch.float64))
    assert kernel.func is torch.bmm  # above the size where numpy pays
    meta = torch.empty(3, 8, 8, device="meta", dtype=torch.float64)
    assert bound(meta, meta, torch.empty(3, 8, 8, device="meta", dtype=torch.float64)).func is torch.bmm
