"""graphlib.check_ptr: the one check of CSR offsets, shared by segment (ptr) and the selective
scan (cu_seqlens)."""

import pytest
import torch

from everygraph.graphlib import IndexDtypeError, check_ptr, segment
from everygraph.sequence import selective_scan


def _scan_inputs(length: int):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 2, length, generator=g)
    return u, torch.rand(1, 2, length, generator=g), -torch.rand(2, 3, generator=g), torch.randn(
        1, 3, length, generator=g), torch.randn(1, 3, length, generator=g)


@pytest.mark.parametrize(
    "offsets, message",
    [
        ([0, 3, 2, 4], r"must be increasing \(non-decreasing.* entry 2 = 2 < entry 1 = 3"),
        ([1, 2, 4], r"must start at 0, got 1"),
        ([0, 2, 3], r"must end at .* = 4, got 3"),
    ],
)
def test_segment_and_selective_scan_give_the_same_answer(offsets, message):
    with pytest.raises(ValueError, match="ptr " + message):
        segment(torch.ones(4), torch.tensor(offsets))
    with pytest.raises(ValueError, match="cu_seqlens " + message):
        selective_scan(*_scan_inputs(4), cu_seqlens=torch.tensor(offsets))


def test_dtype_error_is_type_and_value_error():
    for bad in (torch.tensor([0.0, 4.0]), [0, 4], torch.tensor([True, False])):
        with pytest.raises(IndexDtypeError, match="integer"):
            check_ptr(bad, 4)
    assert issubclass(IndexDtypeError, TypeError) and issubclass(IndexDtypeError, ValueError)


def test_valid_offsets_pass_including_empty_segments():
    check_ptr(torch.tensor([0]), 0)
    check_ptr(torch.tensor([0, 0, 3, 3, 4]), 4)
    with pytest.raises(ValueError, match="at least 2 entries"):
        check_ptr(torch.tensor([0]), 0, name="cu_seqlens", min_segments=1)
    with pytest.raises(ValueError, match=r"must be a 1-D integer tensor \[num_segments \+ 1\], got shape \[1, 2\]"):
        check_ptr(torch.tensor([[0, 4]]), 4)
