r"""Balanced pairwise (tree) reduction of every segment with any binary operator.

Given elements ``x`` ``[E, *F]`` with segment ids ``index`` ``[E]`` and a binary operator
``combine(a, b)`` (``[P, *F] x [P, *F] -> [P, *F]``, applied row-wise), each segment
:math:`s = (x_{s,0}, x_{s,1}, \dots, x_{s,n-1})` (its elements in order of appearance in
``x``) is reduced along a balanced binary tree:

.. math::

    x^{(r+1)}_{s,k} =
    \begin{cases}
      \mathrm{combine}\big(x^{(r)}_{s,2k},\; x^{(r)}_{s,2k+1}\big) & 2k + 1 < n_r \\
      x^{(r)}_{s,2k} & 2k + 1 = n_r \quad\text{(odd element out, carried unchanged)}
    \end{cases}
    \qquad n_{r+1} = \lceil n_r / 2 \rceil

until one element is left. All segments advance together: round ``r`` is a single batched
call of ``combine`` on the pairs of every segment, and there are
:math:`\lceil \log_2 \max_s n_s \rceil` rounds. A segment of size 1 returns its element;
an empty segment returns ``identity`` (zeros if None).

Properties (tested in ``tests/graphlib/test_tree_reduce.py``):

- the result for a segment depends only on that segment's elements and their order of
  appearance (the input is stably sorted by ``index``), never on the other segments, so
  for an elementwise ``combine`` adding segments to the batch changes no bit of the others;
- with an associative, commutative ``combine`` (``torch.add``, ``torch.maximum``) it equals
  :func:`~everygraph.graphlib.scatter` sum / max;
- memory is ``O(E x F)``: nothing is padded to the largest segment (unlike
  ``to_dense_batch``-based reductions such as PyG's ``LCMAggregation``).

This is the reduction behind learnable commutative monoid aggregation
(`"Learnable Commutative Monoids for Graph Neural Networks"
<https://arxiv.org/abs/2212.08541>`_, Ong & Velickovic, LoG 2022).

Example::

    >>> x = torch.tensor([1., 2., 3., 4., 5.])
    >>> index = torch.tensor([0, 1, 0, 0, 1])
    >>> tree_reduce(x, index, torch.add, dim_size=3)           # segment sums, empty -> 0
    tensor([8., 7., 0.])
    >>> tree_reduce(x, index, lambda a, b: a - b)              # ((1 - 3), 4) -> (1 - 3) - 4
    tensor([-6., -3.])
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .scatter import check_index
from .validation import check_callable

__all__ = ["tree_reduce", "tree_reduce_reference", "num_tree_rounds"]


def num_tree_rounds(max_segment_size: int) -> int:
    """``ceil(log2(n))``: rounds of :func:`tree_reduce` for a largest segment of ``n`` elements."""
    return max(int(max_segment_size) - 1, 0).bit_length()


def _check_inputs(x: Tensor, index: Tensor, dim_size: int | None, identity: Tensor | None) -> tuple[int, Tensor | None]:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [num_elements, *features], got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("x must have shape [num_elements, *features], got a 0-d tensor")
    dim_size = check_index(index, x.size(0), dim_size, src_shape=x.shape, dim=0)
    if identity is not None:
        if not isinstance(identity, Tensor):
            identity = torch.as_tensor(identity, dtype=x.dtype, device=x.device)
        try:
            torch.broadcast_shapes(identity.shape, x.shape[1:])
        except RuntimeError:
            raise ValueError(
                f"identity of shape {list(identity.shape)} does not broadcast to the feature shape "
                f"{list(x.shape[1:])} of x {list(x.shape)}"
            ) from None
        if len(torch.broadcast_shapes(identity.shape, x.shape[1:])) != x.dim() - 1:
            raise ValueError(
                f"identity of shape {list(identity.shape)} has more dimensions than the feature shape "
                f"{list(x.shape[1:])} of x {list(x.shape)}"
            )
    return dim_size, identity


def _fill_identity(dim_size: int, x: Tensor, identity: Tensor | None) -> Tensor:
    if identity is None:
        return x.new_zeros((dim_size,) + x.shape[1:])
    return identity.to(dtype=x.dtype, device=x.device).expand((dim_size,) + x.shape[1:])


def tree_reduce(
    x: Tensor,
    index: Tensor,
    combine: Callable[[Tensor, Tensor], Tensor],
    dim_size: int | None = None,
    identity: Tensor | None = None,
) -> Tensor:
    r"""Reduce each segment of ``x`` with ``combine`` along a balanced binary tree.

    Args:
        x: ``[E, *F]`` elements.
        index: ``[E]`` segment id of each element, in ``[0, dim_size)``; need not be sorted.
            Within a segment, elements are paired in their order of appearance in ``x``.
        combine: ``combine(a, b) -> [P, *F]`` for ``a, b`` ``[P, *F]``, row ``i`` of the result
            depending only on rows ``i`` of ``a`` and ``b``; called once per round.
        dim_size: number of segments; ``index.max() + 1`` if None.
        identity: value of an empty segment, a tensor broadcastable to ``F`` (it keeps its
            autograd graph, so it may be a learned parameter); zeros if None.

    Returns:
        ``[dim_size, *F]``.
    """
    check_callable(combine, "combine", "a callable combine(a, b)")
    dim_size, identity = _check_inputs(x, index, dim_size, identity)
    out = _fill_identity(dim_size, x, identity)
    if x.size(0) == 0:
        return out if identity is not None else out + x.sum() * 0  # keep x in the graph
    index = index.long()
    # Stable sort: elements of a segment become contiguous and keep their order of appearance.
    order = torch.sort(index, stable=True).indices
    seg = index[order]
    cur = x[order]
    sizes = torch.bincount(seg, minlength=dim_size)
    rounds = num_tree_rounds(int(sizes.max()))
    for _ in range(rounds):
        # Position of each element inside its segment; the current list stays sorted by
        # (segment, position), so segment starts are the exclusive cumsum of the sizes.
        starts = sizes.cumsum(0) - sizes
        pos = torch.arange(cur.size(0), device=cur.device) - starts[seg]
        even = (pos % 2) == 0
        # Every even element becomes exactly one element of the next round, in the same
        # order: paired with its right neighbour if it has one, carried unchanged otherwise.
        keep = even.nonzero().squeeze(1)
        has_partner = (pos[keep] + 1) < sizes[seg[keep]]
        left = keep[has_partner]
        combined = combine(cur[left], cur[left + 1])
        if not isinstance(combined, Tensor) or combined.shape != (left.numel(),) + cur.shape[1:]:
            got = list(combined.shape) if isinstance(combined, Tensor) else type(combined).__name__
            raise ValueError(
                f"combine(a, b) must return a tensor shaped like its inputs {[left.numel()] + list(cur.shape[1:])}, "
                f"got {got}"
            )
        nxt = cur[keep]
        cur = nxt.index_copy(0, has_partner.nonzero().squeeze(1), combined.to(nxt.dtype))
        seg = seg[keep]
        sizes = (sizes + 1) // 2
    return out.index_copy(0, seg, cur)


def tree_reduce_reference(
    x: Tensor,
    index: Tensor,
    combine: Callable[[Tensor, Tensor], Tensor],
    dim_size: int | None = None,
    identity: Tensor | None = None,
) -> Tensor:
    """The same reduction as :func:`tree_reduce`, one segment and one pair at a time.

    Plain Python loops over segments and rounds; slow, obviously correct, for tests.
    """
    dim_size, identity = _check_inputs(x, index, dim_size, identity)
    rows = []
    for s in range(dim_size):
        items = [x[j] for j in range(x.size(0)) if int(index[j]) == s]
        if not items:
            rows.append(_fill_identity(1, x, identity)[0])
            continue
        while len(items) > 1:
            paired = [combine(items[k][None], items[k + 1][None])[0] for k in range(0, len(items) - 1, 2)]
            if len(items) % 2:
                paired.append(items[-1])
            items = paired
        rows.append(items[0])
    if not rows:
        return x.new_zeros((0,) + x.shape[1:])
    return torch.stack(rows)
