"""The Mamba block: mamba_ssm's parameter names/shapes load, its forward equals an explicit
functional version (nn.Conv1d + the loop scan), the paper's initialisation, packed sequences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from everygraph.nn import InferenceParams, Mamba
from everygraph.nn.mamba import causal_conv1d
from everygraph.sequence import selective_scan_reference

F64 = torch.float64


def mamba_ssm_state_dict(d_model, d_state=16, d_conv=4, expand=2, seed=0, dtype=F64):
    """A state dict with exactly the keys and shapes of mamba_ssm.modules.mamba_simple.Mamba
    (bias=False, conv_bias=True), filled with random numbers."""
    g = torch.Generator().manual_seed(seed)
    d_inner = expand * d_model
    dt_rank = math.ceil(d_model / 16)
    shapes = {
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }
    return {k: torch.randn(*s, generator=g, dtype=dtype) * 0.5 for k, s in shapes.items()}


def functional_mamba(sd, hidden, d_state, suffix="", reverse=False):
    """mamba_ssm's non-fused forward path, written out from a state dict: nn.Conv1d with
    padding d_conv-1 cut to L, SiLU, x_proj, dt_proj, the reference scan, out_proj."""
    L = hidden.shape[1]
    xz = (hidden @ sd["in_proj.weight"].t()).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    d_inner = x.shape[1]
    w, b = sd["conv1d" + suffix + ".weight"], sd["conv1d" + suffix + ".bias"]
    if reverse:
        x = F.conv1d(x.flip(-1), w, b, padding=w.shape[-1] - 1, groups=d_inner)[..., :L].flip(-1)
    else:
        x = F.conv1d(x, w, b, padding=w.shape[-1] - 1, groups=d_inner)[..., :L]
    x = F.silu(x)
    x_dbl = x.transpose(1, 2) @ sd["x_proj" + suffix + ".weight"].t()
    dt_rank = sd["dt_proj" + suffix + ".weight"].shape[1]
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = (dt @ sd["dt_proj" + suffix + ".weight"].t()).transpose(1, 2)
    A = -torch.exp(sd["A_log" if not suffix else "A_b_log"])
    return selective_scan_reference(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), sd["D" + suffix], z=z,
                                    delta_bias=sd["dt_proj" + suffix + ".bias"], delta_softplus=True,
                                    reverse=reverse)


def test_mamba_ssm_state_dict_loads_and_forward_matches():
    sd = mamba_ssm_state_dict(d_model=8, d_state=4)
    block = Mamba(d_model=8, d_state=4, dtype=F64)
    assert set(block.state_dict()) == set(sd)
    for k, v in block.state_dict().items():
        assert v.shape == sd[k].shape, k
    block.load_state_dict(sd, strict=True)
    hidden = torch.randn(2, 13, 8, dtype=F64)
    want = functional_mamba(sd, hidden, 4).transpose(1, 2) @ sd["out_proj.weight"].t()
    torch.testing.assert_close(block(hidden), want)


def test_bidirectional_is_forward_plus_reverse_branch():
    sd = mamba_ssm_state_dict(d_model=8, d_state=4)
    extra = mamba_ssm_state_dict(d_model=8, d_state=4, seed=1)
    for k in ("conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "D"):
        name, _, leaf = k.rpartition(".")
        sd[(name + "_b." + leaf) if name else k + "_b"] = extra[k]
    sd["A_b_log"] = extra["A_log"]
    block = Mamba(d_model=8, d_state=4, bidirectional=True, dtype=F64)
    block.load_state_dict(sd, strict=True)
    hidden = torch.randn(2, 11, 8, dtype=F64)
    y = functional_mamba(sd, hidden, 4) + functional_mamba(sd, hidden, 4, suffix="_b", reverse=True)
    torch.testing.assert_close(block(hidden), y.transpose(1, 2) @ sd["out_proj.weight"].t())
    # the reverse branch sees the future: the first output depends on the last input
    hidden2 = hidden.clone()
    hidden2[:, -1] += 1
    assert not torch.allclose(block(hidden2)[:, 0], block(hidden)[:, 0])


def test_paper_initialisation():
    torch.manual_seed(0)
    block = Mamba(d_model=40, d_state=16)
    assert block.d_inner == 80 and block.dt_rank == 3 and block.d_conv == 4
    torch.testing.assert_close(block.A_log, torch.log(torch.arange(1, 17.0)).expand(80, 16))
    assert torch.equal(block.D, torch.ones(80))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert block.dt_proj.weight.abs().max() <= 3 ** -0.5
    assert "d_model=40" in repr(block) and "d_state=16" in repr(block)


@pytest.mark.parametrize("reverse", [False, True])
def test_causal_conv_matches_conv1d_on_each_sequence(reverse):
    x = torch.randn(2, 5, 30, dtype=F64)
    w, b = torch.randn(5, 1, 4, dtype=F64), torch.randn(5, dtype=F64)
    cu = torch.tensor([0, 2, 2, 13, 30])
    packed = causal_conv1d(x, w, b, cu, reverse=reverse)
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if hi == lo:  # an empty sequence: nothing to compare
            continue
        part = x[..., lo:hi].flip(-1) if reverse else x[..., lo:hi]
        want = F.conv1d(part, w, b, padding=3, groups=5)[..., : hi - lo]
        torch.testing.assert_close(packed[..., lo:hi], want.flip(-1) if reverse else want)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequences_equal_one_by_one(bidirectional):
    block = Mamba(d_model=8, d_state=4, bidirectional=bidirectional, dtype=F64)
    lengths = [3, 17, 1, 9]
    cu = torch.tensor([0, 3, 20, 21, 30])
    hidden = torch.randn(2, 30, 8, dtype=F64)
    packed = block(hidden, cu_seqlens=cu)
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        torch.testing.assert_close(packed[:, lo:hi], block(hidden[:, lo:hi]))
    assert sum(lengths) == 30


def test_gradients_flow_to_every_parameter():
    block = Mamba(d_model=8, d_state=4, bidirectional=True)
    block(torch.randn(2, 12, 8)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"d_model=8.*\[2, 5, 7\]"):
        Mamba(d_model=8)(torch.randn(2, 5, 7))


# --------------------------------------------------------------------- a drop-in for mamba_ssm users

# mamba_ssm.modules.mamba_simple.Mamba.__init__'s arguments and defaults, written out from its source
MAMBA_SSM_DEFAULTS = dict(
    d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1, dt_init="random", dt_scale=1.0,
    dt_init_floor=1e-4, conv_bias=True, bias=False, use_fast_path=True, layer_idx=None, device=None, dtype=None,
)


def test_mamba_ssm_constructor_arguments_and_defaults():
    import inspect

    params = inspect.signature(Mamba).parameters
    for name, default in MAMBA_SSM_DEFAULTS.items():
        assert name in params, name
        assert params[name].default == default, name
    # as mamba_ssm's create_block builds a mixer: partial(Mamba, layer_idx=i, **ssm_cfg, **factory_kwargs)
    torch.manual_seed(0)
    fast = Mamba(16, layer_idx=3, use_fast_path=True, device="cpu", dtype=F64, **{
        k: v for k, v in MAMBA_SSM_DEFAULTS.items() if k not in ("layer_idx", "use_fast_path", "device", "dtype")})
    torch.manual_seed(0)
    slow = Mamba(16, layer_idx=3, use_fast_path=False, device="cpu", dtype=F64)
    assert fast.layer_idx == 3 and fast.use_fast_path and not slow.use_fast_path
    assert "layer_idx=3" in repr(fast)
    hidden = torch.randn(2, 7, 16, dtype=F64)
    torch.testing.assert_close(fast(hidden), slow(hidden), rtol=0, atol=0)


def _loaded(dtype=torch.float32):
    """A block holding a random mamba_ssm state dict whose A_log and D are not representable in
    bfloat16 or float16 (random float32 numbers)."""
    sd = mamba_ssm_state_dict(d_model=8, d_state=4, dtype=torch.float32)
    block = Mamba(d_model=8, d_state=4, dtype=dtype)
    block.load_state_dict(sd)
    return block, sd


@pytest.mark.parametrize("cast", ["to_bf16", "bfloat16", "half", "to_f16_kw"])
def test_half_casts_keep_A_log_and_D_in_float32_unrounded(cast):
    block, sd = _loaded()
    assert not torch.equal(sd["A_log"].bfloat16().float(), sd["A_log"])  # the values would round
    result = {"to_bf16": lambda: block.to(torch.bfloat16), "bfloat16": block.bfloat16, "half": block.half,
              "to_f16_kw": lambda: block.to(dtype=torch.float16)}[cast]()
    assert result is block
    half = torch.bfloat16 if "bf" in cast else torch.float16
    for name, p in block.named_parameters():
        if name in ("A_log", "D"):
            assert p.dtype == torch.float32 and torch.equal(p.detach(), sd[name]), name
            assert p._no_weight_decay is True and isinstance(p, torch.nn.Parameter)
        else:
            assert p.dtype == half, name
    out = block(torch.randn(2, 5, 8).to(half))
    assert out.dtype == half and torch.isfinite(out).all()
    out.float().square().sum().backward()
    assert block.A_log.grad.dtype == torch.float32 and block.in_proj.weight.grad.dtype == half


@pytest.mark.parametrize("swap", [False, True])
def test_a_checkpoint_loaded_into_a_bfloat16_block_keeps_exact_A_log_and_D(swap):
    """The usual order: build, cast the model to bfloat16, then load float32 weights. Also with
    torch's swap-tensors conversion (torch.__future__), where _apply swaps parameter contents."""
    sd = mamba_ssm_state_dict(d_model=8, d_state=4, dtype=torch.float32)
    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap)
    try:
        block = Mamba(d_model=8, d_state=4).to(torch.bfloat16)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)
    block.load_state_dict(sd)
    assert torch.equal(block.A_log.detach(), sd["A_log"]) and torch.equal(block.D.detach(), sd["D"])
    assert block.in_proj.weight.dtype == torch.bfloat16
    assert torch.equal(block.in_proj.weight.detach(), sd["in_proj.weight"].bfloat16())


