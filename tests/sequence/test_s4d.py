"""S4D: convolution mode == recurrent mode (scan engine, complex states) == a plain complex
loop, forward and backward; closed form of one real mode; complex states on the engine."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from everygraph.sequence import path_scan, s4d, s4d_discretize, s4d_kernel

F64, C128 = torch.float64, torch.complex128


def _params(H: int = 3, n: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    log_dt = (torch.rand(H, generator=gen, dtype=F64) * (math.log(0.5) - math.log(1e-2)) + math.log(1e-2))
    A_re = -(0.1 + torch.rand(H, n, generator=gen, dtype=F64))
    A_im = torch.randn(H, n, generator=gen, dtype=F64) * 4
    B_re, B_im, C_re, C_im = (torch.randn(H, n, generator=gen, dtype=F64) for _ in range(4))
    D = torch.randn(H, generator=gen, dtype=F64)
    return dict(log_dt=log_dt, A_re=A_re, A_im=A_im, B_re=B_re, B_im=B_im, C_re=C_re, C_im=C_im, D=D)


def _call(p: dict, u: torch.Tensor, **kw) -> torch.Tensor:
    return s4d(
        u, p["log_dt"], torch.complex(p["A_re"], p["A_im"]), torch.complex(p["B_re"], p["B_im"]),
        torch.complex(p["C_re"], p["C_im"]), p["D"], **kw,
    )


def _loop(p: dict, u: torch.Tensor, discretization: str) -> torch.Tensor:
    """The paper's recurrence, one channel and one step at a time, in Python complex numbers."""
    batch, H, L = u.shape
    y = torch.zeros(batch, H, L, dtype=F64)
    for h in range(H):
        dt = math.exp(p["log_dt"][h].item())
        modes = []
        for j in range(p["A_re"].shape[1]):
            a = complex(p["A_re"][h, j].item(), p["A_im"][h, j].item())
            b = complex(p["B_re"][h, j].item(), p["B_im"][h, j].item())
            c = complex(p["C_re"][h, j].item(), p["C_im"][h, j].item())
            if discretization == "zoh":
                dA = cmath.exp(dt * a)
                dB = (dA - 1) / a * b
            else:
                dA = (1 + dt * a / 2) / (1 - dt * a / 2)
                dB = dt / (1 - dt * a / 2) * b
            modes.append((dA, dB, c))
        for i in range(batch):
            x = [0j] * len(modes)
            for t in range(L):
                ut = u[i, h, t].item()
                x = [dA * xj + dB * ut for (dA, dB, _), xj in zip(modes, x)]
                y[i, h, t] = 2 * sum(c * xj for (_, _, c), xj in zip(modes, x)).real + p["D"][h].item() * ut
    return y


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("mode", ["conv", "recurrent"])
def test_both_modes_equal_the_plain_loop(discretization, mode):
    p = _params()
    u = torch.randn(2, 3, 17, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_call(p, u, discretization=discretization, mode=mode), _loop(p, u, discretization))


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_conv_and_recurrent_agree_forward_and_backward(discretization):
    p = {k: v.requires_grad_() for k, v in _params(H=2, n=5, seed=3).items()}
    u = torch.randn(3, 2, 40, dtype=F64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    weight = torch.randn(3, 2, 40, dtype=F64, generator=torch.Generator().manual_seed(5))
    leaves = [u, *p.values()]
    outputs, grads = [], []
    for mode in ("conv", "recurrent"):
        y = _call(p, u, discretization=discretization, mode=mode)
        outputs.append(y)
        grads.append(torch.autograd.grad((y * weight).sum(), leaves))
    torch.testing.assert_close(outputs[0], outputs[1])
    for name, g_conv, g_rec in zip(["u", *p], *grads):
        assert g_conv.abs().sum() > 0, name
        torch.testing.assert_close(g_conv, g_rec, msg=lambda m: f"gradient wrt {name}: {m}")


def test_recurrent_mode_gradcheck():
    """The engine's hand-written recurrent backward on complex states (conjugate convention)."""
    p = _params(H=2, n=2, seed=6)
    u = torch.randn(1, 2, 6, dtype=F64, generator=torch.Generator().manual_seed(7), requires_grad=True)
    names = list(p)

    def f(u, *values):
        return _call(dict(zip(names, values)), u, mode="recurrent", discretization="bilinear")

    assert torch.autograd.gradcheck(f, (u, *(v.requires_grad_() for v in p.values())))


def test_one_real_mode_step_response_closed_form():
    """A = -a, B = 1, C = c (one real mode), ZOH, u = 1: the sampled continuous step response
    y_k = 2c/a (1 - exp(-a dt (k + 1))) + D (ZOH is exact for piecewise-constant input)."""
    a, c, D, dt, L = 0.7, 1.3, 0.4, 0.05, 50
    ones = torch.ones(1, 1, dtype=C128)
    A = torch.full((1, 1), -a, dtype=F64).to(C128)
    k = torch.arange(L, dtype=F64)
    expected = 2 * c / a * (1 - torch.exp(-a * dt * (k + 1))) + D
    for mode in ("conv", "recurrent"):
        y = s4d(torch.ones(1, 1, L, dtype=F64), torch.tensor([math.log(dt)], dtype=F64), A, ones, c * ones,
                torch.tensor([D], dtype=F64), mode=mode)
        torch.testing.assert_close(y[0, 0], expected)
    # and the kernel is the impulse response 2 c dB dA^l
    K = s4d_kernel(torch.tensor([math.log(dt)], dtype=F64), A, ones, c * ones, L)
    torch.testing.assert_close(K[0], 2 * c * (1 - math.exp(-a * dt)) / a * torch.exp(-a * dt * k))


def test_bilinear_discretization_formula():
    log_dt = torch.tensor([math.log(0.1)], dtype=F64)
    A = torch.tensor([[-0.5 + 3j]], dtype=C128)
    B = torch.tensor([[1.0 + 0.5j]], dtype=C128)
    dA, dB = s4d_discretize(log_dt, A, B, "bilinear")
    a, b = -0.5 + 3j, 1.0 + 0.5j
    assert abs(dA.item() - (1 + 0.05 * a) / (1 - 0.05 * a)) < 1e-14
    assert abs(dB.item() - 0.1 / (1 - 0.05 * a) * b) < 1e-14


def test_bad_inputs_are_refused():
    p = _params()
    u = torch.randn(2, 3, 5, dtype=F64)
    with pytest.raises(ValueError, match="mode"):
        _call(p, u, mode="fft")
    with pytest.raises(ValueError, match="discretization"):
        _call(p, u, discretization="euler")
    with pytest.raises(ValueError, match=r"u must have shape \[batch, H, L\]"):
        _call(p, u[:, :2])
    with pytest.raises(ValueError, match="A must be complex"):
        s4d(u, p["log_dt"], p["A_re"], p["A_re"].to(C128), p["A_re"].to(C128), p["D"])
    with pytest.raises(ValueError, match="dtype"):
        _call(p, u.float())


def test_empty_sequence_is_the_skip():
    p = _params()
    u = torch.zeros(2, 3, 0, dtype=F64)
    for mode in ("conv", "recurrent"):
        assert _call(p, u, mode=mode).shape == (2, 3, 0)


def _complex_path_inputs(seed: int, kind: str):
    gen = torch.Generator().manual_seed(seed)

    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=gen, dtype=F64), torch.randn(*shape, generator=gen, dtype=F64))

    B, L, H, dk, dv = 2, 7, 2, 3, 2
    gate = {"scalar": (), "diagonal": (dk,), "elementwise": (dk, dv)}[kind]
    decay = 0.9 * torch.exp(1j * torch.rand(B, L, H, *gate, generator=gen, dtype=F64))
    return [c(B, L, H, dk), c(B, L, H, dk), c(B, L, H, dv), c(B, L, H), decay, c(B, L, H, dk, dv), c(B, L, H)], c(B, H, dk, dv)


