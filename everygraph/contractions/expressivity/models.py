r"""The model zoo: which GNN computes which basis element :math:`P_H`.

Each model answers :meth:`Model.decide` with a :class:`~.verdict.Verdict` whose certificate
is made of that model's own operations or, for the ear-decomposition classes, the nested ear
decomposition itself. The characterisations are from Puny et al.,
"Equivariant Polynomials for Graph Neural Networks" (ICML 2023,
https://arxiv.org/abs/2302.11556) and Zhang, Gai, Du, Ye, He, Wang, "Beyond Weisfeiler-Lehman:
A Quantitative Framework for GNN Expressiveness" (ICLR 2024, https://arxiv.org/abs/2401.08514),
where a model computes :math:`P_H` (on 0/1 graphs: the homomorphism count
:math:`\hom(H, G)` rooted at the special vertices) iff :math:`H` lies in its family
(Theorems 3.4 and 3.7 of Zhang et al.; strictly growing in this order, Corollary 4.1):

===============  ==========================================================================
``mpnn``          rooted forests: the underlying simple graph, with the edge ``ab`` of an
                  edge output added, is a forest (1-WL, node-based operations)
``subgraph``      a forest after deleting the marked vertex: any vertex for an invariant, the
                  root ``a`` of a node output, the first special vertex ``a`` of an edge output
                  ``ab`` (node-marking subgraph GNN; endpoint-shared nested ear decomposition)
``local_2gnn``    a strong nested ear decomposition whose first ear ends at the special
                  vertices (Local 2-GNN; alias ``local2gnn``)
``local_2fgnn``   an almost-strong nested ear decomposition, rooted the same way (Local
                  2-FGNN; alias ``local2fgnn``)
``ppgn``          treewidth :math:`\le 2` with ``ab`` added (PPGN, 2-FWL, edge-based model;
``2fwl``          a nested ear decomposition); aliases: ``2-fwl``, ``ppgn++`` (PPGN++ is as
                  expressive as PPGN)
``kfwl``          treewidth :math:`\le k` with the special vertices joined (``"3fwl"``,
                  ``"kfwl:3"`` or ``KFWLDecider(3)``)
===============  ==========================================================================

Loops and parallel edges never change the answer (a loop is the diagonal, a node feature;
parallel edges are an elementwise product); only the underlying simple graph matters.
:mod:`.ned` defines the ear decompositions, searches for them and checks a certificate.

Example:
    >>> get_model("ppgn").decide("ab,ac,ad,bc,cd->bd").computable
    False
    >>> get_model("local_2gnn").decide("ab,bc,ca,cd,de,ec->").computable
    True
    >>> get_model("mpnn").decide("ab,bc,ca->a").reason    # doctest: +SKIP
    'cycle a-b-c remains: ...'
"""

from __future__ import annotations

import re
from typing import Any, Optional

import networkx as nx

from .graph import PatternGraph, as_pattern_graph
from .ned import explain_no_ned, find_ned
from .reduction import Eliminator, reduce_pattern
from .treewidth import elimination_ordering
from .verdict import Step, Verdict

__all__ = [
    "Model",
    "MPNNDecider",
    "SubgraphGNNDecider",
    "Local2GNNDecider",
    "Local2FGNNDecider",
    "PPGNDecider",
    "KFWLDecider",
    "get_model",
    "known_models",
    "computable",
]

#: Former names of the deciders, importable for one more release with a DeprecationWarning
#: (``PPGN`` is also the name of the layer :class:`everygraph.nn.PPGN`).
DEPRECATED_NAMES = {"MPNN": "MPNNDecider", "SubgraphGNN": "SubgraphGNNDecider", "PPGN": "PPGNDecider", "KFWL": "KFWLDecider"}


