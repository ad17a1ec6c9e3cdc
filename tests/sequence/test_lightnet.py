"""LightNet's additive recurrence (lightnet_scan) against the paper's equations, and what it
propagates on a 2D grid compared with pLSTM's P-mode."""

import math

import pytest
import torch

from everygraph.graphlib import DAG, Lattice
from everygraph.sequence import (
    SUPPORTED_KINDS,
    lattice_gates,
    lightnet_log_normalizer,
    lightnet_scan,
    lightnet_scan_reference,
    plstm_scan,
)
from everygraph.sequence.plstm.layout import lattice_dag

torch.manual_seed(0)
DTYPE = torch.float64


def _inputs(N, H=2, dk=3, dv=2, B=2, requires_grad=False):
    gen = torch.Generator().manual_seed(N * 31 + dk)
    q, k, v = (torch.randn(B, N, H, d, generator=gen, dtype=DTYPE) for d in (dk, dk, dv))
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def _random_dag(num_nodes=9, seed=1):
    gen = torch.Generator().manual_seed(seed)
    pairs = [(a, b) for b in range(num_nodes) for a in range(b) if torch.rand(1, generator=gen) < 0.35]
    pairs.append((0, num_nodes - 1))
    pairs.append((0, num_nodes - 1))  # a parallel edge: two paths
    return DAG(torch.tensor(pairs).t(), num_nodes)


STRUCTURES = {
    "sequence": (None, 7),
    "path": (Lattice((6,)), 6),
    "path_flipped": (Lattice((6,), flip=(True,)), 6),
    "grid": (Lattice((3, 4)), 12),
    "grid_flipped": (Lattice((4, 3), flip=(True, True)), 12),
    "dag": (_random_dag(), 9),
}


def _executions(structure):
    is_path = structure is None or (isinstance(structure, Lattice) and sum(s > 1 for s in structure.shape) <= 1)
    out = ["reference", "wavefront"]
    if isinstance(structure, Lattice) or structure is None:
        out.append("lattice")
    if is_path:
        out.append("recurrent")
    return [e for e in out if "diagonal" in SUPPORTED_KINDS[e]]


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_forward_and_backward_equal_the_paper_equations(name):
    structure, N = STRUCTURES[name]
    q, k, v = _inputs(N, requires_grad=True)
    expected = lightnet_scan_reference(structure, q, k, v)
    weight = torch.randn_like(expected)
    grads_expected = torch.autograd.grad((expected * weight).sum(), (q, k, v))
    for execution in [None] + _executions(structure):
        got = lightnet_scan(structure, q, k, v, execution=execution)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=f"{name}, {execution}")
        grads = torch.autograd.grad((got * weight).sum(), (q, k, v))
        for g, ge, label in zip(grads, grads_expected, "qkv"):
            torch.testing.assert_close(g, ge, rtol=1e-9, atol=1e-10, msg=f"d{label}, {name}, {execution}")


def test_path_equals_the_multiplicative_form_with_lambda_the_ratio_of_cumulative_sums():
    # S_t = diag(lambda_t) S_{t-1} + diag(1 - lambda_t) 1 v_t^T, lambda_t = delta_{t-1} / delta_t
    q, k, v = _inputs(8)
    scale = 0.7
    delta = k.exp().cumsum(1)
    lam = torch.cat([torch.zeros_like(delta[:, :1]), delta[:, :-1] / delta[:, 1:]], dim=1)
    state = torch.zeros(*q.shape[:1], q.shape[2], q.shape[3], v.shape[3], dtype=DTYPE)
    out = []
    for t in range(q.shape[1]):
        state = lam[:, t, :, :, None] * state + (1 - lam[:, t, :, :, None]) * v[:, t, :, None, :]
        out.append(torch.einsum("bhd,bhdv->bhv", scale * q[:, t], state))
    torch.testing.assert_close(lightnet_scan(None, q, k, v, scale=scale), torch.stack(out, 1), rtol=1e-10, atol=1e-10)


