"""The Mamba block (selective state space layer), on CPU and GPU without custom kernels, with
``mamba_ssm``'s constructor, state dict and decoding convention."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphlib import compute_dtype, upcast
from ..sequence import selective_scan


@dataclass
class InferenceParams:
    """The decoding cache of ``mamba_ssm.utils.generation.InferenceParams`` (same fields, so
    either object works with :class:`Mamba`): each layer keeps its ``(conv_state, ssm_state)``
    under its ``layer_idx`` in ``key_value_memory_dict``; ``seqlen_offset`` is the number of
    positions already processed (0: the next call is the prompt). The caller advances
    ``seqlen_offset`` after each call, as ``mamba_ssm``'s generation loop does."""

    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    batch_size_offset: int = 0
    key_value_memory_dict: dict = field(default_factory=dict)
    lengths_per_sample: Tensor | None = None

    def reset(self, max_seqlen: int, max_batch_size: int) -> None:
        """Start a new generation with the same cache tensors."""
        self.max_seqlen = max_seqlen
        self.max_batch_size = max_batch_size
        self.seqlen_offset = 0
        if self.lengths_per_sample is not None:
            self.lengths_per_sample.zero_()


def _is_inference_params(obj: Any) -> bool:
    return hasattr(obj, "key_value_memory_dict") and hasattr(obj, "seqlen_offset")