def test_double_keeps_more_precision_and_back_to_bfloat16_rounds_to_float32_only():
    block, sd = _loaded()
    block.double()
    assert block.A_log.dtype == torch.float64 and block.in_proj.weight.dtype == torch.float64
    with torch.no_grad():
        block.A_log.copy_(sd["A_log"].double() + 1e-12)  # a float64-only detail
    exact = block.A_log.detach().clone()
    block.to(torch.bfloat16)
    assert block.A_log.dtype == torch.float32 and torch.equal(block.A_log.detach(), exact.float())
    block.float()
    assert block.A_log.dtype == torch.float32 and block.in_proj.weight.dtype == torch.float32


def test_constructor_dtype_rule_and_gradients_kept_across_casts():
    half = Mamba(8, d_state=4, dtype=torch.bfloat16)
    assert half.A_log.dtype == half.D.dtype == torch.float32 and half.in_proj.weight.dtype == torch.bfloat16
    double = Mamba(8, d_state=4, dtype=F64)
    assert double.A_log.dtype == double.D.dtype == torch.float64
    block, _ = _loaded()
    block(torch.randn(2, 5, 8)).square().sum().backward()
    grad = block.A_log.grad.clone()
    block.half()
    assert block.A_log.grad.dtype == torch.float32 and torch.equal(block.A_log.grad, grad)


