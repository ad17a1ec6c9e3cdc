"""Shared pieces of the pLSTM layers: mode checks, gate activations, projections, head norm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("P", "D")

# Pre-activation bias of the D-mode transition gate. Default gates: sigmoid(3) ~ 0.95, a
# slowly decaying memory as for an LSTM forget gate. Paper gates: tanh(5 (1 + W x)).
DEFAULT_TRANSITION_BIAS = 3.0
PAPER_TRANSITION_BIAS = 1.0
PAPER_TRANSITION_SLOPE = 5.0
PAPER_ANGLE_SCALE = 0.5


def check_mode(mode: str) -> str:
    """Return ``mode`` or raise a ValueError listing the valid modes."""
    if mode not in MODES:
        raise ValueError(f"unknown pLSTM mode {mode!r}; valid modes are {', '.join(repr(m) for m in MODES)}")
    return mode


def check_heads(dim: int, num_heads: int, name: str = "dim") -> int:
    """Head size ``dim // num_heads``; raise when it does not divide."""
    if num_heads <= 0 or dim <= 0 or dim % num_heads:
        raise ValueError(f"{name}={dim} must be a positive multiple of num_heads={num_heads}")
    return dim // num_heads


def transition_gate(pre: Tensor, paper_gates: bool) -> Tensor:
    r"""D-mode transition from its pre-activation ``W x`` (bias not yet added).

    Default: :math:`\sigma(b + W x)`, :math:`b = 3`, in (0, 1). Paper:
    :math:`\tanh(5 (b + W x))`, :math:`b = 1`, in (-1, 1). Both satisfy :math:`|T| \le 1`.
    """
    if paper_gates:
        return torch.tanh(PAPER_TRANSITION_SLOPE * pre)
    return torch.sigmoid(pre)


def transition_bias(paper_gates: bool) -> float:
    return PAPER_TRANSITION_BIAS if paper_gates else DEFAULT_TRANSITION_BIAS


def angle_gate(pre: Tensor, bias: Tensor | float, fan_in: int, paper_gates: bool) -> Tensor:
    r"""P-mode angle :math:`a = \sigma(b_a + W_a x)`, or the paper's
    :math:`\sigma(b_a + 0.5\, W_a x / d)` with :math:`d` the input size. ``pre`` = ``W_a x``."""
    if paper_gates:
        pre = PAPER_ANGLE_SCALE * pre / fan_in
    return torch.sigmoid(pre + bias)


class QKVProjection(nn.Module):
    """Query, key and value maps ``[*, in] -> [*, heads, head_dim]`` (one fused Linear)."""

    def __init__(self, in_channels: int, hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.linear = nn.Linear(in_channels, 3 * hidden)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.linear(x).chunk(3, dim=-1)
        shape = (*x.shape[:-1], self.num_heads, self.head_dim)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)


def head_norm(h: Tensor, norm: nn.GroupNorm | None) -> Tensor:
    """Per-head layer norm of ``h`` ``[*, heads, head_dim]``, flattened to ``[*, hidden]``.

    The recurrence has no normaliser (unlike softmax attention), so output magnitudes depend
    on how many paths reach a node; normalising each head, as mLSTM does, keeps the next
    layer's input scale fixed. Runs in ``h``'s dtype.
    """
    flat = h.reshape(*h.shape[:-2], h.shape[-2] * h.shape[-1])
    if norm is None or flat.numel() == 0:
        return flat
    weight = norm.weight.to(h.dtype) if norm.weight is not None else None
    bias = norm.bias.to(h.dtype) if norm.bias is not None else None
    out = F.group_norm(flat.reshape(-1, flat.shape[-1]), norm.num_groups, weight, bias, norm.eps)
    return out.reshape(flat.shape)


def make_head_norm(hidden: int, num_heads: int, enabled: bool) -> nn.GroupNorm | None:
    return nn.GroupNorm(num_heads, hidden) if enabled else None


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
