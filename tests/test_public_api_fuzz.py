"""Bad input gets a clear answer from every public entry point.

Every name exported in a subpackage's ``__all__`` is listed in :data:`ENTRIES` with a valid
call. Each of its arguments is then replaced by malformed values of its kind (a string, a
Python list where a tensor is due, a float or bool where an integer tensor is due, a complex
tensor, a fractional or negative size, an unknown option ...): the call must raise a
``TypeError`` or ``ValueError`` whose message names the argument; anything else (an obscure
internal error, or silently accepting it) fails. Hand-written cases below check the inputs
that are valid but unusual (empty, lazy sizes) give correct results, and the ones that used to
give a silently wrong result.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data

from everygraph import contractions, datasets, graphlib, nn, sequence, transforms
from everygraph.contractions import expressivity
from everygraph.contractions import probe as cprobe
from everygraph.nn import aggr

F64 = torch.float64
_TMP = __import__("pathlib").Path(__import__("tempfile").mkdtemp(prefix="everygraph-fuzz-"))

SUBPACKAGES = [
    "everygraph.graphlib",
    "everygraph.sequence",
    "everygraph.contractions",
    "everygraph.contractions.expressivity",
    "everygraph.contractions.probe",
    "everygraph.nn",
    "everygraph.nn.aggr",
    "everygraph.transforms",
    "everygraph.datasets",
]


# ----------------------------------------------------------------------------- argument kinds
def _t(*rows, dtype=torch.long):
    return torch.tensor(rows, dtype=dtype)


def malformed(kind: str, value: Any) -> list[tuple[str, Any]]:
    """(label, bad value) pairs for an argument of ``kind`` whose valid value is ``value``."""
    bad: list[tuple[str, Any]] = [("a string", "abc")]
    if kind == "index":  # integer tensor
        bad += [
            ("a list", value.tolist()),
            ("a float tensor", value.double()),
            ("a bool tensor", value.bool()),
            ("a complex tensor", value.to(torch.complex64)),
        ]
    elif kind == "tensor":  # any tensor
        bad += [("a list", value.tolist())]
    elif kind == "batched":  # floating tensor, any leading axes
        bad += [("a list", value.tolist()), ("an integer tensor", value.long()), ("a complex tensor", value.to(torch.complex128))]
    elif kind == "real":  # floating tensor
        bad += [
            ("a list", value.tolist()),
            ("an integer tensor", value.long()),
            ("a complex tensor", value.to(torch.complex128)),
            ("an extra axis", value[None, None]),
        ]
    elif kind == "complex":  # complex tensor
        bad += [
            ("a list", value.tolist()),
            ("a real tensor", value.real.clone()),
            ("an integer tensor", value.real.long()),
            ("an extra axis", value[None, None]),
        ]
    elif kind == "count":  # a positive integer
        bad += [("a fraction", 2.5), ("zero", 0), ("a negative number", -3), ("a bool", True), ("None", None)]
    elif kind == "size":  # a non-negative integer
        bad += [("a fraction", 2.5), ("a negative number", -3), ("a bool", True)]
    elif kind == "option":  # one of several strings
        bad += [("an unknown option", "no-such-option"), ("a number", 3)]
    elif kind == "flag":
        bad = [("a string", "yes"), ("None", None), ("a tensor", torch.ones(2))]
    elif kind == "graph":  # a networkx graph
        bad += [("None", None), ("a list", [(0, 1)])]
    elif kind == "pattern":
        bad += [("None", None), ("a number", 3), ("a malformed einsum", "ab,b!->")]
    elif kind == "callable":
        bad = [("a string", "add"), ("None", None), ("a number", 3)]
    elif kind == "structure":
        bad = [("None", None), ("a string", "abc"), ("a tensor", torch.zeros(2, 2, dtype=torch.long))]
    elif kind == "outputs":  # a sequence of output names
        bad += [("an unknown name", ("node", "vertex")), ("None", None)]
    else:
        raise AssertionError(f"unknown kind {kind}")
    return bad


@dataclass
class Entry:
    """A public name, a valid call ``call(**args)`` and the kind of each argument to fuzz."""

    name: str
    call: Callable[..., Any]
    args: Callable[[], dict]
    kinds: dict[str, str] = field(default_factory=dict)
    # extra hand-made (label, argument, bad value) cases
    extra: list[tuple[str, str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- valid inputs
EDGES = _t([0, 1, 1, 2], [1, 0, 2, 1])  # the path 0 - 1 - 2, both directions
DAG_EDGES = _t([0, 1], [1, 2])
BATCH = _t(0, 0, 1)


def scan_inputs(shape: tuple[int, ...] = (3,)) -> dict:
    """Valid flat inputs of the scalar-kind scan on a lattice (the path 0 -> 1 -> 2 by default;
    B = H = 1, dk = dv = 2)."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    lattice = graphlib.Lattice(shape)
    dag = lattice.to_dag()
    n, e, t = dag.num_nodes, dag.num_edges, dag.line_graph().edge_index.shape[1]
    return dict(
        structure=lattice,
        q=r(1, n, 1, 2), k=r(1, n, 1, 2), v=r(1, n, 1, 2),
        source=r(1, e, 1), transition=r(1, t, 1), mark=r(1, e, 1), direct=r(1, n, 1),
    )


def path_inputs() -> dict:
    """Valid inputs of ``path_scan``: a path of L = 3 positions, gates per position."""
    x = scan_inputs()
    g = torch.Generator().manual_seed(2)
    return dict(q=x["q"], k=x["k"], v=x["v"], source=torch.rand(1, 3, 1, generator=g, dtype=F64),
                transition=torch.rand(1, 3, 1, generator=g, dtype=F64), mark=torch.rand(1, 3, 1, generator=g, dtype=F64),
                direct=x["direct"])


def grid_inputs() -> dict:
    """Valid inputs of the 2D selective scan: B = 1, a 2 x 3 grid, D = 2 channels, N = 2."""
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    return dict(u=r(1, 2, 3, 2), dt=r(1, 2, 3, 2), A=-r(2, 2), B=r(1, 2, 3, 2), C=r(1, 2, 3, 2), split=None)


def dag_mamba_inputs() -> dict:
    """Valid inputs of the selective scan on the DAG 0 -> 1 -> 2 (D = 2 channels, N = 2)."""
    g = torch.Generator().manual_seed(4)
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    return dict(dag=graphlib.DAG(DAG_EDGES, 3), u=r(3, 2), dt=r(3, 2), A=-r(2, 2), B=r(3, 2), C=r(3, 2))


def grid_scan_inputs() -> dict:
    """Valid dense inputs of the 2D pLSTM scan: B = H = 1, a 2 x 3 grid, dk = dv = 2."""
    g = torch.Generator().manual_seed(5)
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(q=r(1, 2, 3, 1, 2), k=r(1, 2, 3, 1, 2), v=r(1, 2, 3, 1, 2), source=r(1, 2, 3, 1, 2),
                transition=r(1, 2, 3, 1, 2, 2) * 0.5, mark=r(1, 2, 3, 1, 2), direct=r(1, 2, 3, 1))


def grid_gating_inputs() -> dict:
    """Valid gates of the 2D pLSTM gating matrix: B = H = 1, a 2 x 3 grid, two orientations."""
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(source=r(1, 2, 3, 2, 1, 2), transition=r(1, 2, 3, 2, 1, 2, 2) * 0.5, mark=r(1, 2, 3, 2, 1, 2),
                direct=r(1, 2, 3, 2, 1), flips=[(False, False), (True, False)])


def delta_inputs() -> dict:
    """Valid DeltaProduct inputs on a path of 3 nodes: B = H = 1, n_h = 2, dk = dv = 2."""
    g = torch.Generator().manual_seed(6)
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    k = torch.nn.functional.normalize(r(1, 3, 1, 2, 2), dim=-1)
    return dict(q=r(1, 3, 1, 2), k=k, v=r(1, 3, 1, 2, 2), beta=r(1, 3, 1, 2))


def gla_inputs() -> dict:
    """Valid gated-linear-attention inputs on 3 positions: B = H = 1, dk = dv = 2."""
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(q=r(1, 3, 1, 2), k=r(1, 3, 1, 2), v=r(1, 3, 1, 2), log_alpha=-r(1, 3, 1, 2))


def s4d_inputs() -> dict:
    """Valid S4D inputs: batch 1, H = 2 channels, n = 3 complex modes, L = 5, float64."""
    g = torch.Generator().manual_seed(8)
    r = lambda *s: torch.rand(*s, generator=g, dtype=F64)  # noqa: E731
    c = lambda *s: torch.complex(r(*s), r(*s))  # noqa: E731
    A = torch.complex(-0.5 - r(2, 3), r(2, 3))
    return dict(u=r(1, 2, 5), log_dt=r(2) - 3, A=A, B=c(2, 3), C=c(2, 3), D=r(2))


