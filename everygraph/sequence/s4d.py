r"""S4D: the input-independent diagonal state space model, in two executions that agree.

Gu, Gupta, Goel, Ré, *On the Parameterization and Initialization of Diagonal State Space
Models* (NeurIPS 2022, https://arxiv.org/abs/2206.11893); the linear state space layer of
Gu et al., *Combining Recurrent, Convolutional, and Continuous-time Models with Linear State
Space Layers* (NeurIPS 2021, https://arxiv.org/abs/2110.13985).

Per channel :math:`h` a continuous system :math:`x' = A x + B u`, :math:`y = 2\,\mathrm{Re}(C x) + D u`
with diagonal complex :math:`A \in \mathbb{C}^{n}` (:math:`n = N/2` modes; their conjugates are
implied by the real part), discretised with step :math:`\Delta = e^{\log \Delta}`:

* ZOH: :math:`\bar A = e^{\Delta A}`, :math:`\bar B = (e^{\Delta A} - 1) / A \cdot B`;
* bilinear: :math:`\bar A = (1 + \Delta A/2) / (1 - \Delta A/2)`, :math:`\bar B = \Delta / (1 - \Delta A/2) \cdot B`.

Then :math:`x_k = \bar A x_{k-1} + \bar B u_k`, :math:`y_k = 2\,\mathrm{Re}(C x_k) + D u_k`, which
is the convolution :math:`y = K * u + D u` with the kernel
:math:`K_l = 2\,\mathrm{Re}\sum_n C_n \bar B_n \bar A_n^l` (a Vandermonde product).

``mode="recurrent"`` runs the recurrence on the scan engine
(:func:`~everygraph.sequence.path_scan`, ``kind="diagonal"``, complex states, execution
``"recurrent"``): :math:`O(L\,n)` work in a sequential loop of :math:`L` steps.
``mode="conv"`` builds :math:`K` (:func:`s4d_kernel`) and applies it with an FFT:
:math:`O(L\,n)` for the kernel plus :math:`O(L \log L)` per channel, all vectorised.

On a grid or DAG (``structure=``) every node sums its predecessors' states before the
transition, :math:`x_n = \bar A \sum_{m \to n} x_m + \bar B u_n`: the engine's diagonal kind
on complex states by the ``"wavefront"`` execution (no convolution form off a path).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from ..graphlib import DAG, Lattice, check_choice, check_flag, check_ptr, check_size, check_tensor
from .plstm.layout import lattice_dag
from .recurrence import path_scan, scan

Structure = Union[Lattice, DAG, None]

DISCRETIZATIONS = ("zoh", "bilinear")
MODES = ("conv", "recurrent")


def _check(log_dt: Tensor, A: Tensor, B: Tensor, C: Tensor | None, discretization: str) -> None:
    """Refuse (not cast) what the discretisation cannot take: ``log_dt`` real ``[H]``, the
    others complex ``[H, n]`` of its complex dtype, ``discretization`` known."""
    check_tensor(log_dt, "log_dt", "float", 1, shape="[H]")
    matrices = dict(A=A, B=B) if C is None else dict(A=A, B=B, C=C)
    for name, t in matrices.items():
        check_tensor(t, name, "inexact", 2, shape="[H, n]")
        if not t.is_complex():
            raise ValueError(f"{name} must be complex [H, n] (one entry per conjugate pair of modes), got dtype {t.dtype}")
    check_choice(discretization, "discretization", DISCRETIZATIONS)
    H = log_dt.shape[0]
    for name, t in matrices.items():
        if t.shape[0] != H or t.shape != A.shape:
            raise ValueError(f"{name} must have shape [H, n] = [{H}, {A.shape[-1]}] (H from log_dt, n from A), got {list(t.shape)}")
    for name, t in matrices.items():
        if t.dtype != A.dtype or A.real.dtype != log_dt.dtype:
            raise ValueError(
                f"{name} must have the complex dtype of A matching log_dt's real dtype, got "
                f"log_dt {log_dt.dtype}, A {A.dtype}, {name} {t.dtype}"
            )


def s4d_discretize(log_dt: Tensor, A: Tensor, B: Tensor, discretization: str = "zoh") -> tuple[Tensor, Tensor]:
    r"""The discrete :math:`(\bar A, \bar B)`, each ``[H, n]`` complex, of ``log_dt`` ``[H]``,
    ``A``, ``B`` ``[H, n]`` by ``"zoh"`` or ``"bilinear"`` (formulas in the module docstring)."""
    _check(log_dt, A, B, None, discretization)
    dt = log_dt.exp()[:, None]
    dtA = dt * A
    if discretization == "zoh":
        dA = dtA.exp()
        return dA, (dA - 1) / A * B
    if discretization == "bilinear":
        denominator = 1 - dtA / 2
        return (1 + dtA / 2) / denominator, dt / denominator * B
    raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")


def s4d_kernel(log_dt: Tensor, A: Tensor, B: Tensor, C: Tensor, length: int, discretization: str = "zoh") -> Tensor:
    r"""The convolution kernel :math:`K_l = 2\,\mathrm{Re}\sum_n C_n \bar B_n \bar A_n^l`,
    ``l < length``, by a Vandermonde product :math:`\bar A_n^l = e^{l \log \bar A_n}`.

    Args:
        log_dt: ``[H]`` real; A, B, C: ``[H, n]`` complex.
        length: :math:`L \ge 0`.
        discretization: ``"zoh"`` (default) or ``"bilinear"``.

    Returns:
        ``K`` ``[H, L]`` real.

    Example:
        >>> H, n = 2, 4
        >>> A = torch.complex(-0.5 * torch.ones(H, n), torch.pi * torch.arange(n).float().expand(H, n))
        >>> K = s4d_kernel(torch.full((H,), -3.0), A, torch.ones(H, n, dtype=torch.cfloat), torch.randn(H, n, dtype=torch.cfloat), 16)
    """
    _check(log_dt, A, B, C, discretization)
    length = check_size(length, "length", 0)
    dA, dB = s4d_discretize(log_dt, A, B, discretization)
    if discretization == "zoh":
        log_dA = log_dt.exp()[:, None] * A  # exactly log of exp(dt A), no branch cut
    else:
        log_dA = dA.log()  # any branch: exp(l log z) = z^l for integer l
    steps = torch.arange(length, device=A.device, dtype=log_dt.dtype)
    vandermonde = (log_dA[..., None] * steps).exp()  # [H, n, L]
    return 2 * torch.einsum("hn,hnl->hl", C * dB, vandermonde).real


def s4d(
    u: Tensor,
    log_dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    *,
    discretization: str = "zoh",
    mode: str = "conv",
    initial_state: Tensor | None = None,
    return_state: bool = False,
    structure: Structure = None,
    cu_seqlens: Tensor | None = None,
    reverse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The S4D state space model on a sequence (by convolution or by the recurrence, same
    result), on packed sequences, on a grid or on any DAG.

    On a sequence:

    .. math::
        x_k = \bar A x_{k-1} + \bar B u_k, \qquad y_k = 2\,\mathrm{Re}(C x_k) + D u_k, \qquad x_{-1} = 0

    (or :math:`x_{-1}` = ``initial_state``). On a grid or DAG every node sums the states of its
    predecessors (one term per edge) before the transition:

    .. math::
        x_n = \bar A \sum_{m \to n} x_m + \bar B u_n, \qquad y_n = 2\,\mathrm{Re}(C x_n) + D u_n

    so :math:`x_n = \sum_m \sum_{\text{paths } m \rightsquigarrow n} \bar A^{\,\mathrm{len}} \bar B u_m`;
    on a path it is the recurrence above. This is :func:`~everygraph.sequence.scan` with
    ``kind="diagonal"`` on complex states, execution ``"wavefront"`` (one batched step per
    topological level): the state on edge :math:`m \to n` is :math:`x_m`, transition and
    mark :math:`\bar A`, ``q = C``, ``k = \bar B``, ``v = u``, source and direct 1.

    Args:
        u: real. Without ``structure``: ``[batch, H, L]``. With a ``structure``:
            ``[batch, N, H]``, nodes along axis 1 as in every other op that takes a structure
            (:func:`~everygraph.sequence.gated_linear_attention`,
            :func:`~everygraph.sequence.lightnet_scan`, ...; a lattice's nodes row-major).
        log_dt: ``[H]`` real, :math:`\log \Delta`.
        A, B, C: ``[H, n]`` complex (one entry per conjugate pair of modes).
        D: ``[H]`` real skip weight.
        discretization: ``"zoh"`` (default) or ``"bilinear"``.
        mode: on sequences, ``"conv"`` (kernel :func:`s4d_kernel` then an FFT convolution;
            default) or ``"recurrent"`` (the scan engine's recurrent execution on complex
            states). Grids and DAGs have no convolution form: they always run the recurrence.
        initial_state: :math:`x_{-1}` ``[batch, H, n]`` complex (the dtype of ``A``), or None
            (zeros). With a state in or out the recurrence runs, whatever ``mode``. One
            sequence only (no ``cu_seqlens``, no grid or DAG).
        return_state: also return the last state ``[batch, H, n]``; passing it as
            ``initial_state`` of the next piece continues the sequence exactly. With
            ``reverse`` (or a flipped 1D lattice) both states belong to the right-to-left scan.
        structure: None (a sequence along ``L``), a :class:`~everygraph.graphlib.Lattice`
            (a 1D lattice is a sequence, a flipped one runs right to left) or a
            :class:`~everygraph.graphlib.DAG` (possibly a batch of graphs, their disjoint union).
        cu_seqlens: ``[num_seqs + 1]`` integer boundaries of sequences packed along ``L``
            (sequences only: ``structure`` None or a 1D lattice); the state restarts at 0 at
            each start and nothing crosses a boundary. Both modes run the packed sequences as
            a zero-padded batch ``[batch * num_seqs, H, longest]``.
        reverse: scan right to left (sequences: each packed sequence; grids and DAGs: every
            edge reversed).

    Returns:
        ``y`` of the layout of ``u`` (real), or ``(y, state)``.

    Example:
        >>> from everygraph.graphlib import Lattice
        >>> H, n = 2, 4
        >>> A = torch.complex(-0.5 * torch.ones(H, n), torch.pi * torch.arange(n).float().expand(H, n))
        >>> B, C = torch.ones(H, n, dtype=torch.cfloat), torch.randn(H, n, dtype=torch.cfloat)
        >>> s4d(torch.randn(3, 12, H), torch.full((H,), -2.0), A, B, C, torch.ones(H), structure=Lattice((3, 4))).shape
        torch.Size([3, 12, 2])
    """
    if structure is not None and not isinstance(structure, (Lattice, DAG)):
        raise TypeError(f"structure must be None, a graphlib.Lattice or a graphlib.DAG, got {type(structure).__name__}")
    layout = "[batch, H, L]" if structure is None else "[batch, N, H]"
    check_tensor(u, "u", "float", 3, shape=layout)
    check_tensor(D, "D", "float", 1, shape="[H]")
    _check(log_dt, A, B, C, discretization)
    check_choice(mode, "mode", MODES)
    check_flag(reverse, "reverse")
    check_flag(return_state, "return_state")
    H = log_dt.shape[0]
    channel_axis = 1 if structure is None else 2
    if u.shape[channel_axis] != H:
        raise ValueError(f"u must have shape {layout} with H = {H} (from log_dt), got {list(u.shape)}")
    if structure is not None and u.shape[1] != structure.num_nodes:
        raise ValueError(f"u must have shape [batch, N, H] with N = {structure.num_nodes} (the structure's nodes), "
                         f"got {list(u.shape)}")
    if list(D.shape) != [H]:
        raise ValueError(f"D must have shape [H] = [{H}], got {list(D.shape)}")
    for name, t in (("u", u), ("D", D)):
        if t.dtype != log_dt.dtype:
            raise ValueError(f"{name} must have log_dt's real dtype {log_dt.dtype}, got {t.dtype}")
    batch, n = u.shape[0], A.shape[-1]
    sequence = structure is None or (isinstance(structure, Lattice) and structure.ndim == 1)
    length = u.shape[2] if structure is None else u.shape[1]
    if cu_seqlens is not None:
        if not sequence:
            raise ValueError(f"cu_seqlens packs sequences; it needs structure None or a 1D Lattice, got {structure!r}")
        check_ptr(cu_seqlens, length, name="cu_seqlens", length_name="the sequence length L", count_name="num_seqs",
                  min_segments=1)
    if initial_state is not None or return_state:
        if not sequence or cu_seqlens is not None:
            raise ValueError("initial_state and return_state take one sequence (structure None or a 1D Lattice, no cu_seqlens)")
    if initial_state is not None:
        if not isinstance(initial_state, Tensor):
            raise TypeError(f"initial_state must be a complex torch.Tensor [batch, H, n], got {type(initial_state).__name__}")
        if list(initial_state.shape) != [batch, H, n] or initial_state.dtype != A.dtype:
            raise ValueError(f"initial_state must have shape [batch, H, n] = {[batch, H, n]} and dtype {A.dtype}, "
                             f"got {list(initial_state.shape)} {initial_state.dtype}")

    if not sequence:
        return _on_structure(u, log_dt, A, B, C, D, discretization, structure, reverse)
    seq = u if structure is None else u.transpose(1, 2)  # [batch, H, L]
    backwards = reverse != (structure is not None and structure.flip[0])
    if backwards:  # every packed sequence read right to left: the whole axis flipped, the boundaries mirrored
        seq = seq.flip(-1)
        cu_seqlens = None if cu_seqlens is None else (length - cu_seqlens).flip(0)
    if cu_seqlens is None:
        y = _one_sequence(seq, log_dt, A, B, C, D, discretization, mode, initial_state, return_state)
    else:
        y = _packed(seq, log_dt, A, B, C, D, discretization, mode, cu_seqlens)
    y, state = y if return_state else (y, None)
    y = y.flip(-1) if backwards else y
    y = y if structure is None else y.transpose(1, 2)
    return (y, state) if return_state else y


