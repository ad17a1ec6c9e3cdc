"""selective_scan is a parameterisation of scan: it calls scan with Mamba's operands in the
factored form (ExponentialDecay, NodeWeight), and scan runs that form on Mamba's kernels. The
factored form is checked against the same recurrence with every gate written out as a flat
tensor by a loop here, on the reference execution, in float64, forward and backward."""

from __future__ import annotations

import pytest
import torch

import everygraph.sequence.mamba as mamba_package
import everygraph.sequence.recurrence as engine
from everygraph.graphlib import DAG, Lattice, packed_paths
from everygraph.sequence import Boundary, scan, selective_scan, selective_scan_reference
from everygraph.sequence.mamba import _selective_scan_direct
from everygraph.sequence.mamba.fused_cpu import fused_usable
from everygraph.sequence.transitions import ExponentialDecay, NodeWeight

F64 = torch.float64
HAVE_NUMBA = mamba_package.NUMBA_AVAILABLE
FAST = ["recurrent"] + (["fused"] if HAVE_NUMBA else [])


def _spy(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def run(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, run)


def _mamba_inputs(batch=2, channels=4, state=3, length=13, groups=0, fixed=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    if fixed:
        B, C = r(channels, state), r(channels, state)
    elif groups:
        B, C = r(batch, groups, state, length), r(batch, groups, state, length)
    else:
        B, C = r(batch, state, length), r(batch, state, length)
    return dict(u=r(batch, channels, length), delta=torch.rand(batch, channels, length, generator=g, dtype=F64) + 0.1,
                A=-torch.rand(channels, state, generator=g, dtype=F64) * 2, B=B, C=C)


def test_selective_scan_calls_scan(monkeypatch):
    """The route: selective_scan -> scan -> the Mamba kernel (once); the old direct dispatch,
    kept for the benchmark, does not touch scan (so the spy can see the difference)."""
    x = _mamba_inputs()
    calls = []
    for fast in ("selective_scan_fused", "selective_scan_recurrent"):
        _spy(monkeypatch, mamba_package, fast, calls)
    scans = []
    _spy(monkeypatch, engine, "scan", scans)
    out = selective_scan(**x, delta_softplus=True)
    assert scans == ["scan"]
    assert calls == ["selective_scan_fused" if fused_usable(*x.values()) else "selective_scan_recurrent"]
    scans.clear()
    calls.clear()
    direct = _selective_scan_direct(**x, delta_softplus=True)
    assert scans == [] and len(calls) == 1
    assert torch.equal(out, direct)  # the same kernel with the same arguments: the same numbers


@pytest.mark.parametrize("execution", FAST)
def test_route_gives_the_kernels_numbers(execution):
    """Through scan, each execution returns exactly what calling its kernel directly returns,
    forward and backward, for every option."""
    cases = [dict(), dict(reverse=True), dict(return_last_state=True, cu_seqlens=torch.tensor([0, 4, 4, 13])),
             dict(return_last_state=True, reverse=True, cu_seqlens=torch.tensor([0, 6, 13]))]
    for options in cases:
        for layout in (dict(), dict(groups=2), dict(fixed=True)):
            x = _mamba_inputs(**layout)
            D = torch.randn(4, dtype=F64)
            results = []
            for fn in (selective_scan, _selective_scan_direct):
                leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
                out = fn(**leaves, D=D, delta_softplus=True, execution=execution, **options)
                out = out if isinstance(out, tuple) else (out,)
                loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=F64).view(o.shape)).sum() for o in out)
                results.append((*out, *torch.autograd.grad(loss, list(leaves.values()))))
            for a, b in zip(*results, strict=True):
                assert torch.equal(a, b), (options, layout)


