"""The compiled small matrix products (``contractions/small_gemm.py``): equal to a loop over
graphs, rows, columns and the summed index for every layout the schedule passes (a
column-major right operand, a column-major result, strided operands, rows left over from the
register blocks), streamed or not; declined where they do not apply; bound by the schedule
in place of ``torch.bmm`` with results equal to brute-force homomorphism counts."""

import pytest
import torch

from everygraph.contractions import Pattern, compile_plan, evaluate
from everygraph.contractions import small_gemm, streaming
from homomorphism_reference import brute_force  # tests/contractions/homomorphism_reference.py

needs_jit = pytest.mark.skipif(not streaming.streaming_enabled(), reason="needs numba (everygraph[cpu]) on an x86-64 CPU")


def _loop_product(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    B, M, K = a.shape
    N = z.shape[2]
    out = torch.zeros(B, M, N, dtype=torch.float64)
    for b in range(B):
        for i in range(M):
            for j in range(N):
                out[b, i, j] = sum(float(a[b, i, k]) * float(z[b, k, j]) for k in range(K))
    return out


def _matrix(B: int, rows: int, cols: int, column_major: bool, dtype, gen) -> torch.Tensor:
    """A ``[B, rows, cols]`` operand, row- or column-major, as a view into a wider buffer."""
    if column_major:
        return torch.randn(B, cols, rows + 3, generator=gen, dtype=dtype)[..., 3:].transpose(1, 2)
    return torch.randn(B, rows, cols + 3, generator=gen, dtype=dtype)[..., 3:]


@needs_jit
@pytest.mark.parametrize("dtype,N", [(torch.float32, 16), (torch.float64, 8), (torch.float64, 16)])
@pytest.mark.parametrize("M,K", [(13, 8), (7, 16), (11, 24), (2, 8)])
@pytest.mark.parametrize("z_column_major", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_equals_the_loop(dtype, N, M, K, z_column_major, stream):
    gen = torch.Generator().manual_seed(M * K + N)
    a = _matrix(2, M, K, z_column_major, dtype, gen)  # both layouts of a too
    z = _matrix(2, K, N, z_column_major, dtype, gen)
    before = (a.clone(), z.clone())
    out = torch.full((3, 2, M, N), float("nan"), dtype=dtype)
    kernel = small_gemm.matmul_kernel(out[1], a, z, stream=stream)
    assert kernel is not None
    kernel()
    torch.testing.assert_close(out[1].double(), _loop_product(a, z), rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5)
    assert torch.isnan(out[0]).all() and torch.isnan(out[2]).all()
    assert torch.equal(a, before[0]) and torch.equal(z, before[1])


@needs_jit
def test_a_column_major_result_is_the_transposed_product():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(2, 16, 8, generator=gen)  # out^T = z^T a^T: a^T is the right operand
    z = torch.randn(2, 8, 16, generator=gen)
    out = torch.empty(2, 16, 16).transpose(1, 2)
    kernel = small_gemm.matmul_kernel(out, a, z)
    assert kernel is not None
    kernel()
    torch.testing.assert_close(out.double(), _loop_product(a, z), rtol=1e-5, atol=1e-5)


@needs_jit
def test_declines_what_it_does_not_cover():
    a, z = torch.randn(2, 8, 8), torch.randn(2, 8, 16)
    out = torch.empty(2, 8, 16)
    assert small_gemm.matmul_kernel(out, a, z) is not None
    declined = {
        "columns not two vectors": (torch.empty(2, 8, 8), a, z[..., :8], False),
        "column-major z, inner not a vector": (out, torch.randn(2, 8, 4), torch.randn(2, 16, 4).transpose(1, 2), False),
        "no unit stride in out": (torch.empty(2, 8, 32)[..., ::2], a, z, False),
        "no unit stride in z": (out, a, torch.randn(2, 8, 32)[..., ::2], False),
        "shapes disagree": (out, torch.randn(2, 8, 4), z, False),
        "dtypes differ": (out, a.double(), z.double(), False),
        "grad": (out, a.clone().requires_grad_(), z, False),
        "overlap": (z[:, :, :16], a, z, False),
        "streamed rows not whole lines": (torch.empty(2, 8, 20)[..., :16], a, z, True),
    }
    for name, (o, x, y, stream) in declined.items():
        assert small_gemm.matmul_kernel(o, x, y, stream=stream) is None, name


def test_off_without_the_jit(monkeypatch):
    monkeypatch.setenv("EVERYGRAPH_DISABLE_JIT", "1")
    assert small_gemm.matmul_kernel(torch.empty(2, 8, 16), torch.randn(2, 8, 8), torch.randn(2, 8, 16)) is None


@pytest.mark.parametrize("compiled", [True, False])
def test_schedule_products_equal_brute_force(monkeypatch, compiled):
    if compiled and not streaming.streaming_enabled():
        pytest.skip("needs numba (everygraph[cpu]) on an x86-64 CPU")
    if not compiled:
        monkeypatch.setenv("EVERYGRAPH_DISABLE_JIT", "1")
    # matrix products with open ends, read by a later step or written to an output channel
    strings = ["ab,bc->ac", "ab,bc,cd->ad", "ab,bc,cd,db->ac", "ab,bc,ca,cd->ad"]
    patterns = [Pattern.from_string(s) for s in strings]
    plan = compile_plan(patterns)
    gen = torch.Generator().manual_seed(7)
    x = (torch.rand(2, 16, 16, generator=gen) < 0.5).double()
    with torch.no_grad():
        out = evaluate(plan, x.float())
    (schedule,) = plan._schedules.values()
    (entry,) = plan._workspace._entries.values()
    products = [k for op, k in zip(schedule.ops, entry["bound"]) if op[0] == "bmm"]
    ours = [getattr(k, "func", None) in (small_gemm._compiled(s, torch.float32) for s in (False, True)) for k in products]
    assert products and (all(ours) if compiled else not any(ours))
    for j, p in enumerate(patterns):
        for g in range(x.shape[0]):
            torch.testing.assert_close(out[g, ..., j].double(), brute_force(p, x[g]), rtol=1e-6, atol=1e-4)
