"""GMN against a loop written from the paper's pipeline (per node, per token, a sequential
bidirectional selective scan in Python), in float64, forward and backward; determinism, batch
independence, permutation behaviour, packing and a small training run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from everygraph.graphlib import WalkTokens, random_walk_encoding, random_walk_tokens
from everygraph.nn import GMN

F64 = torch.float64


def random_graph(n: int, p: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    upper = torch.triu(torch.rand(n, n, generator=g) < p, diagonal=1)
    src, dst = upper.nonzero().t()
    return torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)


def batched(graphs):
    edges, batch, offset = [], [], 0
    for g, (ei, n) in enumerate(graphs):
        edges.append(ei + offset)
        batch += [g] * n
        offset += n
    return torch.cat(edges, 1), torch.tensor(batch)


# ----------------------------------------------------------------------------- the reference
def reference_mamba(mamba, sequence: torch.Tensor) -> torch.Tensor:
    """One node's token sequence [T, C] through the bidirectional Mamba block, step by step."""
    x_all, z_all = mamba.in_proj(sequence).chunk(2, dim=-1)  # [T, d_inner]
    total = 0
    for suffix, a_name, reverse in (("", "A_log", False), ("_b", "A_b_log", True)):
        xs, zs = (x_all.flip(0), z_all.flip(0)) if reverse else (x_all, z_all)
        conv = getattr(mamba, "conv1d" + suffix)
        kernel = conv.weight.shape[-1]
        A = -torch.exp(getattr(mamba, a_name))
        D = getattr(mamba, "D" + suffix)
        state = torch.zeros(mamba.d_inner, mamba.d_state, dtype=sequence.dtype)
        outputs = []
        for t in range(xs.shape[0]):
            c = conv.bias.clone()
            for k in range(kernel):
                if t - k >= 0:
                    c = c + conv.weight[:, 0, kernel - 1 - k] * xs[t - k]
            u = F.silu(c)
            low, B, C = torch.split(getattr(mamba, "x_proj" + suffix)(u), [mamba.dt_rank, mamba.d_state, mamba.d_state])
            dt = F.softplus(getattr(mamba, "dt_proj" + suffix)(low))
            state = torch.exp(dt[:, None] * A) * state + (dt * u)[:, None] * B[None, :]
            y = (state * C[None, :]).sum(-1) + D * u
            outputs.append(y * F.silu(zs[t]))
        y = torch.stack(outputs)
        total = total + (y.flip(0) if reverse else y)
    return mamba.out_proj(total)


def reference_gmn(layer: GMN, x, edge_index, tokens: WalkTokens, rwse=None) -> torch.Tensor:
    """Per node: its tokens' node sets (from ``tokens``), their induced edges recomputed from
    the edge list, a GIN step and pool per token, the scan above, the local GIN by a loop."""
    edges = edge_index.t().tolist()
    h = x
    if layer.se_proj is not None:
        h = h + layer.se_proj(rwse)
    ptr, nodes, cu = tokens.member_ptr.tolist(), tokens.node.tolist(), tokens.cu_seqlens.tolist()
    rows = []
    for v in range(x.shape[0]):
        encoded = []
        for t in range(cu[v], cu[v + 1]):
            members = nodes[ptr[t]:ptr[t + 1]]
            pooled = []
            for u in members:
                agg = h[u]
                for a, b in edges:
                    if b == u and a in members:
                        agg = agg + h[a]
                pooled.append(layer.token_mlp(agg))
            stacked = torch.stack(pooled)
            encoded.append(stacked.mean(0) if layer.token_pool == "mean" else stacked.sum(0))
        scanned = reference_mamba(layer.mamba, torch.stack(encoded))
        rows.append(scanned[-1] if layer.readout == "last" else scanned.mean(0))
    h_global = torch.stack(rows)
    out = layer.norm_global(h + h_global)
    if layer.local is not None:
        local = []
        for v in range(x.shape[0]):
            agg = h[v]
            for a, b in edges:
                if b == v:
                    agg = agg + h[a]
            local.append(layer.local.nn(agg))
        out = out + layer.norm_local(h + torch.stack(local))
    return layer.norm_out(out + layer.ffn(out))


def _grads(layer, x, out, weight):
    layer.zero_grad()
    x.grad = None
    (out * weight).sum().backward()
    return {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}, x.grad.clone()