def _one_sequence(u: Tensor, log_dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, discretization: str, mode: str,
                  initial_state: Tensor | None, return_state: bool) -> Tensor | tuple[Tensor, Tensor]:
    """Validated ``u`` ``[batch, H, L]``, left to right."""
    batch, H, length = u.shape
    n = A.shape[-1]
    skip = D[:, None] * u
    if u.numel() == 0:  # no batch, channel or position: nothing to convolve (an empty FFT is an error)
        if return_state:
            return skip, initial_state if initial_state is not None else A.new_zeros(batch, H, n)
        return skip
    if mode == "conv" and initial_state is None and not return_state:
        K = s4d_kernel(log_dt, A, B, C, length, discretization)
        if not bool(torch.isfinite(u).all()):
            # an FFT mixes every position into every output, so a NaN or inf at t would reach
            # outputs before t; the direct causal convolution only multiplies u_{<=t} into y_t
            window = torch.nn.functional.pad(u, (length - 1, 0))
            return torch.nn.functional.conv1d(window, K.flip(-1)[:, None, :].to(u.dtype), groups=H) + skip
        n_fft = 2 * length  # zero padding: a linear, not circular, convolution
        y = torch.fft.irfft(torch.fft.rfft(u, n=n_fft) * torch.fft.rfft(K, n=n_fft), n=n_fft)[..., :length]
        return y + skip
    dA, dB = s4d_discretize(log_dt, A, B, discretization)
    # path_scan: C_t = T_t C_{t-1} + k_t v_t^T, h_t = q_t^T (M_t C_{t-1}) + D_t (q_t . k_t) v_t;
    # with T = M = dA, q = C, k = dB, v = u, D = 1 this is h_t = C x_t.
    grid = (batch, length, H)
    q = C.expand(*grid, n)
    k = dB.expand(*grid, n)
    v = u.transpose(1, 2).to(A.dtype)[..., None]  # [batch, L, H, 1]
    transition = dA.expand(*grid, n)
    mark = dA[..., None].expand(*grid, n, 1)
    ones = u.new_ones(grid).to(A.dtype)
    state = None if initial_state is None else initial_state[..., None]  # [batch, H, n, 1]
    h, state = path_scan(q, k, v, ones, transition, mark, ones, kind="diagonal", state=state, scale=1.0,
                         execution="recurrent")
    y = 2 * h[..., 0].real.transpose(1, 2) + skip
    return (y, state[..., 0]) if return_state else y


