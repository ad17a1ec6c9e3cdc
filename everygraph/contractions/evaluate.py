"""Batched evaluation of compiled polynomial patterns, and the plain reference.

``evaluate(plan, adj, mask)`` runs a :class:`~everygraph.contractions.ContractionPlan` on a
padded dense batch. Each pattern's value is its einsum (see :mod:`.pattern`),

.. math::
    P_H(X)_{i_s} = \\sum_{i: V \\to [n]} \\prod_{(r, t) \\in E} X^{(c_{rt})}_{i_r i_t},

where ``X`` is first multiplied by the node mask on both sides, so padded nodes contribute
nothing; special vertices without edges use the mask as their all-ones operand, so every
output is zero at padded positions.

:func:`evaluate_reference` is the same formula executed the way the authors' code does it:
one graph at a time, one pattern at a time, operands contracted left to right.

Example:
    >>> import torch
    >>> from everygraph.contractions import Pattern, compile, evaluate
    >>> plan = compile([Pattern.from_string("ab,bc,ca->")])
    >>> k4 = torch.ones(1, 4, 4) - torch.eye(4)
    >>> evaluate(plan, k4)  # hom(triangle, K4) = 6 * 4 triangles
    tensor([[24.]])
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .pattern import VERTEX_LETTERS, Pattern
from .plan import ContractionPlan

__all__ = [
    "evaluate",
    "evaluate_reference",
    "dense_inputs",
    "ContractionMemoryError",
    "available_memory",
    "DEFAULT_MEMORY_FRACTION",
]

#: Fraction of the available memory a single :func:`evaluate` call may plan to use.
DEFAULT_MEMORY_FRACTION = 0.5


class ContractionMemoryError(MemoryError, ValueError):
    """A contraction was refused because its estimated peak memory exceeds the limit."""


def available_memory(device: torch.device | str = "cpu") -> int:
    """Free bytes on ``device`` (CUDA: ``mem_get_info``; CPU: ``MemAvailable`` of
    ``/proc/meminfo``, else physical memory, else 8 GiB)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def dense_inputs(
    adj: Any, mask: torch.Tensor | None = None, edge_attr: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise the accepted inputs to ``(X [B, n, n, c] float, mask [B, n] bool)``.

    ``adj`` is ``[B, n, n]`` (one channel), ``[B, n, n, c]``, or a PyG ``Batch``/``Data``
    (adjacency from ``to_dense_adj``; its ``edge_attr``, if any, densified and appended as
    channels ``1..``). ``edge_attr`` (dense ``[B, n, n, c']``) is appended after ``adj``'s
    channels. ``mask`` defaults to all nodes present.
    """
    if hasattr(adj, "edge_index") and not isinstance(adj, torch.Tensor):
        from torch_geometric.utils import to_dense_adj

        data = adj
        batch = getattr(data, "batch", None)
        num_nodes = data.num_nodes
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=data.edge_index.device)
        counts = torch.bincount(batch, minlength=int(batch.max()) + 1 if num_nodes else 1)
        n = int(counts.max()) if num_nodes else 0
        dense = to_dense_adj(data.edge_index, batch, max_num_nodes=n, batch_size=counts.numel())
        channels = [dense.unsqueeze(-1)]
        if getattr(data, "edge_attr", None) is not None:
            ea = data.edge_attr.to(dense.dtype)
            ea = ea.unsqueeze(-1) if ea.dim() == 1 else ea
            channels.append(to_dense_adj(data.edge_index, batch, ea, max_num_nodes=n, batch_size=counts.numel()))
        x = torch.cat(channels, dim=-1)
        if mask is not None:
            raise ValueError("pass mask only with a dense adj; a PyG batch carries its own sizes")
        mask = torch.arange(n, device=x.device).unsqueeze(0) < counts.unsqueeze(1)
    else:
        if not isinstance(adj, torch.Tensor):
            raise TypeError(f"adj must be a tensor [B, n, n(, c)] or a PyG Batch, got {type(adj).__name__}")
        if adj.dim() not in (3, 4) or adj.shape[1] != adj.shape[2]:
            raise ValueError(
                f"adj must be square per graph, [B, n, n] or [B, n, n, c]; got shape {tuple(adj.shape)}"
            )
        x = adj if adj.dim() == 4 else adj.unsqueeze(-1)
        if not torch.is_floating_point(x):
            x = x.to(torch.get_default_dtype())
        B, n = x.shape[0], x.shape[1]
        if mask is None:
            mask = torch.ones(B, n, dtype=torch.bool, device=x.device)
        elif tuple(mask.shape) != (B, n):
            raise ValueError(f"mask must have shape [B, n] = {(B, n)} for adj of shape {tuple(adj.shape)}; got {tuple(mask.shape)}")
        mask = mask.to(device=x.device).bool()
    if edge_attr is not None:
        if not isinstance(edge_attr, torch.Tensor):
            raise TypeError("edge_attr must be a dense tensor [B, n, n, c]")
        ea = edge_attr if edge_attr.dim() == 4 else edge_attr.unsqueeze(-1) if edge_attr.dim() == 3 else None
        if ea is None or tuple(ea.shape[:3]) != tuple(x.shape[:3]):
            raise ValueError(f"edge_attr must have shape [B, n, n, c] with [B, n, n] = {tuple(x.shape[:3])}; got {tuple(edge_attr.shape)}")
        x = torch.cat([x, ea.to(x.dtype)], dim=-1)
    return x, mask


def _result_shapes(plan: ContractionPlan, B: int, n: int) -> dict[str, tuple[int, ...]]:
    return {
        o: {"invariant": (B,), "node": (B, n), "edge": (B, n, n)}[o] + (len(plan.indices(o)),) for o in plan.outputs
    }


def evaluate(
    plan: ContractionPlan,
    adj: Any,
    mask: torch.Tensor | None = None,
    edge_attr: Any = None,
    as_matrix: bool = False,
    memory_limit: int | float | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Evaluate every pattern of ``plan`` on a batch of graphs.

    Args:
        plan: from :func:`~everygraph.contractions.compile`.
        adj: ``[B, n, n]`` or ``[B, n, n, c]`` dense padded input (adjacency, node features
            on the diagonal, edge features as channels), or a PyG ``Batch``.
        mask: ``[B, n]`` bool, True for real nodes (default: all).
        edge_attr: optional dense ``[B, n, n, c']`` channels appended after ``adj``'s.
        as_matrix: return one ``[B, n, n, k]`` tensor in pattern order (PPGN convention:
            invariants broadcast over real node pairs, node values on the diagonal).
        memory_limit: bytes the call may use (estimated with :meth:`ContractionPlan.peak_memory`
            before allocating); default :data:`DEFAULT_MEMORY_FRACTION` of
            :func:`available_memory`; ``float("inf")`` disables the check.

    Returns:
        invariant ``[B, k]``, node ``[B, n, k]`` or edge ``[B, n, n, k]`` when the plan has one
        output type; otherwise a dict ``{output: tensor}`` whose channels follow
        ``plan.indices(output)``. Edge and node results are views with the channel axis last.

    Raises:
        ValueError: non-square ``adj``, wrong ``mask`` shape, too few channels.
        ContractionMemoryError: the estimated peak memory exceeds ``memory_limit``.
    """
    if not isinstance(plan, ContractionPlan):
        raise TypeError(f"plan must be a ContractionPlan (use compile(patterns)), got {type(plan).__name__}")
    x, mask = dense_inputs(adj, mask, edge_attr)
    B, n, _, c = x.shape
    if c < plan.num_channels:
        raise ValueError(f"the plan reads {plan.num_channels} channels but the input has {c} (shape {tuple(x.shape)})")
    estimate = plan.peak_memory(n, B, element_size=x.element_size(), num_channels=c)
    if as_matrix:
        estimate += B * n * n * plan.num_patterns * x.element_size()
    limit = DEFAULT_MEMORY_FRACTION * available_memory(x.device) if memory_limit is None else memory_limit
    if estimate > limit:
        raise ContractionMemoryError(
            f"evaluating {plan.num_patterns} patterns on a batch [B={B}, n={n}] needs an estimated "
            f"{estimate / 2**30:.2f} GiB, above the limit of {limit / 2**30:.2f} GiB; evaluate smaller "
            f"batches, fewer patterns, or raise memory_limit"
        )
    maskf = mask.to(x.dtype)
    x = x * maskf[:, :, None, None] * maskf[:, None, :, None]
    tensors: dict[int, torch.Tensor] = {}
    for i, source in enumerate(plan.sources):
        if source[0] == "mask":
            tensors[i] = maskf
        else:
            _, channel, directed = source
            xc = x[..., channel]
            tensors[i] = xc if directed else 0.5 * (xc + xc.transpose(1, 2))
    last_use = plan._last_use()
    keep = set(range(len(plan.sources)))
    for i, step in enumerate(plan.steps):
        tensors[step.out] = torch.einsum(step.eq, *[tensors[t] for t in step.inputs])
        for t in set(step.inputs):
            if last_use.get(t) == i and t not in keep:
                del tensors[t]
    shapes = _result_shapes(plan, B, n)
    # Channel-first buffers: writing whole [B, n, n] slabs is contiguous.
    buffers = {o: x.new_empty((shape[-1],) + shape[:-1]) for o, shape in shapes.items()}
    position = {}
    for o in plan.outputs:
        for k, j in enumerate(plan.indices(o)):
            position[j] = (o, k)
    done: dict[int, tuple[str, int]] = {}
    for j, slot in enumerate(plan.pattern_slot):
        o, k = position[j]
        if slot in done:
            buffers[o][k] = buffers[done[slot][0]][done[slot][1]]
            continue
        _assemble(plan.assemblies[slot], tensors, buffers[o][k])
        done[slot] = (o, k)
    results = {o: buffers[o].movedim(0, -1) for o in buffers}
    if as_matrix:
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        pair_mask = maskf[:, :, None] * maskf[:, None, :]
        out = x.new_empty((plan.num_patterns, B, n, n))
        for j in range(plan.num_patterns):
            o, k = position[j]
            v = buffers[o][k]
            if o == "invariant":
                out[j] = v[:, None, None] * pair_mask
            elif o == "node":
                out[j] = v[:, :, None] * eye
            else:
                out[j] = v
        return out.movedim(0, -1)
    if len(results) == 1:
        return next(iter(results.values()))
    return results


def _mul_into(target: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    if torch.is_grad_enabled() and (left.requires_grad or right.requires_grad):
        target.copy_(left * right)  # out= does not support autograd
    else:
        torch.mul(left, right, out=target)


def _assemble(a, tensors: dict[int, torch.Tensor], out: torch.Tensor) -> None:
    """Write one distinct pattern's value into ``out`` (``[B]``, ``[B, n]`` or ``[B, n, n]``)
    directly, without temporaries of the output's size."""
    B = out.shape[0]
    scalar = None
    for t in a.scalars:
        scalar = tensors[t] if scalar is None else scalar * tensors[t]
    if a.output == "invariant":
        out.copy_(scalar) if scalar is not None else out.fill_(1.0)
        return
    if a.diagonal:
        out.zero_()
    target = torch.diagonal(out, dim1=1, dim2=2) if a.diagonal else out
    if len(a.rooted) == 2:
        (ta, _), (tb, _) = a.rooted
        va = tensors[ta] if scalar is None else tensors[ta] * scalar[:, None]
        _mul_into(target, va[:, :, None], tensors[tb][:, None, :])
    else:
        t, perm = a.rooted[0]
        value = tensors[t]
        if perm != tuple(range(len(perm))):
            value = value.permute(0, *[1 + p for p in perm])
        if scalar is None:
            target.copy_(value)
        else:
            _mul_into(target, value, scalar.view(B, *([1] * (value.dim() - 1))))


def _left_to_right(eq: str, operands: list[torch.Tensor]) -> torch.Tensor:
    """Contract einsum operands strictly left to right, summing an index as soon as no later
    operand and not the output needs it (no path optimisation)."""
    lhs, rhs = eq.split("->")
    terms = lhs.split(",")
    acc, acc_t = terms[0], operands[0]
    for k in range(1, len(terms)):
        later = set("".join(terms[k + 1 :])) | set(rhs)
        keep = "".join(ch for ch in dict.fromkeys(acc + terms[k]) if ch in later)
        acc_t = torch.einsum(f"{acc},{terms[k]}->{keep}", acc_t, operands[k])
        acc = keep
    return torch.einsum(f"{acc}->{rhs}", acc_t)


def evaluate_reference(
    patterns: list[Pattern], adj: torch.Tensor, mask: torch.Tensor | None = None, edge_attr: Any = None
) -> list[torch.Tensor]:
    """The plain execution: for each graph and each pattern, the pattern's einsum contracted
    left to right on the graph's own (unpadded) ``[n_g, n_g, c]`` input.

    Returns:
        one tensor per pattern: ``[B]``, ``[B, n, n]``... like :func:`evaluate`'s channels
        (node ``[B, n]``, edge ``[B, n, n]``), zero at padded positions.
    """
    x, mask = dense_inputs(adj, mask, edge_attr)
    B, n = x.shape[0], x.shape[1]
    results = []
    for p in patterns:
        shape = {"invariant": (B,), "node": (B, n), "edge": (B, n, n)}[p.output]
        out = x.new_zeros(shape)
        base = Pattern(p.edges, p.special[:1], p.num_vertices, p.directed, p.channels) if p.is_diagonal else p
        letters = [VERTEX_LETTERS[v] for v in range(base.num_vertices)]
        for g in range(B):
            idx = mask[g].nonzero().flatten()
            xg = x[g][idx][:, idx]
            ng = idx.numel()
            ops, terms = [], []
            for (u, v), ch in zip(base.edges, base.channels):
                xc = xg[..., ch]
                ops.append(xc if base.directed else 0.5 * (xc + xc.T))
                terms.append(letters[u] + letters[v])
            for v in base.isolated_vertices:
                ops.append(xg.new_ones(ng))
                terms.append(letters[v])
            rhs = "".join(letters[s] for s in base.special)
            if not ops:
                value = xg.new_ones(())
            else:
                with torch.backends.opt_einsum.flags(enabled=False):
                    value = _left_to_right(",".join(terms) + "->" + rhs, ops)
            if p.is_diagonal:
                value = torch.diag(value)
            if p.output == "invariant":
                out[g] = value
            elif p.output == "node":
                out[g, idx] = value
            else:
                out[g, idx[:, None], idx[None, :]] = value
        results.append(out)
    return results
