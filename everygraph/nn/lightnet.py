"""The LightNet layer (additive linear recurrence) on sequences, grids and DAGs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphlib import DAG, Lattice, check_flag, check_number, check_size, check_tensor
from ..sequence import lightnet_scan, lightnet_step
from ._decoding import decoding_cache

__all__ = ["LightNet"]


def _unflattened_grid(x: Any, structure: Lattice | DAG | None, channels: int) -> tuple[int, ...] | None:
    """The shape of ``x`` when it is a lattice's grid unflattened, ``[B, *shape, channels]``
    (nodes row-major once flattened); None otherwise."""
    if not (isinstance(structure, Lattice) and structure.ndim > 1 and isinstance(x, Tensor) and x.dim() == structure.ndim + 2):
        return None
    if tuple(x.shape[1:]) != (*structure.shape, channels):
        raise ValueError(f"x must have shape [B, N, {channels}] or [B, *{list(structure.shape)}, {channels}] for the "
                         f"structure {structure!r}, got {list(x.shape)}")
    return tuple(x.shape)


class LightNet(nn.Module):
    r"""A LightNet token mixer, from `You Only Scan Once: Efficient Multi-dimension Sequential
    Modeling with LightNet <https://arxiv.org/abs/2405.21022>`_ (Qin et al., 2024), on
    sequences, 2D grids (any :class:`~everygraph.graphlib.Lattice`) and DAGs.

    Per head, with :math:`q = \mathrm{silu}(x W_q)`, :math:`k = x W_k`, :math:`v = x W_v`:

    .. math::
        U_n = e^{k_n} v_n^\top + \sum_{m \to n} U_m, \qquad
        \delta_n = e^{k_n} + \sum_{m \to n} \delta_m, \qquad
        o_n = q_n^\top (U_n / \delta_n) / \sqrt{d_k},

    (:func:`~everygraph.sequence.lightnet_scan`: on a sequence the paper's additive
    recurrence, on a grid or DAG a normalised sum over paths), then
    :math:`y = W_o\,\big(\mathrm{RMSNorm}(o) \odot \mathrm{swish}(x W_{g,1} W_{g,2})\big)`:
    one RMS norm over all heads together (``hidden_size`` wide) and a low-rank swish output gate.

    The module structure, parameter names and shapes are those of flash-linear-attention's
    ``fla.layers.lightnet.LightNetAttention`` (``q_proj``, ``k_proj`` ``[num_heads *
    expand_ratio, hidden_size]``, ``v_proj``, ``g_proj.0`` ``[gate_low_rank_dim,
    hidden_size]``, ``g_proj.1`` ``[hidden_size, gate_low_rank_dim]``, ``g_norm.weight``
    ``[hidden_size]``, ``o_proj``; no biases), so its state dicts load with ``strict=True``
    (without its optional short convolutions, which are not implemented here). The scale
    :math:`1/\sqrt{d_k}` is fla's default; the first author's own re-implementation (xmixers'
    ``LightNetAttention``) instead uses scale 1, a sigmoid low-rank gate through ``num_heads``
    channels and adds LRPE; its state dicts do not load here.

    **Decoding** (sequences; the convention of :class:`~everygraph.nn.Mamba`): a layer with a
    ``layer_idx`` keeps ``(recurrent_state [B, H, dk, dv], log_normalizer [B, H, dk])`` under
    that index in ``inference_params.key_value_memory_dict``; with ``seqlen_offset == 0`` the
    call is the prompt, afterwards each call continues from the cache. ``initial_state`` /
    ``return_state`` carry the same pair by hand; :meth:`step` decodes one token.

    Args:
        hidden_size: channels of input and output (values are ``hidden_size`` wide).
        num_heads: heads; must divide ``hidden_size``.
        expand_ratio: key width per head (fla's name; default ``hidden_size // num_heads``).
        gate_low_rank_dim: rank of the output gate (fla's default 128).
        elementwise_affine: a learned scale in the RMS norm.
        norm_eps: the RMS norm's epsilon.
        layer_idx: this layer's key in the decoding cache.

    Shapes:
        ``forward(x, structure=None, *, cu_seqlens=None, reverse=False, initial_state=None,
        return_state=False, inference_params=None)``: ``x`` ``[B, N, hidden_size]`` (or
        ``[N, hidden_size]``) with ``N`` the sequence length, the lattice's node count
        (row-major; a grid may also come unflattened, ``[B, *shape, hidden_size]``) or the
        DAG's; ``cu_seqlens`` ``[num_seqs + 1]`` packs sequences along
        ``N``; ``reverse`` scans right to left (grids and DAGs: every edge reversed).
        Output: the shape of ``x`` (and the state pair with ``return_state``).

    Example:
        >>> from everygraph.graphlib import Lattice
        >>> layer = LightNet(32, num_heads=4, gate_low_rank_dim=8)
        >>> layer(torch.randn(2, 20, 32), Lattice((4, 5))).shape
        torch.Size([2, 20, 32])
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int = 4,
        *,
        expand_ratio: int | None = None,
        gate_low_rank_dim: int = 128,
        elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
    ):
        super().__init__()
        hidden_size, num_heads = check_size(hidden_size, "hidden_size"), check_size(num_heads, "num_heads")
        gate_low_rank_dim = check_size(gate_low_rank_dim, "gate_low_rank_dim")
        norm_eps = check_number(norm_eps, "norm_eps", minimum=0.0)
        check_flag(elementwise_affine, "elementwise_affine")
        if hidden_size % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size}")
        if expand_ratio is None:
            expand_ratio = hidden_size // num_heads
        expand_ratio = check_size(expand_ratio, "expand_ratio")  # the key width per head
        self.hidden_size, self.num_heads, self.expand_ratio, self.norm_eps = hidden_size, num_heads, expand_ratio, norm_eps
        self.gate_low_rank_dim, self.layer_idx = gate_low_rank_dim, layer_idx
        self.key_dim = num_heads * expand_ratio
        self.head_k_dim, self.head_v_dim = expand_ratio, hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.g_proj = nn.Sequential(
            nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
            nn.Linear(gate_low_rank_dim, hidden_size, bias=False),
        )
        self.g_norm = nn.RMSNorm(hidden_size, eps=norm_eps, elementwise_affine=elementwise_affine)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        self.g_norm.reset_parameters()

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        heads = lambda t, d: t.unflatten(-1, (self.num_heads, d))  # noqa: E731
        q = heads(F.silu(self.q_proj(x)), self.head_k_dim)
        return q, heads(self.k_proj(x), self.head_k_dim), heads(self.v_proj(x), self.head_v_dim)

    def _output(self, x: Tensor, o: Tensor) -> Tensor:
        return self.o_proj(self.g_norm(o.flatten(-2)) * F.silu(self.g_proj(x)))

    def _check_x(self, x: Any) -> None:
        check_tensor(x, "x", "float", shape=f"[B, N, {self.hidden_size}] or [N, {self.hidden_size}]")
        if x.dim() not in (2, 3) or x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"LightNet expects x of shape [B, N, {self.hidden_size}] or [N, {self.hidden_size}], "
                f"got {getattr(x, 'shape', type(x).__name__)}"
            )

    def forward(
        self,
        x: Tensor,
        structure: Lattice | DAG | None = None,
        *,
        cu_seqlens: Tensor | None = None,
        reverse: bool = False,
        initial_state: tuple[Tensor, Tensor] | None = None,
        return_state: bool = False,
        inference_params: Any = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        grid = _unflattened_grid(x, structure, self.hidden_size)
        if grid is not None:
            x = x.flatten(1, -2)
        self._check_x(x)
        check_flag(reverse, "reverse")
        unbatched = x.dim() == 2
        if unbatched:
            x = x[None]
        cache = None
        if inference_params is not None:
            if reverse or cu_seqlens is not None:
                raise ValueError("decoding (inference_params) runs one sequence left to right: no cu_seqlens or reverse")
            cache = decoding_cache(self, inference_params, x.shape[0])
            if inference_params.seqlen_offset > 0:
                initial_state = tuple(cache)
        q, k, v = self._qkv(x)
        want_state = return_state or cache is not None
        o = lightnet_scan(structure, q, k, v, initial_state=initial_state, return_state=want_state, cu_seqlens=cu_seqlens,
                          reverse=reverse)
        if want_state:
            o, state = o
            if cache is not None:
                for slot, value in zip(cache, state):
                    slot.copy_(value)
        out = self._output(x, o)
        out = out[0] if unbatched else out
        out = out if grid is None else out.reshape(grid)
        return (out, state) if return_state else out

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int = 0, dtype: torch.dtype | None = None,
                                 **kwargs: Any) -> tuple[Tensor, Tensor]:
        """The empty decoding state ``(recurrent_state [batch_size, H, dk, dv], log_normalizer
        [batch_size, H, dk])``: zeros and :math:`-\\infty` (no position seen)."""
        weight = self.o_proj.weight
        dtype = weight.dtype if dtype is None else dtype
        H, dk, dv = self.num_heads, self.head_k_dim, self.head_v_dim
        return (torch.zeros(batch_size, H, dk, dv, device=weight.device, dtype=dtype),
                torch.full((batch_size, H, dk), float("-inf"), device=weight.device, dtype=dtype))

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One decoding step: ``x`` ``[B, 1, hidden_size]`` -> ``(out [B, 1, hidden_size], state)``,
        the state pair (as :meth:`allocate_inference_cache`) updated in place."""
        self._check_x(x)
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"step takes one token, x [B, 1, {self.hidden_size}], got {list(x.shape)}")
        q, k, v = self._qkv(x[:, 0])
        o, new_state = lightnet_step(q, k, v, state)
        for slot, value in zip(state, new_state):
            slot.copy_(value)
        return self._output(x, o[:, None]), state

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.hidden_size}, num_heads={self.num_heads}, "
            f"key_dim={self.key_dim}, value_dim={self.hidden_size}, gate_low_rank_dim={self.gate_low_rank_dim})"
        )