def _packed(u: Tensor, log_dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, discretization: str, mode: str,
            cu_seqlens: Tensor) -> Tensor:
    r"""Sequences packed along ``L`` of ``u`` ``[batch, H, L]`` as one zero-padded batch
    ``[batch * num_seqs, H, longest]``: each row is its own sequence, so a state (or a NaN)
    never crosses a boundary, and zeros after a sequence's end cannot reach its outputs."""
    batch, H, length = u.shape
    if length == 0:
        return D[:, None] * u
    bounds = cu_seqlens.to(device=u.device, dtype=torch.long)
    num_seqs, longest = bounds.numel() - 1, int(bounds.diff().max())
    positions = torch.arange(length, device=u.device)
    sequence_of = torch.searchsorted(bounds[1:], positions, right=True)  # an empty sequence owns no position
    slot = sequence_of * longest + positions - bounds[sequence_of]
    padded = u.new_zeros(batch, H, num_seqs * longest).index_copy(2, slot, u)
    padded = padded.unflatten(2, (num_seqs, longest)).transpose(1, 2).flatten(0, 1)  # [batch * num_seqs, H, longest]
    y = _one_sequence(padded, log_dt, A, B, C, D, discretization, mode, None, False)
    y = y.unflatten(0, (batch, num_seqs)).transpose(1, 2).flatten(2)  # [batch, H, num_seqs * longest]
    return y.index_select(2, slot)