def _check_size(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


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
    taps = weight.reshape(x.shape[-2], kernel)  # [D, K] (a reshape, so that D = 0 works too)
    out = x * taps[:, kernel - 1, None]
    for k in range(1, min(kernel, length)):
        tap = taps[:, kernel - 1 - k, None]
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

    A drop-in for ``mamba_ssm.modules.mamba_simple.Mamba``: the same constructor arguments
    (``layer_idx``, ``use_fast_path``, ``device``, ``dtype`` included), wiring, defaults and
    initialisation (``dt_proj`` bias = inverse softplus of a log-uniform sample in
    ``[dt_min, dt_max]``, ``A_log = log(1..N)``, ``D = 1``), parameter names and shapes (a
    ``mamba_ssm`` state dict loads with ``load_state_dict``), and decoding convention
    (:meth:`allocate_inference_cache`, ``forward(..., inference_params=...)``, :meth:`step`).
    The scan is :func:`everygraph.sequence.selective_scan`: a sequence is a path graph
    (``graphlib.path_graph(L)``), one state per node, one transition per edge.

    **Precision of** ``A_log`` **and** ``D``: they are never stored below float32. They are
    created in float32 when ``dtype`` is a half dtype (as ``mamba_ssm`` does), and
    ``.to(torch.bfloat16)``, ``.half()`` or ``.to(dtype=torch.float16)`` of the module leave them
    in float32 (``mamba_ssm``'s module, a plain ``nn.Module``, would round them there; a
    rounded ``A_log`` changes every decay ``exp(-delta * exp(A_log))``). Higher precision is
    kept: ``dtype=torch.float64`` or ``.double()`` makes them float64. Their gradients follow
    their dtype. Both carry ``_no_weight_decay = True`` as in ``mamba_ssm``.

    **Decoding**, one token at a time with a state cache, follows ``mamba_ssm``: a layer with a
    ``layer_idx`` keeps ``(conv_state [batch, d_inner, d_conv], ssm_state [batch, d_inner, N])``
    under that index in ``inference_params.key_value_memory_dict`` (an :class:`InferenceParams`
    or ``mamba_ssm``'s own); with ``seqlen_offset == 0`` the call is the prompt (the full scan,
    then the cache is filled), afterwards each call continues from the cache, token by token.
    The outputs equal the full forward pass position by position. The ``ssm_state`` is kept in
    at least float32 (``mamba_ssm`` keeps it in the module dtype). Packed prompts
    (``cu_seqlens``) fill one cache row per sequence, so decoding continues with a batch of
    ``batch * num_seqs``.

    ``bidirectional=True`` adds a right-to-left branch with its own ``conv1d_b``,
    ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b`` (names as in Vision Mamba), an
    anti-causal convolution and ``selective_scan(..., reverse=True)``; both branches share
    ``in_proj``/``out_proj`` and their gated outputs are summed. It sees the future, so it has
    no decoding and no single last state.

    Args:
        d_model: channels in and out.
        d_state: state size ``N`` per channel (16).
        d_conv: causal convolution width (4).
        expand: ``d_inner = int(expand * d_model)`` (2).
        dt_rank: rank of the step-size projection, ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: step-size initialisation.
        conv_bias: bias in the convolution; bias: bias in ``in_proj``/``out_proj``.
        use_fast_path: accepted for ``mamba_ssm`` compatibility; both of its paths compute the
            same function, and so does the one path here.
        layer_idx: this layer's key in the decoding cache (``mamba_ssm``'s model code sets it).
        bidirectional: add the reverse scan.
        device, dtype: where and in which dtype the parameters are created.

    Shapes:
        ``forward(hidden_states [batch, L, d_model], cu_seqlens=None, inference_params=None,
        return_last_state=False) -> [batch, L, d_model]``, and with ``return_last_state`` also
        the scan's final state ``[batch, d_inner, N]`` (with ``cu_seqlens``: one per packed
        sequence, ``[batch * num_seqs, d_inner, N]``, zeros for an empty one). With
        ``cu_seqlens`` (``[num_seqs + 1]``, like PyG's ``ptr``) the sequences packed along ``L``
        do not see each other, in the scan and in the convolution.

    Example:
        >>> block = Mamba(d_model=64, layer_idx=0)
        >>> block(torch.randn(2, 100, 64)).shape
        torch.Size([2, 100, 64])
        >>> packed = torch.randn(1, 30, 64)  # sequences of lengths 10 and 20
        >>> block(packed, cu_seqlens=torch.tensor([0, 10, 30])).shape
        torch.Size([1, 30, 64])
        >>> params = InferenceParams(max_seqlen=101, max_batch_size=2)
        >>> prompt = block(torch.randn(2, 100, 64), inference_params=params)
        >>> params.seqlen_offset += 100
        >>> block(torch.randn(2, 1, 64), inference_params=params).shape  # the next token
        torch.Size([2, 1, 64])
    """

    #: Parameters never stored below float32 (see the class docstring).
    full_precision_parameters = ("A_log", "D", "A_b_log", "D_b")

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int | float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_size("d_model", d_model, 0)
        _check_size("d_state", d_state, 0)
        _check_size("d_conv", d_conv, 1)
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0:
            raise ValueError(f"expand must be a number > 0 (d_inner = int(expand * d_model)), got {expand!r}")
        if dt_rank != "auto":
            _check_size("dt_rank", dt_rank, 0)
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        for name, flag in (("conv_bias", conv_bias), ("bias", bias), ("use_fast_path", use_fast_path),
                           ("bidirectional", bidirectional)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r}")
        if layer_idx is not None:
            _check_size("layer_idx", layer_idx, 0)
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype or None, got {dtype!r}")
        factory = {"device": device, "dtype": dtype}
        full_precision = {"device": device, "dtype": compute_dtype(dtype or torch.float32)}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_min, self.dt_max, self.dt_init = dt_min, dt_max, dt_init
        self.dt_scale, self.dt_init_floor = dt_scale, dt_init_floor
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.bidirectional = bidirectional

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        suffixes = ["", "_b"] if bidirectional else [""]
        for suffix in suffixes:
            self.add_module("conv1d" + suffix, nn.Conv1d(
                self.d_inner, self.d_inner, kernel_size=d_conv, groups=max(self.d_inner, 1),
                padding=d_conv - 1, bias=conv_bias, **factory))
            if self.d_inner == 0:  # nn.Conv1d needs groups >= 1; keep the [d_inner, 1, d_conv] layout
                getattr(self, "conv1d" + suffix).weight = nn.Parameter(torch.empty(0, 1, d_conv, **factory))
            self.add_module("x_proj" + suffix, nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory))
            self.add_module("dt_proj" + suffix, nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory))
            a_name = "A_log" if suffix == "" else "A_b_log"
            self.register_parameter(a_name, nn.Parameter(torch.empty(self.d_inner, d_state, **full_precision)))
            self.register_parameter("D" + suffix, nn.Parameter(torch.empty(self.d_inner, **full_precision)))
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
            std = self.dt_rank ** -0.5 * self.dt_scale if self.dt_rank else 0.0
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

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Every ``.to`` / ``.half`` / ``.cuda`` goes through here: let it move and cast as usual,
        then put back in float32 any full-precision parameter it cast to a half dtype, from the
        values it had before (not from the rounded ones)."""
        before = {}
        for name in self.full_precision_parameters:
            param = self._parameters.get(name)
            if param is not None:
                # .data: aliases of the current storage, which _apply replaces rather than writes to
                before[name] = (param.data, None if param.grad is None else param.grad.data)
        result = super()._apply(fn, recurse)
        for name, (data, grad) in before.items():
            param = self._parameters[name]
            full = compute_dtype(param.dtype)
            if full != param.dtype:  # a half-precision cast: keep these in float32
                param.data = data.to(device=param.device, dtype=full)
                if grad is not None:
                    param.grad = grad.to(device=param.device, dtype=full)
        return result

    # ----------------------------------------------------------------- the full forward pass

    def _branch(
        self, x: Tensor, z: Tensor, suffix: str, reverse: bool, cu_seqlens: Tensor | None, return_last_state: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        conv: nn.Conv1d = getattr(self, "conv1d" + suffix)
        x_proj: nn.Linear = getattr(self, "x_proj" + suffix)
        dt_proj: nn.Linear = getattr(self, "dt_proj" + suffix)
        A_log: Tensor = getattr(self, "A_log" if suffix == "" else "A_b_log")
        D: Tensor = getattr(self, "D" + suffix)
        x = F.silu(causal_conv1d(x, conv.weight, conv.bias, cu_seqlens, reverse))  # [batch, d_inner, L]
        x_dbl = x_proj(x.transpose(1, 2))  # [batch, L, dt_rank + 2N]
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ dt_proj.weight.t()).transpose(1, 2)  # bias goes in as delta_bias, as in mamba_ssm
        A = -torch.exp(upcast(A_log))
        return selective_scan(
            x, dt, A, B.transpose(1, 2), C.transpose(1, 2), upcast(D), z=z,
            delta_bias=upcast(dt_proj.bias), delta_softplus=True,
            return_last_state=return_last_state, reverse=reverse, cu_seqlens=cu_seqlens,
        )

    def _check_hidden(self, hidden_states: Any, name: str = "hidden_states") -> None:
        if not isinstance(hidden_states, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor [batch, L, d_model={self.d_model}], "
                            f"got {type(hidden_states).__name__}")
        if not hidden_states.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {hidden_states.dtype}")
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"Mamba expects {name} of shape [batch, L, d_model={self.d_model}], "
                f"got {list(hidden_states.shape)}"
            )

    def forward(
        self,
        hidden_states: Tensor,
        cu_seqlens: Tensor | None = None,
        inference_params: Any = None,
        return_last_state: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``hidden_states`` ``[batch, L, d_model]`` -> ``[batch, L, d_model]``.

        ``inference_params`` (an :class:`InferenceParams` or ``mamba_ssm``'s; also accepted as
        the second positional argument, ``mamba_ssm``'s order) switches on decoding with the
        cache of this layer's ``layer_idx``. ``return_last_state`` also returns the scan's final
        state (see the class docstring)."""
        if inference_params is None and _is_inference_params(cu_seqlens):
            inference_params, cu_seqlens = cu_seqlens, None
        self._check_hidden(hidden_states)
        if not isinstance(return_last_state, bool):
            raise TypeError(f"return_last_state must be a bool, got {type(return_last_state).__name__}")
        if cu_seqlens is not None and (not isinstance(cu_seqlens, Tensor) or cu_seqlens.is_floating_point()
                                       or cu_seqlens.is_complex() or cu_seqlens.dtype == torch.bool):
            raise TypeError(f"cu_seqlens must be a 1-D integer torch.Tensor [num_seqs + 1], got "
                            f"{getattr(cu_seqlens, 'dtype', type(cu_seqlens).__name__)}")
        if inference_params is not None and not _is_inference_params(inference_params):
            raise TypeError("inference_params must have seqlen_offset and key_value_memory_dict (an "
                            f"InferenceParams), got {type(inference_params).__name__}")
        if (inference_params is not None or return_last_state) and self.bidirectional:
            raise ValueError("a bidirectional Mamba reads the whole sequence in both directions: it has no "
                             "decoding cache and no single last state (inference_params / return_last_state)")

        if inference_params is not None and inference_params.seqlen_offset > 0:
            if cu_seqlens is not None:
                raise ValueError("cu_seqlens is for the prompt (seqlen_offset == 0); decoding continues each packed "
                                 "sequence as a row of the batch")
            conv_state, ssm_state = self._cached_states(inference_params, hidden_states.shape[0])
            steps = [self.step(token, conv_state, ssm_state)[0] for token in hidden_states.split(1, dim=1)]
            out = torch.cat(steps, dim=1) if steps else self.out_proj(self.in_proj(hidden_states)[..., :self.d_inner])
            return (out, ssm_state) if return_last_state else out

        xz = self.in_proj(hidden_states).transpose(1, 2)  # [batch, 2 d_inner, L]
        x, z = xz.chunk(2, dim=1)
        want_state = return_last_state or inference_params is not None
        y, last = None, None
        for suffix, reverse in self._directions():
            out = self._branch(x, z, suffix, reverse, cu_seqlens, want_state)
            if want_state:
                out, last = out
            y = out if y is None else y + out
        out = self.out_proj(y.transpose(1, 2))
        if inference_params is not None:
            conv_state, ssm_state = self._cached_states(inference_params, last.shape[0])
            conv_state.copy_(self._last_conv_inputs(x, cu_seqlens))
            ssm_state.copy_(last)
        return (out, last) if return_last_state else out

    # ----------------------------------------------------------------- decoding

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Zero ``(conv_state [batch_size, d_inner, d_conv], ssm_state [batch_size, d_inner, N])``
        for decoding (``mamba_ssm``'s signature; ``max_seqlen`` is not needed by a recurrence).
        ``dtype`` overrides both; by default the conv state has the convolution's dtype and the
        SSM state at least float32."""
        _check_size("batch_size", batch_size, 0)
        if self.bidirectional:
            raise ValueError("a bidirectional Mamba has no decoding cache (its reverse branch reads the future)")
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = compute_dtype(self.dt_proj.weight.dtype) if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def _cached_states(self, inference_params: Any, batch_size: int) -> tuple[Tensor, Tensor]:
        if self.layer_idx is None:
            raise ValueError("decoding with inference_params needs the layer's layer_idx (its key in "
                             "inference_params.key_value_memory_dict): pass Mamba(..., layer_idx=i)")
        cache = inference_params.key_value_memory_dict
        if self.layer_idx not in cache:
            cache[self.layer_idx] = self.allocate_inference_cache(batch_size, getattr(inference_params, "max_seqlen", 0))
        conv_state, ssm_state = cache[self.layer_idx]
        want_conv = (batch_size, self.d_inner, self.d_conv)
        want_ssm = (batch_size, self.d_inner, self.d_state)
        if tuple(conv_state.shape) != want_conv or tuple(ssm_state.shape) != want_ssm:
            raise ValueError(
                f"the cache of layer {self.layer_idx} holds conv_state {list(conv_state.shape)} and ssm_state "
                f"{list(ssm_state.shape)}, but this call needs {list(want_conv)} and {list(want_ssm)} "
                "(one row per sequence: batch, or batch * num_seqs for a packed prompt)"
            )
        return conv_state, ssm_state

    def _last_conv_inputs(self, x: Tensor, cu_seqlens: Tensor | None) -> Tensor:
        """The convolution's window after the prompt: each sequence's last ``d_conv`` inputs
        ``x`` (``[batch, d_inner, L]``), zeros before its start; ``[batch(*num_seqs), d_inner, d_conv]``."""
        length, width = x.shape[-1], self.d_conv
        if cu_seqlens is None:
            return F.pad(x, (width - length, 0))  # pads on the left, or keeps the last `width`
        bounds = cu_seqlens.to(x.device).long()
        num_seqs = bounds.numel() - 1
        if length == 0:
            return x.new_zeros(x.shape[0] * num_seqs, x.shape[1], width)
        index = bounds[1:, None] - width + torch.arange(width, device=x.device)  # [num_seqs, d_conv]
        inside = (index >= bounds[:-1, None]).to(x.dtype)
        window = x[:, :, index.clamp(0, length - 1)] * inside  # [batch, d_inner, num_seqs, d_conv]
        return window.transpose(1, 2).reshape(-1, x.shape[1], width)

    def step(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""One decoding step: ``hidden_states`` ``[batch, 1, d_model]`` -> ``(out [batch, 1,
        d_model], conv_state, ssm_state)``, the states updated in place (``mamba_ssm``'s
        ``Mamba.step``). The recurrence :math:`h \leftarrow \exp(\Delta A) \odot h + \Delta x B`,
        :math:`y = \langle h, C\rangle + D x`, gated by ``silu(z)``, runs in at least float32."""
        self._check_hidden(hidden_states)
        if hidden_states.shape[1] != 1:
            raise ValueError(f"step takes one token, hidden_states [batch, 1, d_model], got {list(hidden_states.shape)}")
        batch = hidden_states.shape[0]
        for name, state, width in (("conv_state", conv_state, self.d_conv), ("ssm_state", ssm_state, self.d_state)):
            if not isinstance(state, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(state).__name__}")
            if tuple(state.shape) != (batch, self.d_inner, width):
                raise ValueError(f"{name} must have shape [batch, d_inner, {'d_conv' if name == 'conv_state' else 'd_state'}]"
                                 f" = {[batch, self.d_inner, width]}, got {list(state.shape)}")
        if self.bidirectional:
            raise ValueError("a bidirectional Mamba cannot decode: its reverse branch reads the future")
        dtype = hidden_states.dtype
        x, z = self.in_proj(hidden_states[:, 0]).chunk(2, dim=-1)  # [batch, d_inner] each
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = x
        x = (conv_state * self.conv1d.weight.reshape(self.d_inner, self.d_conv)).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x).to(dtype)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        compute = torch.float64 if torch.float64 in (dtype, ssm_state.dtype, self.A_log.dtype) else torch.float32
        dt = F.softplus(F.linear(dt, self.dt_proj.weight).to(compute) + self.dt_proj.bias.to(compute))
        A = -torch.exp(self.A_log.to(compute))
        x_c = x.to(compute)
        state = ssm_state.to(compute) * torch.exp(dt[..., None] * A) + (dt * x_c)[..., None] * B.to(compute)[:, None]
        ssm_state.copy_(state)
        y = (state * C.to(compute)[:, None]).sum(-1) + self.D.to(compute) * x_c
        y = y * F.silu(z.to(compute))
        out = self.out_proj(y.to(dtype))
        return out.unsqueeze(1), conv_state, ssm_state

    def __repr__(self) -> str:
        extra = "" if self.layer_idx is None else f", layer_idx={self.layer_idx}"
        return (f"{self.__class__.__name__}(d_model={self.d_model}, d_state={self.d_state}, "
                f"d_conv={self.d_conv}, expand={self.expand}, dt_rank={self.dt_rank}, "
                f"bidirectional={self.bidirectional}{extra})")
