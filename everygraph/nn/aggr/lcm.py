r"""Learnable commutative monoid (LCM) aggregation, reduced along each node's own tree."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.aggr import Aggregation

from everygraph.graphlib import check_flag, check_index, check_size, check_tensor, tree_reduce

from .monoid import BinaryOp, CommutativeMonoid, GRUOperator, associativity_loss

__all__ = ["LCMAggregation"]


class LCMAggregation(Aggregation):
    r"""The learnable commutative monoid aggregation from `"Learnable Commutative Monoids
    for Graph Neural Networks" <https://arxiv.org/abs/2212.08541>`_ (Ong & Velickovic,
    LoG 2022), executed as a balanced tree reduction of each node's own elements.

    .. math::

        \mathbf{h}_i = \mathrm{ReLU}(\mathbf{W}\mathbf{x}_i + \mathbf{b}), \qquad
        a \oplus b = \tfrac{1}{2}\big(g(a, b) + g(b, a)\big), \qquad
        \mathbf{o}_v = \bigoplus_{i \,:\, \mathrm{index}_i = v}^{\text{tree}} \mathbf{h}_i

    with :math:`g(a, b) = \mathrm{GRUCell}(a, b)` by default. The elements of each segment
    are combined pairwise along a balanced binary tree
    (:func:`everygraph.graphlib.tree_reduce`): :math:`\lceil\log_2 d_{\max}\rceil` rounds, each
    one batched call of :math:`\oplus` over all pairs of all segments, no padding.

    Semantics (each tested in ``tests/nn/test_lcm.py``):

    - **degree 0**: a node with no elements gets the identity :math:`e` (a learned vector,
      ``identity="learned"``, initialised to zeros; or fixed zeros, ``identity="zeros"``);
    - **degree 1**: the (projected) element passes through unchanged;
    - **batch independence**: a node's output depends only on its own elements, never on the
      other nodes or graphs of the batch (unlike PyG's ``LCMAggregation``, which pads every
      node to the batch's maximum degree with zeros that are not the identity);
    - **order**: within a segment, elements are paired in their order of appearance in ``x``
      ((0, 1), (2, 3), ..., an odd last element carried up). Since the learned operator is
      only approximately associative, the result depends on that order;
      ``shuffle=True`` draws a random order per call in training mode (the paper's
      augmentation) and keeps the given order in eval mode. ``index`` need not be sorted.
    - commutativity is exact: :math:`a \oplus b` and :math:`b \oplus a` are bitwise equal;
    - **every parameter is used on every call**, also for a batch without edges (the
      operator is called once on zero elements), so the layer trains under plain
      ``DistributedDataParallel`` (no ``find_unused_parameters``) whatever each rank's batch
      holds. A custom operator must therefore accept inputs with zero rows.

    Add :meth:`associativity_loss` (times a weight) to the training loss to push
    :math:`\oplus` towards associativity, so that the result depends less on the order.

    Args:
        in_channels: size ``F_in`` of each element.
        out_channels: size ``F_out`` of the aggregate.
        project: apply ``ReLU(Linear(F_in, F_out))`` to each element first (as PyG does);
            if False, ``in_channels`` must equal ``out_channels``.
        operator: ``"gru"`` (:class:`GRUOperator`) or any module/callable ``g(a, b)``
            ``[*, F_out] x [*, F_out] -> [*, F_out]``; it is symmetrised unless it is a
            :class:`CommutativeMonoid` already (wrap an already-commutative ``g`` as
            ``CommutativeMonoid(g, symmetrise=False)``).
        identity: ``"learned"`` or ``"zeros"``: the output of a node with no elements.
        shuffle: randomise the pairing order within segments in training mode.

    Shapes:
        - **input:** ``x`` ``[*, E, F_in]`` (``E`` at position ``dim``), ``index`` ``[E]``
          or ``ptr`` ``[N + 1]``, ``dim_size`` ``N``
        - **output:** ``[*, N, F_out]``

    Example::

        >>> from torch_geometric.nn import SAGEConv
        >>> aggr = LCMAggregation(16, 16)
        >>> conv = SAGEConv(16, 32, aggr=aggr)
        >>> out = conv(x, edge_index)                      # [num_nodes, 32]
        >>> loss = task_loss + 0.1 * aggr.associativity_loss(messages, index)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        project: bool = True,
        operator: str | BinaryOp = "gru",
        identity: str = "learned",
        shuffle: bool = False,
    ):
        super().__init__()
        # -1 (as in PyG's lazy layers): in_channels is read from the first input, and
        # out_channels = -1 means "as in_channels"; the parameters are created on that call.
        in_channels = -1 if in_channels == -1 and not isinstance(in_channels, bool) else check_size(in_channels, "in_channels", 1)
        out_channels = -1 if out_channels == -1 and not isinstance(out_channels, bool) else check_size(out_channels, "out_channels", 1)
        check_flag(project, "project")
        check_flag(shuffle, "shuffle")
        if isinstance(operator, str) and operator != "gru":
            raise ValueError(f"unknown operator {operator!r}; pass 'gru' or a module/callable g(a, b)")
        if not isinstance(operator, str) and not callable(operator):
            raise TypeError(f"operator must be 'gru' or a callable g(a, b), got {type(operator).__name__}")
        if not isinstance(identity, str):
            raise TypeError(f"identity must be 'learned' or 'zeros', got {type(identity).__name__}")
        if -1 in (in_channels, out_channels):
            self.in_channels, self.out_channels = in_channels, out_channels
            self.project, self.shuffle, self.identity_mode = project, shuffle, identity
            if identity not in ("learned", "zeros"):
                raise ValueError(f"unknown identity {identity!r}; valid options are 'learned', 'zeros'")
            self.__dict__["_lazy_operator"] = operator  # not registered: _build wraps it
            self.lin, self.op = None, None
            self.register_buffer("identity", None)
            return
        self._build(in_channels, out_channels, project, operator, identity, shuffle)

    def _build(self, in_channels: int, out_channels: int, project: bool, operator, identity: str, shuffle: bool) -> None:
        self._buffers.pop("identity", None)
        if in_channels != out_channels and not project:
            raise ValueError(
                f"in_channels ({in_channels}) != out_channels ({out_channels}) needs project=True "
                f"(the operator works on out_channels features)"
            )
        if identity not in ("learned", "zeros"):
            raise ValueError(f"unknown identity {identity!r}; valid options are 'learned', 'zeros'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.project = project
        self.shuffle = shuffle
        self.identity_mode = identity
        self.lin = torch.nn.Linear(in_channels, out_channels) if project else None
        if isinstance(operator, str):
            if operator != "gru":
                raise ValueError(f"unknown operator {operator!r}; pass 'gru' or a module/callable g(a, b)")
            operator = GRUOperator(out_channels)
        if not callable(operator):
            raise TypeError(f"operator must be 'gru' or a callable g(a, b), got {type(operator).__name__}")
        self.op = operator if isinstance(operator, CommutativeMonoid) else CommutativeMonoid(operator)
        if identity == "learned":
            self.identity = torch.nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_buffer("identity", torch.zeros(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.op is None:  # lazy sizes, not created yet
            return
        if self.lin is not None:
            self.lin.reset_parameters()
        self.op.reset_parameters()
        with torch.no_grad():
            self.identity.zero_()

    def _prepare(
        self, x: Tensor, index: Tensor | None, ptr: Tensor | None, dim_size: int | None, dim: int
    ) -> tuple[Tensor, Tensor, int]:
        """Validate; return ``x`` projected and moved to ``[E, *, F_out]``, ``index``, ``dim_size``."""
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise TypeError(f"x must be a floating point tensor of shape [*, num_elements, {self.in_channels}], got "
                            f"{list(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        check_tensor(x, "x", "float")
        if self.op is None:  # lazy sizes: create the parameters for this input's width
            width = x.size(-1)
            out = width if self.out_channels == -1 else self.out_channels
            self._build(width, out, self.project, self._lazy_operator, self.identity_mode, self.shuffle)
            self.to(device=x.device)
        if x.size(-1) != self.in_channels:
            raise ValueError(f"x has {x.size(-1)} channels (shape {list(x.shape)}), expected in_channels="
                             f"{self.in_channels}")
        dim = dim % x.dim()
        if dim == x.dim() - 1:
            raise ValueError("dim must not be the channel (last) dimension")
        if index is None:
            if ptr is None:
                index = torch.zeros(x.size(dim), dtype=torch.long, device=x.device)
            else:
                check_tensor(ptr, "ptr", "index", 1, shape="[num_segments + 1]")
                counts = ptr[1:] - ptr[:-1]
                if ptr.numel() < 1 or int(ptr[0]) != 0 or int(ptr[-1]) != x.size(dim) or bool((counts < 0).any()):
                    raise ValueError(f"ptr must be non-decreasing offsets from 0 to {x.size(dim)} (size of x "
                                     f"{list(x.shape)} along dim {dim}), got {ptr.tolist()[:8]}...")
                index = torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=x.device), counts)
                dim_size = ptr.numel() - 1 if dim_size is None else dim_size
        dim_size = check_index(index, x.size(dim), dim_size, src_shape=x.shape, dim=dim)
        h = x.movedim(dim, 0)
        if self.lin is not None:
            h = self.lin(h).relu()
        return h, index, dim_size

    def __call__(self, x: Tensor, *args, **kwargs) -> Tensor:
        # PyG's Aggregation.__call__ reads x.dim() before forward runs: check the type first
        check_tensor(x, "x", "float")
        for name in ("index", "ptr"):
            if kwargs.get(name) is not None:
                check_tensor(kwargs[name], name, "index", 1)
        return super().__call__(x, *args, **kwargs)

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
        max_num_elements: int | None = None,  # accepted for PyG compatibility; not needed
    ) -> Tensor:
        dim = dim % x.dim() if isinstance(x, Tensor) and x.dim() else dim
        h, index, dim_size = self._prepare(x, index, ptr, dim_size, dim)
        if self.shuffle and self.training and h.size(0) > 1:
            # tree_reduce stably sorts by index, so a global permutation is a random order
            # within every segment.
            perm = torch.randperm(h.size(0), device=h.device)
            h, index = h[perm], index[perm]
        out = tree_reduce(h, index, self.op, dim_size=dim_size, identity=self.identity)
        # A batch without any pair of elements in one segment (no edges, or in-degrees <= 1)
        # never calls the operator, and an empty one never reads the projection; under
        # DistributedDataParallel such a rank would leave parameters without gradients while
        # the other ranks wait for them. A call on zero elements adds an exact 0 (a sum over
        # nothing) and gives every parameter its true gradient, zero, whatever the batch holds.
        out = out + self.op(h[:0], h[:0]).sum()
        return out.movedim(0, dim)

    def associativity_loss(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
        num_triples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""The paper's associativity regulariser on ``num_triples`` random triples of
        projected elements drawn from the segments of ``x`` (same inputs as :meth:`forward`).
        See :func:`everygraph.nn.associativity_loss`.
        """
        h, index, dim_size = self._prepare(x, index, ptr, dim_size, dim % x.dim())
        if h.dim() > 2:  # [E, B, F]: each of the B leading entries has its own segments
            num_copies = h[0].numel() // self.out_channels if h.size(0) else 1
            h = h.reshape(h.size(0), num_copies, self.out_channels).transpose(0, 1).reshape(-1, self.out_channels)
            offsets = dim_size * torch.arange(num_copies, device=index.device)
            index = (index[None, :] + offsets[:, None]).reshape(-1)
            dim_size *= num_copies
        return associativity_loss(self.op, h, index, num_triples, dim_size, generator)

    def __repr__(self) -> str:
        g = self.op.g if self.op is not None else self.__dict__.get("_lazy_operator")
        op = "gru" if g == "gru" or isinstance(g, GRUOperator) else repr(g)
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, project={self.project}, "
            f"operator={op}, identity={self.identity_mode!r}, shuffle={self.shuffle})"
        )
