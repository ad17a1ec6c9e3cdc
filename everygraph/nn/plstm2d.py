"""pLSTM on images: the 2D lattice in its four diagonal orientations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graphlib import Lattice, check_size, check_tensor, compute_dtype
from ..sequence import plstm_grid_scan
from .plstm_gates import (
    QKVProjection,
    angle_gate,
    check_heads,
    check_mode,
    default_scale,
    head_norm,
    make_head_norm,
    transition_bias,
    transition_gate,
)

__all__ = ["PLSTM2d"]


class PLSTM2d(nn.Module):
    r"""pLSTM layer on a 2D grid of tokens, scanned in the four diagonal orientations.

    From `pLSTM: parallelizable Linear Source Transition Mark networks
    <https://arxiv.org/abs/2506.11997>`_ (Poeppel et al., 2025). The grid is a lattice DAG
    (:class:`~everygraph.graphlib.Lattice`); cell states live on its edges. For a node
    :math:`n` with in-edges from above/left and out-edges down/right:

    .. math::
        C_e = \sum_{e' \in \mathrm{in}(n)} T^n_{e e'} C_{e'} + S^n_e\, k^n (v^n)^\top,\qquad
        h^n = \sum_{e \in \mathrm{in}(n)} M^n_e\, (q^n)^\top C_e / \sqrt{d_k}
              + D^n (q^n \cdot k^n) v^n / \sqrt{d_k}.

    The four orientations (right/left x down/up, i.e. the lattice flips) each have their
    own gates; their outputs are summed, normalised per head and projected. Per node and
    orientation the gates are two sources, two marks, a direct gate and the transition
    matrix :math:`T` (rows: out-axis, columns: in-axis), computed from the node's input:

    * ``mode="P"`` (propagation, at criticality):
      :math:`T = \begin{pmatrix} 1-a & 1-a \\ a & a \end{pmatrix}` (axis 0 = down,
      axis 1 = right) with the angle gate :math:`a = \sigma(b_a + W_a x)`; every column sums
      to 1, so the state's L1 norm is carried without growth or decay along a learned
      direction.
    * ``mode="D"`` (diffusion): :math:`T_{00}, T_{11}, T_{01}` gated, :math:`T_{10} = 0`
      (a state moving down never turns right), which makes the line graph a multitree so
      :math:`|T| \le 1` entrywise bounds the state.

    Gates (``paper_gates=False``): :math:`S, M, D = \sigma(\cdot)`, D-mode
    :math:`T = \sigma(3 + W x)`. ``paper_gates=True`` uses the official parameterisation:
    :math:`T = \tanh(5 (b + W x))` with :math:`b = 1` and the angle
    :math:`a = \sigma(b_a + 0.5\, W_a x / d)`.

    Args:
        dim: channels ``d`` of the input and output.
        num_heads: heads; ``dim`` must be a multiple; head size ``dim // num_heads`` for
            queries, keys and values.
        mode: ``"P"`` or ``"D"``.
        paper_gates: use the paper's gate parameterisation.
        norm: per-head layer norm of the scan output before the output projection.

    Shapes:
        input ``x`` ``[B, H, W, dim]`` (**channels last**: ``H`` rows, ``W`` columns; a
        ``[B, C, H, W]`` image is ``x.permute(0, 2, 3, 1)``); output ``[B, H, W, dim]``.

    Example:
        >>> layer = PLSTM2d(32, num_heads=4, mode="P")
        >>> layer(torch.randn(2, 12, 12, 32)).shape
        torch.Size([2, 12, 12, 32])
    """

    num_orientations = 4

    def __init__(self, dim: int, num_heads: int = 1, mode: str = "P", *, paper_gates: bool = False, norm: bool = True):
        dim = check_size(dim, "dim", 1)
        num_heads = check_size(num_heads, "num_heads", 1)
        super().__init__()
        self.mode = check_mode(mode)
        self.head_dim = check_heads(dim, num_heads)
        self.dim, self.num_heads, self.paper_gates = dim, num_heads, paper_gates
        # per orientation and head: 2 sources, 2 marks, 1 direct, then the transition gates
        self.num_transition_gates = 1 if mode == "P" else 3
        self.gates_per_head = 5 + self.num_transition_gates
        self.qkv = QKVProjection(dim, dim, num_heads)
        self.gate_proj = nn.Linear(dim, self.num_orientations * num_heads * self.gates_per_head)
        self.norm = make_head_norm(dim, num_heads, norm)
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.qkv.reset_parameters()
        self.gate_proj.reset_parameters()
        with torch.no_grad():
            bias = self.gate_proj.bias.view(self.num_orientations, self.num_heads, self.gates_per_head)
            bias.zero_()
            if self.mode == "D":
                bias[..., 5:] = transition_bias(self.paper_gates)
        if self.norm is not None:
            self.norm.reset_parameters()
        self.out_proj.reset_parameters()

    def gates(self, x: Tensor) -> list[dict[str, Tensor]]:
        """Per-node gates of each orientation (in ``Lattice.orientations(2)`` order).

        Returns four dicts with ``source`` ``[B, H, W, heads, 2]``, ``transition``
        ``[B, H, W, heads, 2, 2]`` (``[..., out_axis, in_axis]``), ``mark``
        ``[B, H, W, heads, 2]`` and ``direct`` ``[B, H, W, heads]``, in the compute dtype.
        """
        x = x.to(compute_dtype(x.dtype))
        weight, bias = self.gate_proj.weight.to(x.dtype), self.gate_proj.bias.to(x.dtype)
        pre = torch.nn.functional.linear(x, weight)  # bias added per gate: the paper scales W x only
        pre = pre.view(*x.shape[:-1], self.num_orientations, self.num_heads, self.gates_per_head)
        bias = bias.view(self.num_orientations, self.num_heads, self.gates_per_head)
        out = []
        for o in range(self.num_orientations):
            p, b = pre[..., o, :, :], bias[o]
            source = torch.sigmoid(p[..., 0:2] + b[:, 0:2])
            mark = torch.sigmoid(p[..., 2:4] + b[:, 2:4])
            direct = torch.sigmoid(p[..., 4] + b[:, 4])
            if self.mode == "P":
                a = angle_gate(p[..., 5], b[:, 5], self.dim, self.paper_gates)
                transition = torch.stack([1 - a, a], dim=-1).unsqueeze(-1).expand(*a.shape, 2, 2)
            else:
                g = transition_gate(p[..., 5:8] + b[:, 5:8], self.paper_gates)
                zero = torch.zeros_like(g[..., 0])
                transition = torch.stack(
                    [torch.stack([g[..., 0], g[..., 2]], -1), torch.stack([zero, g[..., 1]], -1)], dim=-2
                )
            out.append(dict(source=source, transition=transition, mark=mark, direct=direct))
        return out

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", "float")
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"PLSTM2d expects x of shape [B, H, W, dim={self.dim}] (channels last), got {list(x.shape)}")
        batch, height, width, _ = x.shape
        if x.numel() == 0:  # an empty batch or grid: nothing to scan
            return x.new_zeros(x.shape)
        dtype = compute_dtype(x.dtype)
        q, k, v = (t.to(dtype).reshape(batch, height, width, self.num_heads, self.head_dim) for t in self.qkv(x))
        # The four orientations are the same DAG up to reversed axes: reversing the flipped
        # axes of every input puts each into the canonical orientation, so all four run as
        # one scan over a batch of 4 * batch grids (one pass of the scan's loops, not four).
        flips = Lattice.orientations(2)
        gates = self.gates(x)

        def canonical(t: Tensor, flip: tuple[bool, ...]) -> Tensor:  # [B, H, W, ...], flips its own inverse
            axes = [1 + a for a, f in enumerate(flip) if f]
            return t.flip(axes) if axes else t

        def stacked(name: str | None, t: Tensor | None = None) -> Tensor:
            return torch.cat([canonical(t if name is None else g[name], f) for f, g in zip(flips, gates)])

        h4 = plstm_grid_scan(
            stacked(None, q), stacked(None, k), stacked(None, v), stacked("source"), stacked("transition"),
            stacked("mark"), stacked("direct"), scale=default_scale(self.head_dim),
        ).reshape(4, batch, height, width, self.num_heads, self.head_dim)
        h = sum(canonical(h4[o], f) for o, f in enumerate(flips)).reshape(batch, height * width, self.num_heads, self.head_dim)
        out = head_norm(h, self.norm).to(x.dtype)
        return self.out_proj(out).reshape(batch, height, width, self.dim)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, paper_gates={self.paper_gates})"
