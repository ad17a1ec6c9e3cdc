"""pLSTM on sequences: the path graph."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graphlib import Lattice, check_size, check_tensor, compute_dtype
from ..sequence import plstm_scan
from .plstm_gates import (
    QKVProjection,
    check_heads,
    check_mode,
    default_scale,
    head_norm,
    make_head_norm,
    transition_bias,
    transition_gate,
)

__all__ = ["PLSTM1d"]


class PLSTM1d(nn.Module):
    r"""pLSTM layer on a sequence (a path graph), causal, left to right.

    From `pLSTM: parallelizable Linear Source Transition Mark networks
    <https://arxiv.org/abs/2506.11997>`_ (Poeppel et al., 2025). On a path the cell state
    lives on the edge ``t -> t+1`` and the recurrence is a gated linear RNN:

    .. math::
        C_t = T_t C_{t-1} + S_t\, k_t v_t^\top,\qquad
        h_t = M_t\, q_t^\top C_{t-1} / \sqrt{d_k} + D_t (q_t \cdot k_t) v_t / \sqrt{d_k},

    i.e. :math:`h_t = \sum_{s<t} M_t (\prod_{r=s+1}^{t-1} T_r) S_s (q_t \cdot k_s) v_s
    + D_t (q_t \cdot k_t) v_t`, per head. :math:`S, M, D = \sigma(W x + b)`.

    * ``mode="D"``: the transition is a gate, :math:`T = \sigma(3 + W_T x)` (default) or the
      paper's :math:`\tanh(5 (1 + W_T x))` (``paper_gates=True``); :math:`|T| < 1`.
    * ``mode="P"``: a path node has one out-edge, so P-mode's column-sum condition at
      criticality leaves :math:`T = 1`: nothing decays, the state is carried unchanged
      (directed propagation); only sources and marks are gated.

    Args:
        dim: channels of input and output.
        num_heads: heads; ``dim`` must be a multiple of it.
        mode: ``"P"`` or ``"D"``.
        paper_gates: the paper's transition parameterisation (D-mode).
        norm: per-head layer norm of the scan output before the output projection.

    Shapes:
        input ``x`` ``[B, L, dim]``; output ``[B, L, dim]``.

    Example:
        >>> layer = PLSTM1d(32, num_heads=4, mode="D")
        >>> layer(torch.randn(2, 100, 32)).shape
        torch.Size([2, 100, 32])
    """

    def __init__(self, dim: int, num_heads: int = 1, mode: str = "D", *, paper_gates: bool = False, norm: bool = True):
        dim = check_size(dim, "dim", 1)
        num_heads = check_size(num_heads, "num_heads", 1)
        super().__init__()
        self.mode = check_mode(mode)
        self.head_dim = check_heads(dim, num_heads)
        self.dim, self.num_heads, self.paper_gates = dim, num_heads, paper_gates
        self.gates_per_head = 4 if mode == "D" else 3  # source, mark, direct (, transition)
        self.qkv = QKVProjection(dim, dim, num_heads)
        self.gate_proj = nn.Linear(dim, num_heads * self.gates_per_head)
        self.norm = make_head_norm(dim, num_heads, norm)
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        self.gate_proj.reset_parameters()
        with torch.no_grad():
            bias = self.gate_proj.bias.view(self.num_heads, self.gates_per_head)
            bias.zero_()
            if self.mode == "D":
                bias[:, 3] = transition_bias(self.paper_gates)
        if self.norm is not None:
            self.norm.reset_parameters()
        self.out_proj.reset_parameters()

    def gates(self, x: Tensor) -> dict[str, Tensor]:
        """Per-position gates ``source``, ``transition``, ``mark``, ``direct``, each
        ``[B, L, heads]`` (``transition`` is all ones in P-mode), in the compute dtype."""
        x = x.to(compute_dtype(x.dtype))
        pre = torch.nn.functional.linear(x, self.gate_proj.weight.to(x.dtype), self.gate_proj.bias.to(x.dtype))
        pre = pre.view(*x.shape[:-1], self.num_heads, self.gates_per_head)
        gates = dict(
            source=torch.sigmoid(pre[..., 0]),
            mark=torch.sigmoid(pre[..., 1]),
            direct=torch.sigmoid(pre[..., 2]),
        )
        if self.mode == "D":
            gates["transition"] = transition_gate(pre[..., 3], self.paper_gates)
        else:
            gates["transition"] = torch.ones_like(pre[..., 0])
        return gates

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", "float")
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"PLSTM1d expects x of shape [B, L, dim={self.dim}], got {list(x.shape)}")
        length = x.shape[1]
        if length == 0 or x.shape[0] == 0:  # nothing to scan
            return x.new_zeros(x.shape)
        dtype = compute_dtype(x.dtype)
        q, k, v = (t.to(dtype) for t in self.qkv(x))
        g = self.gates(x)
        # Path edge t -> t+1: source from node t, mark at node t+1; the line-graph edge
        # (t-1 -> t, t -> t+1) passes node t, so transition t for t = 1..L-2.
        h = plstm_scan(
            Lattice((length,)),
            q,
            k,
            v,
            g["source"][:, :-1],
            g["transition"][:, 1:-1],
            g["mark"][:, 1:],
            g["direct"],
            scale=default_scale(self.head_dim),
        )
        return self.out_proj(head_norm(h, self.norm).to(x.dtype))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, paper_gates={self.paper_gates})"
