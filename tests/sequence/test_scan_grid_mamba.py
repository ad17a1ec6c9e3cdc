"""grid_selective_scan: the 2D selective scan against a pixel loop in every orientation
(forward and backward), and the stabilisation: bounded on a 256 x 256 grid at criticality,
exponential growth without it."""

import pytest
import torch

from everygraph.sequence import grid_selective_scan

DT = torch.float64


def pixel_loop(u, dt, A, B, C, split, flip):
    """h_p = exp(dt_p A) (pi_{p0} h_{p0} + (1 - pi_{p1}) h_{p1}) + dt_p u_p B_p, y_p = <C_p, h_p>."""
    batch, X, Y, D = u.shape
    rows = range(X - 1, -1, -1) if flip[0] else range(X)
    cols = range(Y - 1, -1, -1) if flip[1] else range(Y)
    step = (-1 if flip[0] else 1, -1 if flip[1] else 1)
    h, y = {}, torch.zeros_like(u)
    for x in rows:
        for c in cols:
            decay = torch.exp(dt[:, x, c, :, None] * A)  # [B, D, N]
            incoming = 0
            up, left = (x - step[0], c), (x, c - step[1])
            if up in h:
                incoming = incoming + (split[:, up[0], up[1], :, None] if split is not None else 1) * h[up]
            if left in h:
                incoming = incoming + ((1 - split[:, left[0], left[1], :, None]) if split is not None else 1) * h[left]
            h[x, c] = decay * incoming + (dt[:, x, c] * u[:, x, c])[..., None] * B[:, x, c, None, :]
            y[:, x, c] = (h[x, c] * C[:, x, c, None, :]).sum(-1)
    return y


def inputs(X, Y, gen, batch=2, D=3, N=2):
    return dict(
        u=torch.randn(batch, X, Y, D, dtype=DT, generator=gen),
        dt=torch.rand(batch, X, Y, D, dtype=DT, generator=gen),
        A=-torch.rand(D, N, dtype=DT, generator=gen),
        B=torch.randn(batch, X, Y, N, dtype=DT, generator=gen),
        C=torch.randn(batch, X, Y, N, dtype=DT, generator=gen),
        split=torch.rand(batch, X, Y, D, dtype=DT, generator=gen),
    )


@pytest.mark.parametrize("stable", [True, False])
@pytest.mark.parametrize("flip", [(False, False), (False, True), (True, False), (True, True)])
def test_equals_pixel_loop(flip, stable):
    gen = torch.Generator().manual_seed(sum(flip) + 2 * flip[0])
    x = inputs(3, 4, gen)
    if not stable:
        x["split"] = None
    results = []
    for fn in (lambda **a: grid_selective_scan(**a, flip=flip), lambda **a: pixel_loop(**a, flip=flip)):
        leaves = {n: (t.clone().requires_grad_() if t is not None else None) for n, t in x.items()}
        y = fn(**leaves)
        (y * torch.linspace(-1, 1, y.numel(), dtype=DT).view_as(y)).sum().backward()
        results.append([y] + [t.grad for t in leaves.values() if t is not None])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_stable_at_criticality_on_a_256_grid():
    """A = 0 (decay 1, the whole budget): with the split the outputs stay below the total input
    (the state is shared, never copied); without it they grow like the number of paths."""
    gen = torch.Generator().manual_seed(0)
    size = 256
    u = torch.ones(1, size, size, 1, dtype=DT)
    dt = torch.rand(1, size, size, 1, dtype=DT, generator=gen) + 0.5
    ones = torch.ones(1, size, size, 1, dtype=DT)
    A = torch.zeros(1, 1, dtype=DT)
    split = torch.rand(1, size, size, 1, dtype=DT, generator=gen)
    with torch.no_grad():
        stable = grid_selective_scan(u, dt, A, ones, ones, split)
        naive = grid_selective_scan(u, dt, A, ones, ones, None)
    assert torch.isfinite(stable).all()
    assert stable.abs().max() <= (dt * u).sum()  # mass conservation: at most all input so far
    corner = naive[0, -1, -1, 0]
    assert corner > 1e100  # >= the number of monotone paths to the corner, C(510, 255) ~ 5e151
    # growth: doubling the grid's side squares (at least) the naive corner, the stable one stays polynomial
    assert naive[0, 127, 127, 0] ** 1.9 < corner
    assert stable[0, -1, -1, 0] < 16 * stable[0, 127, 127, 0]
