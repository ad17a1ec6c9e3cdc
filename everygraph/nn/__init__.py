"""everygraph.nn: PyG-style layers (``torch.nn.Module``) around the engines.

The layer above the engines :mod:`everygraph.sequence` and :mod:`everygraph.contractions`
(and :mod:`everygraph.graphlib`): pLSTM on sequences, grids and graphs, Mamba blocks, Graph Mamba (Graph-Mamba and GMN), gated linear attention, LightNet, LCM
aggregation, polynomial features, PPGN and S4D. Each layer computes its gates or inputs and calls
one engine function; the same argument conventions as PyG (``x``, ``edge_index``, ``batch``),
``reset_parameters()`` and a ``__repr__`` with its sizes. Beside :mod:`everygraph.transforms`
and :mod:`everygraph.datasets`, which it does not import.
"""

from .aggr import CommutativeMonoid, LCMAggregation, associativity_loss
from .delta_product import DeltaProduct
from .gla import GatedLinearAttention
from .gmn import GMN
from .graph_mamba import GraphMamba
from .lightnet import LightNet
from .mamba import InferenceParams, Mamba
from .mamba2d import Mamba2d
from .plstm1d import PLSTM1d
from .plstm2d import PLSTM2d
from .plstm_graph import PLSTMGraph
from .polynomial_features import PolynomialFeatures
from .ppgn import PPGN, PPGNBlock
from .s4d import S4D

__all__: list[str] = [
    "DeltaProduct",
    "Mamba",
    "Mamba2d",
    "InferenceParams",
    "GraphMamba",
    "GMN",
    "GatedLinearAttention",
    "LightNet",
    "LCMAggregation",
    "CommutativeMonoid",
    "associativity_loss",
    "PLSTM1d",
    "PLSTM2d",
    "PLSTMGraph",
    "PolynomialFeatures",
    "PPGN",
    "PPGNBlock",
    "S4D",
]