@pytest.mark.parametrize("options", [
    dict(),
    dict(readout="mean", token_pool="sum", walks_per_token=2),
    dict(local=None, rwse_steps=3, tokens_per_length=1, walk_length=2),
])
def test_layer_equals_the_loop_reference_forward_and_backward(options):
    torch.manual_seed(0)
    graphs = [(random_graph(5, 0.5, 1), 5), (random_graph(4, 0.6, 2), 4)]
    edge_index, batch = batched(graphs)
    edge_index = torch.cat([edge_index, torch.tensor([[7], [7]])], 1)  # a self-loop
    layer = GMN(4, **{"walk_length": 2, "tokens_per_length": 2, "d_state": 3, "d_conv": 3, **options}).double()
    with torch.no_grad():  # D and the biases away from their initial constants, so that each term shows
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(9, 4, dtype=F64, requires_grad=True)
    tokens = layer.tokenize(edge_index, 9, batch)
    rwse = random_walk_encoding(edge_index, 9, 3, batch).double() if layer.rwse_steps else None
    out = layer(x, edge_index, batch)
    expected = reference_gmn(layer, x, edge_index, tokens, rwse)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(out)
    grads, x_grad = _grads(layer, x, out, weight)
    ref_grads, ref_x_grad = _grads(layer, x, reference_gmn(layer, x, edge_index, tokens, rwse), weight)
    torch.testing.assert_close(x_grad, ref_x_grad, rtol=1e-9, atol=1e-10)
    assert grads.keys() == ref_grads.keys() and len(grads) == len(list(layer.parameters()))
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-10, msg=name)


def test_packed_scan_equals_each_node_scanned_alone():
    torch.manual_seed(1)
    layer = GMN(4, walk_length=3, tokens_per_length=2, d_state=3).double()
    edge_index = random_graph(7, 0.4, 3)
    tokens = layer.tokenize(edge_index, 7)
    sequence = layer.encode_tokens(torch.randn(7, 4, dtype=F64), tokens)
    packed = layer.mamba(sequence[None], cu_seqlens=tokens.cu_seqlens)[0]
    cu = tokens.cu_seqlens.tolist()
    for v in range(7):
        alone = layer.mamba(sequence[None, cu[v]:cu[v + 1]])[0]
        torch.testing.assert_close(packed[cu[v]:cu[v + 1]], alone, rtol=1e-12, atol=1e-12)


def test_deterministic_under_a_seed_and_batch_independent():
    torch.manual_seed(2)
    graphs = [(random_graph(n, 0.4, n), n) for n in (6, 3, 8)]
    edge_index, batch = batched(graphs)
    layer = GMN(4, d_state=3, rwse_steps=2).double().eval()
    x = torch.randn(17, 4, dtype=F64)
    out = layer(x, edge_index, batch)
    torch.testing.assert_close(layer(x, edge_index, batch), out, rtol=0, atol=0)
    offset = 0
    for ei, n in graphs:
        torch.testing.assert_close(layer(x[offset:offset + n], ei), out[offset:offset + n], rtol=1e-12, atol=1e-12)
        offset += n
    other = GMN(4, d_state=3, rwse_steps=2, seed=1).double()
    other.load_state_dict(layer.state_dict())
    assert not torch.allclose(other(x, edge_index, batch), out)


def relabel_tokens(tokens: WalkTokens, perm: torch.Tensor) -> WalkTokens:
    """The tokens of the graph whose node v is renamed perm[v]: node perm[v]'s sequence is
    v's, with every member renamed."""
    inverse = torch.argsort(perm)
    cu, ptr = tokens.cu_seqlens.tolist(), tokens.member_ptr.tolist()
    order = [t for i in range(len(cu) - 1) for t in range(cu[int(inverse[i])], cu[int(inverse[i]) + 1])]
    rows = [r for t in order for r in range(ptr[t], ptr[t + 1])]
    new_row = {r: i for i, r in enumerate(rows)}
    sizes = torch.tensor([ptr[t + 1] - ptr[t] for t in order])
    edges = torch.tensor([[new_row[a], new_row[b]] for a, b in tokens.edge_index.t().tolist()]).t().reshape(2, -1)
    return WalkTokens(cu_seqlens=tokens.cu_seqlens.clone(), length=tokens.length[order],
                      member_ptr=torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]),
                      node=perm[tokens.node[rows]], edge_index=edges)


def test_permutation_equivariant_exactly_given_relabelled_tokens():
    torch.manual_seed(3)
    layer = GMN(4, d_state=3, walks_per_token=2, rwse_steps=2).double().eval()
    edge_index = random_graph(8, 0.35, 4)
    x = torch.randn(8, 4, dtype=F64)
    perm = torch.randperm(8)
    tokens = layer.tokenize(edge_index, 8)
    out = layer(x, edge_index, tokens=tokens)
    x_new, edge_new = torch.empty_like(x), perm[edge_index]
    x_new[perm] = x
    out_new = layer(x_new, edge_new, tokens=relabel_tokens(tokens, perm))
    torch.testing.assert_close(out_new[perm], out, rtol=1e-12, atol=1e-12)
    # with fresh walks the relabelled graph draws other samples (equivariant in distribution only)
    assert not torch.allclose(layer(x_new, edge_new)[perm], out)


