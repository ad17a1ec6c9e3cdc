"""selective_scan (the recurrent fast path, hand-written backward) against selective_scan_reference (the loop), and the loop against
an explicit closed form written with Python numbers."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from everygraph.graphlib import Lattice, path_graph
from everygraph.sequence import selective_scan, selective_scan_reference
from everygraph.sequence.mamba.recurrent import MIN_LOG_DECAY, selective_scan_recurrent

F64 = torch.float64


def make_inputs(batch, channels, state, length, bc="variable", groups=2, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    def bc_tensor():
        if bc == "variable":
            return r(batch, state, length)
        if bc == "grouped":
            return r(batch, groups, state, length)
        return r(channels, state)

    return dict(
        u=r(batch, channels, length),
        delta=r(batch, channels, length) * 0.5,
        A=-torch.rand(channels, state, generator=g, dtype=dtype) * 2 - 0.1,
        B=bc_tensor(),
        C=bc_tensor(),
        D=r(channels),
        z=r(batch, channels, length),
        delta_bias=r(channels) * 0.3,
    )


def closed_form(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                reverse=False, cu_seqlens=None):
    """y[b, d, t] = sum over s on the same side of t and in the same packed sequence of
    C_t . (prod of decays between s and t) * delta_s u_s B_s, with Python floats."""
    batch, channels, length = u.shape
    state = A.shape[1]
    seq_of = [0] * length
    if cu_seqlens is not None:
        for k in range(len(cu_seqlens) - 1):
            for t in range(int(cu_seqlens[k]), int(cu_seqlens[k + 1])):
                seq_of[t] = k

    def dt(b, d, t):
        v = float(delta[b, d, t]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
        return math.log1p(math.exp(v)) if delta_softplus else v

    def mat(M, b, d, n, t):
        if M.dim() == 2:
            return float(M[d, n])
        if M.dim() == 3:
            return float(M[b, n, t])
        group = d // (channels // M.shape[1])
        return float(M[b, group, n, t])

    out = torch.zeros(batch, channels, length, dtype=F64)
    for b, d, t in itertools.product(range(batch), range(channels), range(length)):
        sources = range(t, length) if reverse else range(t + 1)
        y = 0.0
        for s in sources:
            if seq_of[s] != seq_of[t]:
                continue
            # each position's own step decays what enters it: from the right when reversed
            between = range(t, s) if reverse else range(s + 1, t + 1)
            total_dt = sum(dt(b, d, r) for r in between)
            for n in range(state):
                y += mat(C, b, d, n, t) * math.exp(total_dt * float(A[d, n])) * dt(b, d, s) * float(u[b, d, s]) * mat(B, b, d, n, s)
        if D is not None:
            y += float(D[d]) * float(u[b, d, t])
        if z is not None:
            zt = float(z[b, d, t])
            y *= zt / (1 + math.exp(-zt))
        out[b, d, t] = y
    return out


# --------------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("bc", ["variable", "grouped", "fixed"])
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_matches_closed_form(bc, reverse):
    x = make_inputs(2, 4, 3, 7, bc=bc)
    cu = torch.tensor([0, 3, 3, 7])
    for kwargs in (dict(), dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True)):
        for cu_seqlens in (None, cu):
            args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
            got = selective_scan_reference(*args, reverse=reverse, cu_seqlens=cu_seqlens, **kwargs)
            want = closed_form(*args, reverse=reverse, cu_seqlens=cu_seqlens, **kwargs)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_reference_last_state_is_the_explicit_sum():
    x = make_inputs(1, 2, 3, 5)
    out, last = selective_scan_reference(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True)
    dt, A = x["delta"][0], x["A"]
    want = torch.zeros(2, 3, dtype=F64)
    for s in range(5):
        decay = torch.exp(dt[:, s + 1:].sum(-1)[:, None] * A)
        want += decay * (dt[:, s] * x["u"][0, :, s])[:, None] * x["B"][0, :, s][None, :]
    torch.testing.assert_close(last[0], want)


# --------------------------------------------------------------------- recurrent vs reference

OPTION_NAMES = ("D", "z", "delta_bias", "delta_softplus")


def _call_both(x, bc_options, slab_kwargs, **kwargs):
    tensors = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref_tensors = {k: v.clone().requires_grad_() for k, v in x.items()}

    def pick(ts):
        args = (ts["u"], ts["delta"], ts["A"], ts["B"], ts["C"])
        extra = {k: ts[k] for k in ("D", "z", "delta_bias") if bc_options.get(k)}
        return args, extra

    args, extra = pick(tensors)
    got = selective_scan_recurrent(*args, **extra, **kwargs, **slab_kwargs)
    args_r, extra_r = pick(ref_tensors)
    want = selective_scan_reference(*args_r, **extra_r, **kwargs)
    return got, want, tensors, ref_tensors, ["u", "delta", "A", "B", "C", *extra]


def _compare(got, want, tensors, ref_tensors, names, seed=1):
    if isinstance(got, tuple):
        torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)
        got, want = got[0], want[0]
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    upstream = torch.randn(got.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()
    for name in names:
        torch.testing.assert_close(tensors[name].grad, ref_tensors[name].grad, rtol=1e-8, atol=1e-8,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


@pytest.mark.parametrize("bc", ["variable", "grouped", "fixed"])
@pytest.mark.parametrize("options", [
    {}, {"D": True}, {"z": True}, {"delta_bias": True, "delta_softplus": True},
    {"D": True, "z": True, "delta_bias": True, "delta_softplus": True},
])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_equals_reference_every_option(bc, options, reverse):
    # 37 positions in slabs of 16: several slabs, a short tail slab.
    x = make_inputs(2, 4, 3, 37, bc=bc, seed=zlib.crc32(repr((bc, reverse, sorted(options))).encode()) % 1000)
    slabbing = dict(slab_elements=2 * 4 * 3 * 16)
    got, want, t, rt, names = _call_both(
        x, options, slabbing, delta_softplus=options.get("delta_softplus", False),
        return_last_state=True, reverse=reverse,
    )
    _compare(got, want, t, rt, names)


@pytest.mark.parametrize("length", [1, 2, 31, 32, 33, 65, 127, 300])
def test_recurrent_equals_reference_lengths(length):
    x = make_inputs(1, 3, 2, length, seed=length)
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    for slabbing in (dict(), dict(slab_elements=3 * 2 * 32)):
        got, want, t, rt, names = _call_both(x, options, slabbing, delta_softplus=True, return_last_state=True)
        _compare(got, want, t, rt, names)


def test_recurrent_equals_reference_length_2000():
    x = make_inputs(1, 2, 2, 2000, seed=3)
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    got, want, t, rt, names = _call_both(x, options, dict(slab_elements=2 * 2 * 256), delta_softplus=True)
    _compare(got, want, t, rt, names)


@pytest.mark.parametrize("bc", ["variable", "grouped", "fixed", "mixed"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_hand_written_backward_passes_gradcheck(bc, reverse, packed):
    """torch.autograd.gradcheck (finite differences, float64) of every input, every option on,
    the last state returned, slabs of 3 positions so the adjoint is carried across slabs."""
    x = make_inputs(1, 2, 2, 8, bc="fixed" if bc == "fixed" else "grouped" if bc == "grouped" else "variable",
                    groups=2, seed=11)
    if bc == "mixed":  # input-dependent B, fixed C
        x["C"] = make_inputs(1, 2, 2, 8, bc="fixed", seed=12)["C"]
    cu = torch.tensor([0, 3, 3, 8]) if packed else None
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    inputs = tuple(x[k].clone().requires_grad_() for k in names)

    def scan(*ts):
        return selective_scan_recurrent(*ts, delta_softplus=True, return_last_state=True, reverse=reverse,
                                        cu_seqlens=cu, slab_elements=1 * 2 * 2 * 3)

    assert torch.autograd.gradcheck(scan, inputs)
    # no options, slabs of one position
    assert torch.autograd.gradcheck(
        lambda *ts: selective_scan_recurrent(*ts, reverse=reverse, cu_seqlens=cu, slab_elements=4), inputs[:5]
    )


def test_gradients_of_a_subset_of_inputs_and_of_the_last_state_alone():
    """Inputs without requires_grad get no gradient; a loss on the last state alone
    back-propagates through every slab; both equal the loop's."""
    x = make_inputs(2, 4, 3, 23, seed=5)
    got = {k: v.clone() for k, v in x.items()}
    want = {k: v.clone() for k, v in x.items()}
    for ts in (got, want):
        ts["delta"].requires_grad_()
        ts["C"].requires_grad_()
    _, last = selective_scan_recurrent(got["u"], got["delta"], got["A"], got["B"], got["C"], delta_softplus=True,
                                       return_last_state=True, slab_elements=2 * 4 * 3 * 5)
    _, last_ref = selective_scan_reference(want["u"], want["delta"], want["A"], want["B"], want["C"],
                                           delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(last, last_ref)
    (last ** 2).sum().backward()
    (last_ref ** 2).sum().backward()
    assert got["u"].grad is None and got["A"].grad is None
    torch.testing.assert_close(got["delta"].grad, want["delta"].grad, rtol=1e-9, atol=1e-9)
    assert float(got["delta"].grad[..., 0].abs().sum()) > 0  # the first slab is reached
    torch.testing.assert_close(got["C"].grad, torch.zeros_like(got["C"]))


def test_strong_decay_is_clamped_and_still_equals_the_loop():
    """Exponents delta * A far below MIN_LOG_DECAY (decays that would be denormal in float32)
    take the clamped path; the result equals the loop's exact exp in float64."""
    x = make_inputs(2, 4, 3, 30, seed=9)
    A = x["A"] * 80  # delta * A down to about -200 after softplus
    options = dict(delta_softplus=True, return_last_state=True)
    tensors = [t.clone().requires_grad_() for t in (x["u"], x["delta"], A, x["B"], x["C"])]
    ref_tensors = [t.clone().requires_grad_() for t in (x["u"], x["delta"], A, x["B"], x["C"])]
    assert float((F.softplus(x["delta"])[..., None] * A[:, None, :]).min()) < 3 * MIN_LOG_DECAY
    got = selective_scan_recurrent(*tensors, slab_elements=2 * 4 * 3 * 7, **options)
    want = selective_scan_reference(*ref_tensors, **options)
    torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)
    (got[0].sum() + got[1].sum()).backward()
    (want[0].sum() + want[1].sum()).backward()
    for name, t, r in zip("u delta A B C".split(), tensors, ref_tensors):
        torch.testing.assert_close(t.grad, r.grad, rtol=1e-8, atol=1e-8, msg=lambda m, name=name: f"{name}: {m}")
    out32 = selective_scan_recurrent(*[t.detach().float() for t in tensors], delta_softplus=True)
    assert torch.isfinite(out32).all()


