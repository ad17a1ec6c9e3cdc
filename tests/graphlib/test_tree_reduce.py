"""tree_reduce against scatter (associative ops) and an explicit per-segment pairwise fold."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.graphlib import scatter, tree_reduce
from everygraph.graphlib.tree_reduce import num_tree_rounds, tree_reduce_reference


def pairwise_fold(items: list[torch.Tensor], combine) -> torch.Tensor:
    """The documented pairing rule, written independently of the library: pair (0,1),(2,3),...
    in order, carry an odd last element, repeat until one is left."""
    while len(items) > 1:
        nxt = []
        for k in range(0, len(items), 2):
            nxt.append(combine(items[k], items[k + 1]) if k + 1 < len(items) else items[k])
        items = nxt
    return items[0]


def loop_reference(x, index, combine, dim_size, identity=None):
    rows = []
    for s in range(dim_size):
        items = [x[j] for j in range(x.size(0)) if int(index[j]) == s]  # order of appearance
        if items:
            rows.append(pairwise_fold(items, combine))
        elif identity is None:
            rows.append(torch.zeros(x.shape[1:], dtype=x.dtype))
        else:
            rows.append(identity.expand(x.shape[1:]).to(x.dtype))
    return torch.stack(rows)


def non_associative(a, b):
    return a * 0.5 + b * 2.0 + a * b * 0.1


def random_segments(num_elements=40, dim_size=9, channels=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, dim_size - 2, (num_elements,), generator=g)  # last two segments empty
    x = torch.randn(num_elements, channels, generator=g, dtype=dtype)
    return x, index


@pytest.mark.parametrize("combine, reduce", [(torch.add, "sum"), (torch.maximum, "max"), (torch.minimum, "min")])
def test_associative_ops_equal_scatter(combine, reduce):
    x, index = random_segments()
    out = tree_reduce(x, index, combine, dim_size=9)
    torch.testing.assert_close(out, scatter(x, index, dim_size=9, reduce=reduce))


def test_non_associative_equals_pairwise_fold():
    x, index = random_segments(num_elements=57, dim_size=11, seed=1)
    out = tree_reduce(x, index, non_associative, dim_size=11)
    torch.testing.assert_close(out, loop_reference(x, index, non_associative, 11), rtol=1e-12, atol=1e-12)
    # the library's own slow reference agrees with this independent one
    torch.testing.assert_close(tree_reduce_reference(x, index, non_associative, 11), out, rtol=1e-12, atol=1e-12)


def test_small_mlp_combine_equals_pairwise_fold():
    torch.manual_seed(2)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()

    def combine(a, b):
        return mlp(torch.cat([a, b], dim=-1))

    x, index = random_segments(num_elements=33, dim_size=7, channels=4, seed=3)
    out = tree_reduce(x, index, combine, dim_size=7)
    expected = loop_reference(x, index, lambda a, b: combine(a[None], b[None])[0], 7)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_pairing_order_is_order_of_appearance():
    # segment 0 gets 1, 3, 4 in that order (interleaved with segment 1): ((1 - 3) - 4)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    index = torch.tensor([0, 1, 0, 0, 1])
    out = tree_reduce(x, index, torch.sub)
    assert out.tolist() == [(1 - 3) - 4, 2 - 5]
    # five elements: ((a-b) - (c-d)) - e
    out5 = tree_reduce(torch.tensor([1.0, 10.0, 100.0, 1000.0, 7.0]), torch.zeros(5, dtype=torch.long), torch.sub)
    assert out5.tolist() == [((1 - 10) - (100 - 1000)) - 7]


def test_batch_independence_bitwise():
    g = torch.Generator().manual_seed(4)
    x, index = random_segments(num_elements=20, dim_size=5, seed=5, dtype=torch.float32)
    alone = tree_reduce(x, index, non_associative, dim_size=5)
    # add other segments (much larger ones, too), interleaved at random positions
    extra_x = torch.randn(500, 3, generator=g)
    extra_index = torch.cat([torch.full((300,), 5), torch.randint(6, 12, (200,), generator=g)])
    all_x = torch.cat([x, extra_x])
    all_index = torch.cat([index, extra_index])
    perm = torch.randperm(all_x.size(0), generator=g)
    # keep the relative order of the original elements, so their segments see the same order
    orig_positions = perm.argsort()[: x.size(0)].sort().values
    new_order = torch.empty_like(perm)
    is_orig = torch.zeros(all_x.size(0), dtype=torch.bool)
    is_orig[orig_positions] = True
    new_order[is_orig] = torch.arange(x.size(0))
    new_order[~is_orig] = torch.arange(x.size(0), all_x.size(0))
    together = tree_reduce(all_x[new_order], all_index[new_order], non_associative, dim_size=12)
    assert torch.equal(together[:5], alone)


def test_number_of_combine_calls():
    calls = []

    def counting_add(a, b):
        calls.append(a.size(0))
        return a + b

    sizes = [1, 3, 17, 0, 5]  # max 17 -> ceil(log2 17) = 5 rounds
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    index = index[torch.randperm(index.numel())]
    x = torch.randn(index.numel(), 2)
    tree_reduce(x, index, counting_add)
    assert len(calls) == math.ceil(math.log2(17)) == 5
    # every combine call is batched over all segments: sum of pairs = E - (#non-empty segments)
    assert sum(calls) == sum(sizes) - sum(1 for s in sizes if s)
    assert [num_tree_rounds(n) for n in (0, 1, 2, 3, 4, 5, 8, 9, 1024, 1025)] == [0, 0, 1, 2, 2, 3, 3, 4, 10, 11]


def test_size_one_and_identity():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    index = torch.tensor([3, 0])

    def never(a, b):
        raise AssertionError("combine must not be called when every segment has one element")

    out = tree_reduce(x, index, never, dim_size=5)
    assert out.tolist() == [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]
    out = tree_reduce(x, index, never, dim_size=5, identity=torch.tensor([7.0, -7.0]))
    assert out.tolist() == [[3.0, 4.0], [7.0, -7.0], [7.0, -7.0], [1.0, 2.0], [7.0, -7.0]]
    out = tree_reduce(x, index, never, dim_size=5, identity=torch.tensor(9.0))
    assert out[1].tolist() == [9.0, 9.0]


def test_empty_input_and_dim_size_beyond_max():
    x = torch.zeros(0, 4, requires_grad=True)
    index = torch.zeros(0, dtype=torch.long)
    out = tree_reduce(x, index, torch.add, dim_size=3)
    assert out.shape == (3, 4) and (out == 0).all()
    out.sum().backward()
    assert tree_reduce(x, index, torch.add).shape == (0, 4)
    ident = torch.arange(4.0)
    assert torch.equal(tree_reduce(x, index, torch.add, dim_size=2, identity=ident), ident.expand(2, 4))
    y = torch.randn(6, 4)
    out = tree_reduce(y, torch.tensor([0, 1, 0, 1, 0, 1]), torch.add, dim_size=10)
    assert out.shape == (10, 4) and (out[2:] == 0).all()


def test_one_dimensional_and_multi_dim_features():
    x = torch.randn(10, dtype=torch.float64)
    index = torch.tensor([0, 0, 1, 1, 1, 2, 0, 2, 2, 2])
    torch.testing.assert_close(tree_reduce(x, index, torch.add), scatter(x, index, reduce="sum"))
    x3 = torch.randn(10, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(tree_reduce(x3, index, torch.maximum), scatter(x3, index, reduce="max"))


def test_gradcheck_float64():
    x, index = random_segments(num_elements=14, dim_size=6, channels=2, seed=6)
    x.requires_grad_(True)
    identity = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, i: tree_reduce(x, index, non_associative, dim_size=6, identity=i), (x, identity)
    )


def test_does_not_mutate_inputs():
    x, index = random_segments()
    x0, i0 = x.clone(), index.clone()
    tree_reduce(x, index, non_associative)
    assert torch.equal(x, x0) and torch.equal(index, i0)


@settings(max_examples=20, deadline=None)
@given(index_list=st.lists(st.integers(0, 5), max_size=25), extra=st.integers(0, 2))
def test_hypothesis_matches_loop(index_list, extra):
    index = torch.tensor(index_list, dtype=torch.long)
    dim_size = (max(index_list) + 1 if index_list else 0) + extra
    x = torch.randn(len(index_list), 2, dtype=torch.float64)
    out = tree_reduce(x, index, non_associative, dim_size=dim_size)
    if dim_size:
        torch.testing.assert_close(out, loop_reference(x, index, non_associative, dim_size), rtol=1e-12, atol=1e-12)
    else:
        assert out.shape == (0, 2)


def test_errors():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"\[4\].*\[4, 2\].*\[3\]"):
        tree_reduce(x, torch.tensor([0, 1, 2]), torch.add)
    with pytest.raises(ValueError, match="dim_size=2"):
        tree_reduce(x, torch.tensor([0, 1, 2, 3]), torch.add, dim_size=2)
    with pytest.raises(ValueError, match="negative"):
        tree_reduce(x, torch.tensor([0, -1, 2, 3]), torch.add)
    with pytest.raises(TypeError, match="integer dtype"):
        tree_reduce(x, torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.add)
    with pytest.raises(ValueError, match=r"identity of shape \[3\].*\[2\]"):
        tree_reduce(x, torch.tensor([0, 1, 2, 3]), torch.add, identity=torch.zeros(3))
    with pytest.raises(ValueError, match="combine"):
        tree_reduce(x, torch.tensor([0, 0, 1, 1]), lambda a, b: a.sum(-1))
