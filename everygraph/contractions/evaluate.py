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
    >>> from everygraph.contractions import Pattern, compile_plan, evaluate
    >>> plan = compile_plan([Pattern.from_string("ab,bc,ca->")])
    >>> k4 = torch.ones(1, 4, 4) - torch.eye(4)
    >>> evaluate(plan, k4)  # hom(triangle, K4) = 6 * 4 triangles
    tensor([[24.]])
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..graphlib import check_tensor, to_dense_pairs
from .pattern import VERTEX_LETTERS, Pattern
from .plan import ContractionPlan
from .schedule import Schedule, Workspace, build_schedule

__all__ = [
    "evaluate",
    "evaluate_reference",
    "estimate_memory",
    "Workspace",
    "LAYOUTS",
    "dense_inputs",
    "ContractionMemoryError",
    "available_memory",
    "DEFAULT_MEMORY_FRACTION",
    "SYMMETRIC_MIN_NODES",
]

#: Fraction of the available memory a single :func:`evaluate` call may plan to use.
DEFAULT_MEMORY_FRACTION = 0.5
#: From this graph size on, ``evaluate(symmetric=None)`` computes symmetric products by halves
#: (single-thread CPU, float32: 1.3-1.6x faster per product at n = 512, even at n = 128,
#: 4x slower at n = 32).
SYMMETRIC_MIN_NODES = 256


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
    (densified by :func:`everygraph.graphlib.to_dense_pairs`; its ``edge_attr``, if any,
    appended as channels ``1..``). ``edge_attr`` (dense ``[B, n, n, c']``) is appended after ``adj``'s
    channels. ``mask`` defaults to all nodes present.
    """
    if hasattr(adj, "edge_index") and not isinstance(adj, torch.Tensor):
        if mask is not None:
            raise ValueError("pass mask only with a dense adj; a PyG batch carries its own sizes")
        data = adj
        x, mask = to_dense_pairs(
            None, data.edge_index, getattr(data, "batch", None), getattr(data, "edge_attr", None),
            num_nodes=data.num_nodes,
        )
    else:
        if not isinstance(adj, torch.Tensor):
            raise TypeError(f"adj must be a tensor [B, n, n(, c)] or a PyG Batch, got {type(adj).__name__}")
        if adj.dim() not in (3, 4) or adj.shape[1] != adj.shape[2]:
            raise ValueError(
                f"adj must be square per graph, [B, n, n] or [B, n, n, c]; got shape {tuple(adj.shape)}"
            )
        if not torch.is_floating_point(adj):
            # an integer or bool adjacency would be cast (and a complex one cannot be ordered
            # or normalised): the caller chooses the floating dtype
            raise TypeError(f"adj must be a floating point tensor, got dtype {adj.dtype}; convert it with adj.float()")
        x = adj if adj.dim() == 4 else adj.unsqueeze(-1)
        B, n = x.shape[0], x.shape[1]
        if mask is None:
            mask = torch.ones(B, n, dtype=torch.bool, device=x.device)
        else:
            check_tensor(mask, "mask", "bool", shape="[B, n]")
            if tuple(mask.shape) != (B, n):
                raise ValueError(f"mask must have shape [B, n] = {(B, n)} for adj of shape {tuple(adj.shape)}; got {tuple(mask.shape)}")
            mask = mask.to(device=x.device)
            # The padded part is excluded by selection, not by multiplying with a zero mask:
            # a NaN or inf there (0 * nan = nan) must not reach the real graphs' values.
            pair = mask[:, :, None, None] & mask[:, None, :, None]
            x = torch.where(pair, x, x.new_zeros(()))
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


LAYOUTS = ("channel_last", "channel_first")


def _output_shape(output: str, B: int, n: int, k: int, layout: str) -> tuple[int, ...]:
    nodes = {"invariant": (), "node": (n,), "edge": (n, n)}[output]
    return (B, *nodes, k) if layout == "channel_last" else (B, k, *nodes)


def _channel_view(t: torch.Tensor, k: int, layout: str) -> torch.Tensor:
    """Channel ``k`` of an output tensor in ``layout``: ``[B]``, ``[B, n]`` or ``[B, n, n]``."""
    return t[..., k] if layout == "channel_last" else t[:, k]


def _check_out(out: Any, plan: ContractionPlan, B: int, n: int, layout: str, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    outputs = plan.outputs
    if isinstance(out, torch.Tensor):
        if len(outputs) != 1:
            raise ValueError(f"the plan has outputs {outputs}; pass out as a dict {{output: tensor}}")
        out = {outputs[0]: out}
    if not isinstance(out, dict) or set(out) != set(outputs):
        raise ValueError(f"out must be a tensor (one output type) or a dict with keys {outputs}, got {type(out).__name__}")
    for o, t in out.items():
        want = _output_shape(o, B, n, len(_output_indices(plan)[o]), layout)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
            raise ValueError(f"out[{o!r}] must have shape {want} ({layout}), got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.dtype != dtype or t.device != device:
            raise ValueError(f"out[{o!r}] must be {dtype} on {device} like the input, got {t.dtype} on {t.device}")
    return out


def _schedule_key(slots: list[torch.Tensor], B: int, n: int, symmetric: bool) -> tuple:
    return (B, n, symmetric, tuple((tuple(s.shape), s.stride()) for s in slots))


def _results_key(results: dict[str, torch.Tensor], B: int, n: int, symmetric: bool, layout: str) -> tuple:
    """The schedule key of output tensors in ``layout``: each channel view has the tensor's
    sizes and strides without the channel axis (only its offset differs, which the schedule
    does not depend on), so this names the schedule of those views at a cost independent of
    the number of patterns, and the same one for both layouts of the same memory."""
    channel = -1 if layout == "channel_last" else 1
    views = []
    for o, t in results.items():
        size, stride = list(t.shape), list(t.stride())
        del size[channel], stride[channel]
        views.append((o, tuple(size), tuple(stride)))
    return (B, n, symmetric, ("channels", tuple(views)))


def _output_indices(plan: ContractionPlan) -> dict[str, list[int]]:
    """``{output: plan.indices(output)}``, kept by the plan (per call it cost a pass over all
    patterns per output type)."""
    cached = plan.__dict__.get("_output_indices")
    if cached is None or cached[0] != len(plan.patterns):
        cached = (len(plan.patterns), {o: plan.indices(o) for o in plan.outputs})
        plan.__dict__["_output_indices"] = cached
    return cached[1]


def _channel_slots(plan: ContractionPlan, results: dict[str, torch.Tensor], layout: str) -> list[torch.Tensor]:
    """Channel ``j``'s view of ``results`` at position ``j`` (``[B]``, ``[B, n]``, ``[B, n, n]``)."""
    slots: list[torch.Tensor] = [None] * plan.num_patterns  # type: ignore[list-item]
    for o, indices in _output_indices(plan).items():
        for j, view in zip(indices, results[o].unbind(-1 if layout == "channel_last" else 1)):
            slots[j] = view
    return slots


def _get_schedule(plan: ContractionPlan, slots: list[torch.Tensor], B: int, n: int, symmetric: bool, key: tuple | None = None) -> tuple[tuple, Schedule]:
    """The schedule writing into ``slots`` (any device; only sizes and strides are read),
    planned once per ``key`` (default: the slots' own key). ``slots`` may be a callable
    returning them, called only when the schedule has to be planned."""
    if key is None:
        slots = slots() if callable(slots) else slots
        key = _schedule_key(slots, B, n, symmetric)
    cache = plan.__dict__.setdefault("_schedules", {})
    schedule = cache.get(key)
    if schedule is None:
        slots = slots() if callable(slots) else slots
        metas = [torch.empty_strided(tuple(s.shape), s.stride(), device="meta") for s in slots]
        schedule = build_schedule(plan, B, n, metas, symmetric=symmetric)
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = schedule
    return key, schedule


def evaluate(
    plan: ContractionPlan,
    adj: Any,
    mask: torch.Tensor | None = None,
    edge_attr: Any = None,
    as_matrix: bool = False,
    memory_limit: int | float | None = None,
    out: torch.Tensor | dict[str, torch.Tensor] | None = None,
    layout: str = "channel_last",
    workspace: Workspace | None = None,
    symmetric: bool | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Evaluate every pattern of ``plan`` on a batch of graphs.

    Args:
        plan: from :func:`~everygraph.contractions.compile_plan`.
        adj: ``[B, n, n]`` or ``[B, n, n, c]`` dense padded input (adjacency, node features
            on the diagonal, edge features as channels), or a PyG ``Batch``.
        mask: ``[B, n]`` bool, True for real nodes (default: all).
        edge_attr: optional dense ``[B, n, n, c']`` channels appended after ``adj``'s.
        as_matrix: return one ``[B, n, n, k]`` tensor in pattern order (PPGN convention:
            invariants broadcast over real node pairs, node values on the diagonal).
        memory_limit: bytes the call may use (estimated before allocating: inputs, the
            workspace of intermediates, the output); default :data:`DEFAULT_MEMORY_FRACTION`
            of :func:`available_memory`; ``float("inf")`` disables the check.
        out: where to write the result (a tensor, or a dict ``{output: tensor}`` when the
            plan has several output types) with the shapes ``layout`` names, any strides;
            each pattern's kernel writes its channel in place. Not with autograd.
        layout: ``"channel_last"`` (``[B, k]``, ``[B, n, k]``, ``[B, n, n, k]``) or
            ``"channel_first"`` (``[B, k]``, ``[B, k, n]``, ``[B, k, n, n]``).
        workspace: a :class:`~everygraph.contractions.Workspace` holding the intermediates
            between calls (default: one kept by the plan); with ``out`` given, repeated calls on
            batches of the same shape allocate no tensor of an intermediate's or the
            output's size.
        symmetric: compute each matrix product whose result is known to be symmetric
            (undirected patterns only, e.g. ``A @ A``) as its upper block rows plus the
            lower-right block, mirroring the rest: 3/4 of the FLOPs, equal in exact
            arithmetic. ``None`` (default): only for ``n >=`` :data:`SYMMETRIC_MIN_NODES`,
            where it was measured to pay; below, the extra kernel calls cost more.

    Returns:
        invariant ``[B, k]``, node ``[B, n, k]`` or edge ``[B, n, n, k]`` (channel-last; or the
        ``channel_first`` shapes) when the plan has one output type; otherwise a dict
        ``{output: tensor}`` whose channels follow ``plan.indices(output)``. Without ``out``,
        the memory is channel-first (each channel contiguous) and the channel-last result is
        a view of it.

    Raises:
        ValueError: non-square ``adj``, wrong ``mask`` shape, too few channels, a bad ``out``
            or ``layout``.
        ContractionMemoryError: the estimated peak memory exceeds ``memory_limit``.
    """
    if not isinstance(plan, ContractionPlan):
        raise TypeError(f"plan must be a ContractionPlan (use compile_plan(patterns)), got {type(plan).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if workspace is not None and not isinstance(workspace, Workspace):
        raise TypeError(f"workspace must be a Workspace, got {type(workspace).__name__}")
    x, mask = dense_inputs(adj, mask, edge_attr)
    B, n, _, c = x.shape
    if c < plan.num_channels:
        raise ValueError(f"the plan reads {plan.num_channels} channels but the input has {c} (shape {tuple(x.shape)})")
    symmetric = n >= SYMMETRIC_MIN_NODES if symmetric is None else bool(symmetric)
    if as_matrix and out is not None:
        raise ValueError("out= is not supported with as_matrix=True")
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if needs_grad and out is not None:
        raise ValueError("out= cannot record autograd; call under torch.no_grad() or drop out=")
    if out is not None:
        out = _check_out(out, plan, B, n, layout, x.dtype, x.device)
    limit = DEFAULT_MEMORY_FRACTION * available_memory(x.device) if memory_limit is None else memory_limit
    element = x.element_size()
    out_elements = 0 if out is not None else sum(math.prod(_output_shape(o, B, n, len(plan.indices(o)), layout)) for o in plan.outputs)
    if as_matrix:
        out_elements += B * n * n * plan.num_patterns
    if needs_grad:
        estimate = plan.peak_memory(n, B, element_size=element, num_channels=c) + (B * n * n * plan.num_patterns * element if as_matrix else 0)
        _guard(plan, B, n, estimate, limit)
        results = _evaluate_autograd(plan, x, mask)
        results = {o: v if layout == "channel_last" else v.movedim(-1, 1) for o, v in results.items()}
    else:
        nodes = {"invariant": 0, "node": 1, "edge": 2}
        if out is None:
            # channel-first storage (every channel a contiguous block) that the result views;
            # planned and guarded on meta tensors of its strides before anything is allocated
            def fresh(device):
                storage = {o: torch.empty((len(plan.indices(o)), B) + (n,) * nodes[o], dtype=x.dtype, device=device) for o in plan.outputs}
                return {o: t.movedim(0, -1) if layout == "channel_last" else t.movedim(0, 1) for o, t in storage.items()}

            shapes = fresh("meta")
        else:
            shapes = out
        key, schedule = _get_schedule(
            plan, lambda: _channel_slots(plan, shapes, layout), B, n, symmetric, _results_key(shapes, B, n, symmetric, layout)
        )
        if limit != float("inf"):
            _guard(plan, B, n, _scheduled_bytes(plan, schedule, B, n, c, element) + out_elements * element, limit)
        results = fresh(x.device) if out is None else out
        _evaluate_scheduled(plan, x, mask, results, layout, workspace, key, schedule)
    if as_matrix:
        return _as_matrix(plan, results, mask, x, layout)
    if len(results) == 1:
        return next(iter(results.values()))
    return results


def _guard(plan: ContractionPlan, B: int, n: int, estimate: float, limit: float) -> None:
    if estimate > limit:
        raise ContractionMemoryError(
            f"evaluating {plan.num_patterns} patterns on a batch [B={B}, n={n}] needs an estimated "
            f"{estimate / 2**30:.2f} GiB, above the limit of {limit / 2**30:.2f} GiB; evaluate smaller "
            f"batches, fewer patterns, or raise memory_limit"
        )


def estimate_memory(
    plan: ContractionPlan,
    B: int,
    n: int,
    num_channels: int | None = None,
    element_size: int = 4,
    symmetric: bool = False,
    output: bool = True,
    slots: list[torch.Tensor] | None = None,
) -> int:
    """Bytes one scheduled :func:`evaluate` call needs: the masked input channels, the
    workspace (the buffers its schedule plans by liveness) and, with ``output``, the result.
    ``slots`` (the output channels' views, any device) selects the schedule for an ``out=``
    with other strides than the default channel-contiguous output."""
    num_channels = plan.num_channels if num_channels is None else num_channels
    if slots is None:  # the default output: channel-first storage, contiguous channels
        storage = {o: torch.empty(_output_shape(o, B, n, len(plan.indices(o)), "channel_first"), device="meta") for o in plan.outputs}
        key = _results_key(storage, B, n, symmetric, "channel_first")
        _, schedule = _get_schedule(plan, lambda: _channel_slots(plan, storage, "channel_first"), B, n, symmetric, key)
    else:
        _, schedule = _get_schedule(plan, slots, B, n, symmetric)
    outputs = sum(math.prod(_output_shape(o, B, n, len(plan.indices(o)), "channel_last")) for o in plan.outputs) if output else 0
    return _scheduled_bytes(plan, schedule, B, n, num_channels, element_size) + outputs * element_size


def _scheduled_bytes(plan: ContractionPlan, schedule: Schedule, B: int, n: int, num_channels: int, element_size: int) -> int:
    """Bytes of the masked input channels and of ``schedule``'s workspace."""
    inputs = B * n * n * (num_channels + len(plan.sources) + 2) + B * n
    return int((inputs + schedule.workspace_elements) * element_size)


def _evaluate_scheduled(plan, x, mask, results, layout, workspace, key, schedule) -> None:
    """Run the lowered schedule, writing each channel into ``results`` in place."""
    B, n = x.shape[0], x.shape[1]
    if workspace is None:
        workspace = plan.__dict__.setdefault("_workspace", Workspace())
    entry = workspace.buffers((id(plan), key, x.dtype, x.device), schedule, x.dtype, x.device)
    if "sources" not in entry:
        entry["sources"] = [x.new_empty((B, n)) if s[0] == "mask" else x.new_empty((B, n, n)) for s in plan.sources]
        entry["pair"] = x.new_empty((B, n, n))
        entry["masked"] = x.new_empty((B, n, n))
    sources, pair, masked = entry["sources"], entry["pair"], entry["masked"]
    maskf = sources[0]
    maskf.copy_(mask)
    torch.mul(maskf[:, :, None], maskf[:, None, :], out=pair)
    for i, source in enumerate(plan.sources):
        if source[0] == "mask":
            if i:
                sources[i].copy_(maskf)
            continue
        _, channel, directed = source
        if directed:
            torch.mul(x[..., channel], pair, out=sources[i])
        else:
            torch.mul(x[..., channel], pair, out=masked)
            torch.add(masked, masked.transpose(1, 2), out=sources[i])
            sources[i].mul_(0.5)
    # the kernels write through views of the output tensors: bound anew when those move
    bound_key = tuple(t.data_ptr() for t in results.values())
    if entry["bound_key"] != bound_key:
        entry["bound"] = schedule.bind(sources, entry["buffers"], _channel_slots(plan, results, layout), entry["bound"])
        entry["bound_key"] = bound_key
    for op in entry["bound"]:
        op()


def _as_matrix(plan: ContractionPlan, results: dict[str, torch.Tensor], mask: torch.Tensor, x: torch.Tensor, layout: str) -> torch.Tensor:
    B, n = mask.shape
    maskf = mask.to(x.dtype)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    pair_mask = maskf[:, :, None] * maskf[:, None, :]
    out = x.new_empty((plan.num_patterns, B, n, n))
    for o in plan.outputs:
        for k, j in enumerate(plan.indices(o)):
            v = _channel_view(results[o], k, layout)
            if o == "invariant":
                out[j] = v[:, None, None] * pair_mask
            elif o == "node":
                out[j] = v[:, :, None] * eye
            else:
                out[j] = v
    return out.movedim(0, -1)


def _evaluate_autograd(plan: ContractionPlan, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The einsum-per-step execution (fresh tensors, so autograd can record it)."""
    B, n = x.shape[0], x.shape[1]
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
    return {o: buffers[o].movedim(0, -1) for o in buffers}


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
