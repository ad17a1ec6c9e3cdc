r"""Commutative binary operators for learnable monoid aggregation, and their diagnostics.

A commutative monoid :math:`(M, \oplus, e)` is what an aggregator over multisets needs:
:math:`\oplus` commutative and associative with identity :math:`e`. A learned operator is
made commutative by construction by symmetrising any binary map :math:`g`,

.. math::

    a \oplus b = \tfrac{1}{2}\big(g(a, b) + g(b, a)\big),

and pushed towards associativity by a regulariser on random triples,

.. math::

    \mathcal{L}_{\text{assoc}} = \mathbb{E}_{(a,b,c)}
    \big\| (a \oplus b) \oplus c - a \oplus (b \oplus c) \big\|_2^2 ,

as in `"Learnable Commutative Monoids for Graph Neural Networks"
<https://arxiv.org/abs/2212.08541>`_ (Ong & Velickovic, LoG 2022).

Example::

    >>> monoid = CommutativeMonoid(GRUOperator(16))
    >>> a, b, c = torch.randn(3, 100, 16).unbind(0)
    >>> monoid.check_commutative(a, b)            # exactly 0: symmetric by construction
    0.0
    >>> monoid.check_associative(a, b, c) > 0     # learned, so only approximately associative
    True
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from everygraph.graphlib import check_callable, check_flag, check_index, check_size, check_tensor


__all__ = [
    "GRUOperator",
    "CommutativeMonoid",
    "check_commutative",
    "check_associative",
    "associativity_loss",
    "sample_segment_triples",
]

BinaryOp = Callable[[Tensor, Tensor], Tensor]


class GRUOperator(torch.nn.Module):
    r"""``g(a, b) = GRUCell(input=a, hidden=b)``: the paper's (and PyG's) default binary map.

    Args:
        channels: feature size ``F`` of both arguments and of the result.

    Shapes: ``a, b`` ``[*, F]`` -> ``[*, F]``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels = check_size(channels, "channels", 1)
        self.cell = torch.nn.GRUCell(channels, channels)

    def reset_parameters(self) -> None:
        self.cell.reset_parameters()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        shape = a.shape
        return self.cell(a.reshape(-1, self.channels), b.reshape(-1, self.channels)).view(shape)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels})"


class CommutativeMonoid(torch.nn.Module):
    r"""Symmetrise a binary map ``g(a, b)`` into a commutative operator.

    ``forward(a, b) = (g(a, b) + g(b, a)) / 2``. The two calls of ``g`` are made separately,
    each on the full batch, so ``forward(a, b)`` and ``forward(b, a)`` run the very same
    computations and are bitwise equal (float addition is commutative), not only close.

    Args:
        g: any module or callable ``g(a, b) -> [*, F]`` on ``[*, F]`` arguments.
        symmetrise: set False when ``g`` is already commutative (e.g. ``torch.add``,
            ``torch.maximum``) to save the second call.

    Shapes: ``a, b`` ``[*, F]`` -> ``[*, F]``.
    """

    def __init__(self, g: BinaryOp, symmetrise: bool = True):
        super().__init__()
        check_callable(g, "g", "a module or callable g(a, b)")
        check_flag(symmetrise, "symmetrise")
        self.g = g
        self.symmetrise = symmetrise

    def reset_parameters(self) -> None:
        if hasattr(self.g, "reset_parameters"):
            self.g.reset_parameters()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape:
            raise ValueError(f"both operands must have the same shape, got {list(a.shape)} and {list(b.shape)}")
        if not self.symmetrise:
            return self.g(a, b)
        return (self.g(a, b) + self.g(b, a)) * 0.5

    def check_commutative(self, a: Tensor, b: Tensor) -> float:
        """Max abs of ``op(a, b) - op(b, a)`` over the sample rows (0.0 by construction)."""
        return check_commutative(self, a, b)

    def check_associative(self, a: Tensor, b: Tensor, c: Tensor) -> float:
        """Max abs of ``op(op(a, b), c) - op(a, op(b, c))`` over the sample rows."""
        return check_associative(self, a, b, c)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.g!r}, symmetrise={self.symmetrise})"


