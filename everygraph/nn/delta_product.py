"""The (gated) DeltaProduct layer: sequences, lattices and DAGs."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphlib import DAG, Lattice, check_flag, check_number, check_size, check_tensor
from ..sequence import delta_product
from ._decoding import decoding_cache
from .mamba import causal_conv1d

__all__ = ["DeltaProduct"]


class GatedRMSNorm(nn.Module):
    r""":math:`\mathrm{RMSNorm}(x) \odot w \odot \mathrm{silu}(g)` over the last axis (or without
    ``g``, plain RMSNorm); one ``weight`` parameter, as flash-linear-attention's
    ``FusedRMSNormGated`` / ``RMSNorm``."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return out if gate is None else out * F.silu(gate)


class ShortConvolution(nn.Conv1d):
    """Depthwise causal convolution of kernel ``conv_size`` then silu, on sequences
    (``nn.Conv1d`` parameters ``weight`` ``[D, 1, K]``, ``bias``)."""

    def __init__(self, hidden_size: int, kernel_size: int, bias: bool = False):
        super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size, padding=kernel_size - 1, bias=bias)

    def forward(self, x: Tensor, cu_seqlens: Tensor | None = None, reverse: bool = False) -> Tensor:  # [B, L, D]
        return F.silu(causal_conv1d(x.transpose(1, 2), self.weight, self.bias, cu_seqlens, reverse).transpose(1, 2))

    def continued(self, x: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:
        """The convolution of ``x`` ``[B, L, D]`` continuing a sequence whose last
        ``kernel_size - 1`` inputs are ``window`` ``[B, D, kernel_size - 1]``; returns the
        output and the new window."""
        joined = torch.cat([window, x.transpose(1, 2)], dim=-1)  # [B, D, K - 1 + L]
        out = causal_conv1d(joined, self.weight, self.bias)[..., window.shape[-1]:]
        return F.silu(out.transpose(1, 2)), joined[..., joined.shape[-1] - window.shape[-1]:]


def _packed_paths(cu_seqlens: Tensor, length: int) -> DAG:
    """Disjoint paths ``a -> a+1 -> ... -> b-1``, one per packed sequence ``[a, b)``."""
    check_tensor(cu_seqlens, "cu_seqlens", "index", 1, shape="[num_seqs + 1]")
    cu_seqlens = cu_seqlens.long().cpu()
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != length \
            or bool((cu_seqlens.diff() < 0).any()):
        raise ValueError(f"cu_seqlens must be non-decreasing offsets from 0 to L={length}, got {cu_seqlens.tolist()}")
    src = torch.arange(max(length - 1, 0))
    starts = torch.zeros(length + 1, dtype=torch.bool)
    starts[cu_seqlens] = True
    src = src[~starts[1:length]]
    return DAG(torch.stack([src, src + 1]), length)


class DeltaProduct(nn.Module):
    r"""Gated DeltaProduct (and DeltaNet, ``num_householder=1``) on sequences, grids and DAGs.

    From `DeltaProduct: Improving State-Tracking in Linear RNNs via Householder Products
    <https://arxiv.org/abs/2502.10297>`_ (Siems et al., 2025). Per token (node) ``n_h``
    delta-rule steps with keys, values and step sizes projected from :math:`x`:

    .. math::
        H_{t,0} = \gamma_t H_{t-1},\quad
        H_{t,j} = (I - \beta_{t,j} k_{t,j} k_{t,j}^\top) H_{t,j-1} + \beta_{t,j} k_{t,j} v_{t,j}^\top,
        \quad o_t = q_t^\top H_{t,n_h} / \sqrt{d_k}

    :math:`q, k, v = \mathrm{silu}(W x)` (after the short convolution if ``use_short_conv``),
    :math:`q, k` L2-normalised per head, :math:`\beta = \sigma(W_b x)` (times 2 with
    ``allow_neg_eigval``: eigenvalues :math:`1 - \beta \in [-1, 1]`), the forget gate
    :math:`\gamma = \exp(-e^{A_{log}} \mathrm{softplus}(W_a x + b_{dt}))`. The output is
    RMS-normed per head, gated by :math:`\mathrm{silu}(W_g x)` (``use_output_gate``), and
    projected. On a grid or DAG the predecessors' states are summed before a node's steps
    (:func:`~everygraph.sequence.delta_product`).

    Parameter names and shapes follow flash-linear-attention's ``GatedDeltaProduct``
    (``q_proj``, ``k_proj``, ``v_proj``, ``b_proj``, ``a_proj``, ``A_log``, ``dt_bias``,
    ``g_proj``, ``o_norm``, ``o_proj``, ``{q,k,v}_conv1d``; keys and values laid out as
    ``(n_h, heads, dim)``), so its state dicts load; initialisation as there (Xavier-uniform
    with gain :math:`2^{-2.5}`, :math:`A \sim U(0, 16)`, :math:`dt` log-uniform in
    ``[0.001, 0.1]``).

    Args:
        hidden_size: channels of input and output.
        num_heads: heads.
        head_dim: key dimension per head (default ``hidden_size // num_heads``).
        expand_v: value dimension per head = ``head_dim * expand_v``.
        num_householder: ``n_h``, the delta-rule steps per token (1: DeltaNet).
        allow_neg_eigval: :math:`\beta \in [0, 2]` instead of :math:`[0, 1]`.
        use_forget_gate: the gate :math:`\gamma` (gated DeltaProduct).
        use_output_gate: gate the normed output with :math:`\mathrm{silu}(W_g x)`.
        use_short_conv: causal depthwise convolutions (kernel ``conv_size``) of q, k, v; on
            sequences only.
        conv_size, conv_bias, norm_eps: as in flash-linear-attention.
        layer_idx: this layer's key in the decoding cache.

    **Decoding** (sequences, left to right), with the convention of
    :class:`~everygraph.nn.Mamba` (and ``mamba_ssm``): a layer with a ``layer_idx`` keeps its
    state under that index in ``inference_params.key_value_memory_dict`` (an
    :class:`~everygraph.nn.InferenceParams`); with ``seqlen_offset == 0`` the call is the
    prompt, afterwards each call continues from the cache. The state is the tuple
    ``(recurrent_state [B, H, dk, dv],)``, with short convolutions
    ``(recurrent_state, q_window, k_window, v_window)``, each window the last
    ``conv_size - 1`` projected inputs ``[B, channels, conv_size - 1]``.
    ``initial_state`` / ``return_state`` pass it by hand, :meth:`allocate_inference_cache` makes
    an empty one and :meth:`step` decodes one token; the outputs equal the full forward pass.

    Shapes:
        ``forward(x, structure=None, *, cu_seqlens=None, reverse=False)``: with no structure
        ``x`` ``[B, L, hidden_size]`` is a batch of sequences (``cu_seqlens``, ``[S + 1]``,
        packs several along ``L`` with ``B = 1``); with a :class:`~everygraph.graphlib.Lattice`
        ``x`` is ``[B, *shape, hidden_size]`` or ``[B, N, hidden_size]``; with a
        :class:`~everygraph.graphlib.DAG` ``[N, hidden_size]`` or ``[B, N, hidden_size]``.
        The output has the shape of ``x``.

    Example:
        >>> layer = DeltaProduct(32, num_heads=2, num_householder=2)
        >>> layer(torch.randn(2, 10, 32)).shape
        torch.Size([2, 10, 32])
        >>> layer(torch.randn(1, 4, 4, 32), Lattice((4, 4))).shape
        torch.Size([1, 4, 4, 32])
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int = 1,
        head_dim: int | None = None,
        expand_v: float = 2.0,
        num_householder: int = 2,
        allow_neg_eigval: bool = True,
        use_forget_gate: bool = True,
        use_output_gate: bool = True,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
    ):
        super().__init__()
        hidden_size, num_heads = check_size(hidden_size, "hidden_size"), check_size(num_heads, "num_heads")
        num_householder, conv_size = check_size(num_householder, "num_householder"), check_size(conv_size, "conv_size")
        for name, value in dict(allow_neg_eigval=allow_neg_eigval, use_forget_gate=use_forget_gate,
                                use_output_gate=use_output_gate, use_short_conv=use_short_conv, conv_bias=conv_bias).items():
            check_flag(value, name)
        expand_v = check_number(expand_v, "expand_v", minimum=0.0, strict=True)
        norm_eps = check_number(norm_eps, "norm_eps", minimum=0.0)
        if head_dim is not None:
            head_dim = check_size(head_dim, "head_dim")
        self.layer_idx = layer_idx
        if head_dim is None:
            if hidden_size % num_heads:
                raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size} when head_dim is None")
            head_dim = hidden_size // num_heads
        head_v_dim = head_dim * expand_v
        if not float(head_v_dim).is_integer() or head_v_dim < 1:
            raise ValueError(f"head_dim * expand_v must be a positive integer, got {head_dim} * {expand_v} = {head_v_dim}")
        self.hidden_size, self.num_heads, self.head_k_dim, self.head_v_dim = hidden_size, num_heads, head_dim, int(head_v_dim)
        self.expand_v, self.num_householder = expand_v, num_householder
        self.allow_neg_eigval, self.use_forget_gate, self.use_output_gate = allow_neg_eigval, use_forget_gate, use_output_gate
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.key_dim, self.value_dim = num_heads * head_dim, num_heads * self.head_v_dim

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim * num_householder, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim * num_householder, bias=False)
        self.b_proj = nn.Linear(hidden_size, num_heads * num_householder, bias=False)
        if use_forget_gate:
            self.a_proj = nn.Linear(hidden_size, num_heads, bias=False)
            self.A_log = nn.Parameter(torch.empty(num_heads))
            self.dt_bias = nn.Parameter(torch.empty(num_heads))
            self.A_log._no_weight_decay = True
            self.dt_bias._no_weight_decay = True
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, conv_bias)
            self.k_conv1d = ShortConvolution(self.key_dim * num_householder, conv_size, conv_bias)
            self.v_conv1d = ShortConvolution(self.value_dim * num_householder, conv_size, conv_bias)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.o_norm = GatedRMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, gain=2**-2.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, ShortConvolution):
                module.reset_parameters()
        self.o_norm.reset_parameters()
        if self.use_forget_gate:
            with torch.no_grad():
                self.A_log.copy_(torch.empty(self.num_heads).uniform_(0, 16).log())
                dt_min, dt_max, dt_floor = 0.001, 0.1, 1e-4
                dt = torch.exp(torch.rand(self.num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
                dt = dt.clamp(min=dt_floor)
                self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^{-1}(dt)

    def _structure(self, x: Tensor, structure: Lattice | DAG | None, cu_seqlens: Tensor | None) -> tuple[Tensor, Lattice | DAG, tuple]:
        """``x`` as ``[B, N, hidden_size]``, the structure, and the shape to restore."""
        check_tensor(x, "x", "float", shape=f"[B, N, {self.hidden_size}]")
        if x.dim() < 2 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x must end in hidden_size={self.hidden_size} channels, got {list(x.shape)}")
        shape = tuple(x.shape)
        if structure is None:
            if x.dim() != 3:
                raise ValueError(f"x must have shape [B, L, {self.hidden_size}] without a structure, got {list(x.shape)}")
            if cu_seqlens is None:  # a sequence is a path (zero positions: the empty DAG, as a Lattice has no size 0)
                structure = Lattice((x.shape[1],)) if x.shape[1] else DAG(torch.zeros(2, 0, dtype=torch.long), 0)
                return x, structure, shape
            if x.shape[0] != 1:
                raise ValueError(f"with cu_seqlens x must have batch size 1 (sequences packed along L), got {list(x.shape)}")
            return x, _packed_paths(cu_seqlens, x.shape[1]), shape
        if cu_seqlens is not None:
            raise ValueError("cu_seqlens packs sequences; pass it without a structure (or pack them as a DAG of paths)")
        if isinstance(structure, Lattice):
            if tuple(x.shape[1:-1]) == tuple(structure.shape):
                return x.flatten(1, -2), structure, shape
            if x.dim() == 3 and x.shape[1] == structure.num_nodes:
                return x, structure, shape
            raise ValueError(f"x must have shape [B, *{list(structure.shape)}, C] or [B, {structure.num_nodes}, C] for the structure {structure!r}, got {list(x.shape)}")
        if isinstance(structure, DAG):
            if x.dim() == 2:
                x = x[None]
            if x.dim() != 3 or x.shape[1] != structure.num_nodes:
                raise ValueError(f"x must have shape [N, C] or [B, N, C] with N={structure.num_nodes} for the structure {structure!r}, got {list(shape)}")
            return x, structure, shape
        raise TypeError(f"structure must be a graphlib.Lattice, a graphlib.DAG or None, got {type(structure).__name__}")

    def forward(self, x: Tensor, structure: Lattice | DAG | None = None, *, cu_seqlens: Tensor | None = None,
                reverse: bool = False, initial_state: tuple[Tensor, ...] | None = None, return_state: bool = False,
                inference_params: Any = None) -> Tensor | tuple[Tensor, tuple[Tensor, ...]]:
        check_flag(reverse, "reverse")
        check_flag(return_state, "return_state")
        stateful = initial_state is not None or return_state or inference_params is not None
        if stateful and structure is None and cu_seqlens is None and isinstance(x, Tensor) and x.dim() == 3 \
                and x.shape[1] == 0 and x.shape[-1] == self.hidden_size:
            return self._empty(x, initial_state, return_state, inference_params)
        x, structure, shape = self._structure(x, structure, cu_seqlens)
        cache = None
        if inference_params is not None:
            cache = decoding_cache(self, inference_params, x.shape[0])
            if inference_params.seqlen_offset > 0:
                initial_state = cache
        want_state = return_state or cache is not None
        if (want_state or initial_state is not None) and (
                reverse or cu_seqlens is not None or not (isinstance(structure, Lattice) and structure.ndim == 1)):
            raise ValueError("initial_state, return_state and inference_params take sequences read left to right "
                             "(no structure or a 1D Lattice; no cu_seqlens, no reverse)")
        if initial_state is not None:
            initial_state = self._check_state(initial_state, x.shape[0])
        B, N, _ = x.shape
        H, n_h, dk, dv = self.num_heads, self.num_householder, self.head_k_dim, self.head_v_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        windows: tuple[Tensor, ...] = ()
        if self.use_short_conv and (want_state or initial_state is not None):
            empty = self.allocate_inference_cache(B, dtype=x.dtype)
            previous = (initial_state or empty)[1:]
            (q, wq), (k, wk), (v, wv) = (conv.continued(t, w) for conv, t, w in
                                         zip((self.q_conv1d, self.k_conv1d, self.v_conv1d), (q, k, v), previous))
            windows = (wq, wk, wv)
        elif self.use_short_conv:
            is_sequence = isinstance(structure, DAG) and (cu_seqlens is not None or N == 0) or (
                isinstance(structure, Lattice) and structure.ndim == 1)
            if not is_sequence:
                raise ValueError("use_short_conv needs sequences (no structure, or a 1D Lattice); grids and DAGs have no causal window")
            q = self.q_conv1d(q, cu_seqlens, reverse)
            k = self.k_conv1d(k, cu_seqlens, reverse)
            v = self.v_conv1d(v, cu_seqlens, reverse)
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q = F.normalize(q.view(B, N, H, dk), dim=-1)
        k = F.normalize(k.view(B, N, n_h, H, dk), dim=-1).transpose(2, 3)  # [B, N, H, n_h, dk]
        v = v.view(B, N, n_h, H, dv).transpose(2, 3)
        beta = torch.sigmoid(self.b_proj(x)).view(B, N, n_h, H).transpose(2, 3)
        if self.allow_neg_eigval:
            beta = 2 * beta
        gate = None
        if self.use_forget_gate:
            gate = torch.exp(-self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias))
        o = delta_product(structure, q, k, v, beta, gate=gate, scale=dk**-0.5, reverse=reverse,
                          initial_state=None if initial_state is None else initial_state[0],
                          return_state=want_state)  # [B, N, H, dv]
        if want_state:
            o, recurrent = o
            state = (recurrent,) + windows
            if cache is not None:
                for slot, value in zip(cache, state):
                    slot.copy_(value)
        o = self.o_norm(o, self.g_proj(x).view(B, N, H, dv) if self.use_output_gate else None)
        out = self.o_proj(o.reshape(B, N, H * dv)).reshape(shape)
        return (out, state) if return_state else out

    def _empty(self, x: Tensor, initial_state: Any, return_state: bool, inference_params: Any) -> Any:
        """An empty sequence: no output, the state passes through unchanged."""
        out = x.new_zeros(x.shape)
        if inference_params is not None:
            decoding_cache(self, inference_params, x.shape[0])
        if not return_state:
            return out
        state = self._check_state(initial_state, x.shape[0]) if initial_state is not None \
            else self.allocate_inference_cache(x.shape[0], dtype=x.dtype)
        return out, state

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int = 0, dtype: torch.dtype | None = None,
                                 **kwargs: Any) -> tuple[Tensor, ...]:
        """An empty decoding state: ``(recurrent_state,)`` zeros ``[batch_size, H, dk, dv]``,
        with short convolutions also the three input windows (zeros) (``mamba_ssm``'s signature)."""
        weight = self.o_proj.weight
        dtype = weight.dtype if dtype is None else dtype
        make = lambda *shape: torch.zeros(*shape, device=weight.device, dtype=dtype)  # noqa: E731
        state = (make(batch_size, self.num_heads, self.head_k_dim, self.head_v_dim),)
        if self.use_short_conv:
            n_h, width = self.num_householder, self.conv_size - 1
            state += (make(batch_size, self.key_dim, width), make(batch_size, self.key_dim * n_h, width),
                      make(batch_size, self.value_dim * n_h, width))
        return state

    def _check_state(self, state: Any, batch_size: int) -> tuple[Tensor, ...]:
        expected = [list(t.shape) for t in self.allocate_inference_cache(batch_size, dtype=torch.float32)]
        if not isinstance(state, (tuple, list)) or [list(getattr(t, "shape", [])) for t in state] != expected:
            got = [list(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in state] \
                if isinstance(state, (tuple, list)) else type(state).__name__
            raise ValueError(f"the state must be a tuple of tensors with shapes {expected} "
                             f"(see allocate_inference_cache), got {got}")
        return tuple(state)

    def step(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One decoding step: ``x`` ``[B, 1, hidden_size]`` -> ``(out [B, 1, hidden_size], state)``,
        the state tuple (as :meth:`allocate_inference_cache`) updated in place."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"step takes one token, x [B, 1, {self.hidden_size}], got {getattr(x, 'shape', type(x).__name__)}")
        out, new_state = self.forward(x, initial_state=state, return_state=True)
        for slot, value in zip(state, new_state):
            slot.copy_(value)
        return out, state

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.hidden_size}, num_heads={self.num_heads}, head_dim={self.head_k_dim}, "
            f"head_v_dim={self.head_v_dim}, num_householder={self.num_householder}, "
            f"allow_neg_eigval={self.allow_neg_eigval}, use_forget_gate={self.use_forget_gate}, "
            f"use_output_gate={self.use_output_gate}, use_short_conv={self.use_short_conv})"
        )
