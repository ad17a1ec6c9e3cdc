"""everygraph.nn."""

from .aggr import CommutativeMonoid, LCMAggregation, associativity_loss
from .graph_mamba import GraphMamba
from .mamba import InferenceParams, Mamba
from .mamba2d import Mamba2d
from .plstm1d import PLSTM1d
from .plstm2d import PLSTM2d
from .plstm_graph import PLSTMGraph
from .polynomial_features import PolynomialFeatures
from .ppgn import PPGN, PPGNBlock

__all__: list[str] = [
    "Mamba",
    "Mamba2d",
    "InferenceParams",
    "GraphMamba",
    "LCMAggregation",
    "CommutativeMonoid",
    "associativity_loss",
    "PLSTM1d",
    "PLSTM2d",
    "PLSTMGraph",
    "PolynomialFeatures",
    "PPGN",
    "PPGNBlock",
]