def test_public_function_is_the_recurrent_path():
    x = make_inputs(2, 4, 3, 50)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True, True)
    got = selective_scan(*args)
    want = selective_scan_reference(*args)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@settings(max_examples=12, deadline=None)
@given(
    length=st.integers(1, 60), slab=st.integers(1, 36),
    bc=st.sampled_from(["variable", "grouped", "fixed"]), reverse=st.booleans(),
    splits=st.lists(st.integers(0, 60), max_size=3),
)
def test_recurrent_equals_reference_property(length, slab, bc, reverse, splits):
    x = make_inputs(1, 4, 2, length, bc=bc, seed=length)
    cu = torch.tensor(sorted({0, length, *[s for s in splits if s <= length]}))
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True, reverse, cu)
    got = selective_scan_recurrent(*args, slab_elements=4 * 2 * slab)  # slab positions
    want = selective_scan_reference(*args)
    torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)


def test_half_precision_computes_in_float32_and_casts_back():
    x = make_inputs(2, 4, 3, 40, dtype=torch.float32)
    args = [x[k].to(torch.bfloat16) for k in ("u", "delta")] + [x["A"], x["B"].bfloat16(), x["C"].bfloat16()]
    got, state = selective_scan(*args, delta_softplus=True, return_last_state=True)
    want = selective_scan_reference(*[a.float() for a in args], delta_softplus=True)
    assert got.dtype == torch.bfloat16 and state.dtype == torch.float32
    torch.testing.assert_close(got.float(), want.bfloat16().float())


