"""Flat (per node / edge / line-graph edge) and dense per-node gate layouts on lattices."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from ...graphlib import DAG, Lattice, check_tensor


class LatticeLayout(NamedTuple):
    """Index maps from the canonical dense layout of a lattice to its flat layout.

    The canonical layout is the lattice with every flipped axis reversed, so that all edges
    go from coordinate ``c`` to ``c + 1``; positions are row-major over ``shape``.

    Attributes:
        node: ``[N]`` node id at each canonical position.
        position: ``[N]`` canonical position of each node id (the inverse of ``node``).
        out_edge: ``[N, ndim]`` id of the edge leaving each position along each axis, or
            ``E`` (a sentinel for "no edge": index a zero-padded flat tensor).
        in_edge: ``[N, ndim]`` id of the edge entering along each axis, or ``E``.
        line: ``[N, ndim, ndim]`` id of the line-graph edge from the in-edge along axis
            ``j`` to the out-edge along axis ``i`` (``[..., i, j]``), or ``L``.
        num_edges, num_lines: ``E`` and ``L``.
    """

    node: Tensor
    position: Tensor
    out_edge: Tensor
    in_edge: Tensor
    line: Tensor
    num_edges: int
    num_lines: int


@lru_cache(maxsize=64)
def _lattice_dag(shape: tuple[int, ...], flip: tuple[bool, ...]) -> DAG:
    dag = Lattice(shape, flip).to_dag()
    dag.line_graph()  # cached on the DAG, as is the wavefront plan
    return dag


def lattice_dag(lattice: Lattice) -> DAG:
    """``lattice.to_dag()``, cached per shape and orientation (with its line graph)."""
    return _lattice_dag(lattice.shape, lattice.flip)


@lru_cache(maxsize=64)
def _layout(shape: tuple[int, ...], flip: tuple[bool, ...]) -> LatticeLayout:
    lattice = Lattice(shape, flip)
    n, ndim = lattice.num_nodes, lattice.ndim
    coords = lattice.all_coords()
    canonical = torch.stack(
        [size - 1 - coords[:, a] if flip[a] else coords[:, a] for a, size in enumerate(shape)], dim=1
    )
    strides = torch.tensor(lattice.strides, dtype=torch.long)
    position = (canonical * strides).sum(1)  # canonical position of each node id
    node = torch.empty(n, dtype=torch.long)
    node[position] = torch.arange(n)
    src, dst = lattice.edge_index
    axis = lattice.edge_axis
    num_edges = src.numel()
    edge_ids = torch.arange(num_edges)
    out_edge = torch.full((n, ndim), num_edges, dtype=torch.long)
    in_edge = torch.full((n, ndim), num_edges, dtype=torch.long)
    out_edge[position[src], axis] = edge_ids
    in_edge[position[dst], axis] = edge_ids
    line_graph = _lattice_dag(shape, flip).line_graph()
    num_lines = line_graph.node.numel()
    line = torch.full((n, ndim, ndim), num_lines, dtype=torch.long)
    e_in, e_out = line_graph.edge_index
    line[position[line_graph.node], axis[e_out], axis[e_in]] = torch.arange(num_lines)
    return LatticeLayout(node, position, out_edge, in_edge, line, num_edges, num_lines)


def lattice_layout(lattice: Lattice, device: torch.device | None = None) -> LatticeLayout:
    """The (cached) :class:`LatticeLayout` of ``lattice``, on ``device``."""
    layout = _layout(lattice.shape, lattice.flip)
    if device is None or torch.device(device) == layout.node.device:
        return layout
    return layout._replace(**{name: getattr(layout, name).to(device) for name in ("node", "position", "out_edge", "in_edge", "line")})


def take(flat: Tensor, index: Tensor) -> Tensor:
    """``flat[:, index]`` where ``index == flat.shape[1]`` reads zeros (no such edge); every
    other entry of ``index`` appears at most once."""
    padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1, *flat.shape[2:])], dim=1)
    return gather(padded, 1, index)


def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """``x.index_select(dim, index)`` for an ``index`` of any shape (its axes replace ``dim``)
    whose entries are distinct, except possibly ``x.shape[dim] - 1`` (a padding slot whose
    gradient is not needed).

    Why not ``x[:, index]``: on CPU, advanced indexing of rows with trailing axes is about 30x
    slower than ``index_select``, and both backwards accumulate with a scatter; for distinct
    entries the gradient is a gather by the inverse map instead (``grad[inverse]``, zero where
    nothing was taken), as fast as the forward."""
    flat = index.reshape(-1)
    size = x.shape[dim]
    if flat.numel() == size and bool((flat == torch.arange(size, device=flat.device)).all()):
        out = x  # the identity (canonical orders): no copy
    else:
        out = _InjectiveGather.apply(x, dim, flat)
    return out.reshape(*x.shape[:dim], *index.shape, *x.shape[dim + 1:])


def _inverse(index: Tensor, size: int) -> Tensor:
    """``[size]``: where each entry was taken, ``index.numel()`` (a zero slot) where it was not."""
    inverse = torch.full((size,), index.numel(), dtype=index.dtype, device=index.device)
    inverse[index] = torch.arange(index.numel(), dtype=index.dtype, device=index.device)
    return inverse


class _InjectiveGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dim: int, index: Tensor) -> Tensor:
        ctx.dim, ctx.size = dim, x.shape[dim]
        ctx.save_for_backward(index)
        return x.index_select(dim, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        inverse = _inverse(index, ctx.size)
        if index.numel() == ctx.size and not bool((inverse == index.numel()).any()):  # a permutation
            return _InjectiveGather.apply(grad, ctx.dim, inverse), None, None
        zero = grad.new_zeros(*grad.shape[:ctx.dim], 1, *grad.shape[ctx.dim + 1:])
        padded = torch.cat([grad, zero], dim=ctx.dim)
        return _InjectiveGather.apply(padded, ctx.dim, inverse), None, None


def lattice_gates(
    lattice: Lattice,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor | None = None,
    *,
    boundary_axis: int | None = None,
) -> tuple:
    """Dense per-node gates on a lattice -> the flat layout of :func:`plstm_scan` and
    :func:`~everygraph.sequence.scan`.

    A layer computes its gates per node; this keeps, per node, the gates of the edges that
    exist (an edge off the border of the grid has none). Axes are the lattice's own axes,
    whatever its ``flip``: ``source[..., i]`` belongs to the node's out-edge along axis
    ``i`` (towards ``c + 1``, or ``c - 1`` if that axis is flipped).

    The gates of the edges off the border are the *boundary gates*: with ``boundary_axis=a``
    they are returned as a :class:`~everygraph.sequence.Boundary` whose virtual edges are the
    edges along axis ``a`` (node ``n``'s virtual in-edge is its in-edge along ``a``, read with
    ``mark[..., a]``, passed on with ``transition[..., i, a]``; its virtual out-edge is its
    out-edge along ``a``, with ``source[..., a]`` and ``transition[..., a, j]``). This is what
    makes pieces compose: a lattice cut across axis ``a`` (a path at any step; a grid between
    rows for ``a = 0``, between columns for ``a = 1``) scans piece by piece, each piece's
    returned states on its last layer along ``a`` becoming the next piece's ``initial_state``
    on its first layer.

    Args:
        lattice: the structure.
        source: ``[B, *shape, H, ndim]`` (or ``[B, *shape, H, ndim, dk, dv]``, elementwise
            weights), :math:`S` for the out-edge along each axis.
        transition: ``[B, *shape, H, ndim, ndim, *gate]`` (``gate``: the trailing shape of the
            transition kind, none for ``scalar``), ``[..., i, j, *gate]`` is :math:`T` from the
            in-edge along axis ``j`` to the out-edge along axis ``i``.
        mark: ``[B, *shape, H, ndim]`` (or ``[..., ndim, dk, dv]``), :math:`M` for the in-edge
            along each axis.
        direct: ``[B, *shape, H]`` or None.
        boundary_axis: also return the boundary gates of this axis.

    Returns:
        ``(source [B, E, H], transition [B, L, H, *gate], mark [B, E, H])`` and, if given,
        ``direct [B, N, H]``, then, with ``boundary_axis``, the :class:`Boundary`.

    Example:
        >>> lat = Lattice((4, 5), flip=(True, False))
        >>> s, t, m = torch.rand(2, 4, 5, 1, 2), torch.rand(2, 4, 5, 1, 2, 2), torch.rand(2, 4, 5, 1, 2)
        >>> [g.shape[1] for g in lattice_gates(lat, s, t, m)]
        [31, 47, 31]
    """
    from ..transitions import Boundary

    if not isinstance(lattice, Lattice):
        raise TypeError(f"lattice must be an everygraph.graphlib.Lattice, got {type(lattice).__name__}")
    for name, value in (("source", source), ("transition", transition), ("mark", mark), ("direct", direct)):
        if value is not None:
            check_tensor(value, name, "inexact")  # complex: the engine's COMPLEX_EXECUTIONS
    given = {name: value for name, value in (("source", source), ("transition", transition), ("mark", mark),
                                             ("direct", direct)) if value is not None}
    complex_names = [name for name, value in given.items() if value.is_complex()]
    if complex_names and len(complex_names) != len(given):
        raise TypeError(f"{complex_names[0]} is complex but {', '.join(n for n in given if n not in complex_names)} "
                        "are real; give every gate one dtype")
    ndim, shape = lattice.ndim, list(lattice.shape)
    batch = source.shape[0] if source.dim() > 0 else 0
    heads = source.shape[len(shape) + 1] if source.dim() > len(shape) + 1 else 0
    base = 1 + ndim + 1  # [B, *shape, H]
    weight_extra = list(source.shape[base + 1:]) if source.dim() > base + 1 else []
    gate_extra = list(transition.shape[base + 2:]) if transition.dim() > base + 2 else []
    expected = dict(
        source=(source, [batch, *shape, heads, ndim, *weight_extra]),
        transition=(transition, [batch, *shape, heads, ndim, ndim, *gate_extra]),
        mark=(mark, [batch, *shape, heads, ndim, *weight_extra]),
    )
    if direct is not None:
        expected["direct"] = (direct, [batch, *shape, heads])
    for name, (t, want) in expected.items():
        if list(t.shape) != want:
            raise ValueError(f"{name} must have shape {want} for {lattice} (dense per-node gates), got {list(t.shape)}")
    if boundary_axis is not None and not 0 <= boundary_axis < ndim:
        raise ValueError(f"boundary_axis must be an axis of {lattice} (0..{ndim - 1}), got {boundary_axis}")
    n = lattice.num_nodes
    src, dst = lattice.edge_index.to(source.device)
    axis = lattice.edge_axis.to(source.device)
    line = lattice_dag(lattice).line_graph()
    line_node, (e_in, e_out) = line.node.to(source.device), line.edge_index.to(source.device)
    # axes next to the node dimension, so that advanced indexing keeps [B, edges, H, ...]
    s = source.reshape(batch, n, heads, ndim, *weight_extra).movedim(3, 2)
    m = mark.reshape(batch, n, heads, ndim, *weight_extra).movedim(3, 2)
    t = transition.reshape(batch, n, heads, ndim, ndim, *gate_extra).movedim(2, 4)
    # gathers along one flattened axis (index_select with a gather as its gradient, see gather)
    per_axis = lambda x, node, a: gather(x.flatten(1, 2), 1, node * ndim + a)  # noqa: E731
    per_pair = lambda node, i, j: gather(t.flatten(1, 3), 1, (node * ndim + i) * ndim + j)  # noqa: E731
    flat = (per_axis(s, src, axis), per_pair(line_node, axis[e_out], axis[e_in]), per_axis(m, dst, axis))
    if direct is not None:
        flat = flat + (direct.reshape(batch, n, heads),)
    if boundary_axis is not None:
        a = boundary_axis
        flat = flat + (
            Boundary(
                mark=m[:, :, a], source=s[:, :, a], enter=per_pair(src, axis, a), leave=per_pair(dst, a, axis), through=t[:, :, a, a]
            ),
        )
    return flat
