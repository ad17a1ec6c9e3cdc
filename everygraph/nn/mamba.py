"""The Mamba block (selective state space layer), on CPU and GPU without custom kernels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sequence import selective_scan


def _at_least_float32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _segment_ids(cu_seqlens: Tensor, length: int) -> Tensor:
    """``[L]`` index of the packed sequence each position belongs to."""
    positions = torch.arange(length, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].to(positions.dtype), positions, right=True)


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    cu_seqlens: Tensor | None = None,
    reverse: bool = False,
) -> Tensor:
    r"""Depthwise causal convolution that never reads across packed-sequence boundaries.

    :math:`\mathrm{out}_t = b + \sum_{k=0}^{K-1} w_{K-1-k}\, x_{t-k}` over the positions
    ``t-k`` of the same sequence as ``t`` (``t+k`` when ``reverse``), i.e. what
    ``nn.Conv1d(groups=D, padding=K-1)(x)[..., :L]`` computes on each sequence alone.

    Args:
        x: ``[batch, D, L]``; weight: ``[D, 1, K]`` (``nn.Conv1d`` layout); bias: ``[D]``.
        cu_seqlens: ``[num_seqs + 1]`` boundaries of sequences packed along ``L``.
        reverse: convolve from the right (the anti-causal conv of a backward scan).
    """
    length = x.shape[-1]
    kernel = weight.shape[-1]
    segment = None if cu_seqlens is None else _segment_ids(cu_seqlens.to(x.device), length)
    out = x * weight[:, 0, kernel - 1, None]
    for k in range(1, min(kernel, length)):
        tap = weight[:, 0, kernel - 1 - k, None]
        if reverse:
            shifted = F.pad(x[..., k:], (0, k))
            same = None if segment is None else F.pad(segment[k:] == segment[:-k], (0, k))
        else:
            shifted = F.pad(x[..., :-k], (k, 0))
            same = None if segment is None else F.pad(segment[k:] == segment[:-k], (k, 0))
        contribution = shifted * tap
        if same is not None:
            contribution = contribution * same.to(x.dtype)
        out = out + contribution
    if bias is not None:
        out = out + bias[:, None]
    return out


class Mamba(nn.Module):
    r"""The Mamba block from *Mamba: Linear-Time Sequence Modeling with Selective State
    Spaces* (Gu & Dao, 2023, https://arxiv.org/abs/2312.00752).

    .. math::
        (x, z) &= W_{in} h, \qquad x \leftarrow \mathrm{silu}(\mathrm{conv1d}_{causal}(x))\\
        (\delta, B, C) &= W_x x, \qquad \Delta = \mathrm{softplus}(W_{dt}\, \delta + b_{dt})\\
        y &= \mathrm{selective\_scan}(x, \Delta, A = -e^{A_{log}}, B, C, D) \odot \mathrm{silu}(z),
        \qquad \mathrm{out} = W_{out}\, y

    Wiring, defaults and initialisation follow ``mamba_ssm.modules.mamba_simple.Mamba``
    (``dt_proj`` bias = inverse softplus of a log-uniform sample in ``[dt_min, dt_max]``,
    ``A_log = log(1..N)``, ``D = 1``), and so do the parameter names and shapes, so a
    ``mamba_ssm`` ``Mamba`` state dict loads with ``load_state_dict``. The scan is
    :func:`everygraph.sequence.selective_scan`: a sequence is a path graph
    (``graphlib.path_graph(L)``), one state per node, one transition per edge.

    ``bidirectional=True`` adds a right-to-left branch with its own ``conv1d_b``,
    ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b`` (names as in Vision Mamba), an
    anti-causal convolution and ``selective_scan(..., reverse=True)``; both branches share
    ``in_proj``/``out_proj`` and their gated outputs are summed.

    Args:
        d_model: channels in and out.
        d_state: state size ``N`` per channel (16).
        d_conv: causal convolution width (4).
        expand: ``d_inner = expand * d_model`` (2).
        dt_rank: rank of the step-size projection, ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: step-size initialisation.
        conv_bias: bias in the convolution; bias: bias in ``in_proj``/``out_proj``.
        bidirectional: add the reverse scan.

    Shapes:
        ``forward(hidden_states [batch, L, d_model], cu_seqlens=None) -> [batch, L, d_model]``.
        With ``cu_seqlens`` (``[num_seqs + 1]``, like PyG's ``ptr``) the sequences packed along
        ``L`` do not see each other, in the scan and in the convolution.

    Example:
        >>> block = Mamba(d_model=64)
        >>> block(torch.randn(2, 100, 64)).shape
        torch.Size([2, 100, 64])
        >>> packed = torch.randn(1, 30, 64)  # sequences of lengths 10 and 20
        >>> block(packed, cu_seqlens=torch.tensor([0, 10, 30])).shape
        torch.Size([1, 30, 64])
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        bidirectional: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_min, self.dt_max, self.dt_init = dt_min, dt_max, dt_init
        self.dt_scale, self.dt_init_floor = dt_scale, dt_init_floor
        self.bidirectional = bidirectional

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        suffixes = ["", "_b"] if bidirectional else [""]
        for suffix in suffixes:
            self.add_module("conv1d" + suffix, nn.Conv1d(
                self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                padding=d_conv - 1, bias=conv_bias, **factory))
            self.add_module("x_proj" + suffix, nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory))
            self.add_module("dt_proj" + suffix, nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory))
            a_name = "A_log" if suffix == "" else "A_b_log"
            # A_log and D stay float32 (as in mamba_ssm) unless a dtype is asked for explicitly.
            self.register_parameter(a_name, nn.Parameter(torch.empty(self.d_inner, d_state, device=device,
                                                                     dtype=dtype or torch.float32)))
            self.register_parameter("D" + suffix, nn.Parameter(torch.empty(self.d_inner, device=device,
                                                                          dtype=dtype or torch.float32)))
        self.reset_parameters()

    def _directions(self) -> list[tuple[str, bool]]:
        return [("", False), ("_b", True)] if self.bidirectional else [("", False)]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The paper's initialisation (``mamba_ssm``'s ``Mamba.__init__``)."""
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        for suffix, _ in self._directions():
            getattr(self, "conv1d" + suffix).reset_parameters()
            getattr(self, "x_proj" + suffix).reset_parameters()
            dt_proj: nn.Linear = getattr(self, "dt_proj" + suffix)
            std = self.dt_rank ** -0.5 * self.dt_scale
            if self.dt_init == "constant":
                nn.init.constant_(dt_proj.weight, std)
            else:
                nn.init.uniform_(dt_proj.weight, -std, std)
            # softplus(bias) log-uniform in [dt_min, dt_max]; bias = dt + log(1 - exp(-dt)).
            dt = torch.exp(
                torch.rand(self.d_inner, device=dt_proj.bias.device)
                * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min)
            ).clamp(min=self.dt_init_floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            dt_proj.bias._no_reinit = True  # type: ignore[attr-defined]
            A_log = getattr(self, "A_log" if suffix == "" else "A_b_log")
            A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand(self.d_inner, -1))
            A_log._no_weight_decay = True  # type: ignore[attr-defined]
            D = getattr(self, "D" + suffix)
            D.fill_(1.0)
            D._no_weight_decay = True  # type: ignore[attr-defined]

    def _branch(self, x: Tensor, z: Tensor, suffix: str, reverse: bool, cu_seqlens: Tensor | None) -> Tensor:
        conv: nn.Conv1d = getattr(self, "conv1d" + suffix)
        x_proj: nn.Linear = getattr(self, "x_proj" + suffix)
        dt_proj: nn.Linear = getattr(self, "dt_proj" + suffix)
        A_log: Tensor = getattr(self, "A_log" if suffix == "" else "A_b_log")
        D: Tensor = getattr(self, "D" + suffix)
        x = F.silu(causal_conv1d(x, conv.weight, conv.bias, cu_seqlens, reverse))  # [batch, d_inner, L]
        x_dbl = x_proj(x.transpose(1, 2))  # [batch, L, dt_rank + 2N]
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ dt_proj.weight.t()).transpose(1, 2)  # bias goes in as delta_bias, as in mamba_ssm
        A = -torch.exp(_at_least_float32(A_log))
        return selective_scan(
            x, dt, A, B.transpose(1, 2), C.transpose(1, 2), _at_least_float32(D), z=z,
            delta_bias=_at_least_float32(dt_proj.bias), delta_softplus=True,
            reverse=reverse, cu_seqlens=cu_seqlens,
        )

    def forward(self, hidden_states: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """``hidden_states`` ``[batch, L, d_model]`` -> ``[batch, L, d_model]``."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"Mamba expects hidden_states of shape [batch, L, d_model={self.d_model}], "
                f"got {list(hidden_states.shape)}"
            )
        xz = self.in_proj(hidden_states).transpose(1, 2)  # [batch, 2 d_inner, L]
        x, z = xz.chunk(2, dim=1)
        y = None
        for suffix, reverse in self._directions():
            out = self._branch(x, z, suffix, reverse, cu_seqlens)
            y = out if y is None else y + out
        return self.out_proj(y.transpose(1, 2))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(d_model={self.d_model}, d_state={self.d_state}, "
                f"d_conv={self.d_conv}, expand={self.expand}, dt_rank={self.dt_rank}, "
                f"bidirectional={self.bidirectional})")