def _flat(structure, rate, A, q, k, v, groups):
    """The Mamba operands written out as the engine's flat tensors, row by row."""
    dag = structure.to_dag() if isinstance(structure, Lattice) else structure
    src, dst = dag.edge_index.tolist()
    line_node = dag.line_graph().node.tolist()

    def decay(node):
        return torch.exp(rate[:, node, :, None, None] * A)  # [B, H, dk, dv]

    transition = torch.stack([decay(n) for n in line_node], dim=1) if line_node else decay(0)[:, :0]
    mark = torch.stack([decay(n) for n in dst], dim=1) if dst else decay(0)[:, :0]
    source = torch.stack([rate[:, n] for n in src], dim=1) if src else rate[:, :0]
    heads = v.shape[2]
    q, k = (t.repeat_interleave(heads // t.shape[2], dim=2) if t.shape[2] != heads else t for t in (q, k))
    return q, k, source, transition, mark


def _engine_inputs(structure, batch, heads, dk, dv, groups, seed):
    g = torch.Generator().manual_seed(seed)
    n = structure.num_nodes
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(q=r(batch, n, groups, dk), k=r(batch, n, groups, dk), v=r(batch, n, heads, dv),
                rate=torch.rand(batch, n, heads, generator=g, dtype=F64) + 0.1,
                A=-torch.rand(heads, dk, dv, generator=g, dtype=F64))


def _factored_vs_flat(structure, execution, inputs, state_nodes=None, heads=None):
    """scan with the factored operands on ``execution`` against scan with the flat tensors
    (built by a loop) on the reference execution: outputs, selected states, every gradient."""
    leaves = {k: t.clone().requires_grad_() for k, t in inputs.items()}
    q, k, v, rate, A = (leaves[n] for n in ("q", "k", "v", "rate", "A"))
    decay = ExponentialDecay(rate, A)
    states = state_nodes is not None
    got = scan(structure, q, k, v, NodeWeight(rate), decay, decay, rate, kind="elementwise", scale=1.0,
               return_state=states, boundary=Boundary(source=rate, leave=decay) if states else None,
               state_nodes=state_nodes, execution=execution)
    got = got if isinstance(got, tuple) else (got,)
    q2, k2, source, transition, mark = _flat(structure, rate, A, q, k, v, q.shape[2])
    dag = structure.to_dag() if isinstance(structure, Lattice) else structure
    boundary = None
    if states:
        leave = torch.stack([torch.exp(rate[:, n, :, None, None] * A) for n in dag.edge_index[1].tolist()], dim=1) \
            if dag.num_edges else torch.exp(rate[:, :0, :, None, None] * A)
        boundary = Boundary(source=rate, leave=leave)
    want = scan(structure, q2, k2, v, source, transition, mark, rate, kind="elementwise", scale=1.0,
                return_state=states, boundary=boundary, execution="reference")
    if states:
        want = (want[0], want[1][:, state_nodes])
    want = want if isinstance(want, tuple) else (want,)
    weights = [torch.randn(t.shape, dtype=F64, generator=torch.Generator().manual_seed(9)) for t in got]
    grads = [torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, out)), list(leaves.values()),
                                 allow_unused=True) for out in (got, want)]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for name, a, b in zip(leaves, *grads, strict=True):
        a = torch.zeros_like(leaves[name]) if a is None else a
        b = torch.zeros_like(leaves[name]) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"gradient of {name}: {m}")


PATHS = [
    ("path", lambda: Lattice((11,)), None),
    ("reverse", lambda: Lattice((11,), (True,)), None),
    ("packed with an empty sequence", lambda: packed_paths(torch.tensor([0, 4, 4, 11])), None),
    ("packed, reverse", lambda: packed_paths(torch.tensor([0, 4, 4, 11]), reverse=True), None),
    ("last state", lambda: Lattice((11,)), torch.tensor([10])),
    ("last states, packed", lambda: packed_paths(torch.tensor([0, 4, 4, 11])), torch.tensor([3, 10])),
    ("last states, packed, reverse", lambda: packed_paths(torch.tensor([0, 4, 4, 11]), reverse=True),
     torch.tensor([0, 4])),
]


@pytest.mark.parametrize("execution", FAST + ["reference"])
@pytest.mark.parametrize("name,structure,state_nodes", PATHS, ids=[p[0] for p in PATHS])
@pytest.mark.parametrize("groups", [1, 2, "fixed"])
def test_factored_on_paths_equals_the_flat_reference(execution, name, structure, state_nodes, groups):
    """Mamba-shaped (dv = 1, H = channels): one vector of B/C for all channels, two groups, or
    fixed B/C (stride 0 over batch and positions); with and without the final states."""
    structure = structure()
    heads, dk = 4, 3
    inputs = _engine_inputs(structure, 2, heads, dk, 1, 1 if groups == "fixed" else groups, seed=1)
    if groups == "fixed":
        fixed = torch.randn(heads, dk, dtype=F64, generator=torch.Generator().manual_seed(2))
        inputs["q"] = fixed.clone()
        inputs["k"] = fixed.flip(0).clone()
        n = structure.num_nodes
        expand = lambda t: t[None, None].expand(2, n, heads, dk)  # noqa: E731
        leaves_q, leaves_k = inputs.pop("q"), inputs.pop("k")
        _factored_vs_flat_fixed(structure, execution, inputs, leaves_q, leaves_k, expand, state_nodes)
        return
    _factored_vs_flat(structure, execution, inputs, state_nodes)


