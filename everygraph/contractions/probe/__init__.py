"""everygraph.contractions.probe: what does *your* model separate, next to what theory says.

The theory (:mod:`~everygraph.contractions.expressivity`) says which homomorphism counts a
model *class* can compute. The probe asks a concrete model (any callable on a PyG ``Batch``
returning graph embeddings ``[num_graphs, d]``, trained or not):

* **pairs** of non-isomorphic graphs with known status: 1-WL-equivalent regular pairs,
  strongly regular pairs, CFI pairs, pairs separated by exactly one basis pattern;
* **theory**: for each model class, does a pattern it computes (up to a stated number of
  edges) have different counts on the pair? (:func:`pair_theory`, with our own evaluator);
* **the model's test**: BREC's reliable paired comparison, Hotelling's :math:`T^2` against
  the spread over relabellings (:func:`reliable_separation`);
* **report**: a table, pair by pair (:func:`probe_model`, :class:`ProbeReport`);
* **linear probe**: held-out :math:`R^2` of each count read linearly off the embeddings
  (:func:`linear_probe`).

Example:
    >>> from everygraph.contractions import probe_model, generate_pairs
    >>> report = probe_model(model, pairs=generate_pairs(["regular", "cfi"]))  # doctest: +SKIP
    >>> print(report)                                                     # doctest: +SKIP

The command line: ``everygraph probe my_module:make_model``.
"""

from .cfi import DEFAULT_CFI_BASES, cfi_graph, cfi_pairs
from .homcounts import hom_counts, pattern_name, probe_patterns
from .linear_probe import LinearProbeResult, linear_probe, probe_graphs
from .pair import GraphPair, graph_to_data, permuted_data
from .regular import regular_pairs
from .reliable import (
    SeparationTest,
    embed_graphs,
    f_quantile,
    hotelling_t2,
    hotelling_threshold,
    reliable_separation,
)
from .report import ProbeReport, ProbeRow
from .run import PAIR_FAMILIES, generate_pairs, probe_model
from .single_pattern import find_single_pattern_pairs, single_pattern_pairs
from .strongly_regular import chang_graphs, latin_square_graph, strongly_regular_pairs
from .theory import DEFAULT_MODEL_CLASSES, ClassPrediction, PairTheory, available_model_classes, pair_theory

__all__ = [
    "GraphPair",
    "graph_to_data",
    "permuted_data",
    "regular_pairs",
    "strongly_regular_pairs",
    "chang_graphs",
    "latin_square_graph",
    "cfi_graph",
    "cfi_pairs",
    "DEFAULT_CFI_BASES",
    "single_pattern_pairs",
    "find_single_pattern_pairs",
    "PAIR_FAMILIES",
    "generate_pairs",
    "probe_patterns",
    "hom_counts",
    "pattern_name",
    "DEFAULT_MODEL_CLASSES",
    "available_model_classes",
    "ClassPrediction",
    "PairTheory",
    "pair_theory",
    "f_quantile",
    "hotelling_threshold",
    "hotelling_t2",
    "embed_graphs",
    "SeparationTest",
    "reliable_separation",
    "ProbeRow",
    "ProbeReport",
    "probe_model",
    "probe_graphs",
    "LinearProbeResult",
    "linear_probe",
]