# --------------------------------------------------------------------- packed sequences


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bc", ["variable", "fixed"])
def test_packed_equals_one_by_one(reverse, bc):
    lengths = [5, 40, 1, 0, 23]
    total = sum(lengths)
    x = make_inputs(2, 3, 4, total, bc=bc, seed=7)
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)))
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True, reverse=reverse)
    packed = selective_scan_recurrent(x["u"], x["delta"], x["A"], x["B"], x["C"], cu_seqlens=cu,
                                      slab_elements=2 * 3 * 4 * 16, **kw)
    for k in range(len(lengths)):
        lo, hi = int(cu[k]), int(cu[k + 1])
        part = lambda M: M[..., lo:hi] if M.dim() >= 3 else M  # noqa: E731
        alone = selective_scan(part(x["u"]), part(x["delta"]), x["A"], part(x["B"]), part(x["C"]),
                               D=x["D"], z=part(x["z"]), delta_bias=x["delta_bias"], delta_softplus=True,
                               reverse=reverse)
        torch.testing.assert_close(packed[..., lo:hi], alone)


def test_packed_last_state_is_one_state_per_sequence():
    """With cu_seqlens the state returned is each sequence's own, [batch * num_seqs, D, N]; the
    last sequence's state (what a single state used to be) is its last row."""
    x = make_inputs(1, 2, 3, 30)
    cu = torch.tensor([0, 12, 30])
    _, last = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True, cu_seqlens=cu)
    assert last.shape == (2, 2, 3)
    for k, (lo, hi) in enumerate([(0, 12), (12, 30)]):
        _, alone = selective_scan_reference(x["u"][..., lo:hi], x["delta"][..., lo:hi], x["A"], x["B"][..., lo:hi],
                                            x["C"][..., lo:hi], return_last_state=True)
        torch.testing.assert_close(last[k:k + 1], alone)


