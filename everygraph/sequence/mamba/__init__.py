r"""Mamba's selective scan on a path graph: a parameterisation of the scan engine.

A sequence of length ``L`` is the path graph ``graphlib.path_graph(L)`` =
``Lattice((L,))``; ``reverse=True`` is the flipped lattice ``Lattice((L,), flip=(True,))``;
``cu_seqlens`` removes the edges between packed sequences
(:func:`~everygraph.graphlib.packed_paths`). :func:`selective_scan` calls
:func:`~everygraph.sequence.scan` once with Mamba-1's operands: heads = channels, ``dk = N``,
``dv = 1``, ``q = C_t``, ``k = B_t``, ``v = u_t``, source and direct weight :math:`\Delta_t`,
transition and mark :math:`e^{\Delta_t A}` held as its factors
(:class:`~everygraph.sequence.transitions.ExponentialDecay`, never a ``[B, L, D, N]`` tensor);
the skip :math:`D u` and the gate :math:`\mathrm{silu}(z)` are applied outside.
``docs/scan-engine.md`` has the table.

``scan`` recognises that form (``sequence/executions/selective.py``) and runs it on the
kernels of this package, which are also callable on their own, one signature (fla style):

- :func:`selective_scan_reference` (``reference.py``): the plain loop over positions
  (``mamba_ssm``'s reference formula).
- :func:`selective_scan_recurrent` (``recurrent.py``): a time-major recurrence with one
  in-place step per position, everything else vectorised over slabs, and a hand-written
  backward pass that recomputes each slab from its entering state (bounded memory); ``scan``'s
  ``execution="recurrent"``, the default when the fused kernel cannot run.
- :func:`selective_scan_fused` (``fused_cpu.py``): the same recurrence and its adjoint as
  compiled CPU kernels (numba, the optional extra ``everygraph[cpu]``); ``scan``'s
  ``execution="fused"``, the default for CPU tensors when numba is installed and
  ``EVERYGRAPH_DISABLE_JIT`` is not set.

``_inputs.py`` checks the arguments and brings them into one layout for all of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...graphlib import Lattice, packed_paths
from .. import recurrence as engine  # a module, not its names: plstm imports this package while the engine loads
from ..transitions import Boundary, ExponentialDecay, NodeWeight
from ..triton._runtime import require_triton, triton_runs_on
from ._inputs import assemble_final_states, check_flag, final_positions, finish, prepare
from .fused_cpu import NUMBA_AVAILABLE, fused_usable, kernel_softplus, selective_scan_fused
from .recurrent import selective_scan_recurrent
from .reference import selective_scan_reference


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
    *,
    execution: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Mamba's selective scan (a drop-in for ``mamba_ssm``'s ``selective_scan_fn``), on CPU
    and GPU without custom kernels.

    From *Mamba: Linear-Time Sequence Modeling with Selective State Spaces* (Gu & Dao, 2023,
    https://arxiv.org/abs/2312.00752):

    .. math::
        \Delta &= \mathrm{softplus}(\Delta + b_\Delta) \quad\text{(when delta\_softplus)}\\
        h_t &= \exp(\Delta_t A) \odot h_{t-1} + \Delta_t\, u_t\, B_t
              \qquad\text{(ZOH for } A\text{, Euler for } B)\\
        y_t &= \langle h_t, C_t \rangle + D\, u_t, \qquad
        \mathrm{out}_t = y_t \cdot \mathrm{silu}(z_t)

    per channel ``d`` with a state :math:`h_t \in \mathbb{R}^N`. This is the path-graph case of
    the scan engine, and runs as one call of :func:`~everygraph.sequence.scan`: a sequence is
    ``graphlib.path_graph(L)`` (``Lattice((L,))``), channels are heads with ``dk = N`` and
    ``dv = 1``, ``q = C_t``, ``k = B_t``, ``v = u_t``, source and direct weight
    :math:`\Delta_t`, transition and mark :math:`\exp(\Delta_t A)` in the factored form
    :class:`~everygraph.sequence.ExponentialDecay` (module docstring).

    Args:
        u: ``[batch, D, L]`` input.
        delta: ``[batch, D, L]`` step sizes (before ``delta_bias``/softplus).
        A: ``[D, N]`` real state matrix (diagonal per channel; Mamba uses ``-exp(A_log)``).
        B, C: ``[batch, N, L]`` (input-dependent, shared by all channels),
            ``[batch, G, N, L]`` (``G`` groups of ``D / G`` channels) or ``[D, N]`` (fixed).
        D: ``[D]`` skip connection, optional.
        z: ``[batch, D, L]`` gate, optional: the output is multiplied by ``silu(z)``.
        delta_bias: ``[D]`` added to ``delta`` before the softplus, optional.
        delta_softplus: apply softplus to ``delta``.
        return_last_state: also return the state after the last step, ``[batch, D, N]``
            (in the compute dtype); with ``cu_seqlens``, each packed sequence's own final state,
            ``[batch * num_seqs, D, N]`` (row ``b * num_seqs + k`` is sequence ``k`` of batch
            element ``b``, so ``[num_seqs, D, N]`` for a packed batch of one), zeros for an empty
            sequence. With ``reverse`` a sequence's final state is the one at its first position.
        reverse: scan right to left (the flipped path graph), for bidirectional models.
        cu_seqlens: ``[num_seqs + 1]`` cumulative lengths of sequences packed along ``L``
            (like PyG's ``ptr``): must start at 0, never decrease (empty sequences allowed) and
            end at ``L``. The state resets at every boundary, so a packed batch equals each
            sequence run alone.
        execution: the execution of :func:`~everygraph.sequence.scan` that runs it:
            ``"fused"`` (the fused CPU kernel, when the JIT is installed), ``"recurrent"``
            (PyTorch, CPU and GPU), ``"triton"`` (the fused Triton kernels: CUDA tensors, or CPU
            under ``TRITON_INTERPRET=1``) or ``"reference"`` (the engine's loop over nodes, with
            the decays materialised); default: ``"triton"`` for CUDA tensors when ``triton`` is
            installed, ``"fused"`` for CPU tensors when the JIT is usable, else
            ``"recurrent"``. The result is the same.

    Returns:
        ``out`` ``[batch, D, L]`` in the dtype of ``u``, or ``(out, last_state)``.
        Computed in float32 (float64 when an input is float64) and cast back.

    Empty sizes (batch 0, ``D = 0``, ``N = 0``, ``L = 0``) give correctly shaped results and
    gradients (with ``N = 0`` there is no state: ``out = D u``, gated).

    Raises:
        TypeError: an argument that is not a tensor (or not a bool for the flags).
        ValueError: a shape mismatch (both shapes named), an integer, bool or complex tensor
            (refused, not cast), a tensor on another device than ``u``, a bad ``cu_seqlens``.
        MemoryError: (the PyTorch recurrence) when a single position's working set exceeds the
            limit (with the estimate).

    Example:
        >>> u, delta = torch.randn(2, 64, 1000), torch.randn(2, 64, 1000)
        >>> A = -torch.arange(1, 17.0).repeat(64, 1)
        >>> B, C = torch.randn(2, 16, 1000), torch.randn(2, 16, 1000)
        >>> out = selective_scan(u, delta, A, B, C, delta_softplus=True)  # [2, 64, 1000]
    """
    if execution not in (None, *EXECUTIONS):
        raise ValueError(f"execution must be 'fused', 'recurrent', 'triton' or 'reference', got {execution!r}")
    if execution == "triton":
        require_triton(u.device if isinstance(u, Tensor) else torch.device("cpu"))
    if execution == "fused" and not NUMBA_AVAILABLE:
        raise RuntimeError("selective_scan_fused needs numba: pip install 'everygraph[cpu]' (or numba>=0.60)")
    # where the fused kernels run, their own softplus (the engine receives the step sizes after it)
    fused = execution in (None, "fused") and fused_usable(u, delta, A, B, C, D, z, delta_bias)
    p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens, softplus=kernel_softplus if fused else None)
    check_flag("return_last_state", return_last_state)
    check_flag("reverse", reverse)
    batch, channels, length, n_state = p.batch, p.channels, p.length, p.state_size
    dtype = p.u.dtype
    if cu_seqlens is None and length:
        structure = Lattice((length,), (reverse,))
    else:
        offsets = cu_seqlens if cu_seqlens is not None else torch.tensor([0, length])
        structure = packed_paths(offsets, reverse)
    step = p.delta.reshape(batch, channels, length).transpose(1, 2)  # [batch, L, D]: delta after bias and softplus
    decay = ExponentialDecay(step, p.A.reshape(channels, n_state)[..., None])  # exp(delta_t A_d,:), [D, N, 1]
    values = p.u.reshape(batch, channels, length).transpose(1, 2)[..., None]  # [batch, L, D, 1]
    ends, sequences = final_positions(cu_seqlens, length, reverse)
    result = engine.scan(
        structure, _heads_operand(C, dtype, batch, length), _heads_operand(B, dtype, batch, length), values,
        NodeWeight(step), decay, decay, step, kind="elementwise",
        return_state=return_last_state, boundary=Boundary(source=step, leave=decay) if return_last_state else None,
        state_nodes=torch.tensor(ends, dtype=torch.long) if return_last_state else None,
        scale=1.0, execution=execution,
    )
    h, finals = result if return_last_state else (result, None)
    out = finish(h.squeeze(3).transpose(1, 2), u, D, z, u.dtype)  # squeeze, not [..., 0]: its backward is a view
    if not return_last_state:
        return out
    finals = finals.squeeze(4).transpose(0, 1)  # [num_finals, batch, D, N]
    return out, assemble_final_states(finals, sequences, cu_seqlens, batch, channels, n_state)