def __getattr__(name: str) -> Any:
    if name in DEPRECATED_NAMES:
        import warnings

        new = DEPRECATED_NAMES[name]
        warnings.warn(
            f"everygraph.contractions.expressivity.{name} is deprecated and will be removed in the next release; "
            f"use {new} (the name says it is a decider, not a layer)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Model:
    """A GNN family with a decision rule; ``decide(pattern) -> Verdict``."""

    name: str = "model"

    def decide(self, pattern: Any) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _cycle_text(p: PatternGraph, g: nx.Graph) -> str:
    try:
        cyc = nx.find_cycle(g)
    except nx.NetworkXNoCycle:  # pragma: no cover - callers only ask when a cycle exists
        return ""
    return "-".join(p.names[u] for u, _ in cyc)


class MPNNDecider(Model):
    r"""Message-passing GNN (1-WL): computes exactly the rooted forests.

    Node-based operations only: node features :math:`h \in \mathbb{R}^n`, matrix-vector
    products :math:`X h` (aggregate a leaf into its parent), ``diag`` (a loop is a node
    feature), pointwise products, global sums, and for an edge output the outer product
    :math:`h_a h_b^\top` times edge features :math:`X_{ab}` (messages read edge features,
    so parallel edges are fine). Hence :math:`P_H` is computable iff the underlying simple graph
    of :math:`H` is a forest and, for an edge output, :math:`a` and :math:`b` are adjacent or in
    different trees, i.e. :math:`H + ab` is a forest: treewidth :math:`\le 1`
    (Zhang et al. 2024, the MPNN family of rooted forests; Puny et al. 2023,
    node-based model). This is also ``KFWLDecider(1)``.
    """

    name = "mpnn"

    def decide(self, pattern: Any) -> Verdict:
        p = as_pattern_graph(pattern)
        elim = Eliminator(p, style="node")
        left = elim.reduce(1, fixed=set(p.distinct_special))
        if not left:
            elim.output(self.name)
            return Verdict(p, self.name, True, elim.steps, reason="a rooted forest: leaves aggregated into parents")
        g = p.simple_graph(join_specials=True)
        cyc = _cycle_text(p, g)
        via = ""
        if len(p.distinct_special) == 2 and _needs_ab(p):
            a, b = (p.names[s] for s in p.distinct_special)
            via = f" (closed by the output pair {a}{b}: {a} and {b} are joined by a longer path)"
        return Verdict(
            p, self.name, False, [],
            reason=f"cycle {cyc} remains{via}: every remaining non-special vertex has 2 or more neighbours, and "
                   "message passing only aggregates leaves (MPNN computes exactly the rooted forests)",
            obstruction=tuple(left),
        )


def _needs_ab(p: PatternGraph) -> bool:
    return nx.is_forest(p.simple_graph(False)) and not nx.is_forest(p.simple_graph(True))


class SubgraphGNNDecider(Model):
    r"""Node-marking subgraph GNN (DS-GNN / NGNN-style, one subgraph per marked vertex).

    One MPNN runs on each copy of the graph with vertex :math:`m` marked, giving an
    :math:`n \times n` representation :math:`h^{(m)}_v`; edges to the mark are features read by
    message passing from the mark. The invariant sums over marks, the node output at
    :math:`a` is :math:`h^{(a)}_a`, the edge output at :math:`(a, b)` is :math:`h^{(a)}_b`, the
    colour of :math:`b` in the copy marked :math:`a` (Zhang et al. 2024, section 2, eq. 2).
    So :math:`P_H` is computable iff deleting one vertex :math:`m` leaves a forest, with
    :math:`m` any vertex for an invariant, :math:`m = a` for a node output and for an edge
    output :math:`(a, b)` (Zhang et al. 2024, Corollary 3.5 and Theorem 3.7: the endpoint-shared
    nested ear decompositions, shared endpoint the first special vertex).

    A yes carries both certificates: the message-passing steps in the marked copy
    (``verdict.replay``) and the endpoint-shared decomposition (``verdict.decomposition``).

    Earlier versions also accepted :math:`m = b` for an edge output, i.e. the transposed
    feature :math:`h^{(b)}_a`; that is not the paper's subgraph GNN (by Theorem 3.7 its edge
    feature cannot count a pattern that is a forest only after deleting :math:`b`), so the
    mark of an edge output is now :math:`a` only.
    """

    name = "subgraph"

    def decide(self, pattern: Any) -> Verdict:
        p = as_pattern_graph(pattern)
        s = p.distinct_special
        candidates = list(range(p.num_vertices)) if not s else [s[0]]
        if p.num_vertices == 0:  # the empty pattern, the constant 1: nothing to mark
            elim = Eliminator(p, style="node")
            elim.output(self.name)
            return Verdict(p, self.name, True, elim.steps, reason="the empty pattern (the constant 1)",
                           decomposition=find_ned(p, "endpoint_shared"))
        tried = []
        for m in candidates:
            elim = Eliminator(p, style="node")
            elim.marked = m
            left = elim.reduce(1, fixed=set(s) | {m}, uncounted=m)
            if not left:
                mark = Step("mark", (), (), "mark", (),
                            f"mark {p.names[m]}: one subgraph per choice of {p.names[m]}, the mark as a node feature")
                steps = [mark] + elim.steps + [_subgraph_output(elim, p, m)]
                # the same fact in the paper's terms: an endpoint-shared nested ear decomposition
                return Verdict(p, self.name, True, steps, reason=f"deleting {p.names[m]} leaves a forest",
                               decomposition=find_ned(p, "endpoint_shared"))
            g = p.simple_graph(False)
            g.remove_node(m)
            tried.append(f"{p.names[m]} (cycle {_cycle_text(p, g) or 'through the output'})")
        where = "any vertex" if not s else p.names[s[0]]
        return Verdict(p, self.name, False, [],
                       reason=f"no choice of the marked vertex ({where}) leaves a forest: deleting "
                              + "; ".join(tried[:4]) + ("; ..." if len(tried) > 4 else ""))


def _subgraph_output(elim: Eliminator, p: PatternGraph, m: int) -> Step:
    """Final step of a subgraph certificate: pool over marks (invariant) or read h^(m)."""
    s = p.distinct_special
    fs = list(elim.factors)
    names = p.names
    if not s:
        text = f"output the invariant: sum over the marked subgraphs {names[m]} of the product of their readouts"
    elif len(s) == 1:
        text = f"output the node output at {names[m]}: the marked vertex's own feature h^({names[m]})_{names[m]}"
    else:
        other = s[1] if s[0] == m else s[0]
        text = (f"output the edge output at ({names[s[0]]},{names[s[1]]}): the feature of {names[other]} in the "
                f"subgraph marked {names[m]}, h^({names[m]})_{names[other]}")
    return Step("output", tuple(fs), tuple(elim.factors[f] for f in fs), "out", tuple(s), text)


class _EarDecompositionDecider(Model):
    """Decide by searching a nested ear decomposition of one kind (:func:`.ned.find_ned`)."""

    kind = "ned"
    label = "NED"

    def decide(self, pattern: Any) -> Verdict:
        p = as_pattern_graph(pattern)
        found = find_ned(p, self.kind)
        if found is not None:
            roots = _root_text(p, self.kind)
            return Verdict(p, self.name, True, [], decomposition=found,
                           reason=f"{'an' if self.label[0] in 'aeiou' else 'a'} {self.label} with {len(found.ears)} ear{'s' * (len(found.ears) != 1)}{roots} "
                                  f"(Zhang et al. 2024, Theorems 3.4 and 3.7); check it with verdict.decomposition.check()")
        sub = _minimal_without_ned(p, self.kind)
        names = p.names
        reason = explain_no_ned(p, self.kind)
        if sub is not None:
            reason += ("; edge-minimal sub-pattern without one: "
                       + " ".join(names[a] + names[b] for a, b in sub))
        return Verdict(p, self.name, False, [], reason=reason, obstruction=sub)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _root_text(p: PatternGraph, kind: str) -> str:
    s = p.distinct_special
    names = p.names
    if not s:
        return ""
    if kind == "endpoint_shared":
        return f" sharing the endpoint {names[s[0]]}"
    if len(s) == 1:
        return f" whose first ear ends at {names[s[0]]}"
    return f" whose first ear runs from {names[s[0]]} to {names[s[1]]}"


def _minimal_without_ned(p: PatternGraph, kind: str) -> Optional[tuple]:
    """Delete edges of the simple graph while no NED of ``kind`` exists: an edge-minimal
    sub-pattern (same vertices and special vertices) without one."""
    edges = sorted({(min(u, v), max(u, v)) for u, v in p.edges if u != v})
    keep = list(edges)
    for e in edges:
        trial = [f for f in keep if f != e]
        if find_ned((p.num_vertices, trial, p.special), kind) is None:
            keep = trial
    return tuple(keep)


class Local2GNNDecider(_EarDecompositionDecider):
    r"""Local 2-GNN: strong nested ear decompositions.

    Colours of vertex pairs refined from the pair's own colour and the multisets
    :math:`\{\{h(w, v) : w \in N(u)\}\}` and :math:`\{\{h(u, w) : w \in N(v)\}\}` (Morris et
    al. 2020; Zhang et al. 2024, eq. 3). :math:`P_H` is computable iff the simple graph of
    :math:`H` has a *strong* nested ear decomposition (the nested intervals of the children of
    every ear form a chain), whose first ear has the node output's root as an endpoint, or runs
    from :math:`a` to :math:`b` for an edge output :math:`(a, b)` (Zhang et al. 2024,
    Theorems 3.4 and 3.7). The certificate is the decomposition
    (``verdict.decomposition``, a :class:`~.ned.NestedEarDecomposition`; ``.check()`` verifies
    it against the definition); a no names the failing first ears and an edge-minimal
    sub-pattern without a strong decomposition (``verdict.obstruction``).
    """

    name = "local_2gnn"
    kind = "strong"
    label = "strong nested ear decomposition"


class Local2FGNNDecider(_EarDecompositionDecider):
    r"""Local 2-FGNN: almost-strong nested ear decompositions.

    Pair colours refined from :math:`\{\{(h(w, v), h(u, w)) : w \in N(u) \cup N(v)\}\}`, the
    folklore update restricted to neighbours of the pair (Zhang et al. 2024, eq. 5).
    :math:`P_H` is computable iff the simple graph of :math:`H` has an *almost-strong* nested
    ear decomposition (among the children of every ear, those whose interval has two or more
    edges form a chain; single-edge intervals are free), rooted like :class:`Local2GNNDecider`
    (Zhang et al. 2024, Theorems 3.4 and 3.7). Certificates as in :class:`Local2GNNDecider`.
    """

    name = "local_2fgnn"
    kind = "almost_strong"
    label = "almost-strong nested ear decomposition"


class PPGNDecider(Model):
    r"""PPGN / 2-FWL (and PPGN++): the edge-based model, treewidth :math:`\le 2`.

    Operations on :math:`n \times n` matrices: matrix product, elementwise product, row sums,
    diagonal, transpose. :math:`P_H` is computable iff the series-parallel reduction
    (delete a degree-1 vertex, replace a degree-2 vertex by an edge, merge parallel edges)
    removes every non-special vertex (Puny et al. 2023, section 5 and appendix D; Zhang et
    al. 2024: 2-FWL :math:`\leftrightarrow` treewidth :math:`\le 2`, with the edge
    :math:`ab` added for edge outputs). PPGN++ (identity channels, X and :math:`X^\top` in one
    MLP, diagonal/off-diagonal readout) is exactly as expressive (Puny et al. 2023, section 6).
    """

    name = "ppgn"

    def __init__(self, name: str = "ppgn") -> None:
        self.name = name

    def decide(self, pattern: Any) -> Verdict:
        p = as_pattern_graph(pattern)
        v = reduce_pattern(p, self.name)
        if not v.computable:
            g = p.simple_graph(join_specials=True)
            v.treewidth = elimination_ordering(g)[0]
            sub = _minimal_obstruction(g, 2)
            v.obstruction = tuple(sorted(sub.edges))
            v.reason += (
                "; minimal obstruction (a subdivided K4, edge-minimal with treewidth 3): "
                + " ".join(p.names[a] + p.names[b] for a, b in sorted(sub.edges))
            )
        return v

    def __repr__(self) -> str:
        return f"PPGNDecider(name={self.name!r})"


def _minimal_obstruction(g: nx.Graph, k: int) -> nx.Graph:
    """Delete edges while the treewidth stays above ``k``: an edge-minimal subgraph of width > k.

    For ``k = 2`` the result is a subdivision of K4 (graphs of treewidth <= 2 are exactly those
    without a K4 minor, and K4 minors of a max-degree-3 graph are topological).
    """
    h = nx.Graph(g)
    for e in sorted(g.edges):
        h.remove_edge(*e)
        if elimination_ordering(h)[0] <= k:
            h.add_edge(*e)
    h.remove_nodes_from([v for v in list(h.nodes) if h.degree(v) == 0])
    return h


class KFWLDecider(Model):
    r"""k-FWL (folklore Weisfeiler-Leman on k-tuples): treewidth :math:`\le k`.

    :math:`P_H` is computable iff the treewidth of the underlying simple graph of :math:`H`
    with its special vertices joined into a clique is at most :math:`k` (Dell, Grohe, Rattan,
    "Lovász meets Weisfeiler and Leman", ICALP 2018; Zhang et al. 2024). The certificate is
    an optimal elimination ordering (exact treewidth, :mod:`.treewidth`): each step sums one
    vertex out of the product of its factors into a tensor of order at most :math:`k`.
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k-FWL needs an integer k >= 1, got {k!r}")
        self.k = k
        self.name = f"{k}fwl"

    def decide(self, pattern: Any) -> Verdict:
        p = as_pattern_graph(pattern)
        s = p.distinct_special
        width, order = elimination_ordering(p.simple_graph(join_specials=True), keep=s)
        if width > self.k:
            return Verdict(p, self.name, False, [], treewidth=width,
                           reason=f"treewidth {width} > {self.k}: every elimination ordering of the non-special "
                                  f"vertices meets a vertex with {width} or more neighbours")
        elim = Eliminator(p, style="tensor")
        elim.loops()
        for v in order:
            elim.merge_parallel()
            elim.eliminate(v, kind="eliminate")
        elim.merge_parallel()
        elim.output(self.name)
        return Verdict(p, self.name, True, elim.steps, treewidth=width,
                       reason=f"an elimination ordering of width {width} <= {self.k}")

    def __repr__(self) -> str:
        return f"KFWLDecider(k={self.k})"


_FIXED = {
    "mpnn": MPNNDecider,
    "subgraph": SubgraphGNNDecider,
    "local_2gnn": Local2GNNDecider,
    "local2gnn": Local2GNNDecider,
    "local-2gnn": Local2GNNDecider,
    "local_2fgnn": Local2FGNNDecider,
    "local2fgnn": Local2FGNNDecider,
    "local-2fgnn": Local2FGNNDecider,
    "ppgn": lambda: PPGNDecider("ppgn"),
    "2fwl": lambda: PPGNDecider("2fwl"),
    "2-fwl": lambda: PPGNDecider("2fwl"),
    "ppgn++": lambda: PPGNDecider("ppgn++"),
}


def known_models() -> list[str]:
    """Names accepted by :func:`get_model` (``kfwl`` takes ``k``: ``"3fwl"`` or ``"kfwl:3"``)."""
    return ["mpnn", "subgraph", "local_2gnn", "local_2fgnn", "ppgn", "2fwl", "ppgn++", "kfwl:<k> (e.g. 3fwl)"]


def get_model(model: Any, k: int | None = None) -> Model:
    """A :class:`Model` from its name (case-insensitive) or the model itself."""
    if isinstance(model, Model):
        return model
    if not isinstance(model, str):
        raise TypeError(f"model must be a name or a Model, got {type(model).__name__}")
    key = model.strip().lower()
    if key in _FIXED:
        return _FIXED[key]()
    if key == "kfwl":
        if k is None:
            raise ValueError("model 'kfwl' needs k: pass k=..., or write e.g. '3fwl' or 'kfwl:3'")
        return KFWLDecider(k)
    m = re.fullmatch(r"(?:kfwl:)?(\d+)-?fwl|kfwl:(\d+)", key)
    if m:
        kk = int(m.group(1) or m.group(2))
        return PPGNDecider("2fwl") if kk == 2 and k is None else KFWLDecider(kk)
    raise ValueError(f"unknown model {model!r}; known models: {', '.join(known_models())}")


def computable(pattern: Any, model: Any = "ppgn") -> Verdict:
    """Can ``model`` compute the basis element named by ``pattern``? A :class:`Verdict`.

    Args:
        pattern: a :class:`~everygraph.contractions.Pattern`, an einsum-like string
            (``"ab,bc,ca->"``) or a ``(num_vertices, edges, special)`` triple.
        model: a name from :func:`known_models` or a :class:`Model`.

    Example:
        >>> computable("ab,bc,ca->a", "mpnn").computable
        False
        >>> computable("ab,bc,ca->a", "ppgn").computable
        True
    """
    return get_model(model).decide(pattern)
