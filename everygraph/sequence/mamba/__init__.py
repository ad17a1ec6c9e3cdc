r"""Mamba's selective scan on a path graph.

A sequence of length ``L`` is the path graph ``graphlib.path_graph(L)`` =
``Lattice((L,))``: one state per node, one transition per edge ``t-1 -> t``. The selective
scan is the path-graph case of the scan engine
:math:`h_v = \sum_{u \to v} T_{u \to v} h_u + S_v x_v`, with the diagonal transition
:math:`T_{t-1 \to t} = \exp(\Delta_t A)`, input :math:`S_t x_t = \Delta_t u_t B_t` and
readout :math:`y_t = \langle C_t, h_t \rangle`. ``reverse=True`` is the flipped lattice
``Lattice((L,), flip=(True,))``; ``cu_seqlens`` removes the edges between packed sequences.

Executions, one signature (fla style):

- :func:`selective_scan_reference` (``reference.py``): the plain loop over positions.
- :func:`selective_scan_recurrent` (``recurrent.py``): the fast path, a time-major recurrence
  with one in-place step per position, everything else vectorised over slabs, and a
  hand-written backward pass that recomputes each slab from its entering state (bounded
  memory); :func:`selective_scan` calls it when the fused kernel cannot run.
- :func:`selective_scan_fused` (``fused_cpu.py``): the same recurrence and its adjoint as
  compiled CPU kernels (numba, the optional extra ``everygraph[cpu]``);
  :func:`selective_scan` calls it for CPU tensors when numba is installed and
  ``EVERYGRAPH_DISABLE_JIT`` is not set.

``_inputs.py`` checks the arguments and brings them into one layout for both.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..triton._runtime import require_triton, triton_runs_on
from .fused_cpu import fused_usable, selective_scan_fused
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
    the scan engine: a sequence is ``graphlib.path_graph(L)`` (``Lattice((L,))``), a state per
    node, one transition :math:`\exp(\Delta_t A)` per edge ``t-1 -> t``.

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
        execution: ``"fused"`` (the fused CPU kernel, when the JIT is installed),
            ``"recurrent"`` (PyTorch, CPU and GPU), ``"triton"`` (the fused Triton kernels:
            CUDA tensors, or CPU under ``TRITON_INTERPRET=1``) or ``"reference"`` (the loop);
            default: ``"triton"`` for CUDA tensors when ``triton`` is installed, ``"fused"`` for
            CPU tensors when the JIT is usable, else ``"recurrent"``. The result is the same.

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
