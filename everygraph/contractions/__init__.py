"""everygraph.contractions: equivariant graph polynomials as compiled tensor contractions.

One of the two engines, in the layer above :mod:`everygraph.graphlib` (which it uses for
dense batches); it never imports :mod:`everygraph.sequence`. A basis element of the
equivariant polynomials is a small multigraph with 0, 1 or 2 special vertices
(:class:`Pattern`); :func:`basis` enumerates them, :func:`compile_plan` turns many patterns
into one shared opt_einsum contraction plan, :func:`evaluate` runs it on padded batches, and
:func:`computable` decides which GNN family computes which pattern, with a certificate.
:mod:`.probe` asks what a concrete model separates, next to what each class predicts
(:func:`probe_model`, :func:`linear_probe`).
"""

from .basis import basis, connected_patterns
from .draw import draw_pattern, draw_patterns
from .evaluate import ContractionMemoryError, dense_inputs, evaluate, evaluate_reference
from .expressivity import Verdict, analyze, computable, get_model, known_models
from .features import (
    NORMALIZATIONS,
    check_graph_inputs,
    check_normalize,
    check_outputs,
    dense_polynomial_features,
    polynomial_features,
    select_patterns,
)
from .pattern import Pattern
from .plan import ContractionPlan, compile, compile_plan
from .probe import (
    DEFAULT_MODEL_CLASSES,
    PAIR_FAMILIES,
    GraphPair,
    LinearProbeResult,
    ProbeReport,
    SeparationTest,
    available_model_classes,
    cfi_graph,
    generate_pairs,
    hom_counts,
    linear_probe,
    pair_theory,
    probe_graphs,
    probe_model,
    reliable_separation,
)
from .schedule import Workspace

__all__: list[str] = [
    "computable",
    "analyze",
    "Verdict",
    "get_model",
    "known_models",
    "Pattern",
    "basis",
    "connected_patterns",
    "compile_plan",
    "compile",
    "ContractionPlan",
    "evaluate",
    "evaluate_reference",
    "dense_inputs",
    "ContractionMemoryError",
    "Workspace",
    "select_patterns",
    "polynomial_features",
    "dense_polynomial_features",
    "check_normalize",
    "check_outputs",
    "check_graph_inputs",
    "NORMALIZATIONS",
    "draw_pattern",
    "draw_patterns",
    "GraphPair",
    "PAIR_FAMILIES",
    "generate_pairs",
    "cfi_graph",
    "hom_counts",
    "DEFAULT_MODEL_CLASSES",
    "available_model_classes",
    "pair_theory",
    "reliable_separation",
    "SeparationTest",
    "probe_model",
    "ProbeReport",
    "linear_probe",
    "LinearProbeResult",
    "probe_graphs",
]
