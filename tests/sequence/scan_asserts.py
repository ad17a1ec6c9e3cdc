"""What the scan tests share: one call of ``scan`` with a mode's boundary options, its outputs
and gradients, and their comparison in float64.

Imported by the test files beside it (pytest puts ``tests/sequence`` on ``sys.path``)."""

import torch

from everygraph.sequence import Boundary, scan

#: ``scan``'s positional tensors, in order
SCAN_INPUTS = ("q", "k", "v", "source", "transition", "mark", "direct")


def assert_same(got, want):
    """``got`` and ``want``: equal-length lists of tensors or None (outputs, then gradients)."""
    for a, b in zip(got, want, strict=True):
        if a is None or b is None:  # an input no output depends on: no gradient, or zeros
            assert all(t is None or not t.any() for t in (a, b))
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def scan_mode(lattice, tensors, execution, mode, kind="scalar"):
    """``scan`` on ``tensors`` (``SCAN_INPUTS``, and ``initial``, ``b_mark`` ... ``b_through``
    where ``mode`` names ``initial`` / ``boundary``; ``return`` asks for the states)."""
    kwargs = {}
    if "initial" in mode:
        kwargs["initial_state"] = tensors["initial"]
    if "return" in mode:
        kwargs["return_state"] = True
    if "boundary" in mode:
        kwargs["boundary"] = Boundary(tensors["b_mark"], tensors["b_source"], tensors["b_enter"], tensors["b_leave"],
                                      tensors["b_through"])
    return scan(lattice, *(tensors[n] for n in SCAN_INPUTS), kind=kind, execution=execution, **kwargs)


def scan_and_grads(lattice, leaves, execution, mode, kind="scalar"):
    """``[h, state or None, *gradients of every leaf]`` of :func:`scan_mode` under a loss that
    weighs every output and state entry differently."""
    out = scan_mode(lattice, leaves, execution, mode, kind)
    h, state = out if isinstance(out, tuple) else (out, None)
    loss = (h * torch.linspace(-1, 2, h.numel(), dtype=h.dtype).view_as(h)).sum()
    if state is not None:
        loss = loss + (state * torch.linspace(1, -1, state.numel(), dtype=h.dtype).view_as(state)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return [h, state, *grads]


def spy_on_fused_lattice(monkeypatch) -> list:
    """The structures ``scan`` hands to its compiled lattice loop from now on (a list that
    grows with every call), the loop itself still running."""
    import everygraph.sequence.recurrence as engine

    calls = []
    original = engine._fused_lattice

    def spy(*args):
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(engine, "_fused_lattice", spy)
    return calls
