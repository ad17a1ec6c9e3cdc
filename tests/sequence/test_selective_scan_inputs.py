"""Bad arguments to the selective scan: each is refused before any work, by both executions,
with an exception that names the argument, what was expected and what was given."""

from __future__ import annotations

import pytest
import torch

from everygraph.sequence import selective_scan, selective_scan_reference

F64 = torch.float64
EXECUTIONS = [selective_scan, selective_scan_reference]


def valid(batch=2, channels=4, state=3, length=10):
    g = torch.Generator().manual_seed(0)
    return dict(
        u=torch.randn(batch, channels, length, generator=g, dtype=F64),
        delta=torch.randn(batch, channels, length, generator=g, dtype=F64),
        A=-torch.rand(channels, state, generator=g, dtype=F64),
        B=torch.randn(batch, state, length, generator=g, dtype=F64),
        C=torch.randn(batch, state, length, generator=g, dtype=F64),
        D=torch.randn(channels, generator=g, dtype=F64),
        z=torch.randn(batch, channels, length, generator=g, dtype=F64),
        delta_bias=torch.randn(channels, generator=g, dtype=F64),
    )


TENSOR_ARGUMENTS = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


@pytest.mark.parametrize("fn", EXECUTIONS)
def test_valid_arguments_run(fn):
    out = fn(**valid(), delta_softplus=True, return_last_state=True, reverse=True, cu_seqlens=torch.tensor([0, 4, 10]))
    assert out[0].shape == (2, 4, 10) and out[1].shape == (4, 4, 3)


NON_TENSORS = [(name, bad) for name in TENSOR_ARGUMENTS for bad in ("a string", [[1.0, 2.0]], 3.0, None)
               if not (bad is None and name in ("D", "z", "delta_bias"))]  # optional ones may be None


@pytest.mark.parametrize("fn", EXECUTIONS)
@pytest.mark.parametrize("name, bad", NON_TENSORS)
def test_a_non_tensor_is_a_type_error_naming_the_argument(fn, name, bad):
    kwargs = valid()
    kwargs[name] = bad
    with pytest.raises(TypeError, match=rf"^{name} must be a torch\.Tensor, got {type(bad).__name__}"):
        fn(**kwargs)


@pytest.mark.parametrize("fn", EXECUTIONS)
@pytest.mark.parametrize("name", TENSOR_ARGUMENTS)
@pytest.mark.parametrize("dtype, kind", [(torch.int64, "integer"), (torch.bool, "bool"), (torch.complex128, "complex")])
def test_integer_bool_or_complex_tensors_are_refused_not_cast(fn, name, dtype, kind):
    kwargs = valid()
    kwargs[name] = kwargs[name].to(dtype)
    with pytest.raises(ValueError, match=rf"^{name} must be a real floating-point tensor .*got a {kind} tensor "
                                         rf"of dtype {str(dtype).replace('.', '[.]')}"):
        fn(**kwargs)