def _check_operands(op: object, **operands: Tensor) -> None:
    check_callable(op, "op", "a binary operator op(a, b)")
    shape = None
    for name, value in operands.items():
        check_tensor(value, name, "any")
        if shape is not None and value.shape != shape:
            raise ValueError(f"a, b (and c) must have the same shape, got {name} of shape {list(value.shape)} and {list(shape)}")
        shape = value.shape


@torch.no_grad()
def check_commutative(op: BinaryOp, a: Tensor, b: Tensor) -> float:
    """Measured commutativity error ``max |op(a, b) - op(b, a)|`` on sample rows ``[*, F]``."""
    _check_operands(op, a=a, b=b)
    if a.numel() == 0:
        return 0.0
    return float((op(a, b) - op(b, a)).abs().max())


@torch.no_grad()
def check_associative(op: BinaryOp, a: Tensor, b: Tensor, c: Tensor) -> float:
    """Measured associativity error ``max |op(op(a, b), c) - op(a, op(b, c))|`` on sample rows."""
    _check_operands(op, a=a, b=b, c=c)
    if a.numel() == 0:
        return 0.0
    return float((op(op(a, b), c) - op(a, op(b, c))).abs().max())


def sample_segment_triples(
    index: Tensor, num_triples: int, dim_size: int | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Element ids ``(i, j, k)`` ``[num_triples]`` each, all three from the same segment.

    ``i`` is uniform over the elements; ``j`` and ``k`` are uniform (with replacement) over
    the elements of ``i``'s segment, so larger segments contribute more triples, in
    proportion to their size.
    """
    dim_size = check_index(index, index.numel(), dim_size)
    if index.numel() == 0 or num_triples <= 0:
        empty = index.new_zeros(0, dtype=torch.long)
        return empty, empty, empty
    index = index.long()
    order = torch.sort(index, stable=True).indices
    sizes = torch.bincount(index, minlength=dim_size)
    starts = sizes.cumsum(0) - sizes
    i = torch.randint(0, index.numel(), (num_triples,), generator=generator, device=index.device)
    seg = index[i]
    offsets = torch.rand(2, num_triples, generator=generator, device=index.device) * sizes[seg]
    jk = order[starts[seg] + offsets.long().clamp(max=sizes[seg] - 1)]
    return i, jk[0], jk[1]


def associativity_loss(
    op: BinaryOp,
    x: Tensor,
    index: Tensor | None = None,
    num_triples: int | None = None,
    dim_size: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The associativity regulariser on random triples drawn from the segments of ``x``.

    .. math::

        \frac{1}{T}\sum_{t=1}^{T} \frac{1}{F}\big\| (a_t \oplus b_t) \oplus c_t
        - a_t \oplus (b_t \oplus c_t) \big\|_2^2

    Args:
        op: the binary operator ``[T, F] x [T, F] -> [T, F]``.
        x: ``[E, F]`` elements (already in the operator's space, i.e. after any projection).
        index: ``[E]`` segment ids; None: one segment holding every element.
        num_triples: ``T``; defaults to ``E``.
        generator: for reproducible sampling.

    Returns:
        a scalar tensor (0 when there are no elements), differentiable w.r.t. ``op``'s
        parameters and ``x``.
    """
    check_callable(op, "op", "a binary operator op(a, b)")
    check_tensor(x, "x", "float", 2, shape="[num_elements, channels]")
    if index is None:
        index = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
    check_index(index, x.size(0), dim_size, src_shape=x.shape, dim=0)
    num_triples = x.size(0) if num_triples is None else check_size(num_triples, "num_triples", 1)
    if x.size(0) == 0 or num_triples == 0:
        return x.sum() * 0.0
    i, j, k = sample_segment_triples(index, num_triples, dim_size, generator)
    a, b, c = x[i], x[j], x[k]
    return (op(op(a, b), c) - op(a, op(b, c))).pow(2).mean()