def _on_structure(u: Tensor, log_dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, discretization: str,
                  structure: Lattice | DAG, reverse: bool) -> Tensor:
    """Validated ``u`` ``[batch, N, H]`` on a grid or DAG: the diagonal kind of the engine on
    complex states, by the wavefront execution."""
    batch, N, H = u.shape
    skip = u * D
    if u.numel() == 0:
        return skip
    if isinstance(structure, Lattice):
        if reverse:
            structure = Lattice(structure.shape, tuple(not f for f in structure.flip))
        dag = lattice_dag(structure)
    else:
        structure = dag = structure.reverse() if reverse else structure
    dA, dB = s4d_discretize(log_dt, A, B, discretization)
    n, edges, lines = dA.shape[-1], dag.num_edges, dag.line_graph().node.numel()
    h = scan(
        structure,
        C.expand(batch, N, H, n),  # q: reads C x_n
        dB.expand(batch, N, H, n),  # k: writes dB u_n
        u.to(A.dtype)[..., None],  # v: [batch, N, H, 1]
        A.new_ones(batch, edges, H),  # source
        dA.expand(batch, lines, H, n),  # the transition through a node
        dA[..., None].expand(batch, edges, H, n, 1),  # mark: a node reads its in-edges' states advanced by dA
        A.new_ones(batch, N, H),  # direct: its own write dB u_n
        kind="diagonal", scale=1.0, execution="wavefront",
    )
    return 2 * h[..., 0].real + skip