def _decode(block_or_blocks, hidden, prompt, params):
    """Prompt of `prompt` positions (if any), then one position at a time."""
    blocks = block_or_blocks if isinstance(block_or_blocks, list) else [block_or_blocks]

    def run(h):
        for b in blocks:
            h = b(h, inference_params=params)
        return h

    outs = []
    if prompt:
        outs.append(run(hidden[:, :prompt]))
        params.seqlen_offset += prompt
    for t in range(prompt, hidden.shape[1]):
        outs.append(run(hidden[:, t:t + 1]))
        params.seqlen_offset += 1
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("prompt", [0, 1, 3, 4, 9])
def test_decoding_token_by_token_equals_the_full_forward(prompt):
    """Two layers sharing one InferenceParams (keys = layer_idx), a prompt shorter or longer
    than the convolution, then one token per call: every position equals the full pass."""
    torch.manual_seed(prompt)
    blocks = [Mamba(8, d_state=4, d_conv=4, layer_idx=i, dtype=F64) for i in range(2)]
    hidden = torch.randn(3, 12, 8, dtype=F64)
    want = blocks[1](blocks[0](hidden))
    params = InferenceParams(max_seqlen=12, max_batch_size=3)
    got = _decode(blocks, hidden, prompt, params)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert sorted(params.key_value_memory_dict) == [0, 1]
    conv_state, ssm_state = params.key_value_memory_dict[1]
    assert conv_state.shape == (3, 16, 4) and ssm_state.shape == (3, 16, 4)


