"""graphlib.compute_dtype / upcast: the one half-precision rule of every engine and layer."""

import pytest
import torch

from everygraph.graphlib import compute_dtype, upcast


@pytest.mark.parametrize(
    "inputs, expected",
    [
        ((torch.bfloat16,), torch.float32),
        ((torch.float16,), torch.float32),
        ((torch.float32,), torch.float32),
        ((torch.float64,), torch.float64),
        ((torch.float16, None, torch.float64), torch.float64),
        ((None,), torch.float32),
    ],
)
def test_rule(inputs, expected):
    assert compute_dtype(*inputs) == expected
    tensors = [None if d is None else torch.zeros(1, dtype=d) for d in inputs]
    assert compute_dtype(*tensors) == expected


def test_upcast_copies_only_half_precision():
    x32 = torch.ones(3)
    x64 = torch.ones(3, dtype=torch.float64)
    assert upcast(x32) is x32 and upcast(x64) is x64
    half = torch.tensor([1.5, 2.25], dtype=torch.bfloat16)
    assert upcast(half).dtype == torch.float32
    assert upcast(half).tolist() == [1.5, 2.25]
