"""Chunked execution of the scheduled plan: runs of kernels on ``[B, n, n, n]`` tensors executed
graph chunk by graph chunk, with buffers cut to one chunk; transposed results computed as
row-major products; transposed twins of elementwise results copied at once.

Values are checked against brute-force homomorphism counts (plain loops over all vertex maps),
never against saved outputs.
"""

import pytest
import torch

import everygraph.contractions.schedule as schedule_module
from everygraph.contractions import Pattern, Workspace, compile_plan, evaluate
from everygraph.contractions.evaluate import _results_key, estimate_memory
from homomorphism_reference import brute_force, random_batch  # tests/contractions/homomorphism_reference.py


def _patterns(directed: bool) -> list[Pattern]:
    # degree-6 patterns whose plan has four chunked runs, two of them sharing a 3-axis tensor
    five_vertex = [
        Pattern.from_string(s)
        for s in (
            "ac,bd,be,cd,ce,de->ab", "ac,ad,be,cd,ce,de->ab", "ac,ad,bc,bd,be,cd->ab", "ac,ad,ae,bd,be,de->ab",
            "ac,ad,bc,bd,cd,de->ab", "ac,ad,bc,be,ce,de->ab", "ac,ad,bc,be,cd,de->ab", "ac,ad,bc,bd,ce,de->ab",
        )
    ]
    strings = [
        "ab,ac,ad,bc,bd,cd->ab",  # K4: a 3-axis intermediate
        "ab,ac,ad,bc,bd,cd->ba",
        "ab,ac,ad,bc,bd,cd->",
        "ab,ac,ad,bc,bd,cd->a",
        "ab,ac,ad,bc,bd,ce->ab",
        "ab,bc,cd->ad",
        "ab,bc,cd->da",
        "ab,bc,ca,cd->ab",
        "ab,bc,ca,cd->ba",  # a transposed twin of an elementwise result
        "ab,bc->ac",
    ]
    if directed:
        return [Pattern.from_string(s, directed=True) for s in strings]
    return [Pattern.from_string(s) for s in strings] + five_vertex


def _check(plan, patterns, out, x, layout):
    for j, p in enumerate(patterns):
        k = plan.indices(p.output).index(j)
        got = out[p.output][..., k] if layout == "channel_last" else out[p.output][:, k]
        for g in range(x.shape[0]):
            torch.testing.assert_close(got[g], brute_force(p, x[g]), msg=lambda m: f"{p}, graph {g}: {m}")


def _chunked_ops(plan, key_symmetric: bool):
    (schedule,) = [s for k, s in plan._schedules.items() if k[2] == key_symmetric]
    return schedule, [op for op in schedule.ops if op[0] == "chunked"]


@pytest.fixture
def one_graph_chunks(monkeypatch):
    # one graph per chunk, so a batch of a few graphs runs every chunk boundary
    monkeypatch.setattr(schedule_module, "CHUNK_BYTES", 1)


@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_chunked_runs_equal_brute_force(one_graph_chunks, layout, symmetric):
    patterns = _patterns(directed=False)
    plan = compile_plan(patterns)
    x = random_batch(3, 5, seed=1, directed=False, density=0.5)
    with torch.no_grad():
        out = evaluate(plan, x, layout=layout, symmetric=symmetric)
    schedule, chunked = _chunked_ops(plan, symmetric)
    assert chunked, "the 3-axis intermediates should run in graph chunks"
    assert all(len(op[2]) == 3 for op in chunked)  # one graph per chunk
    assert any(op[3] for op in chunked), "a buffer used only inside runs holds one chunk"
    _check(plan, patterns, out, x, layout)


def test_chunked_runs_on_directed_inputs(one_graph_chunks):
    patterns = _patterns(directed=True)
    plan = compile_plan(patterns)
    x = random_batch(3, 5, seed=2, directed=True, density=0.5)
    with torch.no_grad():
        out = evaluate(plan, x, symmetric=True)  # never applied to directed patterns
    schedule, chunked = _chunked_ops(plan, True)
    assert chunked and schedule.symmetric_steps == 0
    _check(plan, patterns, out, x, "channel_last")


@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
def test_chunked_out_and_workspace_reuse(one_graph_chunks, layout):
    patterns = _patterns(directed=False)
    plan = compile_plan(patterns)
    ws = Workspace()
    x1, x2 = random_batch(3, 5, seed=1, directed=False, density=0.5), random_batch(3, 5, seed=4, directed=False, density=0.5)
    with torch.no_grad():
        first = evaluate(plan, x1, layout=layout, workspace=ws)
        out = {o: torch.full_like(v, float("nan")).contiguous() for o, v in first.items()}
        evaluate(plan, x1, layout=layout, out=out, workspace=ws)
        entry = next(iter(ws._entries.values()))
        pointers = [b.data_ptr() for b in entry["buffers"]]
        bound = entry["bound"]
        evaluate(plan, x2, layout=layout, out=out, workspace=ws)
    assert [b.data_ptr() for b in entry["buffers"]] == pointers and entry["bound"] is bound
    _check(plan, patterns, out, x2, layout)  # no value of the first batch left over
    # the memory guard counts the buffers as allocated (one chunk for the shrunk ones)
    schedule = plan._schedules[_results_key(out, 3, 5, False, layout)]
    assert ws.nbytes == schedule.workspace_elements * x1.element_size()
    slots = _slots(plan, out, layout)
    inputs = 3 * 5 * 5 * (plan.num_channels + len(plan.sources) + 2) + 3 * 5
    assert estimate_memory(plan, 3, 5, element_size=8, output=False, slots=slots) == (inputs + schedule.workspace_elements) * 8


def _slots(plan, out, layout):
    slots = [None] * plan.num_patterns
    for o in plan.outputs:
        for k, j in enumerate(plan.indices(o)):
            slots[j] = out[o][..., k] if layout == "channel_last" else out[o][:, k]
    return slots


def test_shrunk_buffers_hold_one_chunk(monkeypatch):
    B, n = 6, 5
    sizes = {}
    for chunk_bytes in (1, 1 << 40):  # one graph per chunk; the whole batch in one chunk
        monkeypatch.setattr(schedule_module, "CHUNK_BYTES", chunk_bytes)
        plan = compile_plan([Pattern.from_string("ab,ac,ad,bc,bd,cd->ab")])
        with torch.no_grad():
            evaluate(plan, random_batch(B, n, 5, False, density=0.5))
        (schedule,) = plan._schedules.values()
        (chunked,) = [op for op in schedule.ops if op[0] == "chunked"]
        assert chunked[3]
        sizes[chunk_bytes] = max(schedule.buffer_sizes[b] for b in chunked[3])
    assert sizes[1] == n**3 and sizes[1 << 40] == B * n**3
