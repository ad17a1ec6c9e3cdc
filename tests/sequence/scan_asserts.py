"""The comparison shared by the scan tests: outputs, states and gradients equal in float64.

Imported by the test files beside it (pytest puts ``tests/sequence`` on ``sys.path``)."""

import torch


def assert_same(got, want):
    """``got`` and ``want``: equal-length lists of tensors or None (outputs, then gradients)."""
    for a, b in zip(got, want, strict=True):
        if a is None or b is None:  # an input no output depends on: no gradient, or zeros
            assert all(t is None or not t.any() for t in (a, b))
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