S4D_KINDS = dict(log_dt="real", A="complex", B="complex", C="complex", discretization="option")


def lightnet_inputs() -> dict:
    """Valid LightNet inputs on 3 positions: B = H = 1, dk = dv = 2."""
    g = torch.Generator().manual_seed(9)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    return dict(q=r(1, 3, 1, 2), k=r(1, 3, 1, 2), v=r(1, 3, 1, 2))


SCAN_KINDS = dict(structure="structure", q="real", k="real", v="real", source="real", transition="real", mark="real", direct="real")


def mamba_inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(1, 2, 5), delta=r(1, 2, 5), A=-torch.rand(2, 3, generator=g), B=r(1, 3, 5), C=r(1, 3, 5))


def module_call(make: Callable[[], torch.nn.Module]) -> Callable[..., Any]:
    return lambda **kw: make()(**kw)


def adjacency() -> torch.Tensor:
    return torch.tensor([[[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]])


def probe_model(batch):
    """A tiny graph-embedding callable for the probe's entries: node count and degree sum."""
    ones = torch.ones(batch.num_nodes, 1)
    deg = torch.bincount(batch.edge_index[0], minlength=batch.num_nodes).float()[:, None]
    return torch.zeros(batch.num_graphs, 2).index_add_(0, batch.batch, torch.cat([ones, deg], 1))


def probe_pair() -> "cprobe.GraphPair":
    return cprobe.GraphPair("C6 vs 2xC3", "regular", nx.cycle_graph(6),
                            nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3)))


def brec_root() -> str:
    """A BREC folder with one graph6 file of two pairs (written once)."""
    import numpy as np

    raw = _TMP / "brec" / "raw"
    if not (raw / "pairs.npy").exists():
        raw.mkdir(parents=True, exist_ok=True)
        graphs = [nx.cycle_graph(6), nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))] * 2
        np.save(raw / "pairs.npy", np.array([nx.to_graph6_bytes(g, header=False).strip() for g in graphs], dtype=object))
    return str(_TMP / "brec")


PROBE_GRAPHS = [nx.cycle_graph(k) for k in (3, 4, 5, 6)] + [nx.path_graph(k) for k in (3, 4, 5, 6)]


