"""The scheduled execution: out=, layouts, workspace reuse, device selection, memory guard.

Every value is checked against brute-force homomorphism counts or the einsum-per-step
execution (what autograd runs), never against saved outputs.
"""


import networkx as nx
import pytest
import torch

from everygraph.contractions import (
    ContractionMemoryError,
    Pattern,
    Workspace,
    basis,
    compile_plan,
    evaluate,
    evaluate_reference,
)
from everygraph.contractions.evaluate import estimate_memory
from homomorphism_reference import brute_force  # tests/contractions/homomorphism_reference.py


def graph_adj(g: nx.Graph) -> torch.Tensor:
    return torch.tensor(nx.to_numpy_array(g, nodelist=sorted(g.nodes), weight=None), dtype=torch.float64)


def _mixed_patterns():
    # all outputs, connected and disconnected, transposed pairs (H, a, b) / (H, b, a), diagonals
    return basis(3, "invariant") + basis(3, "node") + basis(3, "edge")[::2] + [
        Pattern.from_string("ab,bc,cd->ad"),
        Pattern.from_string("ab,bc,cd->da"),
        Pattern.from_string("ab,bc,ca,cd->ab"),
        Pattern.from_string("ab,bc,ca,cd->ba"),
        Pattern.from_string("ab,ac,ad,bc,bd,cd->ab"),  # K4: a 3-axis intermediate
        Pattern.from_string("ab,ac,ad,bc,bd,ce->ab"),
    ]


def _random_batch(B, n, p=0.5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    upper = (torch.rand(B, n, n, generator=gen) < p).to(dtype).triu(1)
    return upper + upper.transpose(1, 2)


def _reference(patterns, x, mask=None):
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)  # forces the einsum-per-step execution
        out = evaluate(compile_plan(patterns), xg, mask)
    return {o: v.detach() for o, v in out.items()} if isinstance(out, dict) else out.detach()


def test_scheduled_equals_brute_force_homomorphism_counts():
    patterns = _mixed_patterns()
    plan = compile_plan(patterns)
    graphs = [nx.gnp_random_graph(5, 0.6, seed=4), nx.complete_graph(4)]
    for g in graphs:
        adj = graph_adj(g)
        with torch.no_grad():
            out = evaluate(plan, adj[None])
        for j, p in enumerate(patterns):
            got = out[p.output][..., plan.indices(p.output).index(j)][0]
            base = Pattern(p.edges, p.special[:1], p.num_vertices, p.directed) if p.is_diagonal else p
            want = brute_force(base, adj)
            if p.is_diagonal:
                want = torch.diag(want)
            torch.testing.assert_close(got, want, msg=lambda m: f"{p}: {m}")


@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
def test_out_and_layouts_equal_the_einsum_execution(layout):
    patterns = _mixed_patterns()
    plan = compile_plan(patterns)
    x = _random_batch(3, 6)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]], dtype=torch.bool)
    ref = _reference(patterns, x, mask)
    got = evaluate(plan, x, mask, layout=layout)
    shapes = {"invariant": (3, -1), "node": (3, 6, -1), "edge": (3, 6, 6, -1)}
    for o in plan.outputs:
        want = ref[o] if layout == "channel_last" else ref[o].movedim(-1, 1)
        assert got[o].shape == want.shape
        torch.testing.assert_close(got[o], want)
        assert tuple(ref[o].shape[:-1]) == tuple(s for s in shapes[o][:-1])
    # out= in a contiguous tensor of each layout (channel-last memory: strided slots)
    out = {o: torch.full(got[o].shape, float("nan"), dtype=x.dtype).contiguous() for o in plan.outputs}
    returned = evaluate(plan, x, mask, layout=layout, out=out)
    for o in plan.outputs:
        assert returned[o] is out[o]
        torch.testing.assert_close(out[o], got[o])


def test_workspace_reuse_allocates_nothing():
    patterns = _mixed_patterns()
    plan = compile_plan(patterns)
    ws = Workspace()
    x1, x2 = _random_batch(4, 7, seed=1), _random_batch(4, 7, seed=2, p=0.3)
    out = {o: torch.empty(v.shape, dtype=x1.dtype) for o, v in evaluate(plan, x1).items()}
    evaluate(plan, x1, out=out, workspace=ws)
    entry = next(iter(ws._entries.values()))
    pointers = [b.data_ptr() for b in entry["buffers"] + entry["sources"]]
    bound = entry["bound"]
    nbytes = ws.nbytes
    out_ptrs = {o: t.data_ptr() for o, t in out.items()}
    evaluate(plan, x2, out=out, workspace=ws)
    entry2 = next(iter(ws._entries.values()))
    assert [b.data_ptr() for b in entry2["buffers"] + entry2["sources"]] == pointers
    assert entry2["bound"] is bound  # the bound kernels are reused, not rebuilt
    assert ws.nbytes == nbytes > 0
    assert {o: t.data_ptr() for o, t in out.items()} == out_ptrs
    # no stale values from the first batch
    ref = _reference(patterns, x2)
    for o in plan.outputs:
        torch.testing.assert_close(out[o], ref[o])
    # another shape replaces the buffers
    evaluate(plan, _random_batch(2, 5), workspace=ws)
    assert len(ws._entries) == 1
    ws.clear()
    assert ws.nbytes == 0


