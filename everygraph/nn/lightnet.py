"""The LightNet layer (additive linear recurrence) on sequences, grids and DAGs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphlib import DAG, Lattice
from ..sequence import lightnet_scan

__all__ = ["LightNet"]


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
    :math:`y = W_o\,\big(\mathrm{RMSNorm}(o) \odot \sigma(x W_g)\big)` with the norm per head.

    Parameter names (``q_proj``, ``k_proj``, ``v_proj``, ``g_proj``, ``o_proj``, ``norm``)
    follow the flash-linear-attention convention of
    :class:`~everygraph.nn.GatedLinearAttention`; they are documented here, not taken from the
    official LightNet code, and its state dicts are not claimed to load. Not included: the
    paper's positional encodings (MD-TPE, MD-LRPE), its bidirectional form, short convolutions
    and decoding caches.

    Args:
        hidden_size: channels of input and output.
        num_heads: heads; must divide ``hidden_size * expand_k`` and ``hidden_size``.
        expand_k: key width as a fraction of ``hidden_size`` (values are ``hidden_size`` wide).
        norm_eps: the RMS norm's epsilon.

    Shapes:
        ``forward(x, structure=None)``: ``x`` ``[B, N, hidden_size]`` (or ``[N, hidden_size]``)
        with ``N`` the sequence length, the lattice's node count (row-major) or the DAG's.
        Output: the shape of ``x``.

    Example:
        >>> from everygraph.graphlib import Lattice
        >>> layer = LightNet(32, num_heads=4)
        >>> layer(torch.randn(2, 20, 32), Lattice((4, 5))).shape
        torch.Size([2, 20, 32])
    """

    def __init__(self, hidden_size: int, num_heads: int = 4, *, expand_k: float = 1.0, norm_eps: float = 1e-5):
        super().__init__()
        self.hidden_size, self.num_heads, self.expand_k, self.norm_eps = hidden_size, num_heads, expand_k, norm_eps
        self.key_dim = int(hidden_size * expand_k)
        if num_heads < 1 or hidden_size < 1 or self.key_dim < 1 or self.key_dim % num_heads or hidden_size % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide key_dim={self.key_dim} and hidden_size={hidden_size} "
                f"(expand_k={expand_k})"
            )
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.g_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.norm = nn.RMSNorm(self.head_v_dim, eps=norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.g_proj, self.o_proj):
            linear.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: Tensor, structure: Lattice | DAG | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() not in (2, 3) or x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"LightNet expects x of shape [B, N, {self.hidden_size}] or [N, {self.hidden_size}], "
                f"got {getattr(x, 'shape', type(x).__name__)}"
            )
        unbatched = x.dim() == 2
        if unbatched:
            x = x[None]
        heads = lambda t, d: t.unflatten(-1, (self.num_heads, d))  # noqa: E731
        q = heads(F.silu(self.q_proj(x)), self.head_k_dim)
        k = heads(self.k_proj(x), self.head_k_dim)
        v = heads(self.v_proj(x), self.head_v_dim)
        o = lightnet_scan(structure, q, k, v)
        gate = torch.sigmoid(heads(self.g_proj(x), self.head_v_dim))
        out = self.o_proj((self.norm(o) * gate).flatten(-2))
        return out[0] if unbatched else out

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.hidden_size}, num_heads={self.num_heads}, "
            f"key_dim={self.key_dim}, value_dim={self.hidden_size})"
        )
