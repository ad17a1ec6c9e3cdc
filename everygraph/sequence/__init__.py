"""everygraph.sequence: the linear-recurrence engine on DAGs.

One of the two engines, in the layer above :mod:`everygraph.graphlib` (its structures and
kernels); it never imports :mod:`everygraph.contractions`.

:func:`scan` is the one recurrence (states on edges, a transition kind, boundary states);
``reference_scan``, ``wavefront_scan``, ``recurrent_scan``, ``chunked_scan``,
``lattice_scan``, ``chunked2d_scan`` and ``fused_lattice_scan`` are its executions under their own names; :func:`plstm_scan` (scalar kind)
and :func:`selective_scan` (Mamba-1, elementwise kind on a path),
:func:`gated_linear_attention` (GLA, diagonal kind), :func:`lightnet_scan` (LightNet's additive
recurrence, diagonal kind) and :func:`delta_product` (DeltaProduct/DeltaNet, householder kind)
are parameterisations; :func:`s4d` runs the diagonal kind on complex states (or as a convolution).
"""

from .dag_mamba import dag_selective_scan
from .delta_product import delta_product, delta_product_reference
from .gla import gated_linear_attention, gated_linear_attention_chunked, gated_linear_attention_reference
from .lightnet import lightnet_log_normalizer, lightnet_scan, lightnet_scan_reference, lightnet_step
from .grid_mamba import grid_mamba_gates, grid_selective_scan
from .distributed import combine_piece_states, path_scan_context_parallel, selective_scan_context_parallel
from .mamba import selective_scan, selective_scan_recurrent, selective_scan_reference
from .plstm import lattice_gates, plstm_grid_gating, plstm_grid_scan, plstm_scan
from .s4d import s4d, s4d_discretize, s4d_kernel
from .recurrence import (
    EXECUTIONS,
    SUPPORTED_KINDS,
    chunked2d_scan,
    chunked_scan,
    default_execution,
    fused_lattice_scan,
    lattice_scan,
    path_scan,
    recurrent_scan,
    reference_scan,
    scan,
    wavefront_scan,
)
from .transitions import KINDS, Boundary, ExponentialDecay, NodeWeight

__all__: list[str] = [
    "scan",
    "path_scan",
    "reference_scan",
    "wavefront_scan",
    "recurrent_scan",
    "chunked_scan",
    "lattice_scan",
    "chunked2d_scan",
    "fused_lattice_scan",
    "default_execution",
    "Boundary",
    "ExponentialDecay",
    "NodeWeight",
    "KINDS",
    "EXECUTIONS",
    "SUPPORTED_KINDS",
    "plstm_scan",
    "plstm_grid_scan",
    "plstm_grid_gating",
    "lattice_gates",
    "selective_scan",
    "selective_scan_context_parallel",
    "path_scan_context_parallel",
    "combine_piece_states",
    "selective_scan_reference",
    "selective_scan_recurrent",
    "grid_selective_scan",
    "dag_selective_scan",
    "delta_product",
    "delta_product_reference",
    "grid_mamba_gates",
    "gated_linear_attention",
    "gated_linear_attention_reference",
    "gated_linear_attention_chunked",
    "s4d",
    "s4d_kernel",
    "s4d_discretize",
    "lightnet_scan",
    "lightnet_scan_reference",
    "lightnet_log_normalizer",
    "lightnet_step",
]
