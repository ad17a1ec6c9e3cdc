"""PLSTM2d computed orientation by orientation, each on its own ``Lattice(shape, flip)`` (no
flipping of inputs, no batching of orientations): the comparison for the layer's batched and
dense forms. Imported by the test files beside it (pytest puts ``tests/nn`` on ``sys.path``)."""

import torch

from everygraph.graphlib import Lattice
from everygraph.nn import PLSTM2d
from everygraph.sequence import lattice_gates, plstm_scan


def per_orientation_forward(layer: PLSTM2d, x: torch.Tensor, execution: str) -> torch.Tensor:
    """One ``plstm_scan(..., execution=execution)`` per orientation, summed, then the layer's
    norm and output projection."""
    batch, height, width, _ = x.shape
    q, k, v = (t.reshape(batch, height * width, layer.num_heads, layer.head_dim) for t in layer.qkv(x))
    h = 0
    for flip, gates in zip(Lattice.orientations(2), layer.gates(x)):
        lattice = Lattice((height, width), flip)
        flat = lattice_gates(lattice, gates["source"], gates["transition"], gates["mark"], gates["direct"])
        h = h + plstm_scan(lattice, q, k, v, *flat, scale=layer.head_dim**-0.5, execution=execution)
    h = layer.norm(h.reshape(-1, layer.dim)).reshape(x.shape)
    return layer.out_proj(h)
