r"""The selective scan as a time-major recurrence with a hand-written backward pass.

The recurrence :math:`h_t = a_t \odot h_{t-1} + x_t` with :math:`a_t = \exp(\Delta_t A)` and
:math:`x_t = \Delta_t u_t B_t` is run over slabs of consecutive positions. Inside a slab
everything but the recurrence itself is one vectorised operation over the slab's
``[T, batch, D, N]`` tensors (time-major, so each step's ``[batch, D, N]`` slice is one
contiguous block), and the recurrence is one in-place ``addcmul`` per position:

.. math::
    a = \exp(\Delta A),\quad h = \Delta u \, B \;\text{(in place)},\quad
    h_t \mathrel{+}= a_t \odot h_{t-1},\quad y_t = \textstyle\sum_n h_{t,n} C_{t,n}
    \;\text{(a batched matmul)}.

A packed sequence start (``cu_seqlens``) is :math:`a_t = 0` at that position. When a
gradient is needed, the forward pass saves only its inputs and the state entering each slab
(``[num_slabs, batch, D, N]``, ``1 / T`` of the states), not the states; the backward pass visits the slabs in reverse, recomputes :math:`a` and
:math:`h` of the slab from its entering state, and runs the adjoint recurrence (again one
``addcmul`` per position, carried across slab boundaries)

.. math::
    g_t = \frac{\partial \mathcal{L}}{\partial h_t} = C_t\, \bar y_t + a_{t+1} \odot g_{t+1},

from which every gradient is a vectorised product or a batched matmul:
:math:`\bar x = g`, :math:`\overline{\Delta A} = g \odot a \odot h_{t-1}`,
:math:`\bar\Delta = \sum_n \overline{\Delta A}\, A + u \sum_n g B`,
:math:`\bar u = \Delta \sum_n g B`, :math:`\bar A = \sum_{b,t} \overline{\Delta A}\, \Delta`,
:math:`\bar B = \sum_d g\, \Delta u`, :math:`\bar C = \sum_d h\, \bar y` (sums over the
dimensions that ``B``/``C`` broadcast over: channels of a group, or batch and time for a fixed
``[D, N]`` matrix). ``reverse=True`` runs the same recurrence on the flipped sequence.

Why this and not a parallel scan or Mamba-2's chunked matmul form: on CPU the work is bound by
memory traffic over ``[L, batch, D, N]``, and Mamba-1's decay differs for every state channel,
so any parallel form multiplies that traffic; a loop whose every step touches only the
``batch * D * N`` numbers it needs, with all the rest vectorised and the backward written by
hand (no autograd graph of ``L`` nodes, no saved per-step states), is what is left to win.
``benchmarks/selective_scan.py`` measures it against the plain loop.
"""

from __future__ import annotations

import bisect

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._inputs import (
    assemble_final_states,
    check_cu_seqlens,
    check_flag,
    final_positions,
    finish,
    flip_cu_seqlens,
    prepare,
)

#: Elements of one ``[T, batch, D, N]`` slab buffer. Three such buffers live during the
#: backward pass (decays, states, adjoint states), two during the forward pass. Small slabs
#: win because the three buffers then stay in a core's L2 cache (2 MiB here) between the
#: vectorised passes: measured at B=2, D=256, N=16, L=4096, one thread, medians of 5-7
#: (``benchmarks/selective_scan.py --tune``, three sweeps on the busy 2-core machine), 2**17
#: (16 positions) took 346 / 568 / 390 ms forward+backward, 2**19 371 / 685 / 573 ms,
#: 2**21 448 / 435 / 547 ms, 2**22 498 / 680 / 532 ms.
DEFAULT_SLAB_ELEMENTS = 2**17
#: The slab size when torch runs more than one thread. Each vectorised op of a slab is then an
#: OpenMP parallel region, and on a machine whose cores are busy with other work every region
#: waits for a descheduled worker (milliseconds): with 2 threads on the busy 2-core machine,
#: L=4096 forward+backward took 10.4 s with 2**17-element slabs, 2.2 s with 2**20, 1.3 s with
#: 2**21, 1.0 s with 2**22 (one thread, 2**17: 0.35-0.57 s). Fewer, larger regions bound that
#: cost; on a busy machine one thread (``torch.set_num_threads(1)``) is faster still.
DEFAULT_SLAB_ELEMENTS_THREADED = 2**21
#: The working set of a single position (three ``[batch, D, N]`` buffers) beyond which the
#: scan refuses to run.
DEFAULT_MAX_SLAB_BYTES = 4 * 2**30
#: A step's decay is computed as ``exp(max(delta * A, MIN_LOG_DECAY))`` when some exponent
#: could fall below it: a factor below ``e^-60 ~ 8.8e-27`` is zero against any state of
#: ordinary size, while ``exp`` of smaller exponents and products with its denormal results
#: run ~100x slower on CPUs (measured: 4 ns vs 65 ns per element for exp, 17 us vs 2.4 ms for
#: a 64k-element multiply-add). The backward pass uses ``exp``'s derivative throughout.
MIN_LOG_DECAY = -60.0
#: Live ``[batch, D, N]``-sized buffers per slab position during the backward pass.
_LIVE_BUFFERS = 3