def _factored_vs_flat_fixed(structure, execution, inputs, C, B, expand, state_nodes):
    """As :func:`_factored_vs_flat` with fixed q = C, k = B ``[H, dk]`` (gradients of the ``[H, dk]`` leaves)."""
    leaves = {k: t.clone().requires_grad_() for k, t in dict(inputs, C=C, B=B).items()}
    v, rate, A = leaves["v"], leaves["rate"], leaves["A"]
    decay = ExponentialDecay(rate, A)
    states = state_nodes is not None
    got = scan(structure, expand(leaves["C"]), expand(leaves["B"]), v, NodeWeight(rate), decay, decay, rate,
               kind="elementwise", scale=1.0, return_state=states,
               boundary=Boundary(source=rate, leave=decay) if states else None, state_nodes=state_nodes,
               execution=execution)
    got = got if isinstance(got, tuple) else (got,)
    q2, k2, source, transition, mark = _flat(structure, rate, A, expand(leaves["C"]).contiguous(),
                                             expand(leaves["B"]).contiguous(), v, None)
    dag = structure.to_dag() if isinstance(structure, Lattice) else structure
    boundary = None
    if states:
        leave = torch.stack([torch.exp(rate[:, n, :, None, None] * A) for n in dag.edge_index[1].tolist()], dim=1)
        boundary = Boundary(source=rate, leave=leave)
    want = scan(structure, q2, k2, v, source, transition, mark, rate, kind="elementwise", scale=1.0,
                return_state=states, boundary=boundary, execution="reference")
    want = (want[0], want[1][:, state_nodes]) if states else (want,)
    weights = [torch.randn(t.shape, dtype=F64, generator=torch.Generator().manual_seed(9)) for t in got]
    grads = [torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, out)), list(leaves.values()))
             for out in (got, want)]
    for a, b in zip((*got, *grads[0]), (*want, *grads[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_factored_route_equals_mamba_formula():
    """What scan returns for the factored form is Mamba's recurrence (mamba_ssm's reference
    formula, the loop ``selective_scan_reference``), including the per-sequence final states."""
    x = _mamba_inputs(groups=2)
    cu = torch.tensor([0, 4, 4, 13])
    for reverse in (False, True):
        out, last = selective_scan(**x, return_last_state=True, reverse=reverse, cu_seqlens=cu)
        out_r, last_r = selective_scan_reference(**x, return_last_state=True, reverse=reverse, cu_seqlens=cu)
        torch.testing.assert_close(out, out_r, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(last, last_r, rtol=1e-10, atol=1e-12)
        assert last.shape == (2 * 3, 4, 3) and not last[1::3].any()  # the empty sequence: zeros


def test_a_look_alike_is_not_sent_to_the_kernels(monkeypatch):
    """The kernels assume source = direct = the decay's rate; operands that only look like
    Mamba's (a source weight with other numbers) run on the materialised path and stay right."""
    calls = []
    for fast in ("selective_scan_fused", "selective_scan_recurrent"):
        _spy(monkeypatch, mamba_package, fast, calls)
    structure = Lattice((9,))
    inputs = _engine_inputs(structure, 2, 4, 3, 1, 1, seed=3)
    q, k, v, rate, A = (inputs[n] for n in ("q", "k", "v", "rate", "A"))
    decay = ExponentialDecay(rate, A)
    other = rate * 2
    got = scan(structure, q, k, v, NodeWeight(other), decay, decay, rate, kind="elementwise", scale=1.0)
    assert calls == []
    q2, k2, _, transition, mark = _flat(structure, rate, A, q, k, v, 1)
    source = other[:, structure.edge_index[0]]
    want = scan(structure, q2, k2, v, source, transition, mark, rate, kind="elementwise", scale=1.0, execution="reference")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    scan(structure, q, k, v, NodeWeight(rate), decay, decay, rate, kind="elementwise", scale=1.0)
    assert len(calls) == 1  # the genuine form does reach them


GRAPHS = [
    ("2D lattice", lambda: Lattice((3, 4)), ("reference", "wavefront", "lattice")),
    ("2D lattice, flipped", lambda: Lattice((4, 3), (True, False)), ("wavefront", "lattice")),
    ("DAG", lambda: DAG(torch.tensor([[0, 0, 1, 2, 1, 3, 4], [1, 2, 3, 3, 4, 5, 5]])), ("reference", "wavefront")),
]


@pytest.mark.parametrize("name,structure,executions", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_factored_on_grids_and_dags_equals_the_flat_reference(name, structure, executions):
    """The factored decay is a per-node gate on any structure: on grids and DAGs (dv > 1,
    grouped q/k, boundary states) it equals the flat tensors on the reference execution."""
    structure = structure()
    inputs = _engine_inputs(structure, 2, 4, 3, 2, 2, seed=4)
    for execution in executions:
        _factored_vs_flat(structure, execution, inputs)
        _factored_vs_flat(structure, execution, inputs, state_nodes=torch.tensor([0, structure.num_nodes - 1]))


def test_fused_execution_refuses_other_operands():
    structure = Lattice((5,))
    inputs = _engine_inputs(structure, 1, 2, 3, 2, 2, seed=5)
    q, k, v, rate, A = (inputs[n] for n in ("q", "k", "v", "rate", "A"))
    decay = ExponentialDecay(rate, A)
    with pytest.raises(ValueError, match="fused"):
        scan(structure, q, k, v, NodeWeight(rate), decay, decay, rate, kind="elementwise", scale=1.0, execution="fused")


def test_fixed_operands_that_are_views_of_larger_tensors():
    """A fixed B/C sliced out of a larger tensor is not the base of its expanded view: the
    route then reads it by indexing, with the same values and gradients as the direct call."""
    x = _mamba_inputs(fixed=True)
    stacks = [torch.stack([torch.zeros_like(x[n]), x[n], torch.ones_like(x[n])]).requires_grad_() for n in ("B", "C")]
    results = []
    for fn in (selective_scan, _selective_scan_direct):
        leaves = [stack.detach().clone().requires_grad_() for stack in stacks]
        out = fn(x["u"], x["delta"], x["A"], leaves[0][1], leaves[1][1], delta_softplus=True)
        results.append((out, *torch.autograd.grad((out * out.detach().sin()).sum(), leaves)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("execution", FAST + ["reference"])
@pytest.mark.parametrize("sizes", [(0, 3, 2, 5), (2, 0, 2, 5), (2, 3, 0, 5), (2, 3, 2, 0)])
def test_empty_sizes_through_the_engine(execution, sizes):
    """Empty batch, channels (no heads), state or length: the loop's shapes and values, and a
    backward pass that runs."""
    b, D, N, L = sizes
    g = torch.Generator().manual_seed(6)
    u = torch.randn(b, D, L, generator=g, dtype=F64, requires_grad=True)
    delta, B = torch.randn(b, D, L, generator=g, dtype=F64), torch.randn(b, N, L, generator=g, dtype=F64)
    A, C = -torch.rand(D, N, generator=g, dtype=F64), torch.randn(D, N, generator=g, dtype=F64)
    for options in (dict(), dict(return_last_state=True, cu_seqlens=torch.tensor([0, L])),
                    dict(return_last_state=True, reverse=True)):
        got = selective_scan(u, delta, A, B, C, D=torch.ones(D, dtype=F64), execution=execution, **options)
        want = selective_scan_reference(u, delta, A, B, C, D=torch.ones(D, dtype=F64), **options)
        got, want = (t if isinstance(t, tuple) else (t,) for t in (got, want))
        for a, c in zip(got, want, strict=True):
            torch.testing.assert_close(a, c)
        got[0].sum().backward()


@pytest.mark.skipif(not HAVE_NUMBA, reason="the fused kernels need numba")
@pytest.mark.parametrize("execution", [None, "fused", "recurrent"])
def test_float32_softplus_is_the_kernels_where_they_run(monkeypatch, execution):
    """float32 on the CPU: where the fused kernels run (by default or asked for), selective_scan
    applies their vector softplus, as selective_scan_fused does, so the two give the same
    numbers forward and backward (torch's softplus gave other roundings); the PyTorch
    recurrence keeps torch's softplus."""
    x = {k: v.float() for k, v in _mamba_inputs(length=70).items()}
    x["delta"] = x["delta"] * 8 - 4  # negative, positive and above the threshold of 20 once scaled
    x["delta"][0, 0, :3] = torch.tensor([25.0, -30.0, 0.0])
    calls = []
    _spy(monkeypatch, mamba_package, "kernel_softplus", calls)
    results = []
    for fn in (lambda **a: selective_scan(**a, execution=execution), mamba_package.selective_scan_fused):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
        out = fn(**leaves, delta_bias=torch.linspace(-1, 1, 4), delta_softplus=True)
        results.append((out, *torch.autograd.grad((out * out.detach().cos()).sum(), list(leaves.values()))))
    if execution == "recurrent":  # its float32 numbers differ from the kernels' in rounding only
        assert calls == []
    else:
        assert calls == ["kernel_softplus"]
        for a, b in zip(*results, strict=True):
            assert torch.equal(a, b)
