"""Stacked chains (everygraph/contractions/stack.py): regrouped chains whose wide products
share one side run as one side computed once and one product over the other sides stacked.
Values are checked against brute-force homomorphism counts (plain loops over all vertex
maps), never against saved outputs."""

import numpy as np
import pytest
import torch

import everygraph.contractions.schedule as schedule_module
from everygraph.contractions import Pattern, Workspace, compile_plan, evaluate
from everygraph.contractions.evaluate import _results_key, estimate_memory
from everygraph.contractions.plan import Step
from everygraph.contractions.stack import StackedChains, stack_shared_sides
from homomorphism_reference import brute_force, random_batch  # tests/contractions/homomorphism_reference.py

# the four degree-6 chains that share the side A[x, c] A[x, d] (with their transposed twins),
# and a chain of another shape
STRINGS = [
    "ac,ad,bc,bd,cd,de->ab",
    "ac,ad,bc,be,ce,de->ab",
    "ac,ad,bc,be,ce,de->ba",
    "ac,ad,bc,be,cd,de->ab",
    "ac,ad,bc,bd,ce,de->ab",
    "ac,ad,bc,bd,cd->ab",
    "ab,ac,ad,bc,bd,cd->ab",
    "ab,bc,cd->ad",
]


def _groups(plan, B: int = 3, n: int = 5) -> list[StackedChains]:
    planner = schedule_module._Planner(plan, B, n, [None] * plan.num_patterns, False)
    return [s for s in planner.steps if isinstance(s, StackedChains)]


def _check(plan, patterns, out, x, layout="channel_last"):
    for j, p in enumerate(patterns):
        k = plan.indices(p.output).index(j)
        got = out[..., k] if layout == "channel_last" or p.output == "invariant" else out[:, k]
        for g in range(x.shape[0]):
            torch.testing.assert_close(got[g].double(), brute_force(p, x[g].double()), msg=lambda m: f"{p}, graph {g}: {m}")


@pytest.mark.parametrize("directed", [False, True])
def test_chains_sharing_a_side_form_one_group(directed):
    plan = compile_plan([Pattern.from_string(s, directed=directed) for s in STRINGS])
    (group,) = _groups(plan)
    # the five chains (the twin is one more result of the same product) of the first five
    # patterns read A[x, c] A[x, d]
    assert len(group.outs) == 4
    assert sorted(letters for _, letters in group.shared) == ["zxp", "zxq"]
    assert sum(from_shared for from_shared, _ in group.sides) == 3


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 40])  # one graph per chunk; one chunk
@pytest.mark.parametrize("directed", [False, True])
def test_stacked_schedule_equals_brute_force(monkeypatch, chunk_bytes, directed, symmetric):
    monkeypatch.setattr(schedule_module, "CHUNK_BYTES", chunk_bytes)
    patterns = [Pattern.from_string(s, directed=directed) for s in STRINGS]
    plan = compile_plan(patterns)
    x = random_batch(3, 5, seed=7, directed=directed)
    with torch.no_grad():
        out = evaluate(plan, x, symmetric=symmetric)
    (schedule,) = plan._schedules.values()
    (group,) = _groups(plan)
    k = len(group.outs)
    chunked = [op for op in schedule.ops if op[0] == "chunked"]
    stacked = [inner for op in chunked for inner in op[1] if inner[0] == "bmm" and inner[1].size[1] == k * 5]
    assert len(stacked) == 1 and {len(op[2]) for op in chunked} == ({3} if chunk_bytes == 1 else {1})
    _check(plan, patterns, out, x)


def test_stacked_schedule_float32_and_without_stacking_equal():
    patterns = [Pattern.from_string(s) for s in STRINGS]
    x = random_batch(4, 6, seed=11, directed=False)
    with torch.no_grad():
        stacked = evaluate(compile_plan(patterns), x.float())
        original = schedule_module.stack_shared_sides
        try:
            schedule_module.stack_shared_sides = lambda steps, *args: steps
            plain = evaluate(compile_plan(patterns), x.float())
        finally:
            schedule_module.stack_shared_sides = original
    torch.testing.assert_close(stacked, plain)
    _check(compile_plan(patterns), patterns, stacked, x)


