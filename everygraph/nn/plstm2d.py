"""pLSTM on images: the 2D lattice in its four diagonal orientations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graphlib import Lattice, check_size, check_tensor, compute_dtype
from ..sequence import plstm_grid_gating, plstm_grid_scan
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

    Execution: the orientations share queries, keys and values, so on small grids
    (:meth:`dense`) their gating matrices add up and the layer is one masked attention
    :math:`((\tilde Q K^\top) \circ \sum_f G_f) V` per head
    (:func:`~everygraph.sequence.plstm_grid_gating`); on larger grids the four orientations run
    as one scan of a batch of ``4 B`` grids (:func:`~everygraph.sequence.plstm_grid_scan`).
    Both equal the per-orientation reference loop.

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
        source, transition, mark, direct = self.gate_tensors(x)
        return [dict(source=source[:, :, :, o], transition=transition[:, :, :, o], mark=mark[:, :, :, o],
                     direct=direct[:, :, :, o]) for o in range(self.num_orientations)]

    def gate_tensors(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The gates of all orientations at once, orientation axis after the grid's:
        ``source`` ``[B, H, W, 4, heads, 2]``, ``transition`` ``[B, H, W, 4, heads, 2, 2]``,
        ``mark`` ``[B, H, W, 4, heads, 2]``, ``direct`` ``[B, H, W, 4, heads]`` (what
        :meth:`gates` returns, stacked), in the compute dtype."""
        x = x.to(compute_dtype(x.dtype))
        weight, bias = self.gate_proj.weight.to(x.dtype), self.gate_proj.bias.to(x.dtype)
        pre = torch.nn.functional.linear(x, weight)  # bias added per gate: the paper scales W x only
        pre = pre.view(*x.shape[:-1], self.num_orientations, self.num_heads, self.gates_per_head)
        bias = bias.view(self.num_orientations, self.num_heads, self.gates_per_head)
        if not self.paper_gates:  # every gate is sigmoid(b + W x): one activation for all of them
            gates, transition_gates = torch.sigmoid(pre + bias).split([5, self.num_transition_gates], dim=-1)
        else:
            (pre, pre_transition), (bias, bias_transition) = (t.split([5, self.num_transition_gates], dim=-1) for t in (pre, bias))
            gates = torch.sigmoid(pre + bias)
            if self.mode == "P":
                transition_gates = angle_gate(pre_transition, bias_transition, self.dim, True)
            else:
                transition_gates = transition_gate(pre_transition + bias_transition, True)
        # split, not slices: the gradient of a split is one concatenation, that of each slice a
        # zero-filled tensor of the full size
        source, mark, direct = gates.split([2, 2, 1], dim=-1)
        direct = direct.squeeze(-1)
        if self.mode == "P":
            a = transition_gates.squeeze(-1)
            transition = torch.stack([1 - a, a], dim=-1).unsqueeze(-1).expand(*a.shape, 2, 2)
        else:  # [[g0, g2], [0, g1]]: a state moving down never turns right
            padded = torch.nn.functional.pad(transition_gates, (0, 1))
            transition = padded[..., [0, 2, 3, 1]].view(*padded.shape[:-1], 2, 2)
        return source, transition, mark, direct

    def dense(self, height: int, width: int) -> bool:
        """Whether the layer runs as one masked attention with the grid's gating matrix
        (:func:`~everygraph.sequence.plstm_grid_gating`) rather than a scan: on grids whose
        ``(H W)^2`` matrix per head costs no more than the scan's ``dk x dv`` states per edge
        (``3 H W <= 2 head_dim^2``, the rule by which the scan itself runs a grid as one block,
        e.g. a 6 x 6 patch grid at head size 8)."""
        return 3 * height * width <= 2 * self.head_dim**2

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", "float")
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"PLSTM2d expects x of shape [B, H, W, dim={self.dim}] (channels last), got {list(x.shape)}")
        batch, height, width, _ = x.shape
        if x.numel() == 0:  # an empty batch or grid: nothing to scan
            return x.new_zeros(x.shape)
        dtype = compute_dtype(x.dtype)
        q, k, v = (t.to(dtype) for t in self.qkv(x))  # [B, H, W, heads, head_dim]
        gates = self.gate_tensors(x)
        flips = Lattice.orientations(2)
        scale = default_scale(self.head_dim)
        if self.dense(height, width):
            # The orientations share q, k and v, so their gating matrices add up and the four
            # scans become one masked attention ((q k^T) * G) v per batch entry and head.
            G = plstm_grid_gating(*gates, flips)  # [B, heads, N, N]
            q, k, v = (t.reshape(batch, height * width, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
            h = ((q * scale) @ k.transpose(-1, -2) * G) @ v
            h = h.transpose(1, 2)
        else:
            h = self._scan_orientations(q, k, v, gates, flips, scale)
        out = head_norm(h.reshape(batch, height * width, self.num_heads, self.head_dim), self.norm).to(x.dtype)
        return self.out_proj(out).reshape(batch, height, width, self.dim)

    def _scan_orientations(self, q: Tensor, k: Tensor, v: Tensor, gates: tuple[Tensor, ...], flips: list, scale: float) -> Tensor:
        # The four orientations are the same DAG up to reversed axes: reversing the flipped
        # axes of every input puts each into the canonical orientation, so all four run as
        # one scan over a batch of 4 * batch grids (one pass of the scan's loops, not four).
        batch, height, width = q.shape[:3]

        def canonical(t: Tensor, flip: tuple[bool, ...]) -> Tensor:  # [B, H, W, ...], flips its own inverse
            axes = [1 + a for a, f in enumerate(flip) if f]
            return t.flip(axes) if axes else t

        def stacked(t: Tensor, orientation_axis: bool = True) -> Tensor:  # unbind: its gradient is one stack
            parts = t.unbind(3) if orientation_axis else [t] * len(flips)
            return torch.cat([canonical(part, f) for part, f in zip(parts, flips)])

        h4 = plstm_grid_scan(
            stacked(q, False), stacked(k, False), stacked(v, False), *(stacked(g) for g in gates), scale=scale,
        ).reshape(4, batch, height, width, self.num_heads, self.head_dim)
        return sum(canonical(h4[o], f) for o, f in enumerate(flips))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, num_heads={self.num_heads}, mode={self.mode!r}, paper_gates={self.paper_gates})"
