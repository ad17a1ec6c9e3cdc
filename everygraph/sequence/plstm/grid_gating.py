r"""pLSTM on a small 2D grid as masked linear attention: the gating matrix of the whole grid.

Without boundary states the pLSTM output is linear in the values, and on an ``X x Y`` grid it
is masked linear attention with one *gating matrix* :math:`G` per batch entry and head:

.. math::
    h^{n'} = \sum_n G^{n' n}\, (\tilde q^{n'} \cdot k^n)\, v^n, \qquad
    G^{n' n} = \sum_{\text{paths } n \to n'} S\, \Big(\prod T\Big)\, M \;+\; \delta_{n n'} D^n,

the sum running over the monotone lattice paths (the recurrence applied to a unit source at
``n``, read at ``n'``). The gates do not depend on ``q, k, v``, so the orientations of a grid
that share queries, keys and values (as in :class:`~everygraph.nn.PLSTM2d`) add up to a single
matrix :math:`\sum_f G_f` and a single attention, instead of one scan per orientation.

:func:`plstm_grid_gating` computes :math:`\sum_f G_f` with every orientation's gates given
in the grid's own (unflipped) node layout. Two executions, equal up to rounding:

* compiled (numba, the optional extra ``everygraph[cpu]``; CPU, float32/float64): per batch
  entry, head and orientation, one loop over the nodes in the orientation's row-major order
  that carries the ``[N]`` unit-source channels of the two in-edge states in place (a row
  buffer ``up`` ``[Y, N]`` and one ``left`` ``[N]``, as the fused lattice loop carries the
  ``dk x dv`` states) and adds each node's read :math:`M_0 I_0 + M_1 I_1` to its row of
  :math:`G`. The backward pass recomputes one system's in-edge states into an ``[X, Y, 2, N]``
  buffer and runs the adjoint recurrence in reverse order. No ``[N, N]`` temporary besides
  :math:`G` and its gradient.
* otherwise (no numba, ``EVERYGRAPH_DISABLE_JIT`` set, CUDA): each orientation's gates flipped
  into the canonical orientation, the one-block transfer operator of
  :mod:`~everygraph.sequence.plstm.chunked2d` (its anti-diagonal recurrence on unit sources,
  with its hand-written adjoint), flipped back and summed.

Memory is ``B H (X Y)^2`` entries, so this suits small grids (a patch grid of a few dozen
tokens), where the per-edge ``dk x dv`` states of a scan cost more than the matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..mamba.fused_cpu import NUMBA_AVAILABLE, jit_enabled
from .chunked2d import _block_plan, _transfer

__all__ = ["plstm_grid_gating"]

DTYPES = (torch.float32, torch.float64)

if NUMBA_AVAILABLE:
    from ..mamba.fused_cpu import _FASTMATH, _cached_njit

    @_cached_njit(fastmath=_FASTMATH)
    def _system(S, T, M, D, b, hh, f, fx, fy, G, states, keep, up, left):
        """One system (batch entry ``b``, head ``hh``, orientation ``f``): adds :math:`G_f` into
        ``G`` ``[N, N]`` or, with ``keep``, writes the in-edge states to ``states``
        ``[X, Y, 2, N]`` instead (``G`` unused). ``up`` ``[Y, N]``, ``left`` ``[N]``: buffers."""
        X, Y = D.shape[1], D.shape[2]
        N = X * Y
        up[:] = 0.0
        for cx in range(X):
            x = X - 1 - cx if fx else cx
            left[:] = 0.0
            for cy in range(Y):
                y = Y - 1 - cy if fy else cy
                n = x * Y + y
                t00, t01 = T[b, x, y, f, hh, 0, 0], T[b, x, y, f, hh, 0, 1]
                t10, t11 = T[b, x, y, f, hh, 1, 0], T[b, x, y, f, hh, 1, 1]
                I0 = up[cy]
                if keep:
                    kept0, kept1 = states[cx, cy, 0], states[cx, cy, 1]
                    for c in range(N):  # a loop: an array assignment copies through a temporary
                        kept0[c] = I0[c]
                        kept1[c] = left[c]
                    for c in range(N):
                        i0, i1 = I0[c], left[c]
                        I0[c] = t00 * i0 + t01 * i1
                        left[c] = t10 * i0 + t11 * i1
                else:
                    m0, m1 = M[b, x, y, f, hh, 0], M[b, x, y, f, hh, 1]
                    row = G[n]
                    for c in range(N):
                        i0, i1 = I0[c], left[c]
                        row[c] += m0 * i0 + m1 * i1
                        I0[c] = t00 * i0 + t01 * i1
                        left[c] = t10 * i0 + t11 * i1
                    row[n] += D[b, x, y, f, hh]
                I0[n] += S[b, x, y, f, hh, 0]  # this node's own unit source
                left[n] += S[b, x, y, f, hh, 1]

    @_cached_njit(fastmath=_FASTMATH)
    def _forward(S, T, M, D, flips, G):
        """Adds :math:`G_f` of every orientation into ``G`` ``[B, H, N, N]`` (zero on entry).
        ``S``, ``M`` ``[B, X, Y, F, H, 2]``, ``T`` ``[B, X, Y, F, H, 2, 2]``, ``D``
        ``[B, X, Y, F, H]``, ``flips`` ``[F, 2]`` (0/1)."""
        batch, X, Y, F, heads = D.shape
        N = X * Y
        up = np.zeros((Y, N), dtype=G.dtype)
        left = np.zeros(N, dtype=G.dtype)
        states = np.zeros((1, 1, 2, N), dtype=G.dtype)
        for b in range(batch):
            for hh in range(heads):
                for f in range(F):
                    _system(S, T, M, D, b, hh, f, flips[f, 0], flips[f, 1], G[b, hh], states, False, up, left)

    @_cached_njit(fastmath=_FASTMATH)
    def _backward(S, T, M, D, flips, grad_G, grad_S, grad_T, grad_M, grad_D):
        """The adjoint of :func:`_forward`, one system at a time in reverse node order, from
        its in-edge states recomputed into an ``[X, Y, 2, N]`` buffer; writes every gate
        gradient. ``grad_up[cy]`` and ``grad_left`` hold the gradients of the current node's
        out-edge states and, once it is done, of its in-edge states (the out-edges of the node
        above and of the node to the left)."""
        batch, X, Y, F, heads = D.shape
        N = X * Y
        up = np.zeros((Y, N), dtype=grad_G.dtype)
        left = np.zeros(N, dtype=grad_G.dtype)
        states = np.zeros((X, Y, 2, N), dtype=grad_G.dtype)
        grad_up = np.zeros((Y, N), dtype=grad_G.dtype)
        grad_left = np.zeros(N, dtype=grad_G.dtype)
        z = np.zeros(1, dtype=grad_G.dtype)[0]  # a zero of the kernel's dtype: float32 sums stay float32
        for b in range(batch):
            for hh in range(heads):
                for f in range(F):
                    fx, fy = flips[f, 0], flips[f, 1]
                    _system(S, T, M, D, b, hh, f, fx, fy, grad_G[b, hh], states, True, up, left)
                    grad_up[:] = 0.0
                    for cx in range(X - 1, -1, -1):
                        x = X - 1 - cx if fx else cx
                        grad_left[:] = 0.0
                        for cy in range(Y - 1, -1, -1):
                            y = Y - 1 - cy if fy else cy
                            n = x * Y + y
                            m0, m1 = M[b, x, y, f, hh, 0], M[b, x, y, f, hh, 1]
                            t00, t01 = T[b, x, y, f, hh, 0, 0], T[b, x, y, f, hh, 0, 1]
                            t10, t11 = T[b, x, y, f, hh, 1, 0], T[b, x, y, f, hh, 1, 1]
                            O0 = grad_up[cy]
                            grow = grad_G[b, hh, n]
                            I0, I1 = states[cx, cy, 0], states[cx, cy, 1]
                            grad_S[b, x, y, f, hh, 0] = O0[n]
                            grad_S[b, x, y, f, hh, 1] = grad_left[n]
                            grad_D[b, x, y, f, hh] = grow[n]
                            # two loops, the sums, then the in-place update: one loop that read
                            # five arrays and wrote two would need more runtime overlap checks
                            # than the vectoriser makes, and run scalar
                            gm0, gm1, g00, g01, g10, g11 = z, z, z, z, z, z
                            for c in range(N):
                                g, i0, i1, o0, o1 = grow[c], I0[c], I1[c], O0[c], grad_left[c]
                                gm0 += g * i0
                                gm1 += g * i1
                                g00 += o0 * i0
                                g01 += o0 * i1
                                g10 += o1 * i0
                                g11 += o1 * i1
                            for c in range(N):
                                g, o0, o1 = grow[c], O0[c], grad_left[c]
                                O0[c] = m0 * g + t00 * o0 + t10 * o1
                                grad_left[c] = m1 * g + t01 * o0 + t11 * o1
                            grad_M[b, x, y, f, hh, 0] = gm0
                            grad_M[b, x, y, f, hh, 1] = gm1
                            grad_T[b, x, y, f, hh, 0, 0] = g00
                            grad_T[b, x, y, f, hh, 0, 1] = g01
                            grad_T[b, x, y, f, hh, 1, 0] = g10
                            grad_T[b, x, y, f, hh, 1, 1] = g11


class _CompiledGating(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S: Tensor, T: Tensor, M: Tensor, D: Tensor, flips: np.ndarray) -> Tensor:
        S, T, M, D = (t.detach().contiguous() for t in (S, T, M, D))
        batch, X, Y, _, heads = D.shape
        G = torch.zeros(batch, heads, X * Y, X * Y, dtype=D.dtype)
        arrays = [t.numpy() for t in (S, T, M, D)]
        _forward(*arrays, flips, G.numpy())
        ctx.save_for_backward(S, T, M, D)
        ctx.flips = flips
        return G

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_G: Tensor):
        S, T, M, D = ctx.saved_tensors
        grads = [torch.empty_like(t) for t in (S, T, M, D)]
        grad_G = grad_G.to(D.dtype).contiguous()
        _backward(*(t.numpy() for t in (S, T, M, D)), ctx.flips, grad_G.numpy(), *(g.numpy() for g in grads))
        return (*grads, None)


def _torch_gating(S: Tensor, T: Tensor, M: Tensor, D: Tensor, flips: Sequence[tuple[bool, bool]]) -> Tensor:
    """Each orientation flipped into the canonical one, the one-block transfer operator of
    ``chunked2d`` for all of them at once, flipped back and summed."""
    batch, X, Y, F, heads = D.shape
    N = X * Y

    def canonical(t: Tensor, f: int, first: int) -> Tensor:  # flips are their own inverse
        axes = [first + a for a in range(2) if flips[f][a]]
        return t.flip(axes) if axes else t

    def stacked(t: Tensor) -> Tensor:  # [B, X, Y, F, H, *g] -> [F * B * H, X, Y, *g]
        t = torch.stack([canonical(part, f, 1) for f, part in enumerate(t.unbind(3))])  # unbind: no zero-filled gradients
        return t.movedim(4, 2).reshape(F * batch * heads, X, Y, *t.shape[5:])

    read, _ = _transfer(_block_plan(X, Y, False), stacked(S), stacked(T), stacked(M))
    read = read.reshape(F, batch, heads, X, Y, X, Y)
    G = sum(canonical(canonical(part, f, 2), f, 4) for f, part in enumerate(read.unbind(0))).reshape(batch, heads, N, N)
    direct = D.sum(3).movedim(3, 1).reshape(batch, heads, N)
    return G + torch.diag_embed(direct)


def plstm_grid_gating(
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    flips: Sequence[tuple[bool, bool]] = ((False, False),),
    *,
    compiled: bool | None = None,
) -> Tensor:
    r"""The gating matrix :math:`G = \sum_f G_f` of pLSTM on an ``X x Y`` grid, summed over
    the orientations ``flips`` (see the module docstring): for queries, keys and values shared
    by the orientations, :math:`h = ((\tilde Q K^\top) \circ G)\, V` per batch entry and head
    equals the sum over ``f`` of :func:`plstm_scan` on ``Lattice((X, Y), flips[f])`` (no
    boundary states).

    Args:
        source: ``[B, X, Y, F, H, 2]``: per node, orientation and head, :math:`S` of the
            out-edge along axis 0 and 1 (the gates as :func:`lattice_gates` reads them for
            ``Lattice((X, Y), flips[f])``, in the grid's unflipped node layout).
        transition: ``[B, X, Y, F, H, 2, 2]``, ``[..., i, j]`` from the in-edge along axis
            ``j`` to the out-edge along axis ``i``.
        mark: ``[B, X, Y, F, H, 2]``, :math:`M` of the in-edge along each axis.
        direct: ``[B, X, Y, F, H]``.
        flips: ``F`` orientations (``Lattice.flip`` tuples of two bools); default: the
            canonical one only.
        compiled: use the numba loop (``True``), the PyTorch path (``False``), or pick
            (``None``: numba when installed, enabled and the tensors are float32/float64 CPU).

    Returns:
        ``G`` ``[B, H, X * Y, X * Y]`` (row: the reading node, column: the source node, both
        row-major), in the gates' dtype. Gates of edges that leave the grid are ignored (their
        gradients are zero).

    Example:
        >>> B, X, Y, F, H = 2, 3, 4, 1, 1
        >>> G = plstm_grid_gating(torch.rand(B, X, Y, F, H, 2), torch.rand(B, X, Y, F, H, 2, 2) / 2,
        ...                       torch.rand(B, X, Y, F, H, 2), torch.rand(B, X, Y, F, H))
        >>> G.shape
        torch.Size([2, 1, 12, 12])
    """
    if not isinstance(direct, Tensor) or direct.dim() != 5:
        got = list(direct.shape) if isinstance(direct, Tensor) else type(direct).__name__
        raise ValueError(f"direct must be a tensor of shape [B, X, Y, F, H], got {got}")
    batch, X, Y, F, heads = direct.shape
    expected = dict(source=(source, [batch, X, Y, F, heads, 2]), transition=(transition, [batch, X, Y, F, heads, 2, 2]),
                    mark=(mark, [batch, X, Y, F, heads, 2]))
    for name, (t, shape) in expected.items():
        if not isinstance(t, Tensor) or list(t.shape) != shape:
            got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape {shape} (direct is [B, X, Y, F, H] = {list(direct.shape)}), got {got}")
    for name, t in dict(source=source, transition=transition, mark=mark, direct=direct).items():
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.dtype != direct.dtype or t.device != direct.device:
            raise ValueError(f"{name} must have direct's dtype and device ({direct.dtype}, {direct.device}), got {t.dtype}, {t.device}")
    if isinstance(flips, (str, bytes)) or not isinstance(flips, Sequence) or len(flips) != F or not all(
        isinstance(f, Sequence) and len(f) == 2 and all(isinstance(a, bool) for a in f) for f in flips
    ):
        raise ValueError(f"flips must be {F} pairs of bools (one per orientation of the gates' axis 3), got {flips!r}")
    fast = jit_enabled() and direct.device.type == "cpu" and direct.dtype in DTYPES
    if compiled and not fast:
        raise RuntimeError("compiled=True needs numba (pip install 'everygraph[cpu]'), EVERYGRAPH_DISABLE_JIT unset and "
                           f"float32/float64 CPU gates, got {direct.dtype} on {direct.device}")
    if direct.numel() == 0:
        return direct.new_zeros(batch, heads, X * Y, X * Y)
    if fast and compiled is not False:
        return _CompiledGating.apply(source, transition, mark, direct, np.array(flips, dtype=np.int64).reshape(F, 2))
    return _torch_gating(source, transition, mark, direct, [tuple(f) for f in flips])
