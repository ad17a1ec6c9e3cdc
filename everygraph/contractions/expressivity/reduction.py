r"""The reduction-sequence decider: contract a pattern with a model's operations.

Puny et al. ("Equivariant Polynomials for Graph Neural Networks", ICML 2023,
https://arxiv.org/abs/2302.11556, section 5 and appendix D) decide whether the prototypical
edge-based model (PPGN / 2-FWL) computes :math:`P_H` by contracting :math:`H` with the
operations it has:

* a loop at :math:`v` is the diagonal :math:`\operatorname{diag}(X)`: a node feature of :math:`v`;
* parallel edges between :math:`u` and :math:`v` are an elementwise product :math:`X \odot X`
  (or :math:`X \odot X^\top` when they point opposite ways);
* a non-special vertex with no neighbour is a global sum; with one neighbour :math:`u` it is a
  row sum / matrix-vector product into a node feature of :math:`u`; with two neighbours
  :math:`u, w` it is the matrix product :math:`M_{uv}\operatorname{diag}(d_v) M_{vw}`, a new
  edge :math:`(u, w)`;

and :math:`H` is computable iff these operations remove every non-special vertex. These are
the series-parallel reductions, which decide treewidth :math:`\le 2`; the rules only ever
pass to minors, so applying them greedily in any order is complete (a graph of treewidth
:math:`\le 2` with the special clique added always has a non-special vertex of degree
:math:`\le 2`). :mod:`.treewidth` is the independent decider the tests compare against.

The node-based model (MPNN) has the same operations without the matrix product (only node
features move: matrix-vector products, diag, pointwise products, and for an edge output the
edge value :math:`X_{ab}` and the outer product of the two endpoint features); the marked
subgraph model runs the node-based operations with one extra vertex kept fixed (the mark).
:class:`Eliminator` is that shared machinery; it records every operation as a
:class:`~.verdict.Step`.
"""

from __future__ import annotations

from typing import Iterable, Optional

import networkx as nx

from .graph import PatternGraph
from .verdict import Step, Verdict

__all__ = ["Eliminator", "reduce_pattern"]


