"""The recurrent layers of one family take a lattice's grid flattened ``[B, N, C]`` (nodes
row-major) or unflattened ``[B, *shape, C]``, with the same result in the input's shape;
a grid of another shape is refused by name."""

from __future__ import annotations

import pytest
import torch

from everygraph.graphlib import Lattice
from everygraph.nn import S4D, DeltaProduct, GatedLinearAttention, LightNet

LAYERS = {
    "GatedLinearAttention": lambda: GatedLinearAttention(8, num_heads=2, gate_low_rank_dim=2),
    "DeltaProduct": lambda: DeltaProduct(8, num_heads=2),
    "LightNet": lambda: LightNet(8, num_heads=2, gate_low_rank_dim=2),
    "S4D": lambda: S4D(8, d_state=4, transposed=False),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 3)])
def test_unflattened_grid_equals_the_flat_nodes(name, shape):
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    lattice = Lattice(shape, (True,) + (False,) * (len(shape) - 1))
    x = torch.randn(2, lattice.num_nodes, 8, dtype=torch.float64)
    flat = layer(x, lattice)
    grid = layer(x.unflatten(1, shape), lattice)
    assert grid.shape == (2, *shape, 8)
    torch.testing.assert_close(grid.flatten(1, -2), flat)


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_grid_of_another_shape_is_refused(name):
    layer = LAYERS[name]()
    with pytest.raises(ValueError, match="x must have shape|u must have shape"):
        layer(torch.randn(2, 4, 3, 8), Lattice((3, 4)))
