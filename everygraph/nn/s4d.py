"""S4D: a diagonal state space layer (the standalone S4D block of the S4 authors)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..graphlib import DAG, Lattice, check_choice, check_flag, check_number, check_size, check_tensor
from ..sequence import s4d, s4d_kernel
from ._decoding import decoding_cache

__all__ = ["S4D", "S4DKernel", "s4d_init_A"]

INITS = ("lin", "inv")
DISCRETIZATIONS = ("zoh", "bilinear")


def s4d_init_A(H: int, n: int, init: str = "lin") -> tuple[Tensor, Tensor]:
    r"""The S4D paper's initialisations of the diagonal :math:`A`, as ``(log_A_real, A_imag)``
    ``[H, n]`` with :math:`A_j = -e^{\log A_{re}} + i A_{im}`, :math:`N = 2n`:

    * ``"lin"`` (S4D-Lin): :math:`A_j = -\tfrac12 + i \pi j`;
    * ``"inv"`` (S4D-Inv): :math:`A_j = -\tfrac12 + i \tfrac{N}{\pi}\big(\tfrac{N}{2j+1} - 1\big)`.
    """
    j = torch.arange(n, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * j
    elif init == "inv":
        N = 2 * n
        imag = N / math.pi * (N / (2 * j + 1) - 1)
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return torch.full((H, n), math.log(0.5)), imag.float().expand(H, n).clone()


class S4DKernel(nn.Module):
    r"""The parameters of :math:`H` diagonal state space models of :math:`n = N/2` complex modes
    (``B = 1``, folded into ``C``), and their convolution kernel ``[H, L]``
    (:func:`~everygraph.sequence.s4d_kernel`).

    Parameters (names and shapes of the S4 authors' standalone ``S4DKernel``): ``log_dt``
    ``[H]``, ``C`` ``[H, n, 2]`` (the real view of a complex ``[H, n]``), ``log_A_real``
    ``[H, n]``, ``A_imag`` ``[H, n]``.
    """

    def __init__(self, d_model: int, N: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1, init: str = "lin",
                 discretization: str = "zoh"):
        super().__init__()
        d_model, N = check_size(d_model, "d_model"), check_size(N, "N", 2)
        if N % 2:
            raise ValueError(f"N (the state size, conjugate pairs of modes) must be an even number >= 2, got {N}")
        dt_max = check_number(dt_max, "dt_max", minimum=0.0, strict=True)
        dt_min = check_number(dt_min, "dt_min", minimum=0.0, maximum=dt_max, strict=False)
        if dt_min == 0:
            raise ValueError(f"dt_min must be a number in (0, dt_max={dt_max}], got {dt_min}")
        check_choice(init, "init", INITS)
        check_choice(discretization, "discretization", DISCRETIZATIONS)
        self.H, self.N, self.dt_min, self.dt_max, self.init, self.discretization = d_model, N, dt_min, dt_max, init, discretization
        self.log_dt = nn.Parameter(torch.empty(d_model))
        self.C = nn.Parameter(torch.empty(d_model, N // 2, 2))
        self.log_A_real = nn.Parameter(torch.empty(d_model, N // 2))
        self.A_imag = nn.Parameter(torch.empty(d_model, N // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """S4D: ``log_dt`` uniform in ``[log dt_min, log dt_max]``, ``C`` standard complex
        normal, ``A`` by ``init`` (:func:`s4d_init_A`)."""
        with torch.no_grad():
            self.log_dt.uniform_(math.log(self.dt_min), math.log(self.dt_max))
            self.C.normal_(0.0, math.sqrt(0.5))  # real and imaginary parts: a standard complex normal
            log_A_real, A_imag = s4d_init_A(self.H, self.N // 2, self.init)
            self.log_A_real.copy_(log_A_real)
            self.A_imag.copy_(A_imag)

    def ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(log_dt, A, B, C)``: ``[H]`` real and three ``[H, n]`` complex."""
        A = torch.complex(-self.log_A_real.exp(), self.A_imag)
        C = torch.view_as_complex(self.C.contiguous())
        return self.log_dt, A, torch.ones_like(A), C

    def forward(self, L: int) -> Tensor:
        """The kernel ``[H, L]``."""
        return s4d_kernel(*self.ssm(), L, self.discretization)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(d_model={self.H}, N={self.N}, init={self.init!r}, discretization={self.discretization!r})"


class S4D(nn.Module):
    r"""S4D layer: a diagonal state space model per channel, GELU, dropout, and a position-wise
    GLU output mixing.

    From `On the Parameterization and Initialization of Diagonal State Space Models
    <https://arxiv.org/abs/2206.11893>`_ (Gu et al., 2022). Per channel :math:`h`:

    .. math::
        x_k = \bar A x_{k-1} + \bar B u_k,\quad y_k = 2\,\mathrm{Re}(C x_k) + D u_k,\qquad
        \bar A = e^{\Delta A}\ (\text{ZOH})

    then :math:`\mathrm{GLU}(W\,\mathrm{dropout}(\mathrm{GELU}(y)) + b)`. Initialisation: S4D-Lin
    (:math:`A_j = -\frac12 + i\pi j`, default) or S4D-Inv (``init="inv"``),
    :math:`\log\Delta \sim U[\log 10^{-3}, \log 10^{-1}]`, ``C`` standard complex normal,
    ``D`` standard normal. ``mode="conv"`` (default) computes the kernel and convolves with an
    FFT; ``mode="recurrent"`` runs the recurrence on the scan engine (same result).

    Parameter names match the S4 authors' standalone ``S4D`` module (``D``, ``kernel.log_dt``,
    ``kernel.C``, ``kernel.log_A_real``, ``kernel.A_imag``, ``output_linear.0.weight``,
    ``output_linear.0.bias``), so its state dicts load.

    **Decoding and carried states**, with the convention of :class:`~everygraph.nn.Mamba`
    (and ``mamba_ssm``): the state is :math:`x` ``[B, H, d_state / 2]`` complex (one entry per
    conjugate pair of modes). ``forward(u, initial_state=..., return_state=True)`` takes and
    returns it (the recurrence then runs, whatever ``mode``); a layer with a ``layer_idx``
    keeps it under that index in ``inference_params.key_value_memory_dict`` (prompt at
    ``seqlen_offset == 0``, continuation afterwards); :meth:`allocate_inference_cache` makes a
    zero one and :meth:`step` decodes one position. The outputs equal the full forward pass.

    Args:
        d_model: channels :math:`H`.
        d_state: state size :math:`N` (:math:`N/2` complex modes).
        dropout: dropout of whole channels after the activation.
        transposed: inputs ``[B, H, L]`` (True, default) or ``[B, L, H]``.
        dt_min, dt_max, init, discretization: of :class:`S4DKernel`.
        mode: ``"conv"`` or ``"recurrent"``.
        layer_idx: this layer's key in the decoding cache.

    **Structures** (:func:`~everygraph.sequence.s4d`): ``forward(u, structure=None, *,
    cu_seqlens=None, reverse=False, ...)`` runs on packed sequences (``cu_seqlens``
    ``[num_seqs + 1]`` along ``L``), right to left (``reverse``), on a
    :class:`~everygraph.graphlib.Lattice` or on any :class:`~everygraph.graphlib.DAG`, where
    every node sums its predecessors' states, :math:`x_n = \bar A \sum_{m \to n} x_m + \bar B u_n`
    (the recurrence; ``mode`` applies to sequences only).

    Shapes:
        input ``u`` ``[B, H, N]`` (``transposed``) or ``[B, N, H]``, ``N`` the sequence length
        or the structure's node count (a lattice row-major; its grid may also come unflattened,
        ``[B, H, *shape]`` or ``[B, *shape, H]``); output the shape of ``u``.

    Example:
        >>> layer = S4D(16, d_state=8)
        >>> layer(torch.randn(2, 16, 100)).shape
        torch.Size([2, 16, 100])
        >>> from everygraph.graphlib import Lattice
        >>> layer(torch.randn(2, 16, 8, 8), Lattice((8, 8))).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0, transposed: bool = True, *,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, init: str = "lin", discretization: str = "zoh",
                 mode: str = "conv", layer_idx: int | None = None):
        super().__init__()
        d_model = check_size(d_model, "d_model")
        d_state = check_size(d_state, "d_state", 2)
        if d_state % 2:
            raise ValueError(f"d_state (the state size, conjugate pairs of modes) must be an even number >= 2, got {d_state}")
        dropout = check_number(dropout, "dropout", minimum=0.0, maximum=1.0)
        check_flag(transposed, "transposed")
        check_choice(mode, "mode", ("conv", "recurrent"))
        self.layer_idx = layer_idx
        self.h, self.n, self.transposed, self.mode = d_model, d_state, transposed, mode
        self.D = nn.Parameter(torch.empty(d_model))
        self.kernel = S4DKernel(d_model, N=d_state, dt_min=dt_min, dt_max=dt_max, init=init, discretization=discretization)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout1d(dropout) if dropout > 0.0 else nn.Identity()
        self.output_linear = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, kernel_size=1), nn.GLU(dim=-2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.D.normal_()
        self.kernel.reset_parameters()
        self.output_linear[0].reset_parameters()

    def _channels_first(self, u: Any, structure: Lattice | DAG | None) -> tuple[Tensor, tuple[int, ...]]:
        """``u`` as ``[B, H, N]`` (``N`` the positions or nodes) and its own shape to restore.

        Sequences and DAGs take ``[B, H, N]`` (``transposed``) or ``[B, N, H]``; a lattice also
        takes its grid unflattened, ``[B, H, *shape]`` or ``[B, *shape, H]`` (row-major)."""
        if structure is not None and not isinstance(structure, (Lattice, DAG)):
            raise TypeError(f"structure must be None, a graphlib.Lattice or a graphlib.DAG, got {type(structure).__name__}")
        grid = tuple(structure.shape) if isinstance(structure, Lattice) else ()
        axes = ["L" if structure is None else "N"] + ([", ".join(map(str, grid))] if len(grid) > 1 else [])
        layouts = [f"[B, H, {a}]" if self.transposed else f"[B, {a}, H]" for a in axes]
        expected = " or ".join(layouts) + f" with H = {self.h} channels (d_model, transposed={self.transposed})"
        check_tensor(u, "u", "float", shape=expected)
        shape = tuple(u.shape)
        nodes = None if structure is None else structure.num_nodes
        if u.dim() == 3:
            positions = (shape[2],) if self.transposed else (shape[1],)
        elif len(grid) > 1 and u.dim() == 2 + len(grid):
            positions = shape[2:] if self.transposed else shape[1:-1]
        else:
            raise ValueError(f"u must have shape {expected}, got {list(shape)}")
        channels = shape[1] if self.transposed else shape[-1]
        if channels != self.h:
            raise ValueError(f"u must have shape {expected}, got {list(shape)}")
        if nodes is not None and positions not in ((nodes,), grid):
            raise ValueError(f"u must have shape {expected} for the structure {structure!r} ({nodes} nodes), got {list(shape)}")
        if not self.transposed:
            u = u.movedim(-1, 1)
        return u.flatten(2), shape

    def forward(self, u: Tensor, structure: Lattice | DAG | None = None, *, cu_seqlens: Tensor | None = None,
                reverse: bool = False, initial_state: Tensor | None = None, return_state: bool = False,
                inference_params: Any = None) -> Tensor | tuple[Tensor, Tensor]:
        u, shape = self._channels_first(u, structure)  # [B, H, N]
        check_flag(reverse, "reverse")
        check_flag(return_state, "return_state")
        cache = None
        if inference_params is not None:
            if structure is not None or cu_seqlens is not None or reverse:
                raise ValueError("decoding (inference_params) runs one sequence left to right: no structure, cu_seqlens "
                                 "or reverse")
            cache = decoding_cache(self, inference_params, u.shape[0])
            if inference_params.seqlen_offset > 0:
                initial_state = cache
        want_state = return_state or cache is not None
        y = s4d(u if structure is None else u.transpose(1, 2), *self.kernel.ssm(), self.D,
                discretization=self.kernel.discretization, mode=self.mode, initial_state=initial_state,
                return_state=want_state, structure=structure, cu_seqlens=cu_seqlens, reverse=reverse)
        if want_state:
            y, state = y
            if cache is not None:
                cache.copy_(state)
        y = y if structure is None else y.transpose(1, 2)  # [B, H, N]
        if y.shape[-1] == 0:  # an empty sequence (nn.Conv1d refuses length 0)
            y = y.new_zeros(y.shape)
        else:
            y = self.output_linear(self.dropout(self.activation(y)))
        if not self.transposed:
            y = y.movedim(1, -1)
        y = y.reshape(shape)
        return (y, state) if return_state else y

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int = 0, dtype: torch.dtype | None = None,
                                 **kwargs: Any) -> Tensor:
        """A zero state ``[batch_size, H, d_state / 2]`` complex (``mamba_ssm``'s signature;
        ``dtype`` is the complex dtype, by default that of the parameters)."""
        weight = self.kernel.C
        if dtype is None:
            dtype = torch.complex128 if weight.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.h, self.n // 2, device=weight.device, dtype=dtype)

    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One decoding step: ``u`` ``[B, H, 1]`` (``[B, 1, H]`` with ``transposed=False``) ->
        ``(y, state)``, ``y`` of the shape of ``u`` and ``state`` updated in place."""
        length_axis = -1 if self.transposed else 1
        if not isinstance(u, Tensor) or u.dim() != 3 or u.shape[length_axis] != 1:
            raise ValueError(f"step takes one position, u [B, H, 1] ([B, 1, H] with transposed=False), "
                             f"got {getattr(u, 'shape', type(u).__name__)}")
        y, new_state = self.forward(u, initial_state=state, return_state=True)
        state.copy_(new_state)
        return y, state

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(d_model={self.h}, d_state={self.n}, init={self.kernel.init!r}, "
                f"discretization={self.kernel.discretization!r}, mode={self.mode!r}, transposed={self.transposed})")
