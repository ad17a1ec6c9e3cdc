"""A sequence split across 2 and 3 gloo ranks scans to the single-process result (float64):
outputs, final state and the gradients of every input, for Mamba's selective scan and the
pLSTM / linear-attention path scan (scalar, diagonal, elementwise transitions)."""

import pytest
import torch

from cp_cases import CONFIGS, PATH_KINDS, inputs, path_inputs, piece_names, run, run_path
from workers import LENGTHS

TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(params=sorted(LENGTHS))
def world(request, rank_results):
    return LENGTHS[request.param], [r["context_parallel"] for r in rank_results(request.param)]


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_selective_scan_context_parallel(world, config):
    lengths, results = world
    name, layout, gated, reverse = config
    x = inputs(layout, gated, sum(lengths), name.startswith("zero"))
    out, last, grads = run(x, layout, gated, reverse, None, True)
    pieces = [r["selective"][name] for r in results]
    torch.testing.assert_close(torch.cat([p[0] for p in pieces], -1), out, **TOL)
    torch.testing.assert_close(pieces[0 if reverse else -1][1], last, **TOL)
    for arg, want in grads.items():
        got = [p[2][arg] for p in pieces]
        got = torch.cat(got, -1) if arg in piece_names(x, layout) else sum(got)
        torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"grad of {arg}: {m}")


@pytest.mark.parametrize("config", PATH_KINDS, ids=[c[0] for c in PATH_KINDS])
def test_path_scan_context_parallel(world, config):
    lengths, results = world
    kind = config[0]
    h, last, grads = run_path(path_inputs(*config, sum(lengths)), kind, None, True)
    pieces = [r["path"][kind] for r in results]
    torch.testing.assert_close(torch.cat([p[0] for p in pieces], 1), h, **TOL)
    torch.testing.assert_close(pieces[-1][1], last, **TOL)
    for arg, want in grads.items():
        torch.testing.assert_close(torch.cat([p[2][arg] for p in pieces], 1), want, **TOL,
                                   msg=lambda m: f"grad of {arg}: {m}")