class Eliminator:
    """Factor state of a pattern under contraction, recording :class:`Step` s.

    ``style`` picks the vocabulary of the step texts (``"edge"``: PPGN, ``"node"``: MPNN /
    subgraph, ``"tensor"``: k-FWL).
    """

    def __init__(self, pattern: PatternGraph, style: str = "edge") -> None:
        self.p = pattern
        self.style = style
        self.names = pattern.names
        self.factors: dict[str, tuple[int, ...]] = {}
        self.steps: list[Step] = []
        self.alive = set(range(pattern.num_vertices))
        self._counter = 0
        touched = set()
        for i, (u, v) in enumerate(pattern.edges):
            self.factors[f"X:{i}"] = (u, v)
            touched.update((u, v))
        for v in range(pattern.num_vertices):
            if v not in touched:
                self.factors[f"1:{v}"] = (v,)
        self.marked: Optional[int] = None

    # ----------------------------------------------------------------- helpers
    def n(self, v: int) -> str:
        return self.names[v]

    def pair(self, vars_: Iterable[int]) -> str:
        return "(" + ",".join(self.n(v) for v in vars_) + ")"

    def _new(self, vars_: tuple[int, ...]) -> str:
        self._counter += 1
        fid = f"t{self._counter}"
        self.factors[fid] = vars_
        return fid

    def _record(self, kind: str, inputs: list[str], out_vars: tuple[int, ...], text: str) -> str:
        in_vars = tuple(self.factors[f] for f in inputs)
        fid = self._new(out_vars)
        for f in inputs:
            del self.factors[f]
        self.steps.append(Step(kind, tuple(inputs), in_vars, fid, out_vars, text))
        return fid

    def containing(self, v: int) -> list[str]:
        return [f for f, vs in self.factors.items() if v in vs]

    def neighbours(self, v: int) -> set[int]:
        out: set[int] = set()
        for f in self.containing(v):
            out.update(self.factors[f])
        out.discard(v)
        return out

    # --------------------------------------------------------------- operations
    def loops(self) -> None:
        """Read every loop as a node feature (the diagonal of X)."""
        for f, vs in list(self.factors.items()):
            if len(vs) == 2 and vs[0] == vs[1]:
                v = vs[0]
                text = {
                    "edge": f"loop ({self.n(v)},{self.n(v)}): take the diagonal diag(X) as a node feature of {self.n(v)}",
                    "node": f"loop ({self.n(v)},{self.n(v)}): read the node feature diag(X) at {self.n(v)}",
                }.get(self.style, f"loop ({self.n(v)},{self.n(v)}): diagonal of X at {self.n(v)}")
                self._record("loop", [f], (v,), text)

    def merge_parallel(self) -> None:
        """Multiply parallel edges (factors on the same pair of vertices) elementwise."""
        groups: dict[frozenset, list[str]] = {}
        for f, vs in self.factors.items():
            if len(vs) == 2 and vs[0] != vs[1]:
                groups.setdefault(frozenset(vs), []).append(f)
        for key, fs in groups.items():
            if len(fs) < 2:
                continue
            u, v = sorted(key)
            flipped = any(self.factors[f] != self.factors[fs[0]] for f in fs)
            if self.style == "node" and self.marked is not None and self.marked in key:
                w = v if u == self.marked else u
                text = (f"multiply the {len(fs)} features of {self.n(w)} that read the edges to the marked vertex "
                        f"{self.n(self.marked)} pointwise")
            elif self.style == "node":
                text = f"combine the {len(fs)} parallel edge features ({self.n(u)},{self.n(v)}) elementwise"
            else:
                text = (f"multiply parallel edges ({self.n(u)},{self.n(v)}) elementwise "
                        f"({len(fs)} factors{', one transposed' if flipped else ''})")
            self._record("merge", fs, self.factors[fs[0]], text)

    def eliminate(self, v: int, kind: Optional[str] = None) -> None:
        """Sum out vertex ``v``: multiply every factor containing it, sum over ``v``."""
        fs = self.containing(v)
        out_vars = tuple(sorted(self.neighbours(v)))
        self.alive.discard(v)
        nv = self.n(v)
        nodefeat = [f for f in fs if self.factors[f] == (v,)]
        feat = f" weighted by {len(nodefeat)} node feature{'s' if len(nodefeat) > 1 else ''} of {nv}" if nodefeat else ""
        m = self.marked
        others = tuple(u for u in out_vars if u != m)
        if kind is None:
            kind = ("sum", "leaf", "series")[len(others)] if len(others) <= 2 else "eliminate"
        if self.style == "tensor" or kind == "eliminate":
            text = (f"eliminate {nv}: sum over {nv} of the product of its {len(fs)} factors "
                    f"-> order-{len(out_vars)} tensor on {self.pair(out_vars)}")
        elif kind == "sum":
            if m is not None and m in out_vars:
                text = f"sum out {nv} in each marked subgraph -> node feature of the mark {self.n(m)}"
            elif self.style == "node":
                text = f"sum out {nv} (global readout: sum of its node feature over all nodes)"
            else:
                text = f"sum out {nv} (global sum{feat})"
        elif kind == "leaf":
            u = others[0]
            if self.style == "node":
                inside = f" in each subgraph marked {self.n(m)}" if m is not None and m in out_vars else ""
                text = f"message passing{inside}: aggregate leaf {nv} into {self.n(u)} (matrix-vector product X·h{feat})"
            else:
                text = f"sum out {nv} into {self.n(u)} (row sum of ({self.n(u)},{nv}){feat}: matrix-vector product)"
        else:  # series
            u, w = others
            mid = f" diag({nv})" if nodefeat else ""
            text = f"contract {nv} by matrix product of ({self.n(u)},{nv}){mid} and ({nv},{self.n(w)}) -> edge ({self.n(u)},{self.n(w)})"
        self._record(kind, fs, out_vars, text)

    def output(self, model: str) -> None:
        """Multiply what is left on the special vertices into the output."""
        s = self.p.distinct_special
        fs = list(self.factors)
        out_vars = tuple(s)
        if self.p.output == "invariant":
            what = "the invariant: product of the remaining scalars" if fs else "the invariant"
        elif self.p.output == "node" or len(s) == 1:
            what = f"the node output at {self.n(s[0])}: pointwise product of its node features and the scalars"
        else:
            a, b = s
            has_edge = any(set(self.factors[f]) == {a, b} for f in fs)
            if self.style == "node":
                what = (f"the edge output at ({self.n(a)},{self.n(b)}): outer product of the node features of "
                        f"{self.n(a)} and {self.n(b)}" + (", times the edge features" if has_edge else ""))
            else:
                feats = [f for f in fs if len(self.factors[f]) == 1]
                scal = [f for f in fs if len(self.factors[f]) == 0]
                parts = [f"the matrix on ({self.n(a)},{self.n(b)})"] if has_edge else []
                if feats:
                    parts.append(f"diag of {len(feats)} node feature(s) on either side")
                if scal:
                    parts.append(f"{len(scal)} scalar(s)")
                if not has_edge:
                    parts.append("broadcast to all pairs")
                what = f"the edge output at ({self.n(a)},{self.n(b)}): " + ", ".join(parts)
        self._record("output", fs, out_vars, f"output {what}")

    # ----------------------------------------------------------------- driving
    def reduce(self, max_neighbours: int, fixed: set[int], uncounted: Optional[int] = None) -> list[int]:
        """Greedily eliminate non-fixed vertices with at most ``max_neighbours`` neighbours.

        ``uncounted`` (the marked vertex of a subgraph model) is not counted as a neighbour.
        Returns the non-fixed vertices left (empty: success).
        """
        self.loops()
        while True:
            self.merge_parallel()
            best = None
            for v in sorted(self.alive - fixed):
                nb = self.neighbours(v)
                nb.discard(uncounted)
                if len(nb) <= max_neighbours and (best is None or len(nb) < best[0]):
                    best = (len(nb), v)
            if best is None:
                break
            self.eliminate(best[1])
        self.merge_parallel()
        return sorted(self.alive - fixed)

    def kernel(self) -> nx.MultiGraph:
        """The remaining factors as a multigraph (for the obstruction of a *no*)."""
        g = nx.MultiGraph()
        g.add_nodes_from(self.alive)
        for vs in self.factors.values():
            if len(vs) == 2:
                g.add_edge(*vs)
        return g

    def describe_kernel(self) -> str:
        g = self.kernel()
        edges = sorted({tuple(sorted(e)) for e in g.edges()})
        return ("vertices {" + ",".join(self.n(v) for v in sorted(g.nodes)) + "}, edges "
                + " ".join(self.n(u) + self.n(v) for u, v in edges))


def reduce_pattern(p: PatternGraph, model: str = "ppgn") -> Verdict:
    """PPGN / 2-FWL: the series-parallel reduction of ``p`` keeping its special vertices."""
    elim = Eliminator(p, style="edge")
    left = elim.reduce(2, fixed=set(p.distinct_special))
    if not left:
        elim.output(model)
        return Verdict(p, model, True, elim.steps,
                       reason=f"every non-special vertex was contracted ({len(elim.steps)} operations)")
    degrees = {v: len(elim.neighbours(v)) for v in left}
    reason = (
        "reduction stuck: every remaining non-special vertex has 3 or more neighbours "
        f"({', '.join(f'{elim.n(v)}: {d}' for v, d in degrees.items())}); remaining "
        + elim.describe_kernel()
        + (" with the special vertices " + ",".join(elim.n(s) for s in p.distinct_special) if p.special else "")
        + ". No row sum, matrix product or elementwise product applies: the pattern"
        + (f" plus the edge {p.names[p.distinct_special[0]]}{p.names[p.distinct_special[1]]}"
           if len(p.distinct_special) == 2 else "")
        + " has treewidth > 2 (a K4 minor)"
    )
    return Verdict(p, model, False, [], reason=reason, obstruction=tuple(left))
