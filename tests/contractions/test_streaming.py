"""Transposed copies into output channels with streaming stores (``contractions/streaming.py``):
the kernel equals the transpose wherever it applies, declines every case it does not cover
(the numpy copy runs there), and the twins of a plan's patterns are equal to brute-force
homomorphism counts with the kernel on and off."""

import pytest
import torch

from everygraph.contractions import Pattern, compile_plan, evaluate
from everygraph.contractions import schedule as schedule_module
from everygraph.contractions import streaming
from homomorphism_reference import brute_force  # tests/contractions/homomorphism_reference.py

needs_streaming = pytest.mark.skipif(not streaming.streaming_enabled(),
                                     reason="streaming stores need numba (everygraph[cpu]) on an x86-64 CPU")


def _channels(count: int, B: int, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """``count`` destination channels, each the transpose of row-contiguous ``[B, cols, rows]``
    memory, as the schedule's transposed output slots are."""
    return torch.full((count, B, cols, rows), float("nan"), dtype=dtype).transpose(2, 3)


@needs_streaming
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 16, 8), (2, 32, 32), (1, 48, 24), (4, 16, 40)])
def test_kernel_equals_the_transpose(dtype, shape):
    B, rows, cols = shape
    gen = torch.Generator().manual_seed(sum(shape))
    # the source a strided view too: rows longer than the copied columns, graphs further apart
    wide = torch.randn(B + 1, rows + 3, cols + 8, generator=gen, dtype=dtype)
    src = wide[1:, 2:-1, 8:]
    before = wide.clone()
    dst = _channels(3, B, rows, cols, dtype)
    kernel = streaming.transposed_copy_kernel(dst[1], src)
    assert kernel is not None
    kernel()
    for b in range(B):  # a loop over graphs and entries as the reference
        for i in range(rows):
            for j in range(cols):
                assert dst[1, b, i, j] == src[b, i, j]
    assert torch.isnan(dst[0]).all() and torch.isnan(dst[2]).all()  # the neighbours untouched
    assert torch.equal(wide, before)  # the source unchanged
    # the same copy the other way round: a transposed source into row-contiguous memory
    back = torch.full((B, cols, rows), float("nan"), dtype=dtype)
    kernel = streaming.transposed_copy_kernel(back, src.transpose(1, 2))
    assert kernel is not None
    kernel()
    assert torch.equal(back, src.transpose(1, 2))


@needs_streaming
def test_declines_what_it_does_not_cover():
    f32 = torch.float32
    src = torch.randn(2, 16, 16)
    dst = _channels(1, 2, 16, 16, f32)[0]
    assert streaming.transposed_copy_kernel(dst, src) is not None
    odd = _channels(1, 2, 16, 12, f32)[0]  # 12 columns: not a multiple of 8 lanes
    declined = {
        "rows not two vectors": (_channels(1, 2, 8, 16, f32)[0], torch.randn(2, 8, 16)),
        "columns not one vector": (odd, torch.randn(2, 16, 12)),
        "float64 rows not two vectors": (_channels(1, 2, 4, 8, torch.float64)[0], torch.randn(2, 4, 8, dtype=torch.float64)),
        "neither transposed": (torch.empty(2, 16, 16), src),
        "both transposed": (dst, src.transpose(1, 2)),
        "start not a whole line": (torch.empty(2 * 16 * 16 + 4)[4:].view(2, 16, 16).transpose(1, 2), src),
        "row stride not whole lines": (torch.empty(2, 16, 20)[..., :16].transpose(1, 2), src),
        "dtypes differ": (dst, src.double()),
        "int dtype": (_channels(1, 2, 16, 16, torch.float32)[0].int(), src.int()),
        "not 3-D": (torch.empty(16, 16).t(), torch.randn(16, 16)),
        "grad": (dst, src.clone().requires_grad_()),
    }
    for name, (d, s) in declined.items():
        assert streaming.transposed_copy_kernel(d, s) is None, name
    storage = torch.randn(2, 16, 16)
    assert streaming.transposed_copy_kernel(storage.transpose(1, 2), storage) is None  # overlapping