ENTRIES: list[Entry] = [
    # ---------------------------------------------------------------- graphlib
    Entry("DAG", graphlib.DAG, lambda: dict(edge_index=DAG_EDGES, num_nodes=3, batch=BATCH), dict(edge_index="index", num_nodes="size"),
          extra=[("batch disagrees with ptr", "ptr", _t(0, 1, 3)), ("a float batch", "batch", BATCH.double())]),
    Entry("LineGraph", lambda **kw: graphlib.LineGraph(**kw).edge_index.shape,
          lambda: dict(edge_index=_t([0], [1]), node=_t(1))),  # a named tuple of results
    Entry("Lattice", graphlib.Lattice, lambda: dict(shape=(2, 3)), dict(),
          extra=[("None", "shape", None), ("a fraction", "shape", (2.5,)), ("a zero size", "shape", (0, 3)),
                 ("a string", "shape", "ab"), ("flip of the wrong length", "flip", (True,)), ("flip as a string", "flip", "tf")]),
    Entry("path_graph", graphlib.path_graph, lambda: dict(length=4), dict(length="count")),
    Entry("packed_paths", graphlib.packed_paths, lambda: dict(cu_seqlens=_t(0, 2, 5)), dict(cu_seqlens="index", reverse="flag"),
          extra=[("decreasing cu_seqlens", "cu_seqlens", _t(0, 3, 2)), ("cu_seqlens not from 0", "cu_seqlens", _t(1, 3))]),
    Entry("dagify", graphlib.dagify, lambda: dict(edge_index=EDGES, num_nodes=3, order="degree"),
          dict(edge_index="index", num_nodes="size", order="option"),
          extra=[("a float order tensor", "order", torch.tensor([0.0, 1, 2])), ("a seed string", "seed", "abc")]),
    Entry("node_order", graphlib.node_order, lambda: dict(edge_index=EDGES, num_nodes=3, order="degree"),
          dict(edge_index="index", num_nodes="size", order="option"),
          extra=[("not a permutation", "order", _t(0, 0, 1)), ("a float batch", "batch", BATCH.double()),
                 ("an unsorted batch", "batch", _t(1, 0, 0))]),
    Entry("undirected_degree", graphlib.undirected_degree, lambda: dict(edge_index=EDGES, num_nodes=3),
          dict(edge_index="index", num_nodes="size"), extra=[("too few nodes", "num_nodes", 2)]),
    Entry("prune_to_multitree", graphlib.prune_to_multitree, lambda: dict(dag=graphlib.DAG(DAG_EDGES, 3)),
          dict(dag="structure")),
    Entry("from_networkx", graphlib.from_networkx, lambda: dict(graph=nx.path_graph(3)), dict(graph="graph")),
    Entry("to_networkx", graphlib.to_networkx, lambda: dict(data=Data(edge_index=EDGES, num_nodes=3)),
          dict(data="structure")),
    Entry("random_walks", graphlib.random_walks, lambda: dict(edge_index=EDGES, num_nodes=3, walk_length=2, num_walks=2, batch=_t(0, 0, 0)),
          dict(edge_index="index", num_nodes="size", walk_length="size", num_walks="count", seed="size", batch="index",
               stream="size"),
          extra=[("an out-of-range edge", "edge_index", _t([0], [3])), ("an edge across graphs", "batch", _t(0, 0, 1))]),
    Entry("random_walk_tokens", graphlib.random_walk_tokens,
          lambda: dict(edge_index=EDGES, num_nodes=3, walk_length=2, tokens_per_length=2, walks_per_token=2, batch=_t(0, 0, 0)),
          dict(edge_index="index", num_nodes="size", walk_length="size", tokens_per_length="count", walks_per_token="count",
               seed="size", batch="index")),
    Entry("WalkTokens.token", lambda **kw: graphlib.random_walk_tokens(**kw).token,
          lambda: dict(edge_index=EDGES, num_nodes=3, walk_length=1), dict(edge_index="index", walk_length="size")),
    Entry("random_walk_encoding", graphlib.random_walk_encoding, lambda: dict(edge_index=EDGES, num_nodes=3, steps=3, batch=_t(0, 0, 0)),
          dict(edge_index="index", num_nodes="size", steps="count", batch="index")),
    Entry("scatter", graphlib.scatter, lambda: dict(src=torch.rand(3, 2), index=_t(0, 1, 1), dim_size=2, reduce="mean"),
          dict(src="tensor", index="index", dim_size="size", reduce="option"),
          extra=[("an out-of-range index", "index", _t(0, 1, 5)), ("a negative index", "index", _t(0, -1, 1)),
                 ("an index of the wrong length", "index", _t(0, 1)), ("a dim out of range", "dim", 3),
                 ("an unknown backend", "backend", "no-such-backend")]),
    Entry("segment", graphlib.segment, lambda: dict(src=torch.rand(3, 2), ptr=_t(0, 1, 3), reduce="max"),
          dict(src="tensor", ptr="index", reduce="option"),
          extra=[("ptr not ending at the size", "ptr", _t(0, 1, 2)), ("decreasing ptr", "ptr", _t(0, 2, 1, 3))]),
    Entry("tree_reduce", graphlib.tree_reduce, lambda: dict(x=torch.rand(3, 2), index=_t(0, 1, 1), combine=torch.add),
          dict(x="tensor", index="index", combine="callable"),
          extra=[("an identity of the wrong shape", "identity", torch.zeros(5))]),
    Entry("scatter_backend_info", graphlib.scatter_backend_info, lambda: dict()),
    Entry("CycleError", graphlib.CycleError, lambda: dict(cycle=[0, 1])),
    Entry("check_size", graphlib.check_size, lambda: dict(value=3, name="value"), dict(value="count")),
    Entry("check_choice", graphlib.check_choice, lambda: dict(value="a", name="value", choices=("a", "b")), dict(value="option")),
    Entry("check_flag", graphlib.check_flag, lambda: dict(value=True, name="value"), dict(value="flag")),
    Entry("check_number", graphlib.check_number, lambda: dict(value=0.5, name="value", minimum=0.0, maximum=1.0),
          extra=[("a string", "value", "abc"), ("a bool", "value", True), ("NaN", "value", float("nan")), ("None", "value", None),
                 ("below the minimum", "value", -1.0), ("above the maximum", "value", 2), ("a tensor", "value", torch.ones(2))]),
    Entry("check_callable", graphlib.check_callable, lambda: dict(value=torch.add, name="value"), dict(value="callable")),
    Entry("check_tensor", graphlib.check_tensor, lambda: dict(value=torch.rand(2, 3), name="value", ndim=2), dict(value="real")),
    Entry("check_edge_index", graphlib.check_edge_index, lambda: dict(edge_index=EDGES, num_nodes=3),
          dict(edge_index="index", num_nodes="size")),
    Entry("check_batch", graphlib.check_batch, lambda: dict(batch=BATCH, num_nodes=3), dict(batch="index")),
    Entry("check_ptr", graphlib.check_ptr, lambda: dict(ptr=_t(0, 2, 3), length=3), dict(ptr="index"),
          extra=[("ptr not ending at the length", "ptr", _t(0, 1, 2))]),
    Entry("ptr_from_batch", graphlib.ptr_from_batch, lambda: dict(batch=BATCH), dict(batch="index")),
    Entry("IndexDtypeError", graphlib.IndexDtypeError, lambda: dict()),
    Entry("to_dense_pairs", graphlib.to_dense_pairs, lambda: dict(x=torch.rand(3, 2), edge_index=EDGES, batch=BATCH),
          dict(x="real", edge_index="index", batch="index"),
          extra=[("an out-of-range edge", "edge_index", _t([0], [3])), ("an unsorted batch", "batch", _t(1, 0, 0))]),
    Entry("to_simple_graph", graphlib.to_simple_graph,
          lambda: dict(edge_index=torch.cat([EDGES, _t([1], [1])], 1), num_nodes=3, edge_attr=torch.rand(5, 2)),
          dict(edge_index="index", num_nodes="size", edge_attr="tensor"),
          extra=[("edge_attr of the wrong length", "edge_attr", torch.rand(4, 2)), ("too few nodes", "num_nodes", 1)]),
    Entry("check_index", graphlib.check_index, lambda: dict(index=_t(0, 1, 1), length=3, dim_size=2),
          dict(index="index", dim_size="size"), extra=[("an index out of range", "index", _t(0, 1, 2))]),
    Entry("compute_dtype", graphlib.compute_dtype, lambda: dict()),
    Entry("upcast", graphlib.upcast, lambda: dict(t=torch.rand(2).half()), dict(t="tensor")),
    # ---------------------------------------------------------------- sequence
    Entry("plstm_grid_scan", sequence.plstm_grid_scan, grid_scan_inputs,
          dict(q="real", k="real", v="real", source="real", transition="real", mark="real", direct="real")),
    Entry("plstm_grid_gating", sequence.plstm_grid_gating, grid_gating_inputs,
          dict(source="real", transition="real", mark="real", direct="real"),
          extra=[("a string", "flips", "ab"), ("one orientation too few", "flips", [(False, False)]),
                 ("ints, not bools", "flips", [(0, 0), (1, 0)])]),
    Entry("delta_product", sequence.delta_product, lambda: dict(structure=graphlib.Lattice((3,)), **delta_inputs()),
          dict(structure="structure", q="real", k="real", v="real", beta="real")),
    Entry("delta_product_reference", sequence.delta_product_reference, delta_inputs,
          dict(q="real", k="real", v="real", beta="real")),
    Entry("gated_linear_attention", sequence.gated_linear_attention, lambda: dict(structure=graphlib.Lattice((3,)), **gla_inputs()),
          dict(q="real", k="real", v="real", log_alpha="real"), extra=[("a string", "structure", "abc")]),
    Entry("lightnet_step", sequence.lightnet_step, lambda: dict(
        **{name: t[:, 0] for name, t in gla_inputs().items() if name != "log_alpha"},
        state=(torch.zeros(1, 1, 2, 2, dtype=F64), torch.zeros(1, 1, 2, dtype=F64))), dict(q="real", k="real", v="real")),
    Entry("gated_linear_attention_reference", sequence.gated_linear_attention_reference, gla_inputs,
          dict(q="real", k="real", v="real", log_alpha="real")),
    Entry("gated_linear_attention_chunked", sequence.gated_linear_attention_chunked, gla_inputs,
          dict(q="real", k="real", v="real", log_alpha="real")),
    Entry("chunked2d_scan", sequence.chunked2d_scan, lambda: scan_inputs((2, 2)), dict(SCAN_KINDS, structure="structure")),
    Entry("fused_lattice_scan", sequence.fused_lattice_scan, lambda: scan_inputs((2, 2)), dict(SCAN_KINDS, structure="structure")),
    Entry("selective_scan_recurrent", sequence.selective_scan_recurrent, mamba_inputs,
          dict(u="real", delta="real", A="real", B="real", C="real")),
    Entry("dag_selective_scan", sequence.dag_selective_scan, dag_mamba_inputs,
          dict(dag="structure", u="real", dt="real", A="real", B="real", C="real")),
    Entry("plstm_scan", sequence.plstm_scan, scan_inputs, SCAN_KINDS),
    Entry("scan", sequence.scan, scan_inputs, SCAN_KINDS, extra=[("an unknown kind", "kind", "no-such-kind")]),
    Entry("reference_scan", sequence.reference_scan, scan_inputs, SCAN_KINDS),
    Entry("wavefront_scan", sequence.wavefront_scan, scan_inputs, SCAN_KINDS),
    Entry("recurrent_scan", sequence.recurrent_scan, scan_inputs, SCAN_KINDS),
    Entry("chunked_scan", sequence.chunked_scan, scan_inputs, SCAN_KINDS),
    Entry("lattice_scan", sequence.lattice_scan, scan_inputs, SCAN_KINDS),
    Entry("path_scan", sequence.path_scan, path_inputs, {k: v for k, v in SCAN_KINDS.items() if k != "structure"}),
    Entry("default_execution", sequence.default_execution, lambda: dict(structure=graphlib.Lattice((3,)), kind="scalar"),
          dict(structure="structure", kind="option")),
    Entry("Boundary", sequence.Boundary, lambda: dict(mark=torch.rand(1, 3, 1))),  # checked where a scan uses it
    Entry("ExponentialDecay", sequence.ExponentialDecay, lambda: dict(rate=torch.rand(1, 3, 2), A=-torch.rand(2, 4, 1))),
    Entry("NodeWeight", sequence.NodeWeight, lambda: dict(weight=torch.rand(1, 3, 2))),  # checked where a scan uses it
    Entry("lattice_gates", sequence.lattice_gates,
          lambda: dict(lattice=graphlib.Lattice((3,)), source=torch.rand(1, 3, 1, 1), transition=torch.rand(1, 3, 1, 1, 1),
                       mark=torch.rand(1, 3, 1, 1)),
          dict(lattice="structure", source="real", transition="real", mark="real")),
    Entry("selective_scan", sequence.selective_scan, mamba_inputs, dict(u="real", delta="real", A="real", B="real", C="real")),
    Entry("selective_scan_reference", sequence.selective_scan_reference, mamba_inputs,
          dict(u="real", delta="real", A="real", B="real", C="real")),
    Entry("selective_scan_context_parallel", sequence.selective_scan_context_parallel, mamba_inputs,
          dict(u="real", delta="real", A="real", B="real", C="real")),
    Entry("path_scan_context_parallel", sequence.path_scan_context_parallel, path_inputs,
          {k: v for k, v in SCAN_KINDS.items() if k != "structure"}),
    Entry("combine_piece_states", sequence.combine_piece_states,
          lambda: dict(total_transition=torch.rand(2, 3), final_state=torch.rand(2, 3)),
          dict(total_transition="real", final_state="real")),
    Entry("grid_selective_scan", sequence.grid_selective_scan, grid_inputs,
          dict(u="real", dt="real", A="real", B="real", C="real")),
    Entry("grid_mamba_gates", sequence.grid_mamba_gates,
          lambda: {k: v for k, v in grid_inputs().items() if k in ("dt", "A", "split")}, dict(dt="real", A="real")),
    Entry("s4d", sequence.s4d, s4d_inputs, dict(S4D_KINDS, u="real", D="real", mode="option"),
          extra=[("a D of the wrong length", "D", torch.rand(3, dtype=F64)), ("a float32 u", "u", torch.rand(1, 2, 5)),
                 ("u with the wrong channel count", "u", torch.rand(1, 3, 5, dtype=F64)),
                 ("a string structure", "structure", "abc"), ("a float cu_seqlens", "cu_seqlens", torch.tensor([0.0, 5.0])),
                 ("a cu_seqlens not ending at L", "cu_seqlens", torch.tensor([0, 4])), ("a string reverse", "reverse", "yes")]),
    Entry("s4d_kernel", sequence.s4d_kernel, lambda: dict({k: v for k, v in s4d_inputs().items() if k not in ("u", "D")}, length=4),
          dict(S4D_KINDS, length="size"),
          extra=[("a complex log_dt", "log_dt", torch.zeros(2, dtype=torch.complex128)), ("B of another shape", "B", torch.ones(2, 4, dtype=torch.complex128))]),
    Entry("s4d_discretize", sequence.s4d_discretize, lambda: {k: v for k, v in s4d_inputs().items() if k in ("log_dt", "A", "B")},
          {k: v for k, v in S4D_KINDS.items() if k != "C"},
          extra=[("log_dt of the wrong length", "log_dt", torch.zeros(3, dtype=F64))]),
    Entry("lightnet_scan", sequence.lightnet_scan, lambda: dict(structure=graphlib.Lattice((3,)), **lightnet_inputs()),
          dict(q="real", k="real", v="real", execution="option"),
          extra=[("a string", "structure", "abc"), ("a tensor", "structure", torch.zeros(2, 2, dtype=torch.long)),
                 ("a structure of the wrong size", "structure", graphlib.Lattice((4,))), ("a string scale", "scale", "abc"),
                 ("an execution without the diagonal kind", "execution", "no-such-execution"),
                 ("a float cu_seqlens", "cu_seqlens", torch.tensor([0.0, 3.0])), ("a cu_seqlens not ending at N", "cu_seqlens", torch.tensor([0, 2])),
                 ("a string reverse", "reverse", "yes")]),
    Entry("lightnet_scan_reference", sequence.lightnet_scan_reference, lambda: dict(structure=None, **lightnet_inputs()),
          dict(q="real", k="real", v="real"), extra=[("a string", "structure", "abc"), ("a string scale", "scale", "abc")]),
    Entry("lightnet_log_normalizer", sequence.lightnet_log_normalizer,
          lambda: dict(dag=graphlib.DAG(DAG_EDGES, 3), k=lightnet_inputs()["k"]), dict(dag="structure", k="real"),
          extra=[("k with the wrong node count", "k", torch.rand(1, 4, 1, 2, dtype=F64))]),
    # ---------------------------------------------------------------- contractions
    Entry("Workspace", lambda **kw: contractions.evaluate(contractions.compile(["ab->"]), adjacency(), **kw),
          lambda: dict(workspace=contractions.Workspace()), extra=[("a dict", "workspace", {})]),
    Entry("Pattern", contractions.Pattern, lambda: dict(edges=[(0, 1), (1, 2)], special=[0], num_vertices=3),
          extra=[("a fractional vertex", "edges", [(0, 1.5)]), ("a negative vertex", "edges", [(0, -1)]),
                 ("a string", "edges", "ab"), ("special out of range", "special", [7]), ("special as a string", "special", "a"),
                 ("too few vertices", "num_vertices", 2), ("channels of the wrong length", "channels", [0])]),
    Entry("basis", contractions.basis, lambda: dict(degree=2, output="node"),
          dict(degree="size", output="option", domain="option")),
    Entry("connected_patterns", contractions.connected_patterns, lambda: dict(degree=2, output="node"),
          dict(degree="size", output="option", domain="option")),
    Entry("compile", contractions.compile, lambda: dict(patterns=["ab,bc->ac"]),
          dict(n_hint="count", optimize="option"),
          extra=[("a string where a list is due", "patterns", "ab,bc->ac"), ("a number", "patterns", 3),
                 ("a malformed pattern", "patterns", ["ab,b!->"])]),
    Entry("evaluate", lambda **kw: contractions.evaluate(contractions.compile(["ab,bc->ac", "ab->"]), **kw),
          lambda: dict(adj=adjacency(), mask=torch.ones(1, 3, dtype=torch.bool)), dict(adj="real"),
          extra=[("an integer adjacency", "adj", adjacency().long()), ("a complex adjacency", "adj", adjacency().to(torch.complex64)),
                 ("a float mask", "mask", torch.ones(1, 3)), ("a mask of the wrong shape", "mask", torch.ones(1, 4, dtype=torch.bool)),
                 ("a non-square adjacency", "adj", torch.zeros(1, 3, 4))]),
    Entry("evaluate_reference", lambda **kw: contractions.evaluate_reference([contractions.Pattern.from_string("ab,bc->ac")], **kw),
          lambda: dict(adj=adjacency()), dict(adj="real")),
    Entry("compile_plan", contractions.compile_plan, lambda: dict(patterns=["ab,bc->ac"]),
          dict(n_hint="count", optimize="option"), extra=[("a string where a list is due", "patterns", "ab,bc->ac")]),
    Entry("dense_inputs", contractions.dense_inputs, lambda: dict(adj=adjacency(), mask=torch.ones(1, 3, dtype=torch.bool)),
          dict(adj="real"), extra=[("a float mask", "mask", torch.ones(1, 3))]),
    Entry("select_patterns", contractions.select_patterns, lambda: dict(degree=2, outputs=("node",)),
          dict(degree="size", outputs="outputs"), extra=[("a number", "select", 3)]),
    Entry("polynomial_features", lambda **kw: contractions.polynomial_features(contractions.compile_plan(["ab->a"]), **kw),
          lambda: dict(edge_index=EDGES, batch=_t(0, 0, 1)), dict(edge_index="index", batch="index", num_nodes="size"),
          extra=[("an unsorted batch", "batch", _t(1, 0, 0)), ("an unknown normalize", "normalize", "max"),
                 ("a string", "coalesce", "yes"), ("None", "coalesce", None)]),
    Entry("dense_polynomial_features",
          lambda **kw: contractions.dense_polynomial_features(contractions.compile_plan(["ab->a"]), **kw),
          lambda: dict(adj=adjacency()), dict(adj="real")),
    Entry("check_normalize", contractions.check_normalize, lambda: dict(normalize="log"), dict(normalize="option")),
    Entry("check_outputs", contractions.check_outputs, lambda: dict(outputs=("node",)), dict(outputs="outputs")),
    Entry("check_graph_inputs", contractions.check_graph_inputs,
          lambda: dict(edge_index=EDGES, batch=BATCH, num_nodes=None, edge_attr=None), dict(edge_index="index", batch="index")),
    Entry("draw_pattern", lambda **kw: contractions.draw_pattern(**kw) and None, lambda: dict(pattern="ab,bc->a"),
          dict(pattern="pattern")),
    Entry("draw_patterns", contractions.draw_patterns, lambda: dict(patterns=["ab->a"], path=str(_TMP / "p.png")),
          extra=[("a number", "patterns", 3)]),
    Entry("ContractionPlan", lambda **kw: contractions.compile(**kw).flops(3), lambda: dict(patterns=["ab->ab"])),
    Entry("ContractionMemoryError", contractions.ContractionMemoryError, lambda: dict()),
    # ---------------------------------------------------------------- expressivity
    Entry("computable", contractions.computable, lambda: dict(pattern="ab,bc->ac", model="ppgn"),
          dict(pattern="pattern", model="option")),
    Entry("analyze", contractions.analyze, lambda: dict(degree=2, outputs=("node",), models=("mpnn",)),
          dict(degree="size", outputs="outputs", domain="option"),
          extra=[("an unknown model", "models", ("gin",)), ("a string where a tuple is due", "outputs", "node")]),
    Entry("get_model", contractions.get_model, lambda: dict(model="ppgn"), dict(model="option")),
    Entry("known_models", contractions.known_models, lambda: dict()),
    Entry("Verdict", lambda **kw: bool(contractions.computable(**kw)), lambda: dict(pattern="ab->", model="mpnn")),
    Entry("is_paper_convention", expressivity.is_paper_convention, lambda: dict(pattern="ab,bc->ac"), dict(pattern="pattern")),
    Entry("as_pattern_graph", expressivity.as_pattern_graph, lambda: dict(pattern="ab,bc->ac"), dict(pattern="pattern")),
    Entry("PatternGraph", lambda **kw: expressivity.as_pattern_graph(**kw).num_vertices, lambda: dict(pattern="ab->")),
    Entry("ExpressivityTable", lambda **kw: contractions.analyze(**kw).rows, lambda: dict(degree=1, models=("mpnn",))),
    Entry("ExpressivityRow", lambda **kw: contractions.analyze(**kw).rows[0].total, lambda: dict(degree=1, models=("mpnn",))),
    Entry("Model", lambda **kw: contractions.get_model(**kw).name, lambda: dict(model="mpnn")),
    Entry("MPNN", lambda **kw: contractions.computable("ab->", expressivity.MPNN(**kw)), lambda: dict()),
    Entry("SubgraphGNN", lambda **kw: contractions.computable("ab->", expressivity.SubgraphGNN(**kw)), lambda: dict()),
    Entry("PPGN", lambda **kw: contractions.computable("ab->", expressivity.PPGN(**kw)), lambda: dict()),
    Entry("MPNNDecider", lambda **kw: contractions.computable("ab->", expressivity.MPNNDecider(**kw)), lambda: dict()),
    Entry("SubgraphGNNDecider", lambda **kw: contractions.computable("ab->", expressivity.SubgraphGNNDecider(**kw)), lambda: dict()),
    Entry("PPGNDecider", lambda **kw: contractions.computable("ab->", expressivity.PPGNDecider(**kw)), lambda: dict()),
    Entry("Local2GNNDecider", lambda **kw: contractions.computable("ab->", expressivity.Local2GNNDecider(**kw)), lambda: dict()),
    Entry("Local2FGNNDecider", lambda **kw: contractions.computable("ab->", expressivity.Local2FGNNDecider(**kw)), lambda: dict()),
    Entry("find_ned", expressivity.find_ned, lambda: dict(pattern="ab,bc,ca->a", kind="strong"),
          dict(pattern="pattern", kind="option")),
    Entry("explain_no_ned", expressivity.explain_no_ned, lambda: dict(pattern="ab,ac,ad,bc,bd,cd->", kind="ned"),
          dict(pattern="pattern", kind="option")),
    Entry("check_ned", expressivity.check_ned,
          lambda: dict(pattern="ab,bc,ca->a", decomposition=expressivity.find_ned("ab,bc,ca->a", "strong"), kind="strong"),
          dict(pattern="pattern", kind="option"), extra=[("a string", "decomposition", "abc")]),
    Entry("NestedEarDecomposition", lambda **kw: expressivity.find_ned(**kw).format(), lambda: dict(pattern="ab,bc,ca->")),
    Entry("Ear", lambda **kw: expressivity.find_ned(**kw).ears[0].path, lambda: dict(pattern="ab,bc,ca->")),
    Entry("KFWLDecider", lambda **kw: contractions.computable("ab->", expressivity.KFWLDecider(**kw)), lambda: dict(k=3),
          dict(k="count")),
    Entry("KFWL", lambda **kw: contractions.computable("ab->", expressivity.KFWL(**kw)), lambda: dict(k=3), dict(k="count")),
    Entry("treewidth", expressivity.treewidth, lambda: dict(graph=nx.cycle_graph(4)), dict(graph="graph")),
    Entry("treewidth_upper_bound", expressivity.treewidth_upper_bound, lambda: dict(graph=nx.cycle_graph(4)), dict(graph="graph")),
    Entry("elimination_ordering", expressivity.elimination_ordering, lambda: dict(graph=nx.cycle_graph(4)), dict(graph="graph")),
    Entry("Step", lambda **kw: contractions.computable("ab,bc->", "ppgn").steps, lambda: dict()),
    # ---------------------------------------------------------------- nn
    Entry("Mamba", nn.Mamba, lambda: dict(d_model=4, d_state=2), dict(d_model="size", d_state="size", d_conv="count")),
    Entry("Mamba.forward", module_call(lambda: nn.Mamba(4, d_state=2)), lambda: dict(hidden_states=torch.rand(1, 5, 4)),
          dict(hidden_states="real"), extra=[("a float cu_seqlens", "cu_seqlens", torch.tensor([0.0, 5.0]))]),
    Entry("GraphMamba", nn.GraphMamba, lambda: dict(channels=4, d_state=2),
          dict(channels="count", order="option", eval_orders="count"),
          extra=[("an unknown local", "local", "gcn"), ("a number as local", "local", 3)]),
    Entry("GraphMamba.forward", module_call(lambda: nn.GraphMamba(4, d_state=2)),
          lambda: dict(x=torch.rand(3, 4), edge_index=EDGES, batch=_t(0, 0, 0)), dict(x="real", edge_index="index", batch="index"),
          extra=[("an out-of-range edge", "edge_index", _t([0], [3])), ("an unsorted batch", "batch", _t(1, 0, 0))]),
    Entry("GMN", nn.GMN, lambda: dict(channels=4, d_state=2),
          dict(channels="count", walk_length="count", tokens_per_length="count", walks_per_token="count", seed="size",
               readout="option", token_pool="option", rwse_steps="size", resample="flag"),
          extra=[("an unknown local", "local", "gcn"), ("a number as local", "local", 3), ("a dropout of 1", "dropout", 1.0)]),
    Entry("GMN.forward", module_call(lambda: nn.GMN(4, d_state=2)),
          lambda: dict(x=torch.rand(3, 4), edge_index=EDGES, batch=_t(0, 0, 0)), dict(x="real", edge_index="index", batch="index"),
          extra=[("an out-of-range edge", "edge_index", _t([0], [3])), ("an unsorted batch", "batch", _t(1, 0, 0)),
                 ("a string", "tokens", "walks"), ("tokens of another graph", "tokens",
                                                    graphlib.random_walk_tokens(EDGES, 2 + 2, 2)),
                 ("rwse without rwse_steps", "rwse", torch.rand(3, 2))]),
    Entry("LCMAggregation", aggr.LCMAggregation, lambda: dict(in_channels=3, out_channels=4),
          dict(identity="option", operator="option"), extra=[("a fraction", "in_channels", 2.5), ("zero", "out_channels", 0)]),
    Entry("LCMAggregation.forward", module_call(lambda: aggr.LCMAggregation(3, 4)),
          lambda: dict(x=torch.rand(3, 3), index=_t(0, 1, 1), dim_size=2), dict(x="batched", index="index", dim_size="size"),
          ),
    Entry("LCMAggregation.forward(ptr)", module_call(lambda: aggr.LCMAggregation(-1, -1)),
          lambda: dict(x=torch.rand(3, 3), ptr=_t(0, 1, 3)), dict(x="batched", ptr="index"),
          extra=[("ptr not ending at the size", "ptr", _t(0, 1, 2))]),
    Entry("CommutativeMonoid", aggr.CommutativeMonoid, lambda: dict(g=torch.add), dict(g="callable"),
          extra=[("a string flag", "symmetrise", "yes")]),
    Entry("GRUOperator", aggr.GRUOperator, lambda: dict(channels=3), dict(channels="count")),
    Entry("associativity_loss", aggr.associativity_loss,
          lambda: dict(op=torch.add, x=torch.rand(4, 2), index=_t(0, 0, 1, 1), num_triples=3),
          dict(op="callable", x="real", index="index", num_triples="size"), extra=[("zero", "num_triples", 0)]),
    Entry("check_associative", aggr.check_associative, lambda: dict(op=torch.add, a=torch.rand(2), b=torch.rand(2), c=torch.rand(2)),
          dict(op="callable", a="tensor", b="tensor", c="tensor")),
    Entry("check_commutative", aggr.check_commutative, lambda: dict(op=torch.add, a=torch.rand(2), b=torch.rand(2)),
          dict(op="callable", a="tensor", b="tensor")),
    Entry("InferenceParams", nn.InferenceParams, lambda: dict(max_seqlen=4, max_batch_size=2)),
    Entry("Mamba2d", nn.Mamba2d, lambda: dict(d_model=4, d_state=2), dict(d_model="count", d_state="count", d_conv="count", expand="count")),
    Entry("Mamba2d.forward", module_call(lambda: nn.Mamba2d(4, d_state=2)), lambda: dict(x=torch.rand(1, 3, 2, 4)), dict(x="real")),
    Entry("DeltaProduct", nn.DeltaProduct, lambda: dict(hidden_size=4, num_heads=2),
          dict(hidden_size="count", num_heads="count", num_householder="count", conv_size="count", allow_neg_eigval="flag",
               use_forget_gate="flag", use_output_gate="flag", use_short_conv="flag"),
          extra=[("a head_dim of zero", "head_dim", 0), ("a fractional head_dim", "head_dim", 2.5), ("a zero expand_v", "expand_v", 0.0),
                 ("num_heads not dividing hidden_size", "num_heads", 3), ("a string norm_eps", "norm_eps", "abc")]),
    Entry("DeltaProduct.forward", module_call(lambda: nn.DeltaProduct(4, num_heads=2)),
          lambda: dict(x=torch.rand(1, 3, 4)), dict(x="real"),
          extra=[("a string", "structure", "abc"), ("a structure of the wrong size", "structure", graphlib.Lattice((4,))),
                 ("a float cu_seqlens", "cu_seqlens", torch.tensor([0.0, 3.0])), ("a string reverse", "reverse", "yes"),
                 ("cu_seqlens not ending at L", "cu_seqlens", _t(0, 2))]),
    Entry("GatedLinearAttention", nn.GatedLinearAttention, lambda: dict(hidden_size=4, num_heads=2, expand_k=1.0),
          dict(hidden_size="count", num_heads="count", gate_low_rank_dim="count", aggregate="option",
               use_output_gate="flag", elementwise_affine="flag", fuse_norm="flag"),
          extra=[("a zero expand_v", "expand_v", 0.0), ("a string expand_k", "expand_k", "abc"),
                 ("num_heads not dividing the widths", "num_heads", 3), ("a negative gate_logit_normalizer", "gate_logit_normalizer", -1.0),
                 ("a string clamp_min", "clamp_min", "abc")]),
    Entry("GatedLinearAttention.forward", module_call(lambda: nn.GatedLinearAttention(4, num_heads=2, expand_k=1.0)),
          lambda: dict(x=torch.rand(1, 3, 4)), dict(x="real"),
          extra=[("a string", "structure", "abc"), ("a structure of the wrong size", "structure", graphlib.Lattice((4,))),
                 ("a float cu_seqlens", "cu_seqlens", torch.tensor([0.0, 3.0])), ("a string reverse", "reverse", "yes")]),
    Entry("S4D", nn.S4D, lambda: dict(d_model=2, d_state=4),
          dict(d_model="count", d_state="count", mode="option", transposed="flag"),
          extra=[("an odd d_state", "d_state", 3), ("a negative dropout", "dropout", -0.5), ("a string dropout", "dropout", "abc"),
                 ("an unknown init", "init", "no-such-init"), ("an unknown discretization", "discretization", "no-such"),
                 ("dt_min above dt_max", "dt_min", 1.0), ("a zero dt_max", "dt_max", 0.0)]),
    Entry("S4D.forward", module_call(lambda: nn.S4D(2, d_state=4)), lambda: dict(u=torch.rand(1, 2, 5)), dict(u="real"),
          extra=[("the wrong channel count", "u", torch.rand(1, 3, 5)), ("a string", "structure", "abc"),
                 ("a structure of the wrong size", "structure", graphlib.Lattice((4,))),
                 ("a float cu_seqlens", "cu_seqlens", torch.tensor([0.0, 5.0])), ("a string reverse", "reverse", "yes")]),
    Entry("LightNet", nn.LightNet, lambda: dict(hidden_size=4, num_heads=2, gate_low_rank_dim=3),
          dict(hidden_size="count", num_heads="count", gate_low_rank_dim="count", elementwise_affine="flag"),
          extra=[("a fraction", "expand_ratio", 2.5), ("zero", "expand_ratio", 0), ("a bool", "expand_ratio", True),
                 ("a string", "expand_ratio", "abc"), ("num_heads not dividing hidden_size", "num_heads", 3), ("a string norm_eps", "norm_eps", "abc"),
                 ("a negative norm_eps", "norm_eps", -1.0)]),
    Entry("LightNet.forward", module_call(lambda: nn.LightNet(4, num_heads=2)), lambda: dict(x=torch.rand(1, 3, 4)), dict(x="real"),
          extra=[("a string", "structure", "abc"), ("a structure of the wrong size", "structure", graphlib.Lattice((4,))),
                 ("a float cu_seqlens", "cu_seqlens", torch.tensor([0.0, 3.0])), ("a string reverse", "reverse", "yes")]),
    Entry("PLSTM1d", nn.PLSTM1d, lambda: dict(dim=4), dict(dim="count", num_heads="count", mode="option")),
    Entry("PLSTM1d.forward", module_call(lambda: nn.PLSTM1d(4)), lambda: dict(x=torch.rand(1, 5, 4)), dict(x="real")),
    Entry("PLSTM2d", nn.PLSTM2d, lambda: dict(dim=4), dict(dim="count", num_heads="count", mode="option")),
    Entry("PLSTM2d.forward", module_call(lambda: nn.PLSTM2d(4)), lambda: dict(x=torch.rand(1, 3, 2, 4)), dict(x="real")),
    Entry("PLSTMGraph", nn.PLSTMGraph, lambda: dict(in_channels=3, out_channels=4),
          dict(in_channels="count", out_channels="count", num_heads="count", mode="option", order="option")),
    Entry("PLSTMGraph.forward", module_call(lambda: nn.PLSTMGraph(3, 4, edge_dim=2)),
          lambda: dict(x=torch.rand(3, 3), edge_index=EDGES, edge_attr=torch.rand(4, 2)),
          dict(x="real", edge_index="index", edge_attr="real"),
          extra=[("edge_attr of the wrong width", "edge_attr", torch.rand(4, 5)), ("edge_attr of the wrong length", "edge_attr", torch.rand(3, 2)),
                 ("a float batch", "batch", torch.zeros(3))]),
    Entry("PolynomialFeatures", nn.PolynomialFeatures, lambda: dict(degree=2),
          dict(degree="count", outputs="outputs", select="option", normalize="option", domain="option"),
          extra=[("a string where a tuple is due", "outputs", "node")]),
    Entry("PolynomialFeatures.forward", module_call(lambda: nn.PolynomialFeatures(2)),
          lambda: dict(edge_index=EDGES, batch=_t(0, 0, 1)), dict(edge_index="index", batch="index", num_nodes="size"),
          extra=[("an unsorted batch", "batch", _t(1, 0, 0)), ("an out-of-range edge", "edge_index", _t([0], [3]))]),
    Entry("PPGN", nn.PPGN, lambda: dict(in_channels=1, hidden=4, num_blocks=1),
          dict(in_channels="count", hidden="count", num_blocks="count", out_channels="count", depth="count")),
    Entry("PPGN.forward", module_call(lambda: nn.PPGN(2, 4, 1)),
          lambda: dict(x=torch.rand(3, 1), edge_index=EDGES), dict(x="real", edge_index="index"),
          extra=[("an out-of-range edge", "edge_index", _t([0], [3])), ("x shorter than edge_index", "edge_index", EDGES + 5)]),
    Entry("PPGNBlock", nn.PPGNBlock, lambda: dict(in_channels=2, out_channels=3), dict(in_channels="count", out_channels="count", depth="count")),
    Entry("PPGNBlock.forward", module_call(lambda: nn.PPGNBlock(2, 3)),
          lambda: dict(x=torch.rand(1, 3, 3, 2), mask=torch.ones(1, 3, dtype=torch.bool)), dict(x="real"),
          extra=[("a mask of the wrong shape", "mask", torch.ones(1, 4, dtype=torch.bool))]),
    # ---------------------------------------------------------------- transforms, datasets
    Entry("AddPolynomialFeatures", transforms.AddPolynomialFeatures, lambda: dict(degree=2),
          dict(degree="count", outputs="outputs", normalize="option", domain="option")),
    Entry("AddPolynomialFeatures.__call__", lambda **kw: transforms.AddPolynomialFeatures(2)(**kw),
          lambda: dict(data=Data(edge_index=EDGES, num_nodes=3)), dict(data="structure")),
    Entry("ArrowPointing", datasets.ArrowPointing, lambda: dict(num_samples=2),
          dict(num_samples="size", image_size="count", channels="count")),
    Entry("SecondMinimum", datasets.SecondMinimum, lambda: dict(num_sets=3), dict(num_sets="size", num_values="count")),
    Entry("rook_graph", datasets.rook_graph, lambda: dict(size=3), dict(size="count")),
    Entry("shrikhande_graph", datasets.shrikhande_graph, lambda: dict()),
    Entry("BREC", datasets.BREC, lambda: dict(root=brec_root(), name="pairs"), dict(layout="option", num_relabel="count"),
          extra=[("a path as name", "name", "a/b"), ("a number as root", "root", 3)]),
    # ---------------------------------------------------------------- contractions.probe
    Entry("GraphPair", cprobe.GraphPair, lambda: dict(name="p", family="f", first=nx.cycle_graph(6), second=nx.path_graph(6)),
          dict(first="graph", second="graph")),
    Entry("graph_to_data", cprobe.graph_to_data, lambda: dict(graph=nx.cycle_graph(4)), dict(graph="graph"),
          extra=[("not a permutation", "permutation", torch.tensor([0, 0, 1, 2]))]),
    Entry("permuted_data", cprobe.permuted_data, lambda: dict(graph=nx.cycle_graph(4), generator=torch.Generator()),
          dict(graph="graph"), extra=[("a seed", "generator", 3)]),
    Entry("regular_pairs", cprobe.regular_pairs, lambda: dict()),
    Entry("strongly_regular_pairs", cprobe.strongly_regular_pairs, lambda: dict()),
    Entry("chang_graphs", cprobe.chang_graphs, lambda: dict()),
    Entry("latin_square_graph", cprobe.latin_square_graph, lambda: dict(square=[[0, 1], [1, 0]]),
          extra=[("not a Latin square", "square", [[0, 0], [1, 1]])]),
    Entry("cfi_graph", cprobe.cfi_graph, lambda: dict(base=nx.complete_graph(3)), dict(base="graph"),
          extra=[("a string", "twisted", "yes"), ("disconnected", "base", nx.empty_graph(2))]),
    Entry("cfi_pairs", cprobe.cfi_pairs, lambda: dict(bases={"K3": nx.complete_graph(3)}),
          extra=[("a tree", "bases", {"P4": nx.path_graph(4)}), ("a string", "bases", "abc"), ("a number", "bases", 3)]),
    Entry("single_pattern_pairs", cprobe.single_pattern_pairs, lambda: dict(max_degree=2, graphs=PROBE_GRAPHS),
          dict(max_degree="count")),
    Entry("find_single_pattern_pairs", cprobe.find_single_pattern_pairs, lambda: dict(graphs=PROBE_GRAPHS, max_degree=2),
          dict(max_degree="count"), extra=[("a string", "graphs", "abc")]),
    Entry("generate_pairs", cprobe.generate_pairs, lambda: dict(families=["regular"]),
          extra=[("an unknown family", "families", ["nope"]), ("a string", "families", "regular")]),
    Entry("probe_patterns", cprobe.probe_patterns, lambda: dict(degree=2), dict(degree="size")),
    Entry("hom_counts", cprobe.hom_counts, lambda: dict(graphs=[nx.cycle_graph(4)], degree=2), dict(degree="size"),
          extra=[("a graph", "graphs", nx.cycle_graph(4)), ("a string", "graphs", "abc")]),
    Entry("pattern_name", cprobe.pattern_name, lambda: dict(pattern=contractions.Pattern.from_string("ab,bc->")),
          dict(pattern="pattern")),
    Entry("available_model_classes", cprobe.available_model_classes, lambda: dict(model_classes=["mpnn"]),
          extra=[("a string", "model_classes", "mpnn"), ("an unknown class", "model_classes", ["nope"])]),
    Entry("pair_theory", cprobe.pair_theory, lambda: dict(pairs=[probe_pair()], degree=3, model_classes=["mpnn"]),
          dict(degree="count"), extra=[("a string", "pairs", "abc"), ("a pair", "pairs", probe_pair())]),
    Entry("ClassPrediction", lambda **kw: str(cprobe.pair_theory(**kw)[0].predictions["ppgn"]),
          lambda: dict(pairs=[probe_pair()], degree=3)),
    Entry("PairTheory", lambda **kw: cprobe.pair_theory(**kw)[0].separates("mpnn"), lambda: dict(pairs=[probe_pair()], degree=3)),
    Entry("f_quantile", cprobe.f_quantile, lambda: dict(probability=0.9, dfn=2, dfd=3), dict(dfn="count", dfd="count"),
          extra=[("one", "probability", 1.0), ("a string", "probability", "abc")]),
    Entry("hotelling_threshold", cprobe.hotelling_threshold, lambda: dict(dim=2, num_samples=10, alpha=0.01),
          dict(dim="count", num_samples="count"), extra=[("zero", "alpha", 0.0), ("dim >= num_samples", "dim", 10)]),
    Entry("hotelling_t2", cprobe.hotelling_t2, lambda: dict(differences=torch.randn(5, 2)), dict(differences="tensor")),
    Entry("embed_graphs", cprobe.embed_graphs, lambda: dict(model=probe_model, data=[cprobe.graph_to_data(nx.cycle_graph(3))]),
          dict(model="callable")),
    Entry("reliable_separation", cprobe.reliable_separation,
          lambda: dict(model=probe_model, first=nx.cycle_graph(6), second=nx.path_graph(6), num_permutations=4),
          dict(model="callable", first="graph", second="graph", num_permutations="count"),
          extra=[("alpha one", "alpha", 1.0), ("a negative floor", "noise_floor", -1.0)]),
    Entry("SeparationTest", lambda **kw: cprobe.reliable_separation(**kw).verdict,
          lambda: dict(model=probe_model, first=nx.cycle_graph(6), second=nx.path_graph(6), num_permutations=4)),
    Entry("probe_model", cprobe.probe_model,
          lambda: dict(model=probe_model, pairs=[probe_pair()], degree=3, num_permutations=4, model_classes=["mpnn"]),
          dict(model="callable", degree="count", num_permutations="count", progress="flag"),
          extra=[("a string", "pairs", "abc")]),
    Entry("ProbeReport", lambda **kw: str(cprobe.probe_model(**kw)),
          lambda: dict(model=probe_model, pairs=[probe_pair()], degree=3, num_permutations=4)),
    Entry("ProbeRow", lambda **kw: cprobe.probe_model(**kw).rows[0].model_separates,
          lambda: dict(model=probe_model, pairs=[probe_pair()], degree=3, num_permutations=4)),
    Entry("probe_graphs", cprobe.probe_graphs, lambda: dict(num_graphs=4), dict(num_graphs="count")),
    Entry("linear_probe", cprobe.linear_probe, lambda: dict(model=probe_model, degree=2, graphs=PROBE_GRAPHS),
          dict(model="callable", degree="count"), extra=[("zero", "test_fraction", 0.0), ("too few", "graphs", PROBE_GRAPHS[:3])]),
    Entry("LinearProbeResult", lambda **kw: cprobe.linear_probe(**kw).as_dict(),
          lambda: dict(model=probe_model, degree=2, graphs=PROBE_GRAPHS)),
]