def test_decoding_with_a_mamba_ssm_like_params_object_positionally_and_several_tokens_per_call():
    """mamba_ssm's own InferenceParams is duck-typed (any object with seqlen_offset and
    key_value_memory_dict), may come as the second positional argument (mamba_ssm's order), and a
    call after the prompt may hold several tokens."""
    from types import SimpleNamespace

    torch.manual_seed(1)
    block = Mamba(8, d_state=4, layer_idx=7, dtype=F64)
    hidden = torch.randn(2, 10, 8, dtype=F64)
    want = block(hidden)
    params = SimpleNamespace(max_seqlen=10, max_batch_size=2, seqlen_offset=0, key_value_memory_dict={})
    first = block(hidden[:, :4], params)
    params.seqlen_offset = 4
    rest = block(hidden[:, 4:], params)
    torch.testing.assert_close(torch.cat([first, rest], 1), want, rtol=1e-12, atol=1e-12)


def test_step_from_an_allocated_cache_equals_the_full_forward():
    torch.manual_seed(2)
    block = Mamba(8, d_state=4, d_conv=3, dtype=F64)
    hidden = torch.randn(2, 9, 8, dtype=F64)
    want = block(hidden)
    conv_state, ssm_state = block.allocate_inference_cache(batch_size=2, max_seqlen=9)
    assert conv_state.shape == (2, 16, 3) and ssm_state.shape == (2, 16, 4)
    outs = []
    for t in range(9):
        out, c, s = block.step(hidden[:, t:t + 1], conv_state, ssm_state)
        assert c is conv_state and s is ssm_state  # updated in place
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), want, rtol=1e-12, atol=1e-12)
    # the cached state is the scan's final state
    _, last = block(hidden, return_last_state=True)
    torch.testing.assert_close(ssm_state, last, rtol=1e-12, atol=1e-12)


def test_cache_dtypes():
    block = Mamba(8, d_state=4, dtype=torch.bfloat16)
    conv_state, ssm_state = block.allocate_inference_cache(2, 16)
    assert conv_state.dtype == torch.bfloat16 and ssm_state.dtype == torch.float32
    conv_state, ssm_state = block.allocate_inference_cache(2, 16, dtype=torch.float16)
    assert conv_state.dtype == ssm_state.dtype == torch.float16