def test_one_scan_suffices_the_last_output_ignores_the_prefix_order():
    # the weight of position s at the end is a softmax over the whole prefix: order-free
    q, k, v = _inputs(9)
    last = lightnet_scan(None, q, k, v)[:, -1]
    perm = torch.cat([torch.randperm(8, generator=torch.Generator().manual_seed(3)), torch.tensor([8])])
    shuffled = lightnet_scan(None, q[:, perm], k[:, perm], v[:, perm])[:, -1]
    torch.testing.assert_close(shuffled, last, rtol=1e-10, atol=1e-10)
    # and it is the softmax-weighted mean, per key channel
    weights = torch.softmax(k, dim=1)  # [B, N, H, dk]
    closed = torch.einsum("bhd,bnhd,bnhv->bhv", q[:, -1] / math.sqrt(q.shape[-1]), weights, v)
    torch.testing.assert_close(last, closed, rtol=1e-10, atol=1e-10)


def _grid_paths(shape):
    """P[n, m]: number of monotone lattice paths from pixel m to pixel n (0 if m is not above-left)."""
    H, W = shape
    P = torch.zeros(H * W, H * W, dtype=DTYPE)
    for i in range(H):
        for j in range(W):
            for a in range(i + 1):
                for b in range(j + 1):
                    P[i * W + j, a * W + b] = math.comb(i - a + j - b, i - a)
    return P


def test_log_normalizer_is_the_path_count_sum_and_stays_finite_in_float32():
    shape = (5, 4)
    k = torch.randn(1, 20, 1, 2, dtype=DTYPE)
    P = _grid_paths(shape)
    expected = torch.einsum("nm,bmhd->bnhd", P, k.exp()).log()
    torch.testing.assert_close(lightnet_log_normalizer(lattice_dag(Lattice(shape)), k), expected, rtol=1e-12, atol=1e-12)
    # a 70 x 70 grid: the corner's delta (k = 0) is sum_{a, b} C(a + b, a) = C(140, 70) - 1 ~ 1e41,
    # beyond float32, while its logarithm is exact
    side = 70
    zeros = torch.zeros(1, side * side, 1, 1)
    log_delta = lightnet_log_normalizer(lattice_dag(Lattice((side, side))), zeros)
    assert torch.isfinite(log_delta).all()
    assert abs(float(log_delta[0, -1, 0, 0]) - math.log(math.comb(2 * side, side) - 1)) < 1e-3
    q, v = torch.randn(1, side * side, 1, 1), torch.randn(1, side * side, 1, 1)
    assert torch.isfinite(lightnet_scan(Lattice((side, side)), q, zeros, v)).all()


def _probe(run, shape, source_pixel):
    """G[:, m] for one source pixel m: unit queries and keys (dk = dv = 1), v the indicator of m."""
    n = shape[0] * shape[1]
    v = torch.zeros(1, n, 1, 1, dtype=DTYPE)
    v[0, source_pixel] = 1.0
    return run(v)[0, :, 0, 0]


def _influence_matrix(run, shape):
    n = shape[0] * shape[1]
    return torch.stack([_probe(run, shape, m) for m in range(n)], dim=1)  # [n', n]


