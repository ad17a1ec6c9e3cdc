"""LCMAggregation: monoid semantics, batch independence, PyG integration, vs PyG's LCM."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import MessagePassing, SAGEConv
from torch_geometric.nn.aggr import LCMAggregation as PyGLCMAggregation

from everygraph.graphlib import scatter
from everygraph.nn import CommutativeMonoid, LCMAggregation, associativity_loss
from everygraph.nn.aggr import GRUOperator, check_associative, check_commutative


def explicit_tree(items, op):
    """The documented pairing, independently: (0,1),(2,3),... in order, odd last carried."""
    while len(items) > 1:
        items = [op(items[k], items[k + 1]) if k + 1 < len(items) else items[k] for k in range(0, len(items), 2)]
    return items[0]


def reference_lcm(aggr: LCMAggregation, x, index, dim_size):
    """Per-node loop: project, then fold that node's elements in order of appearance."""
    rows = []
    for v in range(dim_size):
        members = [x[j] for j in range(x.size(0)) if int(index[j]) == v]
        if not members:
            rows.append(aggr.identity.detach().clone())
            continue
        h = [aggr.lin(m[None]).relu() if aggr.lin is not None else m[None] for m in members]
        rows.append(explicit_tree(h, aggr.op)[0])
    return torch.stack(rows)


