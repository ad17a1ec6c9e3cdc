r"""The selective scan in chunks: few Python steps, bounded memory, plain autograd.

The recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` (with :math:`a_t = \exp(\Delta_t A)`,
:math:`b_t = \Delta_t u_t B_t`) is split into chunks of ``chunk_size`` positions. Inside a
slab of ``num_chunks`` consecutive chunks:

1. all chunks of the slab advance together, one position at a time, from a zero state
   (``chunk_size`` vectorised steps, each on ``[batch, D, num_chunks, N]``), keeping only each
   chunk's end state :math:`e_k`;
2. the true state entering each chunk is carried across chunks,
   :math:`H_k = P_k \odot H_{k-1} + e_k`, with the chunk's total decay
   :math:`P_k = \exp(A \sum_{t \in k} \Delta_t)` from the cumulative sum of
   :math:`\Delta A` in log space (``num_chunks`` small steps);
3. all chunks advance together again, now from their entering states, and read out
   :math:`y_t = \langle h_t, C_t \rangle` at each step.

Slabs run one after another with the state carried between them, each under
:func:`torch.utils.checkpoint.checkpoint` when gradients are needed, so at most one slab's
``[batch, D, slab_len, N]`` intermediates exist at a time (forward or backward) instead of the
full ``[batch, D, L, N]``. Python steps per slab: ``2 * chunk_size + num_chunks`` instead of
``slab_len``; the arithmetic is the loop's plus one extra multiply-add per state.

Why not Mamba-2's C x C matmul form: in Mamba-1 the decay :math:`\exp(\Delta_t A_{dn})`
differs for every state channel ``n``, so a chunk's decay "matrix" is ``[D, N, C, C]``: ``C``
times the work of the recurrence, all elementwise (``exp``), none of it a matmul. On CPU a
step loop over ``[batch, D, N]`` is already bound by arithmetic and memory traffic (not
Python overhead) at Mamba sizes, so chunking here buys bounded memory and fewer autograd
nodes, not a large speed-up; ``benchmarks/selective_scan.py`` measures it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ._inputs import ScanInputs, finish, flip_cu_seqlens, prepare

#: Positions per chunk. Measured at B=2, D=256, N=16, L=4096 on a busy 2-core CPU (one
#: thread, ``benchmarks/selective_scan.py --tune``): chunks of 16 beat 32 and 64 (forward
#: ~1.0-1.2 s vs 1.4-2.1 s, forward+backward 5.8-6.2 s vs 7.5-9.7 s with 2**21-element slabs).
DEFAULT_CHUNK_SIZE = 16
#: Elements of one ``[batch, D, slab_len, N]`` intermediate a slab may hold (about 4 such
#: tensors live at once): slabs are made as long as this allows.
DEFAULT_SLAB_ELEMENTS = 2**21
#: The working set of a single chunk beyond which the scan refuses to run.
DEFAULT_MAX_CHUNK_BYTES = 4 * 2**30
#: A chunk's total decay is computed as ``exp(max(log_decay, MIN_LOG_DECAY))``: a factor
#: below ``e^-60 ~ 8.8e-27`` is zero against any state of ordinary size, while ``exp`` of smaller
#: exponents and products with its denormal results run ~100x slower on CPUs (measured:
#: 4 ns vs 65 ns per element for exp, 17 us vs 2.4 ms for a 64k-element multiply-add).
MIN_LOG_DECAY = -60.0
#: Live ``[batch, D, slab_len, N]``-sized tensors in a slab (decays, inputs, their
#: exponent, and autograd's saved step states); used for the memory estimate.
_LIVE_SLAB_TENSORS = 4


def _scan_slab(
    h0: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    keep: Tensor | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """One slab of ``num_chunks * chunk_size`` positions.

    ``h0`` ``[b, g, h, N]`` state entering the slab; ``u``, ``delta`` ``[b, g, h, T]``;
    ``A`` ``[g, h, N]``; ``B``, ``C`` ``[b|1, g, 1|h, T|1, N]``; ``keep`` ``[T]`` or None.
    Returns ``y`` ``[b, g, h, T]`` (without ``D``/``z``) and the state after the slab.
    """
    b, g, hg, T = u.shape
    n = A.shape[-1]
    Cs = chunk_size
    nc = T // Cs

    def by_position(x: Tensor) -> Tensor:
        # [..., T] -> [Cs, ..., nc]: position inside the chunk first, so each step's slice
        # over all chunks is one contiguous block.
        return x.reshape(*x.shape[:-1], nc, Cs).movedim(-1, 0)

    def bc_by_position(M: Tensor) -> Tensor:
        # [b, g, h, T|1, N] -> [Cs|1, b, g, h, nc|1, N]
        if M.shape[3] == 1:
            return M.unsqueeze(0)
        return M.reshape(*M.shape[:3], nc, Cs, n).movedim(4, 0)

    dt = by_position(delta)  # [Cs, b, g, h, nc]
    dt_A = dt[..., None] * A[:, :, None, :]  # [Cs, b, g, h, nc, N]
    a = torch.exp(dt_A)  # one step's decay: its exponent stays moderate, no clamp needed
    if keep is not None:
        keep_pos = by_position(keep.to(a.dtype))  # [Cs, nc]
        a = a * keep_pos[:, None, None, None, :, None]
    x_in = (dt * by_position(u))[..., None] * bc_by_position(B)

    # Pass 1: every chunk of the slab from a zero state, all chunks at once, keeping only the
    # chunk-end states. unbind (not indexing) so that autograd stacks the step gradients once
    # instead of scattering each into a zero tensor of the whole slab.
    x_steps, a_steps = x_in.unbind(0), a.unbind(0)
    h = x_steps[0]
    for j in range(1, Cs):
        h = torch.addcmul(x_steps[j], a_steps[j], h)
    chunk_end = h  # [b, g, h, nc, N]

    # Carry: the state entering each chunk. A chunk's total decay is exp(A * sum of its dt),
    # zero if a sequence starts inside it.
    chunk_decay = torch.exp((dt.sum(0)[..., None] * A[:, :, None, :]).clamp_min(MIN_LOG_DECAY))
    if keep is not None:
        chunk_decay = chunk_decay * keep_pos.prod(0)[:, None]
    entering = []
    state = h0
    for end_k, decay_k in zip(chunk_end.unbind(-2), chunk_decay.unbind(-2)):
        entering.append(state)
        state = torch.addcmul(end_k, decay_k, state)

    # Pass 2: again all chunks at once, now from their true entering states, reading out y.
    C_pos = bc_by_position(C)
    C_steps = C_pos.unbind(0) if C_pos.shape[0] == Cs else [C_pos[0]] * Cs
    h = torch.stack(entering, dim=-2)  # [b, g, h, nc, N]
    ys = []
    for j in range(Cs):
        h = torch.addcmul(x_steps[j], a_steps[j], h)
        ys.append((h * C_steps[j]).sum(-1))
    y = torch.stack(ys, dim=-1)  # [b, g, h, nc, Cs]
    return y.reshape(b, g, hg, T), state


def _working_set_bytes(p: ScanInputs, positions: int) -> int:
    per_position = p.batch * p.channels * p.state_size
    itemsize = torch.finfo(p.u.dtype).bits // 8
    return _LIVE_SLAB_TENSORS * per_position * positions * itemsize


def selective_scan_chunked(
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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    slab_elements: int = DEFAULT_SLAB_ELEMENTS,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    checkpoint_slabs: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """The chunked execution of :func:`~everygraph.sequence.selective_scan` (same arguments),
    plus the tuning knobs: ``chunk_size`` positions per chunk, ``slab_elements`` the size
    bound of a slab's intermediates, ``max_chunk_bytes`` the memory guard, and
    ``checkpoint_slabs`` (recompute each slab in the backward pass instead of storing it).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if reverse:
        flipped_B = B.flip(-1) if B.dim() >= 3 else B
        flipped_C = C.flip(-1) if C.dim() >= 3 else C
        result = selective_scan_chunked(
            u.flip(-1), delta.flip(-1), A, flipped_B, flipped_C, D,
            None if z is None else z.flip(-1), delta_bias, delta_softplus, return_last_state,
            False, flip_cu_seqlens(cu_seqlens, u.shape[-1]),
            chunk_size=chunk_size, slab_elements=slab_elements,
            max_chunk_bytes=max_chunk_bytes, checkpoint_slabs=checkpoint_slabs,
        )
        if return_last_state:
            return result[0].flip(-1), result[1]
        return result.flip(-1)

    p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens)
    length = p.length
    chunk_size = max(1, min(chunk_size, length))
    estimate = _working_set_bytes(p, chunk_size)
    if estimate > max_chunk_bytes:
        raise MemoryError(
            f"one chunk of the selective scan needs about {estimate / 2**30:.2f} GiB "
            f"({_LIVE_SLAB_TENSORS} tensors of [batch={p.batch}, D={p.channels}, chunk={chunk_size}, "
            f"N={p.state_size}]), over the limit of {max_chunk_bytes / 2**30:.2f} GiB; "
            f"lower chunk_size, the batch, D or N (d_state), or raise max_chunk_bytes"
        )
    per_position = p.batch * p.channels * p.state_size
    chunks_per_slab = max(1, slab_elements // max(1, per_position * chunk_size))
    slab_len = chunks_per_slab * chunk_size

    state = p.u.new_zeros(p.batch, p.groups, p.channels // p.groups, p.state_size)
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (p.u, p.delta, p.A, p.B, p.C)
    )
    ys = []
    start = 0
    while start < length:
        stop = min(length, start + slab_len)
        size = stop - start
        if size % chunk_size:  # the tail: whole chunks, then one short chunk
            size = size - size % chunk_size if size > chunk_size else size
            stop = start + size
        cs = min(chunk_size, size)

        def slab_args(lo: int = start, hi: int = stop) -> tuple:
            Bs = p.B if p.B.shape[3] == 1 else p.B[:, :, :, lo:hi]
            Cs_ = p.C if p.C.shape[3] == 1 else p.C[:, :, :, lo:hi]
            keep = None if p.keep is None else p.keep[lo:hi]
            return p.u[..., lo:hi], p.delta[..., lo:hi], p.A, Bs, Cs_, keep

        if need_grad and checkpoint_slabs and length > slab_len:
            y, state = checkpoint(_scan_slab, state, *slab_args(), cs, use_reentrant=False)
        else:
            y, state = _scan_slab(state, *slab_args(), cs)
        ys.append(y)
        start = stop
    if ys:
        y = torch.cat(ys, dim=-1).reshape(p.batch, p.channels, length)
    else:
        y = p.u.new_zeros(p.batch, p.channels, 0)
    out = finish(y, u, D, z, u.dtype)
    if return_last_state:
        return out, state.reshape(p.batch, p.channels, p.state_size)
    return out