def test_lightnet_and_plstm_p_mode_propagate_differently_on_a_grid():
    shape = (5, 6)
    H, W = shape
    n = H * W
    lattice = Lattice(shape)
    gen = torch.Generator().manual_seed(5)
    ones = torch.ones(1, n, 1, 1, dtype=DTYPE)
    diagonal = torch.tensor([i + j for i in range(H) for j in range(W)])

    # LightNet: random keys, unit queries
    k = torch.randn(1, n, 1, 1, generator=gen, dtype=DTYPE)
    light = _influence_matrix(lambda v: lightnet_scan(lattice, ones, k, v, scale=1.0), shape)
    # its weights over the ancestors of every pixel sum to 1 ...
    torch.testing.assert_close(light.sum(1), torch.ones(n, dtype=DTYPE), rtol=1e-12, atol=1e-12)
    # ... and are the normalised path sums P(m, n) e^{k_m} / sum_m' P(m', n) e^{k_m'}
    P = _grid_paths(shape)
    weights = P * k[0, :, 0, 0].exp()[None, :]
    torch.testing.assert_close(light, weights / weights.sum(1, keepdim=True), rtol=1e-12, atol=1e-12)
    assert torch.equal(light > 0, P > 0)  # support: exactly the causal cone

    # pLSTM P-mode: T = [[1 - a, 1 - a], [a, a]] (columns sum to 1), random angles, sources
    # and direct 0 (influence on others only)
    a = torch.rand(1, H, W, 1, generator=gen, dtype=DTYPE)
    transition = torch.stack([torch.cat([1 - a, 1 - a], -1), torch.cat([a, a], -1)], dim=-2)[..., None, :, :]
    transition = transition.reshape(1, H, W, 1, 2, 2)
    source = torch.rand(1, H, W, 1, 2, generator=gen, dtype=DTYPE)
    unit_mark = torch.ones(1, H, W, 1, 2, dtype=DTYPE)
    random_mark = torch.rand(1, H, W, 1, 2, generator=gen, dtype=DTYPE)
    no_direct = torch.zeros(1, H, W, 1, dtype=DTYPE)

    def p_mode(mark):
        s, t, m, d = lattice_gates(lattice, source, transition, mark, no_direct)
        return _influence_matrix(lambda v: plstm_scan(lattice, ones, ones, v, s, t, m, d, scale=1.0), shape)

    carried = p_mode(unit_mark)
    read = p_mode(random_mark)
    assert (read <= carried + 1e-12).all()
    for m in range(n):
        mi, mj = divmod(m, W)
        injected = float(source[0, mi, mj, 0, 0] * (mi + 1 < H) + source[0, mi, mj, 0, 1] * (mj + 1 < W))
        # the mass a source injects is carried to every later anti-diagonal without growth or decay
        # until it leaves the grid: exactly conserved while no path has reached the border
        free = min(H - 1 - mi, W - 1 - mj)
        previous = injected
        for d in range(diagonal[m] + 1, H + W - 1):
            total = float(carried[diagonal == d, m].sum())
            if d - diagonal[m] <= free:
                assert abs(total - injected) < 1e-12, (m, d)
            assert total <= previous + 1e-12
            assert float(read[diagonal == d, m].sum()) <= total + 1e-12
            previous = total
        assert injected <= 2.0
    # what differs: P-mode normalises a source's outflow (its columns, per anti-diagonal, hold
    # the injected mass), LightNet normalises a pixel's inflow (its rows sum to 1); neither
    # holds the other's invariant
    p_rows = carried.sum(1)
    assert not torch.allclose(p_rows, torch.ones_like(p_rows))
    corner_inside = [float(light[diagonal == d, 0].sum()) for d in range(1, min(H, W))]
    assert max(corner_inside) - min(corner_inside) > 1e-3


def test_bad_inputs_raise_clear_errors():
    q, k, v = _inputs(5)
    with pytest.raises(ValueError, match="k must have the shape of q"):
        lightnet_scan(None, q, k[..., :2], v)
    with pytest.raises(ValueError, match="structure has 6"):
        lightnet_scan(Lattice((6,)), q, k, v)
    with pytest.raises(TypeError, match="structure must be"):
        lightnet_scan("grid", q, k, v)
    with pytest.raises(ValueError, match="execution must be one of"):
        lightnet_scan(None, q, k, v, execution="chunked2d")  # scalar kind only
    with pytest.raises(ValueError, match="q must be a 4-D"):
        lightnet_scan(None, q[0], k, v)


def test_sequence_state_carries_exactly_forward_and_backward():
    """Split a sequence anywhere, pass the (S, log_delta) pair on: the outputs, the final state
    and the gradients equal one scan's, which equals the paper's loop; lightnet_step likewise."""
    from everygraph.sequence import lightnet_step

    torch.manual_seed(5)
    B, N, H, dk, dv = 2, 8, 2, 3, 4
    q, k, v = (torch.randn(B, N, H, d, dtype=torch.float64, requires_grad=True) for d in (dk, dk, dv))
    reference = lightnet_scan_reference(None, q, k, v)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), k)
    _, final = lightnet_scan(None, q, k, v, return_state=True)
    for split in (0, 3, 8):
        head, state = lightnet_scan(None, q[:, :split], k[:, :split], v[:, :split], return_state=True)
        tail, end = lightnet_scan(None, q[:, split:], k[:, split:], v[:, split:], initial_state=state, return_state=True)
        out = torch.cat([head, tail], dim=1)
        torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(end[0], final[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(end[1], final[1], rtol=1e-12, atol=1e-12)
        (grad,) = torch.autograd.grad(out.square().sum(), k)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-10)
    state = (torch.zeros(B, H, dk, dv, dtype=torch.float64), torch.full((B, H, dk), float("-inf"), dtype=torch.float64))
    for t in range(N):
        o, state = lightnet_step(q[:, t], k[:, t], v[:, t], state)
        torch.testing.assert_close(o, reference[:, t], rtol=1e-12, atol=1e-12)