# --------------------------------------------------------------------- the path-graph view


def test_a_sequence_is_a_path_graph():
    """Each position's state depends exactly on its predecessor in path_graph(L): changing the
    input at node v changes the output at v and at every node reachable from v, nothing else."""
    length = 9
    graph = path_graph(length)
    assert graph.edge_index.tolist() == Lattice((length,)).edge_index.tolist()
    assert graph.edge_index.tolist() == [list(range(length - 1)), list(range(1, length))]
    x = make_inputs(1, 2, 2, length)
    base = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], delta_softplus=True)
    for v in range(length):
        u = x["u"].clone()
        u[..., v] += 1.0
        changed = (selective_scan(u, x["delta"], x["A"], x["B"], x["C"], delta_softplus=True) - base).abs().amax((0, 1)) > 0
        assert torch.nonzero(changed).view(-1).tolist() == list(range(v, length))


# --------------------------------------------------------------------- long, bad inputs


def test_long_sequence_stays_finite():
    length = 100_000
    x = make_inputs(1, 2, 4, length, dtype=torch.float32)
    out, state = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                delta_softplus=True, return_last_state=True)
    assert out.shape == (1, 2, length)
    assert torch.isfinite(out).all() and torch.isfinite(state).all()
    # the end of a long run equals the same tail scanned from the tail's true entering state
    # within float32 noise (the memory of earlier inputs has decayed away)
    tail = 2000
    short = selective_scan(x["u"][..., -tail:], x["delta"][..., -tail:], x["A"], x["B"][..., -tail:],
                           x["C"][..., -tail:], x["D"], x["z"][..., -tail:], x["delta_bias"], delta_softplus=True)
    torch.testing.assert_close(out[..., -100:], short[..., -100:], rtol=1e-4, atol=1e-4)


def test_inputs_are_not_modified():
    x = make_inputs(2, 4, 3, 20)
    before = {k: v.clone() for k, v in x.items()}
    selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True, True,
                   torch.tensor([0, 5, 20]))
    for k in x:
        assert torch.equal(x[k], before[k])


def test_bad_shapes_name_both_shapes():
    x = make_inputs(2, 4, 3, 10)
    with pytest.raises(ValueError, match=r"\[2, 4, 10\].*\[2, 4, 9\]"):
        selective_scan(x["u"], x["delta"][..., :9], x["A"], x["B"], x["C"])
    with pytest.raises(ValueError, match=r"\[2, 3, 10\].*\[2, 3, 11\]"):
        selective_scan(x["u"], x["delta"], x["A"], torch.randn(2, 3, 11, dtype=F64), x["C"])
    with pytest.raises(ValueError, match=r"A must have shape \[D, N\] with D = 4.*\[5, 3\]"):
        selective_scan(x["u"], x["delta"], torch.randn(5, 3, dtype=F64), x["B"], x["C"])
    with pytest.raises(ValueError, match=r"G dividing D = 4.*\[2, 3, 3, 10\]"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], torch.randn(2, 3, 3, 10, dtype=F64))
    with pytest.raises(ValueError, match=r"z must have the shape of u \[2, 4, 10\], got \[2, 4, 1\]"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], z=torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match=r"D must have shape \[D\] = \[4\].*\[3\]"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=torch.randn(3))


@pytest.mark.parametrize("cu, message", [
    ([1, 5, 10], "start at 0"),
    ([0, 5, 9], "end at the sequence length L = 10"),
    ([0, 6, 4, 10], "increasing"),
    ([0], "at least 2"),
])
def test_bad_cu_seqlens(cu, message):
    x = make_inputs(1, 2, 2, 10)
    for fn in (selective_scan, selective_scan_reference):
        with pytest.raises(ValueError, match=message):
            fn(x["u"], x["delta"], x["A"], x["B"], x["C"], cu_seqlens=torch.tensor(cu))
    with pytest.raises(ValueError, match="integer"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], cu_seqlens=torch.tensor([0.0, 10.0]))