def test_given_tokens_equal_drawn_tokens_and_resampling():
    torch.manual_seed(4)
    layer = GMN(4, d_state=3, seed=5).double()
    edge_index = random_graph(6, 0.5, 5)
    x = torch.randn(6, 4, dtype=F64)
    tokens = random_walk_tokens(edge_index, 6, 3, 2, 1, seed=5)
    torch.testing.assert_close(layer(x, edge_index, tokens=tokens), layer(x, edge_index), rtol=0, atol=0)
    layer.resample = True
    layer.train()
    assert not torch.allclose(layer(x, edge_index), layer(x, edge_index))
    layer.eval()
    torch.testing.assert_close(layer(x, edge_index), layer(x, edge_index, tokens=tokens), rtol=0, atol=0)


def test_edge_cases_give_defined_results():
    layer = GMN(4, d_state=3).double()
    lonely = layer(torch.randn(3, 4, dtype=F64), torch.empty(2, 0, dtype=torch.long))
    assert lonely.shape == (3, 4) and torch.isfinite(lonely).all()
    assert layer(torch.randn(0, 4, dtype=F64), torch.empty(2, 0, dtype=torch.long)).shape == (0, 4)


def test_a_small_training_run_learns_a_two_hop_count():
    """Constant features: only the tokens' structure can tell nodes apart. The target is the
    number of nodes within two hops (scaled); a few dozen Adam steps must cut the loss."""
    torch.manual_seed(5)
    graphs = [(random_graph(n, 0.25, 10 + n), n) for n in (7, 9, 6, 8)]
    edge_index, batch = batched(graphs)
    n = int(batch.numel())
    A = torch.zeros(n, n)
    A[edge_index[0], edge_index[1]] = 1
    reach = ((A + A @ A + torch.eye(n)) > 0).sum(1).float()
    target = (reach - reach.mean()) / reach.std()
    layer = GMN(8, walk_length=2, tokens_per_length=2, walks_per_token=2, d_state=4, token_pool="sum")
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam(list(layer.parameters()) + list(head.parameters()), lr=1e-2)
    x = torch.ones(n, 8)
    tokens = layer.tokenize(edge_index, n, batch)
    losses, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # tiny operations: threads only add synchronisation
    try:
        for _ in range(60):
            opt.zero_grad()
            loss = F.mse_loss(head(layer(x, edge_index, batch, tokens=tokens)).squeeze(-1), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.3 * losses[0] and math.isfinite(losses[-1]), losses[::10]


@pytest.mark.parametrize("make, argument", [
    (lambda: GMN(4, walk_length=0), "walk_length"),
    (lambda: GMN(4, tokens_per_length=0), "tokens_per_length"),
    (lambda: GMN(4, walks_per_token=1.5), "walks_per_token"),
    (lambda: GMN(4, seed=-1), "seed"),
    (lambda: GMN(4, readout="first"), "readout"),
    (lambda: GMN(4, token_pool="max"), "token_pool"),
    (lambda: GMN(4, dropout=1.5), "dropout"),
    (lambda: GMN(4, local="gcn"), "local"),
    (lambda: GMN(4)(torch.randn(3, 5), torch.tensor([[0], [1]])), "x"),
    (lambda: GMN(4)(torch.randn(3, 4), torch.tensor([[0], [3]])), "edge_index"),
    (lambda: GMN(4)(torch.randn(3, 4), torch.tensor([[0], [1]]), torch.tensor([1, 0, 0])), "batch"),
    (lambda: GMN(4)(torch.randn(3, 4), torch.tensor([[0], [1]]), tokens="walks"), "tokens"),
    (lambda: GMN(4)(torch.randn(3, 4), torch.tensor([[0], [1]]),
                    tokens=random_walk_tokens(torch.tensor([[0], [1]]), 2, 2)), "tokens"),
    (lambda: GMN(4, rwse_steps=2)(torch.randn(3, 4), torch.tensor([[0], [1]]), rwse=torch.rand(3, 3)), "rwse"),
    (lambda: GMN(4)(torch.randn(3, 4), torch.tensor([[0], [1]]), rwse=torch.rand(3, 2)), "rwse"),
])
def test_bad_input_is_refused_by_name(make, argument):
    with pytest.raises((TypeError, ValueError), match=argument):
        make()


def test_repr_names_the_sizes():
    text = repr(GMN(8, walk_length=4, tokens_per_length=3, walks_per_token=2, d_state=5))
    assert "GMN(8" in text and "walk_length=4" in text and "tokens_per_length=3" in text and "d_state=5" in text


@pytest.mark.parametrize("structure", ["path", "grid"])
def test_layer_on_a_path_and_a_grid_equals_the_reference(structure):
    from everygraph.graphlib import Lattice, path_graph

    torch.manual_seed(6)
    dag = path_graph(5).to_dag() if structure == "path" else Lattice((2, 3)).to_dag()
    layer = GMN(4, walk_length=2, tokens_per_length=2, d_state=3).double()
    x = torch.randn(dag.num_nodes, 4, dtype=F64)
    tokens = layer.tokenize(dag.edge_index, dag.num_nodes)
    torch.testing.assert_close(layer(x, dag.edge_index), reference_gmn(layer, x, dag.edge_index, tokens),
                               rtol=1e-10, atol=1e-10)
