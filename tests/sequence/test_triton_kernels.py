"""The Triton kernels against the reference executions, forward and backward, in float64.

Without a GPU they run through Triton's interpreter (``TRITON_INTERPRET=1``, set in
``tests/conftest.py``), which executes the same ``@triton.jit`` code on CPU tensors; sizes
are small because the interpreter runs every program in Python. On a machine with CUDA they
run compiled, on CUDA tensors.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import plstm_scan, selective_scan, selective_scan_reference
from everygraph.sequence.plstm.layout import lattice_dag
from everygraph.sequence.triton import _runtime

pytest.importorskip("triton", reason="the optional extra everygraph[gpu] is not installed")

from everygraph.sequence.triton.selective_scan import SelectiveScanTriton, selective_scan_triton  # noqa: E402
from everygraph.sequence.executions.wavefront import wavefront_plan  # noqa: E402
from everygraph.sequence.triton.wavefront import WavefrontStates, triton_wavefront_plan  # noqa: E402

F64 = torch.float64
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _scan_inputs(bc: str, batch=2, channels=4, state=3, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=F64).to(DEVICE).requires_grad_()

    operand = {"variable": (batch, state, length), "grouped": (batch, 2, state, length), "fixed": (channels, state)}[bc]
    A = (-torch.rand(channels, state, generator=g, dtype=F64) * 2 - 0.1).to(DEVICE).requires_grad_()
    return dict(
        u=r(batch, channels, length), delta=r(batch, channels, length), A=A, B=r(*operand), C=r(*operand),
        D=r(channels), z=r(batch, channels, length), delta_bias=r(channels),
    )


@pytest.mark.parametrize(
    "bc, reverse, packed",
    [("variable", False, False), ("grouped", True, True), ("fixed", False, True), ("variable", True, False)],
)
def test_selective_scan_kernel_equals_reference(bc, reverse, packed):
    inputs = _scan_inputs(bc)
    cu = torch.tensor([0, 3, 3, 9], device=DEVICE) if packed else None
    options = dict(delta_softplus=True, return_last_state=True, reverse=reverse, cu_seqlens=cu)
    out, last = selective_scan_triton(**inputs, **options, chunk=4)  # 9 positions: 3 chunks, one ragged
    ref_out, ref_last = selective_scan_reference(**inputs, **options)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, ref_last, rtol=1e-10, atol=1e-10)
    w_out, w_last = torch.randn_like(out), torch.randn_like(last)
    names = list(inputs)
    grads = torch.autograd.grad((out * w_out).sum() + (last * w_last).sum(), [inputs[n] for n in names])
    ref_grads = torch.autograd.grad((ref_out * w_out).sum() + (ref_last * w_last).sum(), [inputs[n] for n in names])
    for name, g, r in zip(names, grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


def test_selective_scan_kernel_float32_matches_float64_reference():
    inputs = {k: v.detach() for k, v in _scan_inputs("variable", channels=70, length=5).items()}  # 70: two blocks of 64
    out = selective_scan_triton(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True)
    ref = selective_scan_reference(**inputs, delta_softplus=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)  # float32 rounding over 5 steps


def test_selective_scan_kernel_gradcheck():
    g = torch.Generator().manual_seed(1)
    batch, D, N, L = 1, 2, 2, 3
    dt = (torch.rand(batch, L, D, generator=g, dtype=F64) + 0.1).to(DEVICE).requires_grad_()
    u = torch.randn(batch, L, D, generator=g, dtype=F64).to(DEVICE).requires_grad_()
    A = (-torch.rand(D, N, generator=g, dtype=F64)).to(DEVICE).requires_grad_()
    B = torch.randn(batch, 1, L, N, generator=g, dtype=F64).to(DEVICE).requires_grad_()
    C = torch.randn(D, N, generator=g, dtype=F64).to(DEVICE).requires_grad_()
    end = torch.tensor([-1, -1, 0, -1], dtype=torch.int32, device=DEVICE)

    def f(dt, u, A, B, C):
        return SelectiveScanTriton.apply(dt, u, A, B, C, None, end, 1, 2)

    assert torch.autograd.gradcheck(f, (dt, u, A, B, C))


def test_selective_scan_dispatches_to_triton_on_request(monkeypatch):
    calls = []
    original = SelectiveScanTriton.apply
    monkeypatch.setattr(SelectiveScanTriton, "apply", lambda *a: calls.append(1) or original(*a))
    inputs = {k: v.detach() for k, v in _scan_inputs("variable", length=4).items()}
    out = selective_scan(**inputs, execution="triton")
    assert calls, "execution='triton' did not run the Triton kernel"
    torch.testing.assert_close(out, selective_scan_reference(**inputs), rtol=1e-10, atol=1e-10)


def _loop_states(dag: DAG, emitted: torch.Tensor, weight: torch.Tensor, dv: int) -> torch.Tensor:
    """Edge states by a loop over nodes in topological order (natural edge ids)."""
    e_in, e_out = dag.line_graph().edge_index.tolist()
    states = [None] * dag.num_edges
    feeding = {e: [] for e in range(dag.num_edges)}
    for line, (a, b) in enumerate(zip(e_in, e_out)):
        feeding[b].append((line, a))
    edges_by_tail = {}
    for e, tail in enumerate(dag.edge_index[0].tolist()):
        edges_by_tail.setdefault(tail, []).append(e)
    E, BH, K = emitted.shape
    for node in dag.order.tolist():
        for e in edges_by_tail.get(node, []):
            s = emitted[e]
            for line, a in feeding[e]:
                w = weight[line]  # [BH, W]
                if w.shape[-1] == 1:
                    s = s + w * states[a]
                elif w.shape[-1] != K:
                    s = s + (w[..., :, None] * states[a].view(BH, -1, dv)).reshape(BH, K)
                else:
                    s = s + w * states[a]
            states[e] = s
    return torch.stack(states)


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "elementwise"])
def test_wavefront_step_kernel_every_transition_kind(kind):
    dag = DAG(torch.tensor([[0, 0, 1, 2, 1, 3, 5, 4], [1, 2, 3, 3, 4, 4, 6, 6]]), num_nodes=7)
    order = wavefront_plan(dag, DEVICE)
    plan = triton_wavefront_plan(dag, order.edge_perm, order.edge_offset)
    dk, dv, BH = 3, 2, 2
    width = {"scalar": 1, "diagonal": dk, "elementwise": dk * dv}[kind]
    lines = dag.line_graph().node.numel()
    emitted = torch.randn(dag.num_edges, BH, dk * dv, dtype=F64, device=DEVICE, requires_grad=True)
    weight = torch.randn(lines, BH, width, dtype=F64, device=DEVICE, requires_grad=True)
    states = WavefrontStates.apply(emitted[order.edge_perm], weight, plan, dv)
    natural = torch.empty_like(states).index_copy(0, order.edge_perm, states)
    expected = _loop_states(dag, emitted, weight, dv)
    torch.testing.assert_close(natural, expected, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(expected)
    grads = torch.autograd.grad((natural * w).sum(), [emitted, weight])
    ref = torch.autograd.grad((expected * w).sum(), [emitted, weight])
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_wavefront_step_kernel_gradcheck():
    dag = DAG(torch.tensor([[0, 0, 1, 2], [1, 2, 3, 3]]), num_nodes=4)
    order = wavefront_plan(dag, DEVICE)
    plan = triton_wavefront_plan(dag, order.edge_perm, order.edge_offset)
    lines = dag.line_graph().node.numel()
    emitted = torch.randn(dag.num_edges, 1, 2, dtype=F64, device=DEVICE, requires_grad=True)
    weight = torch.randn(lines, 1, 1, dtype=F64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, w: WavefrontStates.apply(e, w, plan, 1), (emitted, weight))


def _plstm_inputs(dag: DAG, B=2, H=2, dk=3, dv=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, E, lines = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()

    def r(*shape, scale=1.0, positive=False):
        x = torch.rand(*shape, generator=g, dtype=F64) if positive else torch.randn(*shape, generator=g, dtype=F64)
        return (x * scale).to(DEVICE).requires_grad_()

    return [r(B, N, H, dk), r(B, N, H, dk), r(B, N, H, dv), r(B, E, H, positive=True),
            r(B, lines, H, scale=0.5, positive=True), r(B, E, H, positive=True), r(B, N, H, positive=True),
            r(B, N, H, dk, dv)]


@pytest.mark.parametrize(
    "structure",
    [DAG(torch.tensor([[0, 0, 1, 2, 1, 3, 5], [1, 2, 3, 3, 4, 4, 6]]), num_nodes=7),
     Lattice((3, 4)), Lattice((3, 3), flip=(True, False)), Lattice((5,))],
    ids=["dag", "grid", "flipped-grid", "path"],
)
def test_plstm_triton_execution_equals_reference(structure):
    dag = lattice_dag(structure) if isinstance(structure, Lattice) else structure
    inputs = _plstm_inputs(dag)
    gates, initial = inputs[:7], inputs[7]
    out = plstm_scan(structure, *gates, initial_state=initial, return_state=True, execution="triton")
    ref = plstm_scan(structure, *gates, initial_state=initial, return_state=True, execution="reference")
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    w = [torch.randn_like(x) for x in ref]
    grads = torch.autograd.grad(sum((x * y).sum() for x, y in zip(out, w)), inputs)
    ref_grads = torch.autograd.grad(sum((x * y).sum() for x, y in zip(ref, w)), inputs)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "elementwise"])
def test_scan_triton_execution_every_kind_with_boundary_gates(kind):
    """The engine's scan with execution="triton" equals the reference for every kind the
    kernel runs, with boundary gates and states in and out."""
    from everygraph.sequence import Boundary, scan

    dag = DAG(torch.tensor([[0, 0, 1, 2, 1, 3], [1, 2, 3, 3, 4, 4]]), num_nodes=5)
    B, H, dk, dv = 1, 2, 2, 3
    N, E, lines = dag.num_nodes, dag.num_edges, dag.line_graph().node.numel()
    gate = {"scalar": (), "diagonal": (dk,), "elementwise": (dk, dv)}[kind]
    g = torch.Generator().manual_seed(5)

    def r(*shape, positive=False):
        x = torch.rand(*shape, generator=g, dtype=F64) if positive else torch.randn(*shape, generator=g, dtype=F64)
        return x.to(DEVICE).requires_grad_()

    tensors = [r(B, N, H, dk), r(B, N, H, dk), r(B, N, H, dv), r(B, E, H, positive=True),
               r(B, lines, H, *gate, positive=True), r(B, E, H, positive=True), r(B, N, H, positive=True),
               r(B, N, H, dk, dv)]
    gates = [r(B, N, H, positive=True), r(B, N, H, positive=True), r(B, E, H, *gate, positive=True),
             r(B, E, H, *gate, positive=True), r(B, N, H, *gate, positive=True)]
    boundary = Boundary(*gates)
    results = [scan(dag, *tensors[:7], kind=kind, initial_state=tensors[7], boundary=boundary, return_state=True,
                    execution=name) for name in ("triton", "reference")]
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    w = [torch.randn_like(x) for x in results[1]]
    leaves = tensors + gates
    grads = [torch.autograd.grad(sum((x * y).sum() for x, y in zip(res, w)), leaves) for res in results]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_triton_dispatch_needs_cuda_or_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cpu = torch.device("cpu")
    assert not _runtime.triton_runs_on(cpu)
    with pytest.raises(RuntimeError, match="CUDA"):
        _runtime.require_triton(cpu)
    inputs = {k: v.detach().cpu() for k, v in _scan_inputs("variable", length=3).items()}
    with pytest.raises(RuntimeError, match="CUDA"):
        selective_scan(**inputs, execution="triton")


def test_library_works_without_triton():
    """With triton unimportable the library imports, the default executions run, and asking
    for the Triton execution says how to install it."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, everygraph\n"
        "from everygraph.sequence import selective_scan, plstm_scan\n"
        "from everygraph.sequence.triton import _runtime\n"
        "assert not _runtime.triton_installed()\n"
        "u = torch.randn(1, 2, 5); A = -torch.rand(2, 3); B = torch.randn(1, 3, 5)\n"
        "selective_scan(u, u, A, B, B)\n"
        "try:\n"
        "    selective_scan(u, u, A, B, B, execution='triton')\n"
        "except RuntimeError as e:\n"
        "    assert 'everygraph[gpu]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _path_gates(B=2, L=37, H=2, dk=3, dv=5, seed=0):
    """Per-node gates of a path with transitions of both signs and exact zeros (pLSTM's
    transitions may be both), edges that do not exist switched off."""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, L, H, dk, generator=g, dtype=F64), torch.randn(B, L, H, dk, generator=g, dtype=F64)
    v = torch.randn(B, L, H, dv, generator=g, dtype=F64)
    S, M, D = (torch.rand(B, L, H, generator=g, dtype=F64) for _ in range(3))
    T = torch.rand(B, L, H, generator=g, dtype=F64) * 2 - 1
    T[0, L // 3, 0] = 0.0
    T[-1, L // 2, -1] = 0.0
    S[:, -1], M[:, 0] = 0.0, 0.0
    return [x.to(DEVICE).requires_grad_() for x in (q, k, v, S, T, M, D)]


def test_chunk_kernel_equals_loop_with_zero_and_negative_transitions():
    from everygraph.sequence.triton.chunk import chunk_scan_triton

    gates = _path_gates()
    h = chunk_scan_triton(*gates, chunk=16)  # 37 positions: 3 chunks, the last ragged
    q, k, v, S, T, M, D = gates
    C = torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3], dtype=F64, device=DEVICE)
    outs = []
    for t in range(q.shape[1]):  # C: the state on the edge entering t
        outs.append(M[:, t, :, None] * torch.einsum("bhd,bhdv->bhv", q[:, t], C)
                    + D[:, t, :, None] * (q[:, t] * k[:, t]).sum(-1, keepdim=True) * v[:, t])
        C = T[:, t, :, None, None] * C + S[:, t, :, None, None] * k[:, t, :, :, None] * v[:, t, :, None, :]
    ref = torch.stack(outs, 1)
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((h * w).sum(), gates)
    ref_grads = torch.autograd.grad((ref * w).sum(), gates)
    for name, a, b in zip("q k v S T M D".split(), grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


def test_chunk_kernel_gradcheck():
    from everygraph.sequence.triton.chunk import ChunkScanTriton

    gates = _path_gates(B=1, L=18, H=1, dk=1, dv=2, seed=3)
    assert torch.autograd.gradcheck(lambda *g: ChunkScanTriton.apply(*g, 16), tuple(gates), fast_mode=True)


@pytest.mark.parametrize("lattice", [Lattice((37,)), Lattice((37,), flip=(True,)), Lattice((1, 20))], ids=str)
def test_plstm_triton_chunk_execution_on_paths(lattice, monkeypatch):
    import everygraph.sequence.triton.chunk as chunk

    calls = []
    original = chunk.ChunkScanTriton.apply
    monkeypatch.setattr(chunk.ChunkScanTriton, "apply", lambda *a: calls.append(1) or original(*a))
    inputs = _plstm_inputs(lattice_dag(lattice))[:7]
    out = plstm_scan(lattice, *inputs, execution="triton")
    assert calls, "a path without boundary states should take the chunk kernel"
    ref = plstm_scan(lattice, *inputs, execution="reference")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((out * w).sum(), inputs)
    for g, r in zip(grads, torch.autograd.grad((ref * w).sum(), inputs)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_chunk_size_must_suit_tl_dot():
    from everygraph.sequence.triton.chunk import chunk_scan_triton

    with pytest.raises(ValueError, match="power of two"):
        chunk_scan_triton(*_path_gates(L=4), chunk=12)


def test_diagonal_chunk_kernel_equals_loop():
    from everygraph.sequence.triton.chunk import chunk_scan_diagonal_triton

    q, k, v, S, _, M, D = _path_gates(L=37, dk=3, dv=5, seed=2)
    g = torch.Generator().manual_seed(4)
    alpha = (torch.rand(*q.shape, generator=g, dtype=F64) * 0.95 + 0.02).to(DEVICE).requires_grad_()
    leaves = [q, k, v, alpha, S, M, D]
    h = chunk_scan_diagonal_triton(*leaves)  # 37 positions: chunks of 16, the last ragged
    C = torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3], dtype=F64, device=DEVICE)
    outs = []
    for t in range(q.shape[1]):
        outs.append(M[:, t, :, None] * torch.einsum("bhd,bhdv->bhv", q[:, t], C)
                    + D[:, t, :, None] * (q[:, t] * k[:, t]).sum(-1, keepdim=True) * v[:, t])
        C = alpha[:, t, :, :, None] * C + S[:, t, :, None, None] * k[:, t, :, :, None] * v[:, t, :, None, :]
    ref = torch.stack(outs, 1)
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ref)
    for name, a, b in zip("q k v alpha S M D".split(), torch.autograd.grad((h * w).sum(), leaves),
                          torch.autograd.grad((ref * w).sum(), leaves)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


def test_diagonal_chunk_kernel_gradcheck():
    from everygraph.sequence.triton.chunk import ChunkScanDiagonalTriton

    q, k, v, S, _, M, D = _path_gates(B=1, L=18, H=1, dk=2, dv=1, seed=6)
    log_alpha = (-torch.rand(*q.shape, dtype=F64)).to(DEVICE).requires_grad_()
    assert torch.autograd.gradcheck(ChunkScanDiagonalTriton.apply, (q, k, v, log_alpha, S, M, D), fast_mode=True)


@pytest.mark.parametrize("positive", [True, False], ids=["positive-chunk-kernel", "signed-wavefront-kernel"])
def test_scan_triton_diagonal_kind_on_a_path(positive, monkeypatch):
    """Positive key-diagonal transitions take the chunk kernel, others the wavefront kernel;
    both equal the reference."""
    import everygraph.sequence.triton.chunk as chunk
    from everygraph.sequence import scan

    calls = []
    original = chunk.ChunkScanDiagonalTriton.apply
    monkeypatch.setattr(chunk.ChunkScanDiagonalTriton, "apply", lambda *a: calls.append(1) or original(*a))
    lattice = Lattice((21,), flip=(True,))
    dag = lattice_dag(lattice)
    q, k, v, S, T, M, D, _ = _plstm_inputs(dag)
    alpha = torch.rand(*T.shape, q.shape[-1], dtype=F64, device=DEVICE) * 0.9 + 0.05
    if not positive:
        alpha = alpha * torch.where(torch.rand_like(alpha) < 0.3, -1.0, 1.0)
    alpha.requires_grad_()
    leaves = [q, k, v, S, alpha, M, D]
    out = scan(lattice, *leaves, kind="diagonal", execution="triton")
    assert bool(calls) == positive
    ref = scan(lattice, *leaves, kind="diagonal", execution="reference")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * w).sum(), leaves), torch.autograd.grad((ref * w).sum(), leaves)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