#: the executions :func:`selective_scan` takes (``execution=``)
EXECUTIONS = ("fused", "recurrent", "triton", "reference")


def _heads_operand(M: Tensor, dtype: torch.dtype, batch: int, length: int) -> Tensor:
    """``B`` or ``C`` as the engine's ``k`` or ``q`` (views): fixed ``[D, N]`` -> ``[batch, L, D, N]``
    with stride 0 over batch and positions; ``[batch, N, L]`` -> ``[batch, L, 1, N]``;
    ``[batch, G, N, L]`` -> ``[batch, L, G, N]`` (a group of channels shares one vector)."""
    M = M.to(dtype)
    if M.dim() == 2:
        return M[None, None].expand(batch, length, *M.shape)
    if M.dim() == 3:
        return M.transpose(1, 2)[:, :, None]
    return M.permute(0, 3, 1, 2)


def _selective_scan_direct(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
    *,
    execution: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The dispatch :func:`selective_scan` made before it ran through :func:`~everygraph.sequence.scan`:
    straight to Mamba's own executions. Kept for ``benchmarks/selective_scan.py --route``, which
    measures what the route through the engine costs."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse, cu_seqlens)
    if execution is None:
        if isinstance(u, Tensor) and u.is_cuda and triton_runs_on(u.device):
            execution = "triton"
        elif all(t is None or isinstance(t, Tensor) for t in args[:8]) and fused_usable(*args[:8]):
            execution = "fused"
        else:
            execution = "recurrent"
    if execution == "fused":
        return selective_scan_fused(*args)
    if execution == "recurrent":
        return selective_scan_recurrent(*args)
    if execution == "reference":
        return selective_scan_reference(*args)
    if execution == "triton":
        require_triton(u.device if isinstance(u, Tensor) else torch.device("cpu"))
        from ..triton.selective_scan import selective_scan_triton

        return selective_scan_triton(*args)
    raise ValueError(f"execution must be 'fused', 'recurrent', 'triton' or 'reference', got {execution!r}")


__all__ = ["selective_scan", "selective_scan_fused", "selective_scan_reference", "selective_scan_recurrent"]