def test_packed_prompt_fills_one_cache_row_per_sequence_and_decoding_continues_each():
    """A packed prompt (an empty sequence included) fills batch * num_seqs cache rows; the next
    tokens, one row per sequence, equal the full forward of each sequence extended by them."""
    torch.manual_seed(3)
    block = Mamba(8, d_state=4, d_conv=4, layer_idx=0, dtype=F64)
    lengths = [2, 0, 7, 5]
    cu = torch.tensor([0, 2, 2, 9, 14])
    packed = torch.randn(2, 14, 8, dtype=F64)
    following = torch.randn(2 * len(lengths), 3, 8, dtype=F64)  # 3 new tokens per (batch, sequence)
    params = InferenceParams(max_seqlen=20, max_batch_size=8)
    prompt_out = block(packed, cu_seqlens=cu, inference_params=params)
    torch.testing.assert_close(prompt_out, block(packed, cu_seqlens=cu))
    params.seqlen_offset += 14
    steps = []
    for t in range(3):
        steps.append(block(following[:, t:t + 1], inference_params=params))
        params.seqlen_offset += 1
    steps = torch.cat(steps, 1)
    for b in range(2):
        for k, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
            row = b * len(lengths) + k
            alone = block(torch.cat([packed[b:b + 1, lo:hi], following[row:row + 1]], dim=1))
            torch.testing.assert_close(steps[row:row + 1], alone[:, hi - lo:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lengths", [[3, 0, 6], [4, 5, 0]])
def test_return_last_state_per_packed_sequence(lengths):
    torch.manual_seed(4)
    block = Mamba(8, d_state=4, dtype=F64)
    cu = torch.tensor([0] + [sum(lengths[:i + 1]) for i in range(len(lengths))])
    hidden = torch.randn(2, sum(lengths), 8, dtype=F64)
    out, states = block(hidden, cu_seqlens=cu, return_last_state=True)
    assert states.shape == (2 * len(lengths), 16, 4)
    torch.testing.assert_close(out, block(hidden, cu_seqlens=cu))
    for b in range(2):
        for k, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
            _, alone = block(hidden[b:b + 1, lo:hi], return_last_state=True)
            torch.testing.assert_close(states[b * len(lengths) + k], alone[0], rtol=1e-12, atol=1e-12)
            if hi == lo:
                assert torch.equal(alone[0], torch.zeros(16, 4, dtype=F64))


def test_decoding_errors_are_clear():
    params = InferenceParams(max_seqlen=4, max_batch_size=2)
    with pytest.raises(ValueError, match="layer_idx"):
        Mamba(8, d_state=4)(torch.randn(2, 3, 8), inference_params=params)
    with pytest.raises(ValueError, match="bidirectional"):
        Mamba(8, d_state=4, bidirectional=True, layer_idx=0)(torch.randn(2, 3, 8), inference_params=params)
    with pytest.raises(ValueError, match="bidirectional"):
        Mamba(8, d_state=4, bidirectional=True)(torch.randn(2, 3, 8), return_last_state=True)
    block = Mamba(8, d_state=4, layer_idx=0)
    block(torch.randn(2, 3, 8), inference_params=params)
    params.seqlen_offset = 3
    with pytest.raises(ValueError, match=r"holds conv_state \[2, 16, 4\].*needs \[5, 16, 4\]"):
        block(torch.randn(5, 1, 8), inference_params=params)
    with pytest.raises(ValueError, match="cu_seqlens is for the prompt"):
        block(torch.randn(2, 1, 8), cu_seqlens=torch.tensor([0, 1]), inference_params=params)
    conv_state, ssm_state = block.allocate_inference_cache(2, 4)
    with pytest.raises(ValueError, match=r"step takes one token.*\[2, 2, 8\]"):
        block.step(torch.randn(2, 2, 8), conv_state, ssm_state)
    with pytest.raises(ValueError, match=r"ssm_state must have shape \[batch, d_inner, d_state\] = \[2, 16, 4\], got \[2, 16, 5\]"):
        block.step(torch.randn(2, 1, 8), conv_state, torch.zeros(2, 16, 5))
    with pytest.raises(TypeError, match="inference_params must have seqlen_offset"):
        block(torch.randn(2, 3, 8), inference_params={"seqlen_offset": 0})


# --------------------------------------------------------------------- empty sizes, bad arguments


@pytest.mark.parametrize("d_model, d_state, batch, length", [
    (8, 4, 0, 6), (8, 4, 2, 0), (8, 0, 2, 6), (0, 4, 2, 6), (0, 0, 0, 0),
])
@pytest.mark.parametrize("packed", [False, True])
def test_empty_sizes_forward_and_backward(d_model, d_state, batch, length, packed):
    """batch 0, L = 0, d_state = 0 (no state: a gated convolution with the skip D) or d_model = 0:
    a correctly shaped output, equal to the functional mamba_ssm computation, and a backward pass."""
    sd = mamba_ssm_state_dict(d_model=d_model, d_state=d_state)
    with pytest.warns(UserWarning, match="zero-element") if d_model == 0 else _no_warning():
        block = Mamba(d_model, d_state=d_state, dtype=F64)
    block.load_state_dict(sd)
    hidden = torch.randn(batch, length, d_model, dtype=F64, requires_grad=True)
    cu = torch.tensor([0, length // 2, length]) if packed else None
    out = block(hidden, cu_seqlens=cu)
    assert out.shape == (batch, length, d_model)
    if not packed and out.numel():  # (F.conv1d itself refuses L = 0 and 0 channels)
        want = functional_mamba(sd, hidden.detach(), d_state).transpose(1, 2) @ sd["out_proj.weight"].t()
        torch.testing.assert_close(out.detach(), want)
    out.square().sum().backward()
    assert hidden.grad.shape == hidden.shape
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(d_model=-1), ValueError, r"d_model must be an int >= 0, got -1"),
    (dict(d_model="8"), TypeError, r"d_model must be an int >= 0, got str '8'"),
    (dict(d_model=8.0), TypeError, r"d_model must be an int >= 0, got float 8.0"),
    (dict(d_model=8, d_state=-2), ValueError, r"d_state must be an int >= 0, got -2"),
    (dict(d_model=8, d_conv=0), ValueError, r"d_conv must be an int >= 1, got 0"),
    (dict(d_model=8, expand=0), ValueError, r"expand must be a number > 0.*got 0"),
    (dict(d_model=8, expand="2"), ValueError, r"expand must be a number > 0.*got '2'"),
    (dict(d_model=8, dt_rank="big"), TypeError, r"dt_rank must be an int >= 0, got str 'big'"),
    (dict(d_model=8, dt_init="normal"), ValueError, r"dt_init must be 'random' or 'constant', got 'normal'"),
    (dict(d_model=8, dt_min=0.2, dt_max=0.1), ValueError, r"dt_min <= dt_max"),
    (dict(d_model=8, bias="no"), TypeError, r"bias must be a bool, got str 'no'"),
    (dict(d_model=8, use_fast_path=None), TypeError, r"use_fast_path must be a bool, got NoneType"),
    (dict(d_model=8, layer_idx=-1), ValueError, r"layer_idx must be an int >= 0, got -1"),
    (dict(d_model=8, layer_idx="0"), TypeError, r"layer_idx must be an int >= 0, got str"),
    (dict(d_model=8, dtype=torch.int64), TypeError, r"dtype must be a floating-point torch.dtype or None, got torch.int64"),
])
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        Mamba(**kwargs)


@pytest.mark.parametrize("call, error, message", [
    (lambda m: m([[0.0] * 8]), TypeError, r"hidden_states must be a torch.Tensor \[batch, L, d_model=8\], got list"),
    (lambda m: m(torch.ones(2, 3, 8, dtype=torch.long)), ValueError, r"floating-point tensor, got dtype torch.int64"),
    (lambda m: m(torch.randn(2, 3)), ValueError, r"\[batch, L, d_model=8\], got \[2, 3\]"),
    (lambda m: m(torch.randn(1, 3, 8), cu_seqlens=[0, 3]), TypeError, r"cu_seqlens must be a 1-D integer torch.Tensor"),
    (lambda m: m(torch.randn(1, 3, 8), cu_seqlens=torch.tensor([0.0, 3.0])), TypeError,
     r"cu_seqlens must be a 1-D integer torch.Tensor \[num_seqs \+ 1\], got torch.float32"),
    (lambda m: m(torch.randn(1, 3, 8), cu_seqlens=torch.tensor([0, 2])), ValueError,
     r"cu_seqlens must end at the sequence length L = 3, got 2"),
    (lambda m: m(torch.randn(1, 3, 8), return_last_state="yes"), TypeError, r"return_last_state must be a bool"),
])
def test_bad_forward_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(Mamba(8, d_state=4))
