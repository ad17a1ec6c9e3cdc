"""scatter / segment against plain per-segment Python loops, on every kernel of the dispatch."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.graphlib import scatter, scatter_backend_info, segment
from everygraph.graphlib.scatter import DISPATCH, KERNELS, REDUCES, _KERNEL_REDUCES, choose_kernel

HAS_TORCH_SCATTER = importlib.util.find_spec("torch_scatter") is not None

def _backend_param(name):
    marks = ()
    if name == "torch_scatter" and not HAS_TORCH_SCATTER:
        marks = pytest.mark.skipif(True, reason="torch_scatter is not installed")
    return name, marks


# (backend, reduce) pairs that exist; None is the dispatch. torch_scatter cases skip with a
# reason when the package is not installed.
CASES = [pytest.param(None, reduce, id=f"dispatch-{reduce}") for reduce in REDUCES] + [
    pytest.param(name, reduce, id=f"{name}-{reduce}", marks=_backend_param(name)[1])
    for name in KERNELS
    for reduce in REDUCES
    if reduce in _KERNEL_REDUCES[name]
]


def reference(src: torch.Tensor, index: torch.Tensor, dim_size: int, reduce: str) -> torch.Tensor:
    """Plain loop over segments, dim 0; the documented fills for empty segments."""
    rows = []
    for s in range(dim_size):
        members = [src[j] for j in range(src.size(0)) if int(index[j]) == s]
        if not members:
            rows.append(torch.full(src.shape[1:], 1.0 if reduce == "mul" else 0.0, dtype=src.dtype))
            continue
        acc = members[0].clone()
        for m in members[1:]:
            if reduce in ("sum", "mean"):
                acc = acc + m
            elif reduce == "max":
                acc = torch.maximum(acc, m)
            elif reduce == "min":
                acc = torch.minimum(acc, m)
            else:
                acc = acc * m
        if reduce == "mean":
            acc = acc / len(members)
        rows.append(acc)
    return torch.stack(rows) if rows else src.new_zeros((0,) + src.shape[1:])


def sorted_case(num_elements=23, dim_size=9, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, dim_size, (num_elements,), generator=g).sort().values
    src = torch.randn(num_elements, channels, dtype=torch.float64, generator=g)
    return src, index


@pytest.mark.parametrize("backend, reduce", CASES)
@pytest.mark.parametrize("is_sorted", [True, False])
def test_scatter_matches_loop(backend, reduce, is_sorted):
    src, index = sorted_case()
    if not is_sorted:
        perm = torch.randperm(index.numel(), generator=torch.Generator().manual_seed(1))
        src, index = src[perm], index[perm]
        if backend is not None and KERNELS[backend][1]:
            with pytest.raises(ValueError, match="sorted"):
                scatter(src, index, dim_size=12, reduce=reduce, backend=backend)
            return
    dim_size = 12  # segments 9..11 are empty, and some below 9 probably too
    out = scatter(src, index, dim_size=dim_size, reduce=reduce, backend=backend)
    torch.testing.assert_close(out, reference(src, index, dim_size, reduce))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend, reduce", CASES)
def test_segment_matches_loop(backend, reduce):
    src, index = sorted_case()
    counts = torch.bincount(index, minlength=12)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    out = segment(src, ptr, reduce=reduce, backend=backend)
    torch.testing.assert_close(out, reference(src, index, 12, reduce))


@pytest.mark.parametrize("backend, reduce", CASES)
def test_other_dims(backend, reduce):
    """Reducing over a middle dimension equals moving it to the front and back."""
    g = torch.Generator().manual_seed(3)
    src = torch.randn(2, 11, 4, dtype=torch.float64, generator=g)
    index = torch.randint(0, 5, (11,), generator=g).sort().values
    out = scatter(src, index, dim=1, dim_size=6, reduce=reduce, backend=backend)
    assert out.shape == (2, 6, 4)
    expected = reference(src.movedim(1, 0), index, 6, reduce).movedim(0, 1)
    torch.testing.assert_close(out, expected)
    out_neg = scatter(src, index, dim=-2, dim_size=6, reduce=reduce, backend=backend)
    torch.testing.assert_close(out_neg, expected)


@pytest.mark.parametrize("backend, reduce", CASES)
def test_gradcheck(backend, reduce):
    g = torch.Generator().manual_seed(5)
    index = torch.tensor([0, 0, 0, 2, 2, 4, 5])  # segment 1 and 3 empty
    # distinct magnitudes away from 0: max/min have no ties, mul no zero factors
    src = (torch.rand(7, 2, dtype=torch.float64, generator=g) + 0.5) * torch.arange(1, 15, dtype=torch.float64).view(7, 2)
    src.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: scatter(s, index, dim_size=6, reduce=reduce, backend=backend), (src,))
    ptr = torch.tensor([0, 3, 3, 5, 5, 6, 7])
    assert torch.autograd.gradcheck(lambda s: segment(s, ptr, reduce=reduce, backend=backend), (src,))


@pytest.mark.parametrize("reduce", REDUCES)
def test_empty_input(reduce):
    src = torch.zeros(0, 3, requires_grad=True)
    index = torch.zeros(0, dtype=torch.long)
    out = scatter(src, index, dim_size=4, reduce=reduce)
    assert out.shape == (4, 3)
    assert (out == (1.0 if reduce == "mul" else 0.0)).all()
    out.sum().backward()  # a graph exists, gradient of an empty tensor is empty
    assert src.grad.shape == (0, 3)
    assert scatter(src, index, reduce=reduce).shape == (0, 3)
    assert segment(src, torch.zeros(1, dtype=torch.long), reduce=reduce).shape == (0, 3)
    assert (segment(src, torch.zeros(3, dtype=torch.long), reduce=reduce) == (1.0 if reduce == "mul" else 0.0)).all()


def test_max_min_fill_is_zero_even_for_negative_values():
    src = torch.tensor([-5.0, -3.0])
    index = torch.tensor([0, 2])
    assert scatter(src, index, dim_size=4, reduce="max").tolist() == [-5.0, 0.0, -3.0, 0.0]
    assert scatter(src, index, dim_size=4, reduce="min").tolist() == [-5.0, 0.0, -3.0, 0.0]


def test_does_not_mutate_inputs():
    src, index = sorted_case()
    src_copy, index_copy = src.clone(), index.clone()
    for reduce in REDUCES:
        scatter(src, index, dim_size=12, reduce=reduce)
    assert torch.equal(src, src_copy) and torch.equal(index, index_copy)


def test_integer_src_sum():
    out = scatter(torch.tensor([1, 2, 3]), torch.tensor([1, 1, 0]), reduce="sum")
    assert out.tolist() == [3, 3]


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 6), st.floats(-10, 10, allow_nan=False, width=32)), max_size=30),
    extra=st.integers(0, 3),
    reduce=st.sampled_from(["sum", "mean", "max", "min"]),
)
def test_hypothesis_dispatch_matches_loop(data, extra, reduce):
    index = torch.tensor([d[0] for d in data], dtype=torch.long)
    src = torch.tensor([d[1] for d in data], dtype=torch.float64).view(-1, 1)
    dim_size = (int(index.max()) + 1 if data else 0) + extra
    out = scatter(src, index, dim_size=dim_size, reduce=reduce)
    torch.testing.assert_close(out, reference(src, index, dim_size, reduce))


# ------------------------------------------------------------------- errors


def test_error_index_out_of_range_names_bound():
    with pytest.raises(ValueError, match=r"segment id 5.*dim_size=3"):
        scatter(torch.ones(2), torch.tensor([0, 5]), dim_size=3)


def test_error_negative_index():
    with pytest.raises(ValueError, match="negative"):
        scatter(torch.ones(2), torch.tensor([0, -1]))


def test_error_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\[4\].*\[4, 2\].*\[3\]"):
        scatter(torch.ones(4, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        scatter(torch.ones(4), torch.zeros(4, 1, dtype=torch.long))


def test_error_float_index():
    with pytest.raises(TypeError, match="integer dtype"):
        scatter(torch.ones(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer dtype"):
        segment(torch.ones(2), torch.tensor([0.0, 2.0]))


def test_error_unknown_reduce_lists_valid():
    with pytest.raises(ValueError, match=r"'median'.*'sum', 'mean', 'max', 'min', 'mul'"):
        scatter(torch.ones(2), torch.tensor([0, 1]), reduce="median")


def test_error_bad_dim_and_backend():
    with pytest.raises(ValueError, match="dim=2"):
        scatter(torch.ones(2), torch.tensor([0, 1]), dim=2)
    with pytest.raises(ValueError, match="unknown backend"):
        scatter(torch.ones(2), torch.tensor([0, 1]), backend="cuda_magic")
    with pytest.raises(ValueError, match="does not implement"):
        scatter(torch.ones(2), torch.tensor([0, 1]), reduce="max", backend="index_add")


def test_error_bad_ptr():
    with pytest.raises(ValueError, match="end at"):
        segment(torch.ones(4), torch.tensor([0, 2, 3]))
    with pytest.raises(ValueError, match="start at 0"):
        segment(torch.ones(4), torch.tensor([1, 2, 4]))
    with pytest.raises(ValueError, match="non-decreasing"):
        segment(torch.ones(4), torch.tensor([0, 3, 2, 4]))


# --------------------------------------------------------------- dispatch table


def test_dispatch_table_is_complete_and_valid():
    for reduce in REDUCES:
        for device in ("cpu", "cuda"):
            for is_sorted in (False, True):
                for grad in (False, True):
                    prefs = DISPATCH[(reduce, device, is_sorted, grad)]
                    assert prefs, (reduce, device, is_sorted, grad)
                    for name in prefs:
                        assert name in KERNELS and reduce in _KERNEL_REDUCES[name]
                        assert is_sorted or not KERNELS[name][1], "a sorted-only kernel listed for unsorted input"
                    chosen = choose_kernel(reduce, device, is_sorted, grad)
                    assert chosen in KERNELS
                    if not HAS_TORCH_SCATTER:
                        assert chosen != "torch_scatter"


@pytest.mark.parametrize("reduce", ["max", "min", "sum"])
def test_dispatch_follows_table_for_sorted_index_with_grad(reduce, monkeypatch):
    """scatter checks sortedness only when the table asks, and routes by it."""
    mod = importlib.import_module("everygraph.graphlib.scatter")  # the attribute is the function

    used = []
    for name in list(mod.KERNELS):
        kernel, needs_sorted, package = mod.KERNELS[name]

        def spy(*args, _name=name, _kernel=kernel):
            used.append(_name)
            return _kernel(*args)

        monkeypatch.setitem(mod.KERNELS, name, (spy, needs_sorted, package))
    src, index = sorted_case()
    src.requires_grad_(True)
    scatter(src, index, dim_size=12, reduce=reduce)
    scatter(src, index.flip(0), dim_size=12, reduce=reduce)
    assert used == [choose_kernel(reduce, "cpu", True, True), choose_kernel(reduce, "cpu", False, True)]


def test_backend_info_is_one_short_line():
    info = scatter_backend_info()
    assert "\n" not in info and "native" in info and len(info) < 200
    assert ("torch_scatter installed" in info) == HAS_TORCH_SCATTER