@pytest.mark.parametrize("kind", ["scalar", "diagonal", "elementwise"])
def test_engine_complex_states_recurrent_equals_reference(kind):
    inputs, state = _complex_path_inputs(8, kind)
    leaves = [t.requires_grad_() for t in [*inputs, state]]
    results = []
    for execution in ("reference", "recurrent"):
        h, final = path_scan(*leaves[:7], kind=kind, state=leaves[7], scale=1.0, execution=execution)
        loss = (h.abs() ** 2).sum() + (final.abs() ** 2).sum()  # a real loss of complex outputs
        results.append((h, final, torch.autograd.grad(loss, leaves)))
    (h0, f0, g0), (h1, f1, g1) = results
    torch.testing.assert_close(h0, h1)
    torch.testing.assert_close(f0, f1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b)


def test_engine_refuses_complex_where_untested_and_integers_everywhere():
    inputs, _ = _complex_path_inputs(9, "diagonal")
    with pytest.raises(ValueError, match="complex inputs run on the executions"):
        path_scan(*inputs, kind="diagonal", scale=1.0, execution="chunked")
    with pytest.raises(TypeError, match="floating point"):  # a wrong dtype is a TypeError (docs/input-validation.md)
        path_scan(*(t.real.long() for t in inputs), kind="diagonal", scale=1.0, execution="reference")


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
def test_state_after_a_prefix_continues_the_sequence(mode):
    """Split anywhere and pass x on: the same outputs as one pass (which equals the paper's
    loop), forward and backward; the state is x_{L-1} of the loop written out by hand."""
    p = _params(seed=4)
    u = torch.randn(2, 3, 9, dtype=F64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    full = _call(p, u, mode=mode)
    torch.testing.assert_close(full, _loop(p, u.detach(), "zoh"), rtol=1e-10, atol=1e-10)
    (grad_full,) = torch.autograd.grad(full.square().sum(), u)
    dA, dB = s4d_discretize(p["log_dt"], torch.complex(p["A_re"], p["A_im"]), torch.complex(p["B_re"], p["B_im"]))
    x = torch.zeros(2, 3, 4, dtype=torch.complex128)
    for t in range(9):
        x = dA * x + dB * u.detach()[..., t, None]
    for split in (0, 4, 9):
        head, state = _call(p, u[..., :split], mode=mode, return_state=True)
        tail, end = _call(p, u[..., split:], mode=mode, initial_state=state, return_state=True)
        joined = torch.cat([head, tail], dim=-1)
        torch.testing.assert_close(joined, full, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(end, x, rtol=1e-10, atol=1e-10)
        (grad,) = torch.autograd.grad(joined.square().sum(), u)
        torch.testing.assert_close(grad, grad_full, rtol=1e-9, atol=1e-9)