@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
def test_stacked_out_and_workspace_reuse(monkeypatch, layout):
    monkeypatch.setattr(schedule_module, "CHUNK_BYTES", 1)
    patterns = [Pattern.from_string(s) for s in STRINGS]
    plan = compile_plan(patterns)
    ws = Workspace()
    x1, x2 = random_batch(3, 5, seed=1, directed=False), random_batch(3, 5, seed=4, directed=False)
    with torch.no_grad():
        first = evaluate(plan, x1, layout=layout, workspace=ws)
        out = torch.full_like(first, float("nan")).contiguous()  # channel-last memory: strided slots
        evaluate(plan, x1, layout=layout, out=out, workspace=ws)
        evaluate(plan, x2, layout=layout, out=out, workspace=ws)
    _check(plan, patterns, out, x2, layout)
    # the stacked sides (one chunk of k blocks of 15 pairs (p, q)) and the stacked
    # result are workspace buffers, which the memory guard counts
    schedule = plan._schedules[_results_key({"edge": out}, 3, 5, False, layout)]
    (group,) = _groups(plan)
    k = len(group.outs)
    assert 1 * k * 5 * 15 in schedule.buffer_sizes and 3 * k * 5 * 5 in schedule.buffer_sizes  # 15 = 5 (5 // 2 + 1)
    assert ws.nbytes == schedule.workspace_elements * x1.element_size()
    inputs = 3 * 5 * 5 * (plan.num_channels + len(plan.sources) + 2) + 3 * 5
    slots = [None] * plan.num_patterns
    for j, v in enumerate(out.unbind(-1 if layout == "channel_last" else 1)):
        slots[plan.indices("edge")[j]] = v
    assert estimate_memory(plan, 3, 5, element_size=8, output=False, slots=slots) == (inputs + schedule.workspace_elements) * 8


def test_single_graph_and_single_node():
    patterns = [Pattern.from_string(s) for s in STRINGS]
    plan = compile_plan(patterns)
    for B, n in ((1, 4), (2, 1)):
        x = random_batch(B, n, seed=3, directed=False)
        with torch.no_grad():
            out = evaluate(plan, x)
        _check(plan, patterns, out, x)


def test_autograd_keeps_the_plain_execution():
    patterns = [Pattern.from_string(s) for s in STRINGS[:3]]
    plan = compile_plan(patterns)
    x = random_batch(2, 4, seed=5, directed=False).requires_grad_(True)
    out = evaluate(plan, x)
    out.sum().backward()
    _check(plan, patterns, out.detach(), x.detach())
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ the grouping on steps
def _two_chains(other_reader: bool = False) -> list[Step]:
    """Two wide products over sides built from source 0 (undirected): R1 = (L * A) L^T and
    R2 = (L * W) L^T with W = A * A computed between them."""
    steps = [
        Step(1, "zxc,zxd->zxcd", (0, 0), 3, False),
        Step(2, "zxcd,zcd->zxcd", (1, 0), 3, False),
        Step(3, "zacd,zbcd->zab", (2, 1), 2, False),
        Step(4, "zab,zab->zab", (0, 0), 2, False),
        Step(5, "zxc,zxd->zxcd", (0, 0), 3, False),
        Step(6, "zxcd,zcd->zxcd", (5, 4), 3, False),
        Step(7, "zacd,zbcd->zab", (6, 5), 2, False),
        Step(8, "zab,zab->zab", (3, 7), 2, False),
    ]
    if other_reader:
        steps.append(Step(9, "zxcd->zx", (5,), 1, False))
    return steps