@pytest.mark.parametrize("fn", EXECUTIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_float_dtype_is_accepted(fn, dtype):
    kwargs = {k: v.to(dtype) for k, v in valid().items()}
    out = fn(**kwargs, delta_softplus=True)
    assert out.dtype == dtype and out.shape == (2, 4, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("fn", EXECUTIONS)
@pytest.mark.parametrize("name", ["delta_softplus", "return_last_state", "reverse"])
@pytest.mark.parametrize("bad", ["False", 1, None, torch.tensor(True)], ids=["str", "int", "None", "tensor"])
def test_flags_must_be_bools(fn, name, bad):
    with pytest.raises(TypeError, match=rf"^{name} must be a bool \(True or False\), got {type(bad).__name__}"):
        fn(**valid(), **{name: bad})


@pytest.mark.parametrize("fn", EXECUTIONS)
@pytest.mark.parametrize("name, shape, expected", [
    ("u", (2, 4), r"u must have shape \[batch, D, L\], got \[2, 4\]"),
    ("delta", (2, 4, 9), r"delta must have the shape of u \[2, 4, 10\], got \[2, 4, 9\]"),
    ("A", (4, 3, 1), r"A must have shape \[D, N\] with D = 4 .*got \[4, 3, 1\]"),
    ("A", (5, 3), r"A must have shape \[D, N\] with D = 4 .*got \[5, 3\]"),
    ("B", (2, 3, 11), r"B must have shape \[batch, N, L\] = \[2, 3, 10\].*got \[2, 3, 11\]"),
    ("B", (2, 3), r"a fixed B must have shape \[D, N\] = \[4, 3\].*got \[2, 3\]"),
    ("C", (2, 3, 3, 10), r"a grouped C must have shape \[batch, G, N, L\] = \[2, G, 3, 10\] with G dividing "
                         r"D = 4, got \[2, 3, 3, 10\]"),
    ("C", (2, 3, 10, 1, 1), r"C must be \[D, N\], \[batch, N, L\] or \[batch, G, N, L\], got \[2, 3, 10, 1, 1\]"),
    ("D", (3,), r"D must have shape \[D\] = \[4\] .*got \[3\]"),
    ("D", (4, 1), r"D must have shape \[D\] = \[4\] .*got \[4, 1\]"),
    ("z", (2, 4, 1), r"z must have the shape of u \[2, 4, 10\], got \[2, 4, 1\]"),
    ("delta_bias", (), r"delta_bias must have shape \[D\] = \[4\] .*got \[\]"),
])
def test_wrong_shapes_name_the_argument_expected_and_given(fn, name, shape, expected):
    kwargs = valid()
    kwargs[name] = torch.zeros(shape, dtype=F64)
    with pytest.raises(ValueError, match=expected):
        fn(**kwargs)


@pytest.mark.parametrize("fn", EXECUTIONS)
@pytest.mark.parametrize("cu, error, message", [
    ([0.0, 4.0, 10.0], ValueError, r"cu_seqlens must be a 1-D integer tensor .*got dtype torch\.float32"),
    ([True, False], ValueError, r"cu_seqlens must be a 1-D integer tensor .*got dtype torch\.bool"),
    ([[0, 10]], ValueError, r"cu_seqlens must be a 1-D integer tensor \[num_seqs \+ 1\], got shape \[1, 2\]"),
    ("list", TypeError, r"cu_seqlens must be a 1-D integer torch\.Tensor \[num_seqs \+ 1\], got list"),
    ([1, 5, 10], ValueError, r"cu_seqlens must start at 0, got 1"),
    ([0, 5, 9], ValueError, r"cu_seqlens must end at the sequence length L = 10, got 9"),
    ([0, 6, 4, 10], ValueError, r"cu_seqlens must be increasing .*entry 2 = 4 < entry 1 = 6"),
    ([0], ValueError, r"cu_seqlens needs at least 2 entries"),
])
def test_bad_cu_seqlens_is_refused(fn, cu, error, message):
    cu_seqlens = [0, 10] if cu == "list" else torch.tensor(cu)
    with pytest.raises(error, match=message):
        fn(**valid(), cu_seqlens=cu_seqlens)


@pytest.mark.parametrize("fn", EXECUTIONS)
def test_int32_cu_seqlens_is_accepted(fn):
    x = valid()
    got = fn(**x, cu_seqlens=torch.tensor([0, 3, 10], dtype=torch.int32))
    want = fn(**x, cu_seqlens=torch.tensor([0, 3, 10]))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("fn", EXECUTIONS)
@pytest.mark.parametrize("name", ["delta", "A", "B", "C", "D", "z", "delta_bias"])
def test_a_tensor_on_another_device_is_refused(fn, name):
    kwargs = valid()
    kwargs[name] = kwargs[name].to("meta")
    with pytest.raises(ValueError, match=rf"^{name} must be on the device of u \(cpu\), got a tensor on meta"):
        fn(**kwargs)
