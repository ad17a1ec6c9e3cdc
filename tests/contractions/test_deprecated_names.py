"""Renamed public names: the new ones work, the old ones still work for one release and warn."""

import pytest
import torch

from everygraph import contractions
from everygraph.contractions import Pattern, compile_plan, evaluate
from everygraph.contractions.expressivity import (
    KFWLDecider,
    MPNNDecider,
    PPGNDecider,
    SubgraphGNNDecider,
)


def test_compile_plan_and_deprecated_compile_agree():
    patterns = [Pattern.from_string("ab,bc,ca->"), Pattern.from_string("ab,bc->a")]
    k4 = (torch.ones(1, 4, 4) - torch.eye(4)).double()
    new = evaluate(compile_plan(patterns), k4)
    with pytest.warns(DeprecationWarning, match="compile_plan"):
        old_plan = contractions.compile(patterns)
    old = evaluate(old_plan, k4)
    for key in new:
        torch.testing.assert_close(new[key], old[key])
    assert new["invariant"].item() == 24.0  # hom(triangle, K4) = 4 * 3 * 2


@pytest.mark.parametrize(
    "old, new",
    [("PPGN", PPGNDecider), ("MPNN", MPNNDecider), ("SubgraphGNN", SubgraphGNNDecider), ("KFWL", KFWLDecider)],
)
def test_decider_aliases_warn(old, new):
    from everygraph.contractions import expressivity
    from everygraph.contractions.expressivity import models

    for module in (expressivity, models):
        with pytest.warns(DeprecationWarning, match=new.__name__):
            assert getattr(module, old) is new


def test_layer_and_decider_have_different_names():
    from everygraph.nn import PPGN

    assert PPGN is not PPGNDecider and issubclass(PPGN, torch.nn.Module)
    assert not hasattr(contractions, "PPGN")
    assert contractions.get_model("ppgn").decide("ab,bc,ca->").computable