def test_memory_guard_reports_estimate():
    x = make_inputs(2, 4, 3, 64)
    with pytest.raises(MemoryError, match=r"GiB.*\[batch=2, D=4, N=3\].*limit"):
        selective_scan_recurrent(x["u"], x["delta"], x["A"], x["B"], x["C"], max_slab_bytes=500)


def test_complex_A_is_refused():
    x = make_inputs(1, 2, 2, 4)
    with pytest.raises(ValueError, match="complex"):
        selective_scan(x["u"], x["delta"], x["A"].to(torch.complex128), x["B"], x["C"])


def test_subpackage_modules_import_by_path():
    """The subpackage is ``everygraph.sequence.mamba``; the name ``selective_scan`` is the function."""
    import importlib

    import everygraph.sequence as seq

    for module in ("reference", "_inputs", "recurrent"):
        importlib.import_module(f"everygraph.sequence.mamba.{module}")  # raises if a module is broken
    assert callable(seq.selective_scan) and callable(seq.selective_scan_reference)
    assert importlib.import_module("everygraph.sequence.mamba").selective_scan is seq.selective_scan


# --------------------------------------------------------------------- per-sequence final states


def _alone(x, lo, hi, reverse):
    part = lambda M: M[..., lo:hi] if M.dim() >= 3 else M  # noqa: E731
    return selective_scan_reference(part(x["u"]), part(x["delta"]), x["A"], part(x["B"]), part(x["C"]),
                                    D=x["D"], z=part(x["z"]), delta_bias=x["delta_bias"], delta_softplus=True,
                                    return_last_state=True, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bc", ["variable", "grouped", "fixed"])
@pytest.mark.parametrize("lengths", [[0, 5, 11, 0, 1, 7, 0], [9, 0], [0, 0], [6]])
def test_packed_final_states_equal_each_sequence_alone(reverse, bc, lengths):
    """One final state per packed sequence, [batch * num_seqs, D, N] (row b * num_seqs + k), equal
    to the reference run on that sequence alone; an empty sequence (first, inner or last) has the
    zero state. Forward values and gradients of both executions agree."""
    total = sum(lengths)
    x = make_inputs(2, 4, 3, total, bc=bc, seed=len(lengths) + 7 * total)
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)))
    options = {"D": True, "z": True, "delta_bias": True, "delta_softplus": True}
    got, want, t, rt, names = _call_both(x, options, dict(slab_elements=2 * 4 * 3 * 4), delta_softplus=True,
                                         return_last_state=True, reverse=reverse, cu_seqlens=cu)
    num_seqs = len(lengths)
    assert got[1].shape == want[1].shape == (2 * num_seqs, 4, 3)
    states = want[1].detach().view(2, num_seqs, 4, 3)
    for k in range(num_seqs):
        lo, hi = int(cu[k]), int(cu[k + 1])
        out_k, state_k = _alone(x, lo, hi, reverse)
        torch.testing.assert_close(states[:, k], state_k, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(want[0].detach()[..., lo:hi], out_k, rtol=1e-12, atol=1e-12)
        if hi == lo:
            assert torch.equal(states[:, k], torch.zeros_like(states[:, k]))
    _compare(got, want, t, rt, names)


def test_packed_ending_in_an_empty_sequence_returns_zeros_not_the_previous_state():
    x = make_inputs(1, 2, 3, 10)
    for fn in (selective_scan, selective_scan_reference):
        for reverse in (False, True):
            _, last = fn(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True, reverse=reverse,
                         cu_seqlens=torch.tensor([0, 10, 10]))
            _, alone = selective_scan_reference(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True,
                                                reverse=reverse)
            assert last.shape == (2, 2, 3)
            torch.testing.assert_close(last[0], alone[0])
            assert torch.equal(last[1], torch.zeros(2, 3, dtype=F64))


def test_final_state_gradients_reach_each_sequence_gradcheck():
    """gradcheck of the per-sequence states alone (no output in the loss), empty sequences
    first, inside and last, slabs of 2 positions so states are read in every slab."""
    x = make_inputs(2, 2, 2, 7, seed=21)
    cu = torch.tensor([0, 0, 2, 2, 7, 7])
    names = ["u", "delta", "A", "B", "C", "delta_bias"]
    inputs = tuple(x[k].clone().requires_grad_() for k in names)
    for reverse in (False, True):
        def states(u, delta, A, B, C, delta_bias, reverse=reverse):
            return selective_scan_recurrent(u, delta, A, B, C, delta_bias=delta_bias, delta_softplus=True,
                                            return_last_state=True, reverse=reverse, cu_seqlens=cu,
                                            slab_elements=2 * 2 * 2 * 2)[1]
        assert torch.autograd.gradcheck(states, inputs)


# --------------------------------------------------------------------- empty sizes


@pytest.mark.parametrize("sizes", [(0, 4, 3, 6), (2, 0, 3, 6), (2, 4, 0, 6), (2, 4, 3, 0), (0, 0, 0, 0)],
                         ids=["batch0", "channels0", "state0", "length0", "all0"])
@pytest.mark.parametrize("bc", ["variable", "grouped", "fixed"])
@pytest.mark.parametrize("packed", [False, True])
def test_empty_sizes_give_empty_results_forward_and_backward(sizes, bc, packed):
    """batch 0, D = 0, N = 0 or L = 0: correctly shaped results, the skip term D * u where it is
    defined (with N = 0 there is no state, so out = D u silu(z)), and a backward pass that gives
    every input a gradient of its own shape equal to the reference loop's."""
    batch, channels, state, length = sizes
    x = make_inputs(batch, channels, state, length, bc=bc, groups=2, seed=3)
    cu = torch.tensor([0, length // 2, length]) if packed else None
    for reverse in (False, True):
        results = []
        for fn in (selective_scan, selective_scan_reference):
            ts = {k: v.clone().requires_grad_() for k, v in x.items()}
            out, last = fn(ts["u"], ts["delta"], ts["A"], ts["B"], ts["C"], ts["D"], ts["z"], ts["delta_bias"],
                           delta_softplus=True, return_last_state=True, reverse=reverse, cu_seqlens=cu)
            assert out.shape == (batch, channels, length)
            assert last.shape == ((batch * 2, channels, state) if packed else (batch, channels, state))
            (out.sum() + last.sum()).backward()
            for k, v in ts.items():
                assert v.grad is not None and v.grad.shape == v.shape, k
            results.append((out, last, {k: v.grad for k, v in ts.items()}))
        (out, last, grads), (out_r, last_r, grads_r) = results
        skip = (x["u"] * x["D"][:, None]) * F.silu(x["z"])
        if state == 0:
            torch.testing.assert_close(out.detach(), skip)
        torch.testing.assert_close(out, out_r)
        torch.testing.assert_close(last, last_r)
        for k in grads:
            torch.testing.assert_close(grads[k], grads_r[k], msg=lambda m, k=k: f"gradient of {k}: {m}")


def test_selective_scan_runs_the_fast_path_and_agrees_with_the_loop(monkeypatch):
    """By default ``selective_scan`` executes its documented fast path on CPU (the fused kernel
    when the JIT is usable, else the PyTorch recurrence; spies count the calls, the loop is made
    to fail) and gives the loop's result, forward and backward."""
    import everygraph.sequence.mamba as mamba_package
    from everygraph.sequence.mamba.fused_cpu import fused_usable

    x = make_inputs(2, 4, 3, 17, seed=21)
    cu = torch.tensor([0, 5, 17])
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    want = selective_scan_reference(**leaves, delta_softplus=True, return_last_state=True, cu_seqlens=cu)
    want_grads = torch.autograd.grad(want[0].square().sum() + want[1].sum(), list(leaves.values()))

    calls = []

    def spy(name):
        fast = getattr(mamba_package, name)

        def run(*args, **kwargs):
            calls.append(name)
            return fast(*args, **kwargs)

        return run

    def loop_not_allowed(*args, **kwargs):
        raise AssertionError("selective_scan ran the reference loop")

    for name in ("selective_scan_recurrent", "selective_scan_fused"):
        monkeypatch.setattr(mamba_package, name, spy(name))
    monkeypatch.setattr(mamba_package, "selective_scan_reference", loop_not_allowed)
    got = selective_scan(**leaves, delta_softplus=True, return_last_state=True, cu_seqlens=cu)
    expected = "selective_scan_fused" if fused_usable(*x.values()) else "selective_scan_recurrent"
    assert calls == [expected]
    got_grads = torch.autograd.grad(got[0].square().sum() + got[1].sum(), list(leaves.values()))
    for a, b in zip((*got, *got_grads), (*want, *want_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