def test_group_runs_after_its_inputs_and_before_its_readers():
    new = stack_shared_sides(_two_chains(), {8}, {0})
    kinds = [s.outs if isinstance(s, StackedChains) else s.out for s in new]
    # the group reads W (step 4), so runs after it; step 8 reads both results
    assert kinds == [4, (3, 7), 8]
    (group,) = [s for s in new if isinstance(s, StackedChains)]
    assert group.sides == ((True, ((0, "zpq"),)), (True, ((4, "zpq"),)))


def test_group_leaves_out_a_side_others_read():
    steps = _two_chains(other_reader=True)
    assert stack_shared_sides(steps, {8, 9}, {0}) == steps  # one member left: no group
    # a product the output assembly reads is not recomputed either
    assert stack_shared_sides(_two_chains(), {1, 8}, {0}) == [s for s in _two_chains()]


def test_directed_sources_are_not_transposed():
    steps = _two_chains()
    steps[4] = Step(5, "zcx,zxd->zxcd", (0, 0), 3, False)  # A[c, x] A[x, d]: another side when directed
    assert stack_shared_sides(steps, {8}, set()) == steps
    assert any(isinstance(s, StackedChains) for s in stack_shared_sides(steps, {8}, {0}))


# ------------------------------------------------------------------ halved inner size
# a side symmetric in its summed indices whatever the input (A[x, p] A[x, q]), and, on
# directed input, one that is not (A[q, p] A[x, p] A[x, q])
SIDES = {"symmetric": STRINGS, "not symmetric": ["ac,ad,bc,bd,cd->ab", "ab,ac,ad,bc,bd,cd->ab", "ac,bd,be,cd,ce,de->ab", "ac,ad,bc,be,ce,de->ab"]}