def degree_graph(degrees, channels, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    index = torch.repeat_interleave(torch.arange(len(degrees)), torch.tensor(degrees))
    index = index[torch.randperm(index.numel(), generator=g)]
    return torch.randn(index.numel(), channels, generator=g, dtype=dtype), index


# ------------------------------------------------------------------ semantics


@pytest.mark.parametrize("op, reduce", [(torch.add, "sum"), (torch.maximum, "max")])
def test_associative_operator_equals_scatter(op, reduce):
    x, index = degree_graph([0, 1, 2, 3, 7, 16, 33], 5, seed=0, dtype=torch.float64)
    aggr = LCMAggregation(5, 5, project=False, operator=CommutativeMonoid(op, symmetrise=False), identity="zeros")
    torch.testing.assert_close(aggr(x, index, dim_size=9), scatter(x, index, dim_size=9, reduce=reduce))
    # symmetrising an already commutative op changes nothing
    sym = LCMAggregation(5, 5, project=False, operator=op, identity="zeros")
    torch.testing.assert_close(sym(x, index, dim_size=9), scatter(x, index, dim_size=9, reduce=reduce))


def test_matches_per_node_reference_with_gru():
    torch.manual_seed(1)
    aggr = LCMAggregation(4, 6).double()
    x, index = degree_graph([3, 0, 1, 5, 2, 9], 4, seed=1, dtype=torch.float64)
    out = aggr(x, index, dim_size=7)
    torch.testing.assert_close(out, reference_lcm(aggr, x, index, 7), rtol=1e-10, atol=1e-10)


def test_learned_operator_exactly_commutative():
    torch.manual_seed(2)
    aggr = LCMAggregation(8, 8)
    a, b = torch.randn(2, 300, 8).unbind(0)
    assert torch.equal(aggr.op(a, b), aggr.op(b, a))
    assert check_commutative(aggr.op, a, b) == 0.0
    # ... but not associative: the diagnostic measures a real, positive error
    c = torch.randn(300, 8)
    assert check_associative(aggr.op, a, b, c) > 1e-4
    assert aggr.op.check_associative(a, b, c) == check_associative(aggr.op, a, b, c)
    # an asymmetric g really is asymmetric before symmetrisation
    g = GRUOperator(8)
    assert check_commutative(g, a, b) > 1e-3
    assert CommutativeMonoid(g).check_commutative(a, b) == 0.0


def test_degree_zero_gets_identity_and_degree_one_passes_through():
    torch.manual_seed(3)
    aggr = LCMAggregation(3, 4, identity="learned")
    with torch.no_grad():
        aggr.identity.copy_(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    x = torch.randn(2, 3)
    index = torch.tensor([2, 0])
    out = aggr(x, index, dim_size=4)
    projected = aggr.lin(x).relu()
    assert torch.equal(out[2], projected[0]) and torch.equal(out[0], projected[1])
    assert torch.equal(out[1], aggr.identity.detach()) and torch.equal(out[3], aggr.identity.detach())
    zeros = LCMAggregation(3, 4, identity="zeros")
    assert (zeros(x, index, dim_size=4)[[1, 3]] == 0).all()
    assert "identity" not in dict(zeros.named_parameters())


def test_learned_identity_receives_gradient():
    aggr = LCMAggregation(3, 4)
    out = aggr(torch.randn(3, 3), torch.tensor([0, 0, 2]), dim_size=4)
    out.sum().backward()
    assert torch.equal(aggr.identity.grad, torch.full((4,), 2.0))  # nodes 1 and 3 are empty


def test_empty_input():
    aggr = LCMAggregation(3, 4)
    x = torch.zeros(0, 3, requires_grad=True)
    out = aggr(x, torch.zeros(0, dtype=torch.long), dim_size=5)
    assert out.shape == (5, 4) and torch.equal(out, aggr.identity.detach().expand(5, 4))
    out.sum().backward()
    assert aggr(x, torch.zeros(0, dtype=torch.long)).shape == (0, 4)
    assert aggr.associativity_loss(x, torch.zeros(0, dtype=torch.long)).item() == 0.0


def test_giant_hub_and_unsorted_index():
    torch.manual_seed(4)
    aggr = LCMAggregation(4, 4)
    x, index = degree_graph([1000, 2, 0, 5, 1], 4, seed=4)
    assert not bool((index[1:] >= index[:-1]).all())
    out = aggr(x, index)
    hub = aggr(x[index == 0], torch.zeros(1000, dtype=torch.long))
    torch.testing.assert_close(out[0], hub[0], rtol=0, atol=1e-6)
    small = index == 3
    torch.testing.assert_close(out[3], aggr(x[small], torch.zeros(5, dtype=torch.long))[0], rtol=0, atol=1e-6)
    assert torch.isfinite(out).all()


def test_batch_independence_when_big_graphs_join():
    torch.manual_seed(5)
    aggr = LCMAggregation(6, 6).eval()
    x, index = degree_graph([0, 1, 2, 3, 4], 6, seed=5)
    alone = aggr(x, index, dim_size=5)
    big_x, big_index = degree_graph([300, 0, 129, 64], 6, seed=6)
    batched = aggr(torch.cat([big_x, x]), torch.cat([big_index, index + 4]), dim_size=9)
    torch.testing.assert_close(batched[4:], alone, rtol=0, atol=1e-6)


_FIXED_STATE = LCMAggregation(3, 3).state_dict()  # one fixed operator for all examples


@settings(max_examples=10, deadline=None)
@given(small=st.lists(st.integers(0, 6), min_size=1, max_size=5), big=st.lists(st.integers(0, 80), max_size=3))
def test_hypothesis_batch_independence(small, big):
    aggr = LCMAggregation(3, 3)
    aggr.load_state_dict(_FIXED_STATE)
    x, index = degree_graph(small, 3, seed=len(small))
    alone = aggr(x, index, dim_size=len(small))
    bx, bi = degree_graph(big or [0], 3, seed=7)
    together = aggr(torch.cat([x, bx]), torch.cat([index, bi + len(small)]), dim_size=len(small) + len(big or [0]))
    torch.testing.assert_close(together[: len(small)], alone, rtol=0, atol=1e-6)


def test_pairing_follows_order_of_appearance():
    torch.manual_seed(6)
    aggr = LCMAggregation(3, 3).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    index = torch.zeros(5, dtype=torch.long)
    h = aggr.lin(x).relu()
    op = aggr.op
    expected = op(op(op(h[0:1], h[1:2]), op(h[2:3], h[3:4])), h[4:5])[0]
    torch.testing.assert_close(aggr(x, index)[0], expected, rtol=1e-12, atol=1e-12)
    reordered = aggr(x.flip(0), index)[0]
    assert not torch.allclose(reordered, expected, atol=1e-9)  # order matters: op is not associative


def test_shuffle_only_in_training():
    torch.manual_seed(7)
    aggr = LCMAggregation(4, 4, shuffle=True)
    x, index = degree_graph([40, 20], 4, seed=8)
    aggr.eval()
    assert torch.equal(aggr(x, index), aggr(x, index))
    aggr.train()
    outs = [aggr(x, index) for _ in range(3)]
    assert not torch.equal(outs[0], outs[1]) or not torch.equal(outs[1], outs[2])
    # shuffled results are still tree reductions of the same elements: close to each other
    # only up to the operator's non-associativity, and all finite
    assert all(torch.isfinite(o).all() for o in outs)


def test_shuffle_with_add_equals_scatter_sum():
    """An associative, commutative operator makes every within-segment order give the segment
    sum; an element moved into another segment would change that segment's sum."""
    x, index = degree_graph([0, 1, 2, 3, 7, 16, 33], 5, seed=3, dtype=torch.float64)
    add = CommutativeMonoid(torch.add, symmetrise=False)
    aggr = LCMAggregation(5, 5, project=False, operator=add, identity="zeros", shuffle=True).train()
    want = scatter(x, index, dim_size=9, reduce="sum")
    torch.manual_seed(11)
    for _ in range(5):
        torch.testing.assert_close(aggr(x, index, dim_size=9), want, rtol=1e-12, atol=1e-12)


def test_shuffle_with_gru_is_a_tree_reduction_of_a_permutation_of_the_segment():
    """Every shuffled output row equals the documented tree reduction of some permutation of
    that node's own elements (all permutations enumerated: degrees <= 4), and the shuffle
    really does change the order of some segment."""
    import itertools

    torch.manual_seed(12)
    aggr = LCMAggregation(3, 4, shuffle=True).double()
    degrees = [0, 1, 2, 3, 4, 4, 3, 2]
    x, index = degree_graph(degrees, 3, seed=13, dtype=torch.float64)
    with torch.no_grad():
        h = aggr.lin(x).relu()
        candidates = []
        for v, d in enumerate(degrees):
            members = [h[j : j + 1] for j in range(x.size(0)) if int(index[j]) == v]
            if not members:
                candidates.append(aggr.identity[None].clone())
                continue
            candidates.append(torch.cat([explicit_tree(list(p), aggr.op) for p in itertools.permutations(members)]))
        given_order = aggr.eval()(x, index)
        aggr.train()
        changed = False
        for _ in range(6):
            out = aggr(x, index)
            for v in range(len(degrees)):
                distance = (candidates[v] - out[v]).abs().amax(dim=-1).min()
                assert distance < 1e-12, f"node {v}: not a reduction of its own elements"
            changed |= not torch.allclose(out, given_order, atol=1e-9)
        assert changed


def test_gradcheck_float64():
    torch.manual_seed(8)
    aggr = LCMAggregation(3, 2).double()
    x, index = degree_graph([3, 0, 1, 4], 3, seed=9, dtype=torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: aggr(x, index, dim_size=5), (x,))
    # parameters too (identity and a GRU weight), through a functional call
    names = ("identity", "op.g.cell.weight_hh")
    params = tuple(dict(aggr.named_parameters())[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(
        lambda *p: torch.func.functional_call(aggr, dict(zip(names, p)), (x.detach(), index, None, 5)), params
    )


def test_ptr_and_leading_dims():
    torch.manual_seed(9)
    aggr = LCMAggregation(3, 4)
    x = torch.randn(7, 3)
    ptr = torch.tensor([0, 2, 2, 7])
    index = torch.tensor([0, 0, 2, 2, 2, 2, 2])
    torch.testing.assert_close(aggr(x, ptr=ptr), aggr(x, index, dim_size=3))
    xb = torch.randn(2, 7, 3)
    out = aggr(xb, index, dim_size=3, dim=1)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out[1], aggr(xb[1], index, dim_size=3), rtol=0, atol=1e-6)
    # the loss on [2, 7, 3] is the loss over both leading entries' segments, as if stacked
    loss = aggr.associativity_loss(xb, index, dim_size=3, dim=1, generator=torch.Generator().manual_seed(0))
    stacked = aggr.associativity_loss(
        torch.cat([xb[0], xb[1]]), torch.cat([index, index + 3]), dim_size=6, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(loss, stacked)


def test_associativity_loss():
    torch.manual_seed(10)
    aggr = LCMAggregation(4, 4)
    x, index = degree_graph([5, 9, 1, 0, 3], 4, seed=10)
    g = torch.Generator().manual_seed(0)
    loss = aggr.associativity_loss(x, index, num_triples=200, generator=g)
    assert loss.item() > 0 and loss.requires_grad
    loss.backward()
    assert aggr.op.g.cell.weight_ih.grad.abs().sum() > 0
    # exactly associative operators have zero loss
    assert associativity_loss(torch.add, x.double(), index).item() < 1e-20
    assert associativity_loss(torch.maximum, x, index).item() == 0.0
    # independent check of the sampled triples: all three from the same segment
    from everygraph.nn.aggr.monoid import sample_segment_triples

    i, j, k = sample_segment_triples(index, 500, generator=g)
    assert torch.equal(index[i], index[j]) and torch.equal(index[i], index[k])
    # and it is the mean squared associativity gap on those triples
    h = aggr.lin(x).relu()
    op = aggr.op
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    i, j, k = sample_segment_triples(index, 50, generator=g1)
    direct = (op(op(h[i], h[j]), h[k]) - op(h[i], op(h[j], h[k]))).pow(2).mean()
    torch.testing.assert_close(aggr.associativity_loss(x, index, num_triples=50, generator=g2), direct)


def test_training_with_associativity_loss_reduces_it():
    torch.manual_seed(11)
    aggr = LCMAggregation(4, 4)
    x, index = degree_graph([6, 6, 6], 4, seed=11)
    opt = torch.optim.Adam(aggr.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    first = aggr.associativity_loss(x, index, num_triples=256, generator=torch.Generator().manual_seed(2)).item()
    for _ in range(25):
        opt.zero_grad()
        aggr.associativity_loss(x, index, num_triples=128, generator=g).backward()
        opt.step()
    last = aggr.associativity_loss(x, index, num_triples=256, generator=torch.Generator().manual_seed(2)).item()
    assert last < 0.5 * first


def test_errors_and_repr():
    with pytest.raises(ValueError, match="project=True"):
        LCMAggregation(3, 4, project=False)
    with pytest.raises(ValueError, match="'learned', 'zeros'"):
        LCMAggregation(3, 4, identity="ones")
    with pytest.raises(ValueError, match="unknown operator"):
        LCMAggregation(3, 4, operator="lstm")
    aggr = LCMAggregation(3, 4)
    with pytest.raises(ValueError, match="in_channels=3"):
        aggr(torch.randn(5, 2), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="dim_size=2"):
        aggr(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 0]), dim_size=2)
    with pytest.raises(ValueError, match="negative"):
        aggr(torch.randn(2, 3), torch.tensor([0, -1]), dim_size=2)
    with pytest.raises(ValueError, match=r"\[5\].*\[4\]"):
        aggr(torch.randn(5, 3), torch.tensor([0, 1, 2, 0]), dim_size=3)
    assert repr(aggr) == "LCMAggregation(3, 4, project=True, operator=gru, identity='learned', shuffle=False)"


def test_reset_parameters():
    aggr = LCMAggregation(3, 4)
    with torch.no_grad():
        aggr.identity.fill_(5.0)
        aggr.lin.weight.fill_(1.0)
    aggr.reset_parameters()
    assert (aggr.identity == 0).all() and not (aggr.lin.weight == 1.0).all()


# ------------------------------------------------------------- PyG integration


class GINLike(MessagePassing):
    def __init__(self, channels):
        super().__init__(aggr=LCMAggregation(channels, channels))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(channels, channels), torch.nn.ReLU())
        self.eps = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, edge_index):
        return self.mlp((1 + self.eps) * x + self.propagate(edge_index, x=x))


def random_graph(num_nodes, num_edges, channels, seed):
    g = torch.Generator().manual_seed(seed)
    return Data(x=torch.randn(num_nodes, channels, generator=g), edge_index=torch.randint(0, num_nodes, (2, num_edges), generator=g))


def star(num_leaves, channels, seed):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.stack([torch.arange(1, num_leaves + 1), torch.zeros(num_leaves, dtype=torch.long)])
    return Data(x=torch.randn(num_leaves + 1, channels, generator=g), edge_index=edge_index)


@pytest.mark.parametrize("make_conv", [lambda c: SAGEConv(c, 5, aggr=LCMAggregation(c, c)), lambda c: GINLike(c)])
def test_inside_message_passing_through_dataloader(make_conv):
    torch.manual_seed(12)
    conv = make_conv(4).eval()
    graphs = [random_graph(6, 10, 4, seed=0), star(200, 4, seed=1), random_graph(9, 30, 4, seed=2)]
    alone = [conv(g.x, g.edge_index) for g in graphs]
    batch = next(iter(DataLoader(graphs, batch_size=3)))
    out = conv(batch.x, batch.edge_index)
    for i, expected in enumerate(alone):
        torch.testing.assert_close(out[batch.ptr[i] : batch.ptr[i + 1]], expected, rtol=0, atol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None for p in conv.parameters() if p.requires_grad)


# ---------------------------------------------------------------- vs PyG's LCM


@pytest.mark.comparison
def test_pyg_lcm_fails_batch_independence_ours_passes():
    """The anchor's fault (see shared/papers/lcm.md): padding to the batch max degree with
    zeros, which are not the operator's identity, changes a node's output."""
    torch.manual_seed(13)
    theirs = PyGLCMAggregation(4, 4)
    ours = LCMAggregation(4, 4)
    ours.lin.load_state_dict(theirs.lin.state_dict())
    ours.op.g.cell.load_state_dict(theirs.gru_cell.state_dict())
    small_x, small_index = degree_graph([2, 1, 2], 4, seed=14)
    small_index, order = small_index.sort(stable=True)  # PyG needs a sorted index
    small_x = small_x[order]
    big_x, big_index = degree_graph([4, 3], 4, seed=15)
    big_index, order = big_index.sort(stable=True)
    big_x = big_x[order]
    x = torch.cat([small_x, big_x])
    index = torch.cat([small_index, big_index + 3])
    with torch.no_grad():
        theirs_alone, theirs_batched = theirs(small_x, small_index, dim_size=3), theirs(x, index, dim_size=5)[:3]
        ours_alone, ours_batched = ours(small_x, small_index, dim_size=3), ours(x, index, dim_size=5)[:3]
    assert (theirs_alone - theirs_batched).abs().max() > 1e-3  # PyG: the node changed
    torch.testing.assert_close(ours_batched, ours_alone, rtol=0, atol=1e-6)  # ours: unchanged
    # with no padding involved (every node of degree 2, batch max 2) the two agree
    x2, i2 = degree_graph([2, 2, 2], 4, seed=16)
    i2, order = i2.sort(stable=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x2[order], i2), theirs(x2[order], i2), rtol=1e-5, atol=1e-6)
    # PyG gives a degree-0 node a non-zero output; ours gives the identity (zeros at init)
    with torch.no_grad():
        assert theirs(small_x, small_index + 1, dim_size=4)[0].abs().max() > 0
        assert (ours(small_x, small_index + 1, dim_size=4)[0] == 0).all()