CONSTANTS = {"EXECUTIONS", "KINDS", "SUPPORTED_KINDS", "NODE_ORDERS", "NORMALIZATIONS",
             "DEFAULT_CFI_BASES", "PAIR_FAMILIES", "DEFAULT_MODEL_CLASSES", "BREC_CATEGORIES"}  # data, not entry points


def test_every_public_name_is_fuzzed():
    covered = {e.name.split(".")[0] for e in ENTRIES}
    missing = [
        f"{module}.{name}"
        for module in SUBPACKAGES
        for name in importlib.import_module(module).__all__
        if name not in covered and name not in CONSTANTS
    ]
    assert not missing, f"public names without a fuzz entry: {missing}"


@pytest.fixture(scope="module")
def single_process_group(tmp_path_factory):
    """A world of one (gloo) for the context-parallel entry points."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    store = tmp_path_factory.mktemp("dist") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_valid_call_succeeds(entry, request):
    if "context_parallel" in entry.name or entry.name == "combine_piece_states":
        request.getfixturevalue("single_process_group")
    entry.call(**entry.args())


def _bad_cases():
    for entry in ENTRIES:
        valid = entry.args()
        for argument, kind in entry.kinds.items():
            for label, value in malformed(kind, valid.get(argument)):
                yield pytest.param(entry, argument, value, id=f"{entry.name}-{argument}-{label}")
        for label, argument, value in entry.extra:
            yield pytest.param(entry, argument, value, id=f"{entry.name}-{argument}-{label}")


@pytest.mark.parametrize("entry, argument, value", list(_bad_cases()))
def test_malformed_argument_is_refused_by_name(entry, argument, value, request):
    if "context_parallel" in entry.name or entry.name == "combine_piece_states":
        request.getfixturevalue("single_process_group")
    args = entry.args()
    args[argument] = value
    with pytest.raises((TypeError, ValueError)) as info:
        entry.call(**args)
    assert argument in str(info.value), f"the message does not name {argument!r}: {info.value}"


# ----------------------------------------------------- valid but unusual: a correct result
def test_lazy_lcm_sizes_as_pyg_users_write_them():
    from torch_geometric.nn import SAGEConv

    lazy = aggr.LCMAggregation(-1, -1)
    x, index = torch.randn(6, 3), _t(0, 0, 1, 2, 2, 2)
    out = lazy(x, index, dim_size=4)
    assert out.shape == (4, 3) and lazy.in_channels == lazy.out_channels == 3
    # once materialised it is the eager layer with the same parameters
    eager = aggr.LCMAggregation(3, 3)
    eager.load_state_dict(lazy.state_dict())
    torch.testing.assert_close(eager(x, index, dim_size=4), out)
    conv = SAGEConv((-1, -1), 8, aggr=aggr.LCMAggregation(-1, -1))
    assert conv(torch.randn(3, 5), EDGES).shape == (3, 8)
    assert aggr.LCMAggregation(-1, 6)(x, index).shape == (3, 6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_nodes=st.integers(0, 4), num_edges=st.integers(0, 6), seed=st.integers(0, 1000))
def test_graph_core_on_small_and_empty_graphs(num_nodes, num_edges, seed):
    """Empty graphs, isolated nodes and repeated edges: degrees, orders and DAGs agree with
    networkx, never an error."""
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, max(num_nodes, 1), (2, num_edges if num_nodes else 0), generator=g)
    reference = nx.Graph()
    reference.add_nodes_from(range(num_nodes))
    reference.add_edges_from((u, v) for u, v in edge_index.t().tolist() if u != v)
    degree = graphlib.undirected_degree(edge_index, num_nodes)
    assert degree.tolist() == [reference.degree[v] for v in range(num_nodes)]
    perm = graphlib.node_order(edge_index, num_nodes, "degree")
    assert sorted(perm.tolist()) == list(range(num_nodes))
    dag, edge_id = graphlib.dagify(edge_index, num_nodes, "index")
    assert dag.num_nodes == num_nodes and len(edge_id) == reference.number_of_edges()


def test_empty_inputs_give_empty_results():
    assert graphlib.scatter(torch.zeros(0, 2), _t(), dim_size=3).tolist() == [[0.0, 0.0]] * 3
    assert graphlib.segment(torch.zeros(0, 2), _t(0, 0, 0), reduce="sum").shape == (2, 2)
    assert graphlib.tree_reduce(torch.zeros(0, 2), _t(), torch.add, dim_size=2).shape == (2, 2)
    assert aggr.LCMAggregation(3, 4)(torch.zeros(0, 3), _t(), dim_size=2).shape == (2, 4)
    assert aggr.associativity_loss(torch.add, torch.zeros(0, 2)).item() == 0.0
    feats = nn.PolynomialFeatures(2, outputs=("node",))
    assert feats(torch.zeros(2, 0, dtype=torch.long), num_nodes=3)["node"].shape[0] == 3


def test_empty_and_degenerate_inputs_of_the_newer_sequence_ops():
    """Batch 0, length 0, no channels or no modes: empty (or closed-form) results in every
    execution, never an FFT or convolution error."""
    x = s4d_inputs()
    ssm = {k: x[k] for k in ("log_dt", "A", "B", "C", "D")}
    for mode in ("conv", "recurrent"):
        for u in (torch.zeros(0, 2, 5, dtype=F64), torch.zeros(3, 2, 0, dtype=F64)):
            assert sequence.s4d(u, **ssm, mode=mode).shape == u.shape
        no_channels = {k: v[:0] for k, v in ssm.items()}
        assert sequence.s4d(torch.zeros(3, 0, 4, dtype=F64), **no_channels, mode=mode).shape == (3, 0, 4)
        # no modes: the state space part vanishes, y = D u
        no_modes = dict(ssm, A=ssm["A"][:, :0], B=ssm["B"][:, :0], C=ssm["C"][:, :0])
        u = x["u"]
        torch.testing.assert_close(sequence.s4d(u, **no_modes, mode=mode), ssm["D"][:, None] * u)
    assert sequence.s4d_kernel(x["log_dt"], x["A"], x["B"], x["C"], 0).shape == (2, 0)
    layer = nn.S4D(2, d_state=4)
    for mode in ("conv", "recurrent"):
        layer.mode = mode
        assert layer(torch.zeros(0, 2, 5)).shape == (0, 2, 5)
        assert layer(torch.zeros(3, 2, 0)).shape == (3, 2, 0)

    no_edges = graphlib.DAG(torch.zeros(2, 0, dtype=torch.long), 0)
    for structure in (None, no_edges):
        q = torch.randn(2, 0, 1, 2, dtype=F64)
        assert sequence.lightnet_scan(structure, q, q, q).shape == (2, 0, 1, 2)
        assert sequence.lightnet_scan_reference(structure, q, q, q).shape == (2, 0, 1, 2)
    assert sequence.lightnet_log_normalizer(no_edges, torch.zeros(1, 0, 1, 2, dtype=F64)).shape == (1, 0, 1, 2)
    q = torch.randn(0, 4, 1, 2, dtype=F64)
    assert sequence.lightnet_scan(graphlib.Lattice((2, 2)), q, q, q).shape == (0, 4, 1, 2)
    # isolated nodes: every node is its own prefix, o_n = scale * (sum_d q_nd) v_n
    q, k, v = (torch.randn(2, 3, 1, 2, dtype=F64, generator=torch.Generator().manual_seed(i)) for i in range(3))
    isolated = graphlib.DAG(torch.zeros(2, 0, dtype=torch.long), 3)
    torch.testing.assert_close(sequence.lightnet_scan(isolated, q, k, v, scale=0.5), 0.5 * q.sum(-1, keepdim=True) * v)


@pytest.mark.parametrize("make", [
    lambda: nn.DeltaProduct(4, num_heads=2), lambda: nn.DeltaProduct(4, num_heads=2, use_short_conv=True),
    lambda: nn.GatedLinearAttention(4, num_heads=2, expand_k=1.0), lambda: nn.LightNet(4, num_heads=2),
], ids=["DeltaProduct", "DeltaProduct-short-conv", "GatedLinearAttention", "LightNet"])
def test_empty_inputs_of_the_newer_sequence_layers(make):
    layer = make()
    assert layer(torch.zeros(0, 5, 4)).shape == (0, 5, 4)
    assert layer(torch.zeros(2, 0, 4)).shape == (2, 0, 4)
    if not getattr(layer, "use_short_conv", False):
        assert layer(torch.zeros(0, 6, 4), graphlib.Lattice((2, 3))).shape == (0, 6, 4)
        assert layer(torch.zeros(0, 3, 4), graphlib.DAG(DAG_EDGES, 3)).shape == (0, 3, 4)
    if hasattr(layer, "num_householder") or isinstance(layer, nn.GatedLinearAttention):
        # packed sequences: an empty sequence anywhere changes nothing, and all of them may be empty
        x = torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(0))
        plain = layer(x, cu_seqlens=_t(0, 2, 5))
        for offsets in (_t(0, 2, 5, 5), _t(0, 0, 2, 5), _t(0, 2, 2, 5)):
            torch.testing.assert_close(layer(x, cu_seqlens=offsets), plain)
        assert layer(torch.zeros(1, 0, 4), cu_seqlens=_t(0, 0)).shape == (1, 0, 4)


# ------------------------------------------------ the inputs that used to go silently wrong
def test_a_causal_scan_never_looks_ahead_even_at_a_nan():
    """A NaN at position t of a PLSTM1d input leaves every output before t unchanged (the
    chunked form used to multiply future entries of a chunk by a zero mask: 0 * nan = nan)."""
    for mode in ("D", "P"):
        layer = nn.PLSTM1d(8, num_heads=2, mode=mode).double()
        x = torch.randn(2, 40, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
        clean = layer(x)
        for t in (0, 5, 25, 39):
            poisoned = x.clone()
            poisoned[0, t] = float("nan")
            out = layer(poisoned)
            torch.testing.assert_close(out[0, :t], clean[0, :t], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(out[1], clean[1], rtol=1e-12, atol=1e-12)
            assert torch.isnan(out[0, t]).any()


def test_nan_in_the_padded_part_stays_out_of_the_real_graph():
    plan = contractions.compile(["ab,bc,ca->", "ab,bc->ac", "ab->a"])
    adj = torch.zeros(1, 5, 5)
    adj[0, :3, :3] = adjacency()[0]  # the path 0 - 1 - 2
    mask = torch.tensor([[True, True, True, False, False]])
    clean = contractions.evaluate(plan, adj, mask)
    adj[0, 3:, :] = float("nan")
    adj[0, :, 3:] = float("inf")
    poisoned = contractions.evaluate(plan, adj, mask)
    for output in clean:
        torch.testing.assert_close(poisoned[output], clean[output])
    reference = contractions.evaluate_reference(plan.patterns, adj, mask)
    torch.testing.assert_close(reference[0], clean["invariant"][:, 0])


def test_simple_domain_reads_repeated_edges_once_and_drops_self_loops():
    """No warning and no double count: a multigraph on the simple domain has its simple
    graph's values; the general domain keeps multiplicities (the networkx/einsum reference is
    in tests/nn/test_polynomial_features.py)."""
    import warnings

    feats = nn.PolynomialFeatures(2, outputs=("node",))
    clean = feats(EDGES)["node"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(feats(torch.cat([EDGES, EDGES[:, :1]], dim=1))["node"], clean)
        torch.testing.assert_close(feats(torch.cat([EDGES, _t([1], [1])], dim=1))["node"], clean)
    general = nn.PolynomialFeatures(1, outputs=("invariant",), domain="general", normalize=None)
    once = general(EDGES)["invariant"]
    twice = general(torch.cat([EDGES, EDGES], dim=1))["invariant"]
    assert not torch.equal(once, twice)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: graphlib.DAG(DAG_EDGES, num_nodes=2.5), "num_nodes"),
        (lambda: graphlib.DAG(DAG_EDGES, 3, batch=BATCH, ptr=_t(0, 1, 3)), "ptr"),
        (lambda: graphlib.undirected_degree(_t([0], [5]), 3), "edge_index"),
        (lambda: aggr.associativity_loss(torch.add, torch.rand(4, 2), num_triples=0), "num_triples"),
        (lambda: aggr.associativity_loss(torch.add, torch.rand(4, 2), num_triples=-2), "num_triples"),
        (lambda: contractions.evaluate(contractions.compile(["ab->"]), adjacency().long()), "adj"),
        (lambda: contractions.evaluate(contractions.compile(["ab->"]), adjacency().to(torch.complex64)), "adj"),
        (lambda: graphlib.Lattice(None), "shape"),
        (lambda: nn.GraphMamba(4, local="gcn"), "local"),
        (lambda: nn.PolynomialFeatures(2, outputs="node"), "outputs"),
        (lambda: contractions.analyze(2, outputs="node"), "outputs"),
        (lambda: nn.PolynomialFeatures(2)(EDGES, batch=_t(1, 0, 0)), "batch"),
        (lambda: nn.PLSTMGraph(3, 4, edge_dim=2)(torch.rand(3, 3), EDGES, edge_attr=torch.rand(4, 3)), "edge_attr"),
        (lambda: graphlib.scatter(torch.rand(3), torch.tensor([0.0, 1, 1])), "index"),
        (lambda: nn.PPGN(1, 4, 1)(None, EDGES.double()), "edge_index"),
    ],
)
def test_known_silent_or_obscure_cases_are_refused_by_name(call, argument):
    with pytest.raises((TypeError, ValueError), match=argument):
        call()
