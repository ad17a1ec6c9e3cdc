r"""Transition kinds and boundary gates of the scan engine (the algebra, written once).

A state :math:`C \in \mathbb{R}^{d_k \times d_v}` (per head) moves along a line-graph edge by a
linear map :math:`C \mapsto T(C)`. The *kind* says which family :math:`T` belongs to and the
trailing shape of the tensor that holds it:

=============== ======================= =====================================================
kind            gate shape (trailing)   map
=============== ======================= =====================================================
``scalar``      ``()``                  :math:`t\,C` (pLSTM, Mamba-2/SSD, RetNet, simple GLA)
``diagonal``    ``(dk,)``               :math:`\mathrm{diag}(\alpha)\,C` (GLA, HGRN2)
``elementwise`` ``(dk, dv)``            :math:`A \odot C` (Mamba-1: :math:`e^{\Delta_d A_{dn}}`)
``householder`` ``(r, dk + 2)``         :math:`F_{r-1} \cdots F_0\, C`,
                                        :math:`F_i = \gamma_i (I - \beta_i w_i w_i^\top)`
=============== ======================= =====================================================

For ``householder`` row ``i`` of the gate packs :math:`(w_i \in \mathbb{R}^{d_k}, \beta_i,
\gamma_i)`: ``gate[..., i, :dk]`` = :math:`w_i`, ``gate[..., i, dk]`` = :math:`\beta_i`,
``gate[..., i, dk + 1]`` = :math:`\gamma_i` (a scalar gate per factor; 1 for plain
DeltaNet/DeltaProduct). Factor 0 is applied first.

Sources and marks are per-edge *weights*: a scalar per head ``[..., H]`` or an elementwise
weight ``[..., H, dk, dv]`` (any kind), applied as :func:`apply_weight`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

KINDS = ("scalar", "diagonal", "elementwise", "householder")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def gate_dims(kind: str) -> int:
    """Number of trailing dimensions a transition of this kind adds to ``[..., H]``."""
    return {"scalar": 0, "diagonal": 1, "elementwise": 2, "householder": 2}[kind]


def gate_shape(kind: str, dk: int, dv: int, gate: Tensor | None = None) -> list[int]:
    """The trailing shape of a transition of ``kind`` (``householder``: ``r`` read from ``gate``)."""
    if kind == "scalar":
        return []
    if kind == "diagonal":
        return [dk]
    if kind == "elementwise":
        return [dk, dv]
    factors = gate.shape[-2] if gate is not None and gate.dim() >= 2 else 1
    return [factors, dk + 2]


def decay_multiplier(kind: str, gate: Tensor) -> Tensor:
    """A ``scalar``, ``diagonal`` or ``elementwise`` gate ``[..., *gate_shape]`` as a multiplier
    that broadcasts against states ``[..., dk, dv]``."""
    if kind == "scalar":
        return gate[..., None, None]
    if kind == "diagonal":
        return gate[..., :, None]
    return gate


def apply_transition(kind: str, gate: Tensor, state: Tensor) -> Tensor:
    r"""The map :math:`T(C)` of one kind, batched: ``gate`` ``[..., *gate_shape]``,
    ``state`` ``[..., dk, dv]`` (leading dimensions broadcast)."""
    if kind != "householder":
        return decay_multiplier(kind, gate) * state
    dk = state.shape[-2]
    for i in range(gate.shape[-2]):
        w, beta, gamma = gate[..., i, :dk], gate[..., i, dk], gate[..., i, dk + 1]
        projected = torch.einsum("...k,...kv->...v", w, state)  # w^T C
        state = gamma[..., None, None] * (state - (beta[..., None] * w)[..., :, None] * projected[..., None, :])
    return state


def identity_transition(kind: str, dk: int, dv: int, like: Tensor, lead: tuple[int, ...]) -> Tensor:
    """Gates of the identity map, ``[*lead, *gate_shape]``."""
    if kind == "householder":  # one factor with beta = 0, gamma = 1
        gate = like.new_zeros(*lead, 1, dk + 2)
        gate[..., 0, dk + 1] = 1.0
        return gate
    return like.new_ones(*lead, *gate_shape(kind, dk, dv))


def apply_weight(weight: Tensor, state: Tensor) -> Tensor:
    """A source or mark weight on a state: ``weight`` ``[..., H]`` (scalar) or
    ``[..., H, dk, dv]`` (elementwise); ``state`` ``[..., H, dk, dv]``."""
    if weight.dim() == state.dim():
        return weight * state
    return weight[..., None, None] * state


def weight_is_elementwise(weight: Tensor, per_head_dims: int) -> bool:
    """Whether a source/mark tensor carries ``[dk, dv]`` after its ``per_head_dims`` dims."""
    return weight.dim() == per_head_dims + 2


class Boundary(NamedTuple):
    r"""Gates of the *virtual* edges through which states enter and leave a structure.

    Every node :math:`n` has one virtual in-edge (carrying ``initial_state[:, n]``) and one
    virtual out-edge (whose state ``return_state`` returns). They are gated like real edges:

    * ``mark`` ``[B, N, H]`` or ``[B, N, H, dk, dv]``: how node ``n`` reads its virtual in-edge;
    * ``source`` ``[B, N, H]`` or ``[B, N, H, dk, dv]``: node ``n``'s source onto its virtual
      out-edge;
    * ``enter`` ``[B, E, H, *gate]``: transition from the virtual in-edge of edge ``e``'s tail
      into ``e``;
    * ``leave`` ``[B, E, H, *gate]``: transition from ``e`` into the virtual out-edge of its head;
    * ``through`` ``[B, N, H, *gate]``: from node ``n``'s virtual in-edge to its virtual out-edge.

    A field left ``None`` is the identity (weight 1). All ``None`` is the unit convention: a
    state passed in is read and passed on unchanged. To cut a structure into pieces that
    compose, give each piece the gates of the edges its cut removes
    (:func:`~everygraph.sequence.lattice_gates` with ``boundary_axis`` does this on lattices).
    """

    mark: Tensor | None = None
    source: Tensor | None = None
    enter: Tensor | None = None
    leave: Tensor | None = None
    through: Tensor | None = None


def resolve_boundary(boundary: Boundary | None, kind: str, B: int, N: int, E: int, H: int, dk: int, dv: int, like: Tensor) -> Boundary:
    """Every field of ``boundary`` as a tensor (identities where ``None``)."""
    boundary = boundary if boundary is not None else Boundary()
    return Boundary(
        mark=boundary.mark if boundary.mark is not None else like.new_ones(B, N, H),
        source=boundary.source if boundary.source is not None else like.new_ones(B, N, H),
        enter=boundary.enter if boundary.enter is not None else identity_transition(kind, dk, dv, like, (B, E, H)),
        leave=boundary.leave if boundary.leave is not None else identity_transition(kind, dk, dv, like, (B, E, H)),
        through=boundary.through if boundary.through is not None else identity_transition(kind, dk, dv, like, (B, N, H)),
    )


class ExponentialDecay(NamedTuple):
    r"""An elementwise decay that depends only on a node, held as its factors:
    :math:`\exp(r_n A)`, ``[dk, dv]`` per head, for node :math:`n` (Mamba-1's
    :math:`e^{\Delta_n A}`, with :math:`r = \Delta`).

    :func:`~everygraph.sequence.scan` takes it, with ``kind="elementwise"``, in place of a flat
    gate tensor: as ``transition`` it is the map of every line-graph edge through node ``n``; as
    ``mark`` or ``boundary.leave`` the weight of every edge entering ``n``; as ``source`` or
    ``boundary.enter`` of every edge leaving ``n``; as ``boundary.through`` node ``n``'s own.
    Executions that need the flat tensor get :meth:`materialise`; the Mamba kernels form
    :math:`\exp(r_n A)` where they use it and never store the ``[B, N, H, dk, dv]`` decays.

    * ``rate``: ``[B, N, H]`` (one per node and head);
    * ``A``: ``[H, dk, dv]``.
    """

    rate: Tensor
    A: Tensor

    def materialise(self, nodes: Tensor | None = None) -> Tensor:
        """The decays of the rows whose node is ``nodes[i]`` (all nodes when None),
        ``[B, len(nodes), H, dk, dv]``."""
        rate = self.rate if nodes is None else self.rate[:, nodes]
        return torch.exp(rate[..., None, None] * self.A)


class NodeWeight(NamedTuple):
    """A scalar source or mark weight that depends only on a node: ``weight`` ``[B, N, H]``.
    As ``source`` it weights every edge leaving node ``n``, as ``mark`` every edge entering it
    (:func:`~everygraph.sequence.scan`; Mamba-1's input step :math:`\\Delta_n`)."""

    weight: Tensor

    def materialise(self, nodes: Tensor | None = None) -> Tensor:
        """The weights of the rows whose node is ``nodes[i]``, ``[B, len(nodes), H]``."""
        return self.weight if nodes is None else self.weight[:, nodes]


FACTORED = (ExponentialDecay, NodeWeight)


def materialise_factored(src: Tensor, dst: Tensor, line_node: Tensor, source, transition, mark, boundary):
    """The flat tensors of :func:`~everygraph.sequence.scan` for operands given in a factored
    form (:class:`ExponentialDecay`, :class:`NodeWeight`): each row gathered from its node
    (``src``, ``dst``: the tail and head of every edge; ``line_node``: the node of every
    line-graph edge). Other operands pass through."""

    def flat(name: str, value, nodes: Tensor | None):
        if not isinstance(value, FACTORED):
            return value
        for field, t in zip(value._fields, value):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}.{field} must be a torch.Tensor, got {type(t).__name__}")
        if value[0].dim() != 3:
            raise ValueError(f"{name}.{value._fields[0]} must have shape [B, N, H] (one per node), got {list(value[0].shape)}")
        return value.materialise(None if nodes is None else nodes.to(value[0].device))

    source, transition, mark = flat("source", source, src), flat("transition", transition, line_node), flat("mark", mark, dst)
    if isinstance(boundary, Boundary):
        boundary = Boundary(
            mark=flat("boundary.mark", boundary.mark, None), source=flat("boundary.source", boundary.source, None),
            enter=flat("boundary.enter", boundary.enter, src), leave=flat("boundary.leave", boundary.leave, dst),
            through=flat("boundary.through", boundary.through, None),
        )
    return source, transition, mark, boundary