@pytest.mark.parametrize("why", ["jit switch", "no numba", "not x86-64"])
def test_off_without_the_jit(monkeypatch, why):
    if why == "jit switch":
        monkeypatch.setenv("EVERYGRAPH_DISABLE_JIT", "1")
    elif why == "no numba":
        monkeypatch.setattr(streaming, "_numba_available", lambda: False)
    else:
        monkeypatch.setattr(streaming.platform, "machine", lambda: "aarch64")
    assert not streaming.streaming_enabled()
    src = torch.randn(2, 16, 16)
    assert streaming.transposed_copy_kernel(_channels(1, 2, 16, 16, torch.float32)[0], src) is None
    assert streaming.product_kernel(torch.empty(2, 16, 16), src, src) is None


# twins of elementwise results (a path and a triangle with open ends) and of a matrix product
STRINGS = ["ab,bc->ac", "ab,bc,ca->ab", "ab,bc,cd,db->ac", "ab,ac,bc,cd->ad"]


def _twin_patterns() -> list[Pattern]:
    patterns = []
    for s in STRINGS:
        body, out = s.split("->")
        patterns += [Pattern.from_string(s, directed=True), Pattern.from_string(f"{body}->{out[::-1]}", directed=True)]
    return patterns


@pytest.mark.parametrize("streamed", [True, False])
@pytest.mark.parametrize("dtype,n", [(torch.float32, 16), (torch.float64, 8)])
def test_twins_equal_brute_force_streamed_or_not(monkeypatch, streamed, dtype, n):
    if streamed and not streaming.streaming_enabled():
        pytest.skip("streaming stores need numba (everygraph[cpu]) on an x86-64 CPU")
    if not streamed:
        monkeypatch.setenv("EVERYGRAPH_DISABLE_JIT", "1")
    patterns = _twin_patterns()
    plan = compile_plan(patterns)
    gen = torch.Generator().manual_seed(n)
    x = (torch.rand(3, n, n, generator=gen) < 0.5).double() * torch.rand(3, n, n, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = evaluate(plan, x.to(dtype))
    (schedule,) = plan._schedules.values()
    (entry,) = plan._workspace._entries.values()
    twins = [k for op, k in zip(schedule.ops, entry["bound"]) if op[0] == "copy" and op[1].kind == op[2].kind == "slot"]
    assert len(twins) >= 3
    by_copy = [getattr(k, "func", None) is streaming._compiled(dtype) for k in twins]
    by_product = [k is schedule_module._written_by_the_product_before for k in twins]
    assert all(c or p for c, p in zip(by_copy, by_product)) if streamed else not any(by_copy + by_product)
    # channels that later steps read are written with ordinary stores (a product here)
    reads = schedule._slot_reads
    for op, k in zip(schedule.ops, entry["bound"]):
        if op[0] == "mul" and op[3].kind == "slot" and reads[op[3].index] > 1:
            assert k.func is torch.mul
    assert any(op[0] == "mul" and op[3].kind == "slot" and reads[op[3].index] > 1 for op in schedule.ops)
    for j, p in enumerate(patterns):
        for g in range(x.shape[0]):
            torch.testing.assert_close(out[g, ..., j].double(), brute_force(p, x[g]), msg=lambda m: f"{p}, graph {g}: {m}",
                                       rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-5)


def test_copies_into_the_workspace_are_never_streamed(monkeypatch):
    """A buffer is read again soon: only output channels (slots) take streaming stores."""
    asked = []
    monkeypatch.setattr(schedule_module, "transposed_copy_kernel", lambda d, s: asked.append(d) or None)
    plan = compile_plan(_twin_patterns())
    with torch.no_grad():
        out = evaluate(plan, torch.rand(2, 16, 16))
    (schedule,) = plan._schedules.values()
    assert asked
    assert all(d.untyped_storage().data_ptr() == out.untyped_storage().data_ptr() for d in asked)


def _operand(kind: str, B: int, rows: int, cols: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """An elementwise operand as the schedule passes them: a full matrix batch (in a wider
    buffer), a row broadcast ``v[b, j]`` (zero row stride) or a column broadcast ``v[b, i]``
    (zero column stride)."""
    if kind == "full":
        return torch.randn(B, rows, cols + 8, generator=gen, dtype=dtype)[..., 8:]
    if kind == "row":
        return torch.randn(B, 1, cols, generator=gen, dtype=dtype).expand(B, rows, cols)
    return torch.randn(B, rows, 1, generator=gen, dtype=dtype).expand(B, rows, cols)


@needs_streaming
@pytest.mark.parametrize("dtype,shape", [(torch.float32, (2, 16, 32)), (torch.float64, (3, 8, 16))])
@pytest.mark.parametrize("kinds", [("full", "full"), ("row", "full"), ("full", "column"), ("column", "row")])
@pytest.mark.parametrize("with_twin", [False, True])
def test_product_equals_the_loop(dtype, shape, kinds, with_twin):
    B, rows, cols = shape
    gen = torch.Generator().manual_seed(rows + cols)
    a, b = (_operand(k, B, rows, cols, dtype, gen) for k in kinds)
    before = (a.clone(), b.clone())
    channels = torch.full((3, B, rows, cols), float("nan"), dtype=dtype)
    twins = _channels(2, B, rows, cols, dtype)  # transposed storage order
    kernel = streaming.product_kernel(channels[1], a, b, twin=twins[0] if with_twin else None)
    assert kernel is not None
    kernel()
    for g in range(B):
        for i in range(rows):
            for j in range(cols):
                assert channels[1, g, i, j] == a[g, i, j] * b[g, i, j]
                if with_twin:
                    assert twins[0, g, i, j] == a[g, i, j] * b[g, i, j]
    assert torch.isnan(channels[0]).all() and torch.isnan(channels[2]).all() and torch.isnan(twins[1]).all()
    assert torch.isnan(twins[0]).all() != with_twin
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    # output and operands in the transposed order: the same kernel on the transposed views
    flipped = _channels(1, B, rows, cols, dtype)[0]
    a_t, b_t = (_operand(k, B, cols, rows, dtype, gen).transpose(1, 2) for k in kinds)
    kernel = streaming.product_kernel(flipped, a_t, b_t)
    assert kernel is not None
    kernel()
    assert torch.equal(flipped, a_t * b_t)


@needs_streaming
def test_product_declines_what_it_does_not_cover():
    a, b = torch.randn(2, 16, 16), torch.randn(2, 16, 16)
    out = torch.empty(2, 16, 16)
    assert streaming.product_kernel(out, a, b) is not None
    declined = {
        "a transposed operand": (out, a.transpose(1, 2), b, None),
        "rows not two vectors": (torch.empty(2, 8, 16), a[:, :8], b[:, :8], None),
        "columns not two vectors": (torch.empty(2, 16, 8), a[..., :8], b[..., :8], None),
        "start not a whole line": (torch.empty(2 * 256 + 4)[4:].view(2, 16, 16), a, b, None),
        "twin not transposed": (out, a, b, torch.empty(2, 16, 16)),
        "output overlaps an operand": (a, a, b, None),
        "twin overlaps the output": (out, a, b, out.transpose(1, 2)),
        "shapes differ": (out, a[:, :, :8], b[:, :, :8], None),
        "dtypes differ": (out, a.double(), b.double(), None),
        "grad": (out, a.requires_grad_(), b, None),
    }
    for name, (o, x, y, twin) in declined.items():
        assert streaming.product_kernel(o, x, y, twin=twin) is None, name