def test_workspace_and_output_on_the_input_device_and_dtype():
    # the meta device runs the same device-generic code path a GPU takes (no numpy, no CPU
    # assumption): buffers must follow the input's device and dtype
    plan = compile_plan(_mixed_patterns())
    ws = Workspace()
    x = torch.zeros(2, 5, 5, device="meta", dtype=torch.float64)
    out = evaluate(plan, x, workspace=ws, memory_limit=float("inf"))
    entry = next(iter(ws._entries.values()))
    for t in entry["buffers"] + entry["sources"] + list(out.values()):
        assert t.device.type == "meta" and t.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    patterns = _mixed_patterns()
    plan = compile_plan(patterns)
    x = _random_batch(3, 6)
    want = evaluate(plan, x)
    got = evaluate(plan, x.cuda())
    for o in plan.outputs:
        assert got[o].device.type == "cuda"
        torch.testing.assert_close(got[o].cpu(), want[o])


def test_memory_guard_counts_the_workspace():
    plan = compile_plan(basis(6, "edge")[:40])
    B, n = 4, 12
    full = estimate_memory(plan, B, n)
    output_only = B * n * n * plan.num_patterns * 4
    assert full > output_only
    x = torch.zeros(B, n, n)
    with pytest.raises(ContractionMemoryError, match="GiB"):
        evaluate(plan, x, memory_limit=output_only + B * n * n * 4 * 4)
    evaluate(plan, x, memory_limit=full + 1)


def test_bad_out_and_layout():
    plan = compile_plan(["ab,bc->ac", "ab->"])
    x = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="layout"):
        evaluate(plan, x, layout="nchw")
    with pytest.raises(ValueError, match="pass out as a dict"):
        evaluate(plan, x, out=torch.empty(2, 4, 4, 1))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 4, 1\)"):
        evaluate(plan, x, out={"edge": torch.empty(2, 4, 4, 2), "invariant": torch.empty(2, 1)})
    with pytest.raises(ValueError, match="float64"):
        evaluate(compile_plan(["ab->"]), x.double(), out=torch.empty(2, 1))
    with pytest.raises(ValueError, match="autograd"):
        evaluate(compile_plan(["ab->"]), x.requires_grad_(True), out=torch.empty(2, 1))
    with pytest.raises(TypeError, match="Workspace"):
        evaluate(plan, x.detach(), workspace={})


def test_degree_six_connected_sample_equals_reference():
    # a slice of the benchmark's basis, including the 3-axis (n^4) contractions
    patterns = [p for o in ("invariant", "node", "edge") for p in basis(6, o, connected_only=True)[::23]]
    patterns += [p for p in basis(6, "edge", connected_only=True) if p.num_vertices == 4][:6]
    plan = compile_plan(patterns)
    x = _random_batch(2, 6, seed=3)
    got = evaluate(plan, x)
    ref = evaluate_reference(patterns, x)
    for j, p in enumerate(patterns):
        torch.testing.assert_close(got[p.output][..., plan.indices(p.output).index(j)], ref[j], msg=lambda m: f"{p}: {m}")


def test_symmetric_products_by_halves_equal_the_plain_schedule():
    patterns = _mixed_patterns() + basis(4, "edge")[::5] + basis(4, "invariant")
    plan = compile_plan(patterns)
    # A @ A, (A @ A) * A, the 2-paths and the square are symmetric; a 3-path a-b-c-d is not
    tri_edge = compile_plan(["ab,bc->ac"])
    assert tri_edge.symmetric_tensors
    x = torch.rand(3, 10, 10, dtype=torch.float64)
    x = x + x.transpose(1, 2)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 7:] = False
    plain = evaluate(plan, x, mask, symmetric=False)
    halves = evaluate(plan, x, mask, symmetric=True)
    (schedule,) = [s for k, s in plan._schedules.items() if k[2]]
    assert schedule.symmetric_steps > 0
    for o in plan.outputs:
        torch.testing.assert_close(halves[o], plain[o])
    ref = _reference(patterns, x, mask)
    for o in plan.outputs:
        torch.testing.assert_close(halves[o], ref[o])


def test_symmetric_shortcut_not_used_on_directed_patterns():
    patterns = basis(3, "edge", "general")[::4] + basis(2, "node", "general")
    plan = compile_plan(patterns)
    assert not plan.symmetric_tensors
    x = torch.randn(2, 6, 6, dtype=torch.float64)  # not symmetric
    halves = evaluate(plan, x, symmetric=True)
    (schedule,) = [s for k, s in plan._schedules.items() if k[2]]
    assert schedule.symmetric_steps == 0
    ref = _reference(patterns, x)
    for o in plan.outputs:
        torch.testing.assert_close(halves[o], ref[o])
    # undirected: the 3-path's ends swap (A^3 is symmetric); a triangle's vertex and a pendant
    # vertex do not
    path = compile_plan(["ab,bc,cd->ad"])
    assert [s.out for s in path.steps if s.num_axes == 2 and not s.is_view][-1] in path.symmetric_tensors
    pendant = compile_plan(["ab,bc,ca,cd->ad"])
    assert pendant.assemblies[0].rooted[0][0] not in pendant.symmetric_tensors
