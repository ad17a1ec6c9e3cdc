"""The gated linear attention layer on sequences, grids and DAGs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphlib import DAG, Lattice, check_choice, check_flag, check_number, check_size, check_tensor
from ..sequence import gated_linear_attention
from ._decoding import decoding_cache

__all__ = ["GatedLinearAttention"]


class _HeadRMSNorm(nn.Module):
    """RMS norm over the last axis with a learned scale, optionally gated by ``silu(g)``."""

    def __init__(self, hidden_size: int, eps: float, elementwise_affine: bool):
        super().__init__()
        self.hidden_size, self.eps = hidden_size, eps
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight
        return out if gate is None else out * F.silu(gate)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"


class GatedLinearAttention(nn.Module):
    r"""Gated linear attention (GLA), from `Gated Linear Attention Transformers with
    Hardware-Efficient Training <https://arxiv.org/abs/2312.06635>`_ (Yang et al., 2023), on
    sequences, packed sequences, 2D grids and DAGs.

    Per head, with :math:`q, k, v` linear projections of :math:`x` and the paper's low-rank
    gate with temperature :math:`\tau` (``gate_logit_normalizer``, 16):

    .. math::
        \alpha_t = \sigma(x_t W_1 W_2 + b)^{1/\tau}, \qquad
        S_t = \mathrm{diag}(\alpha_t) S_{t-1} + k_t v_t^\top, \qquad o_t = q_t^\top S_t / \sqrt{d_k},

    then :math:`y_t = W_O\,\big(\mathrm{RMSNorm}(o_t) \odot \mathrm{swish}(x_t W_r)\big)` (norm per
    head). On a grid or DAG the state of a node decays the sum (``aggregate="sum"``) or mean of
    its predecessors' states (:func:`~everygraph.sequence.gated_linear_attention`).

    Parameter names and shapes are those of flash-linear-attention's
    ``fla.layers.gla.GatedLinearAttention`` (``q_proj``, ``k_proj``, ``v_proj``, ``g_proj``,
    ``gk_proj`` = two linears of rank ``gate_low_rank_dim``, ``o_proj``, and
    ``g_norm_swish_gate``, or ``g_norm`` when ``fuse_norm=False`` or without output gate), so
    its state dicts load. Not supported: ``num_kv_heads`` (grouped keys), ``feature_map`` and
    short convolutions.

    **Decoding** (sequences), with the convention of :class:`~everygraph.nn.Mamba` (and
    ``mamba_ssm``): a layer with a ``layer_idx`` keeps its state ``[B, H, dk, dv]`` under that
    index in ``inference_params.key_value_memory_dict`` (an :class:`~everygraph.nn.InferenceParams`);
    with ``seqlen_offset == 0`` the call is the prompt (the full scan, then the cache is
    filled), afterwards each call continues from the cache. ``initial_state`` /
    ``return_state`` pass the state by hand (fla's ``initial_state`` / ``output_final_state``),
    :meth:`allocate_inference_cache` makes an empty one and :meth:`step` decodes one token.
    The outputs equal the full forward pass position by position.

    Args:
        hidden_size: channels of input and output.
        expand_k, expand_v: key / value width as a fraction of ``hidden_size``.
        num_heads: heads; must divide both widths.
        use_output_gate: the swish output gate ``g_proj``.
        elementwise_affine: a learned scale in the RMS norm.
        norm_eps: the RMS norm's epsilon.
        gate_logit_normalizer: the temperature :math:`\tau`.
        gate_low_rank_dim: rank of the gate projection.
        clamp_min: lower bound of :math:`\log\alpha`, or None.
        fuse_norm: name the norm ``g_norm_swish_gate`` (as fla does when the swish gate is fused).
        aggregate: ``"sum"`` or ``"mean"`` over predecessors on grids and DAGs.
        layer_idx: this layer's key in the decoding cache.

    Shapes:
        ``forward(x, structure=None, cu_seqlens=None, reverse=False, *, initial_state=None,
        return_state=False, inference_params=None)``: ``x`` ``[B, N, hidden_size]``
        (or ``[N, hidden_size]``) with ``N`` the sequence length, the lattice's node count
        (row-major; a grid may also come unflattened, ``[B, *shape, hidden_size]``) or the DAG's; ``cu_seqlens`` ``[num_seqs + 1]`` packs sequences along ``N``.
        Output: the shape of ``x``, and with ``return_state`` the state ``[B, H, dk, dv]``.

    Example:
        >>> layer = GatedLinearAttention(64, num_heads=4)
        >>> layer(torch.randn(2, 100, 64)).shape
        torch.Size([2, 100, 64])
    """

    def __init__(
        self,
        hidden_size: int = 1024,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        num_heads: int = 4,
        *,
        use_output_gate: bool = True,
        elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        gate_logit_normalizer: float = 16,
        gate_low_rank_dim: int = 16,
        clamp_min: float | None = None,
        fuse_norm: bool = True,
        aggregate: str = "sum",
        layer_idx: int | None = None,
    ):
        super().__init__()
        hidden_size, num_heads = check_size(hidden_size, "hidden_size"), check_size(num_heads, "num_heads")
        gate_low_rank_dim = check_size(gate_low_rank_dim, "gate_low_rank_dim")
        expand_k = check_number(expand_k, "expand_k", minimum=0.0, strict=True)
        expand_v = check_number(expand_v, "expand_v", minimum=0.0, strict=True)
        norm_eps = check_number(norm_eps, "norm_eps", minimum=0.0)
        gate_logit_normalizer = check_number(gate_logit_normalizer, "gate_logit_normalizer", minimum=0.0, strict=True)
        if clamp_min is not None:
            clamp_min = check_number(clamp_min, "clamp_min")
        for name, value in dict(use_output_gate=use_output_gate, elementwise_affine=elementwise_affine, fuse_norm=fuse_norm).items():
            check_flag(value, name)
        check_choice(aggregate, "aggregate", ("sum", "mean"))
        self.layer_idx = layer_idx
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads or self.key_dim == 0 or self.value_dim == 0:
            raise ValueError(
                f"num_heads={num_heads} must divide key_dim={self.key_dim} and value_dim={self.value_dim} "
                f"(hidden_size={hidden_size}, expand_k={expand_k}, expand_v={expand_v})"
            )
        if gate_logit_normalizer <= 0:
            raise ValueError(f"gate_logit_normalizer must be positive, got {gate_logit_normalizer}")
        if aggregate not in ("sum", "mean"):
            raise ValueError(f"aggregate must be 'sum' or 'mean', got {aggregate!r}")
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        self.expand_k, self.expand_v = expand_k, expand_v
        self.use_output_gate, self.gate_logit_normalizer = use_output_gate, gate_logit_normalizer
        self.gate_low_rank_dim, self.clamp_min, self.aggregate = gate_low_rank_dim, clamp_min, aggregate
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
            nn.Linear(gate_low_rank_dim, self.key_dim, bias=True),
        )
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.fused_norm = fuse_norm and use_output_gate
        norm = _HeadRMSNorm(self.head_v_dim, norm_eps, elementwise_affine)
        if self.fused_norm:
            self.g_norm_swish_gate = norm
        else:
            self.g_norm = norm
        self.reset_parameters()

    @property
    def norm(self) -> _HeadRMSNorm:
        return self.g_norm_swish_gate if self.fused_norm else self.g_norm

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        self.norm.reset_parameters()

    def log_alpha(self, x: Tensor) -> Tensor:
        r""":math:`\log\alpha = \log\sigma(x W_1 W_2 + b) / \tau`, ``[..., heads, head_k_dim]``."""
        log_alpha = F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            log_alpha = log_alpha.clamp_min(self.clamp_min)
        return log_alpha.unflatten(-1, (self.num_heads, self.head_k_dim))

    def forward(
        self,
        x: Tensor,
        structure: Lattice | DAG | None = None,
        cu_seqlens: Tensor | None = None,
        reverse: bool = False,
        *,
        initial_state: Tensor | None = None,
        return_state: bool = False,
        inference_params: Any = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        grid = None
        if isinstance(structure, Lattice) and structure.ndim > 1 and isinstance(x, Tensor) and x.dim() == structure.ndim + 2:
            if tuple(x.shape[1:]) != (*structure.shape, self.hidden_size):
                raise ValueError(f"x must have shape [B, N, {self.hidden_size}] or [B, *{list(structure.shape)}, "
                                 f"{self.hidden_size}] for the structure {structure!r}, got {list(x.shape)}")
            grid, x = tuple(x.shape), x.flatten(1, -2)  # a grid unflattened: nodes row-major
        check_tensor(x, "x", "float", (2, 3), shape=f"[B, N, {self.hidden_size}] or [N, {self.hidden_size}]")
        check_flag(reverse, "reverse")
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"GatedLinearAttention expects x of shape [B, N, {self.hidden_size}] or [N, {self.hidden_size}], got {getattr(x, 'shape', type(x).__name__)}")
        check_flag(return_state, "return_state")
        unbatched = x.dim() == 2
        if unbatched:
            x = x[None]
        cache = None
        if inference_params is not None:
            if reverse:
                raise ValueError("decoding (inference_params) runs left to right; reverse=True reads the future")
            cache = decoding_cache(self, inference_params, x.shape[0])
            if inference_params.seqlen_offset > 0:
                initial_state = cache
        heads = lambda t, d: t.unflatten(-1, (self.num_heads, d))  # noqa: E731
        q, k = heads(self.q_proj(x), self.head_k_dim), heads(self.k_proj(x), self.head_k_dim)
        v = heads(self.v_proj(x), self.head_v_dim)
        want_state = return_state or cache is not None
        o = gated_linear_attention(
            structure, q, k, v, self.log_alpha(x), cu_seqlens=cu_seqlens, reverse=reverse, aggregate=self.aggregate,
            initial_state=initial_state, return_state=want_state,
        )
        if want_state:
            o, state = o
            if cache is not None:
                cache.copy_(state)
        gate = heads(self.g_proj(x), self.head_v_dim) if self.use_output_gate else None
        out = self.o_proj(self.norm(o, gate).flatten(-2))
        out = out[0] if unbatched else out
        out = out if grid is None else out.reshape(grid)
        return (out, state) if return_state else out

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int = 0, dtype: torch.dtype | None = None,
                                 **kwargs: Any) -> Tensor:
        """A zero decoding state ``[batch_size, H, dk, dv]`` (``mamba_ssm``'s signature;
        ``max_seqlen`` is not needed by a recurrence)."""
        weight = self.o_proj.weight
        return torch.zeros(batch_size, self.num_heads, self.head_k_dim, self.head_v_dim, device=weight.device,
                           dtype=weight.dtype if dtype is None else dtype)

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One decoding step: ``x`` ``[B, 1, hidden_size]`` -> ``(out [B, 1, hidden_size], state)``
        with ``state`` ``[B, H, dk, dv]`` updated in place."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"step takes one token, x [B, 1, {self.hidden_size}], got {getattr(x, 'shape', type(x).__name__)}")
        out, new_state = self.forward(x, initial_state=state, return_state=True)
        state.copy_(new_state)
        return out, state

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.hidden_size}, num_heads={self.num_heads}, key_dim={self.key_dim}, "
            f"value_dim={self.value_dim}, gate_low_rank_dim={self.gate_low_rank_dim}, "
            f"gate_logit_normalizer={self.gate_logit_normalizer}, aggregate={self.aggregate!r})"
        )