def _fixed(M: Tensor) -> bool:
    """Whether an operand ``B`` or ``C`` is fixed ``[D, N]``; otherwise it is time-major
    ``[L, batch, G, N]`` (input-dependent, ``G`` groups of ``D / G`` channels)."""
    return M.dim() == 2


def _contract_state(S: Tensor, M: Tensor) -> Tensor:
    r"""``sum_n S[t, b, d, n] * M[..., n]`` for ``S`` ``[T, batch, D, N]`` and an operand
    ``M`` (time-major slab ``[T, batch, G, N]`` or fixed ``[D, N]``); returns ``[T, batch, D]``."""
    T, b, d, n = S.shape
    if _fixed(M):
        # for every channel d: [T*b, N] @ [N]; the strided view is a valid BLAS operand
        return torch.bmm(S.view(T * b, d, n).transpose(0, 1), M.unsqueeze(-1)).view(d, T, b).permute(1, 2, 0)
    groups = M.shape[2]
    out = torch.bmm(S.view(T * b * groups, d // groups, n), M.reshape(T * b * groups, n, 1))
    return out.view(T, b, d)


def _contract_channels(S: Tensor, v: Tensor, M: Tensor) -> Tensor:
    r"""``sum over what M broadcasts of S[t, b, d, n] * v[t, b, d]``, the gradient of an
    operand shaped like ``M``: ``[T, batch, G, N]`` (sum over a group's channels) or ``[D, N]``
    (sum over time and batch)."""
    T, b, d, n = S.shape
    if _fixed(M):
        # for every channel d: [N, T*b] @ [T*b]; the strided views are valid BLAS operands
        out = torch.bmm(S.view(T * b, d, n).permute(1, 2, 0), v.reshape(T * b, d).t().unsqueeze(-1))
        return out.view(d, n)
    groups = M.shape[2]
    # [1, D/G] @ [D/G, N] reads S in its own layout (twice as fast as S^T @ v)
    out = torch.bmm(v.reshape(T * b * groups, 1, d // groups), S.view(T * b * groups, d // groups, n))
    return out.view(T, b, groups, n)


def _input_term(out: Tensor, dtu: Tensor, M: Tensor) -> Tensor:
    """``out[t, b, d, n] = dtu[t, b, d] * M[..., n]`` written into ``out`` ``[T, batch, D, N]``."""
    T, b, d, n = out.shape
    if _fixed(M):
        return torch.mul(dtu.unsqueeze(-1), M, out=out)
    groups = M.shape[2]
    torch.mul(dtu.view(T, b, groups, d // groups, 1), M.unsqueeze(3), out=out.view(T, b, groups, d // groups, n))
    return out


def _slab_of(M: Tensor, lo: int, hi: int) -> Tensor:
    return M if _fixed(M) else M[lo:hi]


def _decays(out: Tensor, dt: Tensor, A: Tensor, resets: Tensor | None, clamp: bool) -> Tensor:
    """``a = exp(dt * A)`` written into ``out`` ``[T, batch, D, N]``, 0 at sequence starts."""
    torch.mul(dt.unsqueeze(-1), A, out=out)
    if clamp:
        out.clamp_min_(MIN_LOG_DECAY)
    out.exp_()
    if resets is not None and resets.numel():
        out.index_fill_(0, resets, 0.0)
    return out


def _states(out: Tensor, steps: list[Tensor], decays: list[Tensor], h_entry: Tensor | None) -> Tensor:
    """The recurrence in place on the first ``T = len(out)`` positions: ``out`` ``[T, ...]``
    holds the inputs ``x`` and becomes the states ``h``. ``steps``, ``decays``: the per-position
    views of the whole slab buffers (made once per call: a view costs as much as a step)."""
    if h_entry is not None:
        steps[0].addcmul_(decays[0], h_entry)
    for t in range(1, out.shape[0]):
        steps[t].addcmul_(decays[t], steps[t - 1])
    return out


def _resets_in(resets: Tensor | None, lo: int, hi: int) -> Tensor | None:
    if resets is None:
        return None
    inside = resets[(resets >= lo) & (resets < hi)]
    return inside - lo if inside.numel() else None


def _ends_in(ends: list[int], lo: int, hi: int) -> tuple[int, int]:
    """The range ``[j0, j1)`` of the sorted ``ends`` that fall in ``[lo, hi)``."""
    return bisect.bisect_left(ends, lo), bisect.bisect_left(ends, hi)


class SelectiveScanFunction(torch.autograd.Function):
    """The core on time-major tensors: ``u``, ``dt`` ``[L, batch, D]`` (``dt`` after bias and
    softplus), ``A`` ``[D, N]``, ``B``, ``C`` ``[L, batch, G, N]`` or ``[D, N]``; ``ends``: the
    sorted positions whose states are returned (each packed sequence's last one); returns
    ``y = sum_n h C`` ``[L, batch, D]`` and those states ``[len(ends), batch, D, N]``."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, resets, ends, slab_len, clamp, save_entries):  # noqa: D102
        length, batch, channels = u.shape
        n = A.shape[1]
        num_slabs = -(-length // slab_len)
        T0 = min(slab_len, length)
        a_buf = u.new_empty(T0, batch, channels, n)
        h_buf = u.new_empty(T0, batch, channels, n)
        # the states entering each slab, kept for the backward pass (1 / slab_len of [L, batch, D, N])
        entries = u.new_zeros(num_slabs if save_entries else 1, batch, channels, n)
        y = u.new_empty(length, batch, channels)
        finals = u.new_empty(len(ends), batch, channels, n)
        h_steps, a_steps = h_buf.unbind(0), a_buf.unbind(0)
        state = None
        for k in range(num_slabs):
            lo, hi = k * slab_len, min(length, (k + 1) * slab_len)
            T = hi - lo
            _decays(a_buf[:T], dt[lo:hi], A, _resets_in(resets, lo, hi), clamp)
            h = _input_term(h_buf[:T], dt[lo:hi] * u[lo:hi], _slab_of(B, lo, hi))
            _states(h, h_steps, a_steps, state)
            y[lo:hi] = _contract_state(h, _slab_of(C, lo, hi))
            j0, j1 = _ends_in(ends, lo, hi)
            for j in range(j0, j1):
                finals[j].copy_(h_steps[ends[j] - lo])
            if k + 1 < num_slabs:
                state = entries[k + 1] if save_entries else entries[0]
                state.copy_(h[T - 1])
        ctx.save_for_backward(u, dt, A, B, C, entries, resets)
        ctx.slab_len, ctx.clamp, ctx.ends = slab_len, clamp, ends
        return y, finals

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_finals):  # noqa: D102
        u, dt, A, B, C, entries, resets = ctx.saved_tensors
        slab_len, clamp, ends = ctx.slab_len, ctx.clamp, ctx.ends
        need_u, need_dt, need_A, need_B, need_C = ctx.needs_input_grad[:5]
        length, batch, channels = u.shape
        n = A.shape[1]
        num_slabs = entries.shape[0]
        grad_y = u.new_zeros(length, batch, channels) if grad_y is None else grad_y.contiguous()
        T0 = min(slab_len, length)
        a_buf = u.new_empty(T0, batch, channels, n)
        h_buf = u.new_empty(T0, batch, channels, n)
        g_buf = u.new_empty(T0, batch, channels, n)
        grad_u = u.new_empty(length, batch, channels) if need_u else None
        grad_dt = u.new_empty(length, batch, channels) if need_dt else None
        grad_A = torch.zeros_like(A) if need_A else None
        grad_B = (torch.zeros_like(B) if _fixed(B) else torch.empty_like(B)) if need_B else None
        grad_C = (torch.zeros_like(C) if _fixed(C) else torch.empty_like(C)) if need_C else None
        h_steps, a_steps, g_steps = h_buf.unbind(0), a_buf.unbind(0), g_buf.unbind(0)
        carry = None  # the gradient reaching the state after the slab's last position
        for k in reversed(range(num_slabs)):
            lo, hi = k * slab_len, min(length, (k + 1) * slab_len)
            T = hi - lo
            B_s, C_s, gy = _slab_of(B, lo, hi), _slab_of(C, lo, hi), grad_y[lo:hi]
            dt_s, u_s = dt[lo:hi], u[lo:hi]
            dtu = dt_s * u_s
            h_entry = entries[k] if k else None
            a = _decays(a_buf[:T], dt_s, A, _resets_in(resets, lo, hi), clamp)
            h = _states(_input_term(h_buf[:T], dtu, B_s), h_steps, a_steps, h_entry)

            # adjoint recurrence, right to left: g_t = C_t gy_t + a_{t+1} g_{t+1}
            g = _input_term(g_buf[:T], gy, C_s)
            if carry is not None:
                g_steps[T - 1].add_(carry)
            if grad_finals is not None:
                j0, j1 = _ends_in(ends, lo, hi)
                for j in range(j0, j1):
                    g_steps[ends[j] - lo].add_(grad_finals[j])
            for t in range(T - 2, -1, -1):
                g_steps[t].addcmul_(a_steps[t + 1], g_steps[t + 1])
            carry = a_steps[0] * g_steps[0] if k else None

            if need_C:
                part = _contract_channels(h, gy, C_s)
                if _fixed(C):
                    grad_C += part
                else:
                    grad_C[lo:hi] = part
            if need_B:
                part = _contract_channels(g, dtu, B_s)
                if _fixed(B):
                    grad_B += part
                else:
                    grad_B[lo:hi] = part
            if need_u or need_dt:
                gB = _contract_state(g, B_s)  # the gradient of dt * u
                if need_u:
                    torch.mul(gB, dt_s, out=grad_u[lo:hi])
                if need_dt:
                    torch.mul(gB, u_s, out=grad_dt[lo:hi])
            if need_dt or need_A:
                # gradient of dt * A: g_t * a_t * h_{t-1}, built in the decay buffer
                if T > 1:
                    a[1:].mul_(h[:-1])
                if h_entry is not None:
                    a[0].mul_(h_entry)
                else:
                    a[0].zero_()
                g_dA = a.mul_(g)
                if need_dt:
                    grad_dt[lo:hi] += _contract_state(g_dA, A)
                if need_A:
                    grad_A += _contract_channels(g_dA, dt_s, A)
        return grad_u, grad_dt, grad_A, grad_B, grad_C, None, None, None, None, None


class _StatelessScan(torch.autograd.Function):
    """The core when ``batch * D * N = 0`` or ``L = 0``: there is no state to carry, so
    ``y = 0`` and every gradient is zero (shapes as in :class:`SelectiveScanFunction`)."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, num_ends):  # noqa: D102
        ctx.shapes = [(t.shape, t.dtype, t.device) for t in (u, dt, A, B, C)]
        length, batch, channels = u.shape
        return u.new_zeros(length, batch, channels), u.new_zeros(num_ends, batch, channels, A.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_finals):  # noqa: D102
        grads = [torch.zeros(shape, dtype=dtype, device=device) if need else None
                 for (shape, dtype, device), need in zip(ctx.shapes, ctx.needs_input_grad)]
        return (*grads, None)


def _time_major(x: Tensor, reverse: bool) -> Tensor:
    """``[batch, ..., L]`` -> ``[L, batch, ...]`` contiguous, flipped in time when reversed."""
    x = x.movedim(-1, 0)
    return (x.flip(0) if reverse else x).contiguous()


def selective_scan_recurrent(
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
    slab_elements: int | None = None,
    max_slab_bytes: int = DEFAULT_MAX_SLAB_BYTES,
) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrent execution of :func:`~everygraph.sequence.selective_scan` (same
    arguments), plus the tuning knobs: ``slab_elements`` bounds one ``[T, batch, D, N]`` slab
    buffer (the slab length ``T`` is as long as this allows, at least 1; default
    :data:`DEFAULT_SLAB_ELEMENTS` on one CPU thread, else :data:`DEFAULT_SLAB_ELEMENTS_THREADED`),
    ``max_slab_bytes`` is the memory guard for the smallest possible slab."""
    p = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens)
    check_flag("return_last_state", return_last_state)
    check_flag("reverse", reverse)
    if slab_elements is None:
        # on a GPU (untested here) every op is a kernel launch: larger slabs, fewer launches
        one_cpu_thread = u.device.type == "cpu" and torch.get_num_threads() == 1
        slab_elements = DEFAULT_SLAB_ELEMENTS if one_cpu_thread else DEFAULT_SLAB_ELEMENTS_THREADED
    batch, channels, length, n = p.batch, p.channels, p.length, p.state_size
    per_position = batch * channels * n
    itemsize = p.u.element_size()
    estimate = _LIVE_BUFFERS * per_position * itemsize
    if estimate > max_slab_bytes:
        raise MemoryError(
            f"one position of the selective scan needs about {estimate / 2**30:.2f} GiB "
            f"({_LIVE_BUFFERS} buffers of [batch={batch}, D={channels}, N={n}]), over the limit of "
            f"{max_slab_bytes / 2**30:.2f} GiB; lower the batch, D or N (d_state), or raise max_slab_bytes"
        )

    def operand(M: Tensor, original: Tensor) -> Tensor:
        if original.dim() == 2:
            return M.reshape(channels, n)
        return _time_major(M.squeeze(2).transpose(-1, -2), reverse)  # [b, g, 1, L, N] -> [L, b, g, N]

    u_t = _time_major(p.u.reshape(batch, channels, length), reverse)
    dt_t = _time_major(p.delta.reshape(batch, channels, length), reverse)
    A_c = p.A.reshape(channels, n)
    B_t, C_t = operand(p.B, B), operand(p.C, C)
    # each packed sequence's final state is read after its last step in scan order
    positions, sequences = final_positions(cu_seqlens, length, reverse)
    ends = [length - 1 - i for i in positions] if reverse else positions
    if reverse:
        ends, sequences = ends[::-1], sequences[::-1]

    if per_position == 0 or length == 0:
        y_t, finals = _StatelessScan.apply(u_t, dt_t, A_c, B_t, C_t, len(ends))
    else:
        slab_len = max(1, min(length, slab_elements // per_position))
        keep = check_cu_seqlens(flip_cu_seqlens(cu_seqlens, length), length) if reverse else p.keep
        resets = None if keep is None else torch.nonzero(~keep.to(u.device)).view(-1)
        # the clamp costs a pass over the decays: skip it when no exponent can fall below the bound
        dt_lo, dt_hi = torch.aminmax(dt_t.detach())
        A_lo, A_hi = torch.aminmax(A_c.detach())
        lowest = torch.stack([dt_lo * A_lo, dt_lo * A_hi, dt_hi * A_lo, dt_hi * A_hi]).min()
        clamp = bool(lowest < MIN_LOG_DECAY)
        save = torch.is_grad_enabled() and any(t.requires_grad for t in (u_t, dt_t, A_c, B_t, C_t))
        y_t, finals = SelectiveScanFunction.apply(u_t, dt_t, A_c, B_t, C_t, resets, ends, slab_len, clamp, save)
    y = (y_t.flip(0) if reverse else y_t).movedim(0, -1)
    out = finish(y, u, D, z, u.dtype)
    if not return_last_state:
        return out
    if reverse:
        finals, sequences = finals.flip(0), sequences[::-1]
    return out, assemble_final_states(finals, sequences, cu_seqlens, batch, channels, n)