@pytest.mark.parametrize("n", [5, 6])  # odd; even: the pairs (p, p + n / 2) appear both ways round
@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("side", list(SIDES))
def test_symmetric_shared_side_halves_the_product(side, directed, n):
    """A shared side symmetric in p, q: the stacked product runs over the n (n // 2 + 1)
    pairs (p, p + d mod n), d <= n // 2, read through strided views (no gather in the
    graph-chunked run); otherwise over all n^2 pairs. Values against brute force."""
    patterns = [Pattern.from_string(s, directed=directed) for s in SIDES[side]]
    plan = compile_plan(patterns)
    x = random_batch(2, n, seed=2, directed=directed)
    with torch.no_grad():
        out = evaluate(plan, x)
    (schedule,) = plan._schedules.values()
    (group,) = _groups(plan, 2, n)
    halved = side == "symmetric" or not directed
    in_runs = [op for run in schedule.ops if run[0] == "chunked" for op in run[1]]
    inner = [op for op in in_runs if op[0] == "bmm" and op[1].size[1] == len(group.outs) * n]
    assert group.symmetric == halved
    assert [op[1].size[2] for op in inner] == [n * (n // 2 + 1) if halved else n * n]
    assert not any(op[0] == "take" for op in in_runs)
    _check(plan, patterns, out, x)


def test_pair_weights_of_several_and_transposed_factors(monkeypatch):
    """A side L * W whose W is given as several factors, or as a transposed view, is gathered
    from W computed first (here A * A^T for the double edge's A * A: equal on undirected input)."""
    patterns = [Pattern.from_string(s) for s in ("ac,ad,bc,bd,cd,cd->ab", "ac,ad,bc,bd,cd->ab")]
    original = schedule_module.stack_shared_sides

    def rewritten(steps, protected, symmetric_sources):
        result = []
        for s in original(steps, protected, symmetric_sources):
            if isinstance(s, StackedChains):
                source = s.shared[0][0]
                sides = tuple(
                    (True, ((source, "zpq"), (source, "zqp"))) if factors[0][0] != source else (True, ((source, "zqp"),))
                    for _, factors in s.sides
                )
                s = StackedChains(s.outs, s.out_letters, s.shared, sides, s.inputs, s.symmetric)
            result.append(s)
        return result

    monkeypatch.setattr(schedule_module, "stack_shared_sides", rewritten)
    plan = compile_plan(patterns)
    x = random_batch(3, 5, seed=9, directed=False)
    with torch.no_grad():
        out = evaluate(plan, x)
    (group,) = _groups(plan)
    assert group.symmetric and {len(f) for _, f in group.sides} == {1, 2}
    _check(plan, patterns, out, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_take_kernel_equals_indexing(dtype):
    """numpy's take on CPU tensors of numpy dtypes, torch.index_select otherwise (bfloat16
    here, every device numpy cannot reach)."""
    src = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2, 3, 16).to(dtype)[:, :, :]
    indices = (3, 0, 15, 7, 7)
    dst = torch.empty(2, 3, len(indices), dtype=dtype)
    kernel = schedule_module.take_kernel(dst, src, indices)
    assert (getattr(kernel, "func", None) is np.take) == (dtype != torch.bfloat16)
    kernel()
    torch.testing.assert_close(dst, src[..., list(indices)])


def test_stacked_groups_on_meta():
    """The device-generic kernels (index_select, no numpy) plan and run on meta tensors."""
    plan = compile_plan([Pattern.from_string(s) for s in STRINGS])
    x = random_batch(2, 5, seed=1, directed=False).to("meta")
    with torch.no_grad():
        out = evaluate(plan, x, mask=torch.ones(2, 5, dtype=torch.bool, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 5, 5, len(STRINGS))


def test_a_member_computed_from_another_members_result_is_left_out():
    """R2's weight W = R1 * A reads R1: R1 and R2 cannot be one product; a third chain with
    the same side still groups with R1."""
    steps = _two_chains()[:4] + [
        Step(4, "zab,zab->zab", (3, 0), 2, False),  # W from R1
        Step(5, "zxc,zxd->zxcd", (0, 0), 3, False),
        Step(6, "zxcd,zcd->zxcd", (5, 4), 3, False),
        Step(7, "zacd,zbcd->zab", (6, 5), 2, False),
        Step(10, "zxc,zxd->zxcd", (0, 0), 3, False),
        Step(11, "zxcd,zcd->zxcd", (10, 0), 3, False),
        Step(12, "zacd,zbcd->zab", (11, 10), 2, False),
        Step(8, "zab,zab->zab", (7, 12), 2, False),
    ]
    new = stack_shared_sides(steps, {8}, {0})
    (group,) = [s for s in new if isinstance(s, StackedChains)]
    assert 7 not in group.outs and set(group.outs) == {3, 12}
    order = [s.outs if isinstance(s, StackedChains) else s.out for s in new]
    assert order.index(group.outs) < order.index(4) < order.index(7) < order.index(8)


def test_groups_reading_each_other_are_not_stacked():
    """Two groups, each with a member computed from the other's result: no order exists,
    the steps are returned as they are."""
    def chain(first: int, weight: int) -> list[Step]:
        return [
            Step(first, "zxc,zxd->zxcd", (0, 0), 3, False),
            Step(first + 1, "zxcd,zcd->zxcd", (first, weight), 3, False),
            Step(first + 2, "zacd,zbcd->zab", (first + 1, first), 2, False),
        ]

    def other_side_chain(first: int, weight: int) -> list[Step]:  # side A[c, x] A[x, d] on directed input
        return [
            Step(first, "zcx,zxd->zxcd", (0, 0), 3, False),
            Step(first + 1, "zxcd,zcd->zxcd", (first, weight), 3, False),
            Step(first + 2, "zacd,zbcd->zab", (first + 1, first), 2, False),
        ]

    steps = [
        *chain(10, 0), *other_side_chain(20, 0),
        Step(30, "zab,zab->zab", (22, 0), 2, False),  # from group B's result
        Step(31, "zab,zab->zab", (12, 0), 2, False),  # from group A's result
        *chain(40, 30), *other_side_chain(50, 31),
        Step(60, "zab,zab->zab", (42, 52), 2, False),
    ]
    assert stack_shared_sides(steps, {60}, set()) == steps
