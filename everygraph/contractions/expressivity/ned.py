r"""Nested ear decompositions: the certificates of Subgraph GNN, Local 2-GNN, Local 2-FGNN and 2-FGNN.

Zhang, Gai, Du, Ye, He, Wang, "Beyond Weisfeiler-Lehman: A Quantitative Framework for GNN
Expressiveness" (ICLR 2024, https://arxiv.org/abs/2401.08514) describe which patterns
:math:`F` each architecture counts by homomorphism through *nested ear decompositions*
(Definition 3.3). A NED of a simple graph :math:`F` is a partition of its edges into simple
paths :math:`P_1, \dots, P_m` (ears; a path is a set of edges) such that

* the first :math:`c` ears, :math:`c` the number of connected components, do not intersect
  (one root ear per component);
* every later ear :math:`P_j` is *nested on* an earlier ear :math:`P_i` (its parent): one or two
  endpoints of :math:`P_j` lie on :math:`P_i` and no other vertex of :math:`P_j` lies on any
  earlier ear. With both endpoints on :math:`P_i`, the subpath of :math:`P_i` between them is
  the *nested interval* :math:`I(P_j)`; with one endpoint :math:`I(P_j) = \emptyset`;
* for :math:`c < j < k`: :math:`I(P_j) \cap I(P_k) = \emptyset` or
  :math:`I(P_j) \subseteq I(P_k)`.

The variants (``kind``) and the model whose homomorphism expressivity they describe
(Theorem 3.4 for graphs, Theorem 3.7 for rooted graphs):

===================  ==============================================================  ===============
``kind``             extra condition                                                  model
===================  ==============================================================  ===============
``endpoint_shared``  all ears with a non-empty interval share one endpoint            Subgraph GNN
``strong``           siblings :math:`j < k`: :math:`I(P_j) \subseteq I(P_k)`          Local 2-GNN
``almost_strong``    siblings :math:`j < k` with :math:`|I(P_j)| > 1`:                Local 2-FGNN
                     :math:`I(P_j) \subseteq I(P_k)`
``ned``              none                                                             2-FGNN (2-FWL)
===================  ==============================================================  ===============

Rooted versions (Theorem 3.7): a node output at :math:`w` needs :math:`w` to be an endpoint of
the first ear, an edge output at :math:`(w, x)` needs the first ear to run from :math:`w` to
:math:`x`; for the endpoint-shared kind the shared endpoint is :math:`w` instead (and the first
ear is free).

Conventions where the paper is silent or its text can be read two ways (the paper's rooted
graphs are connected and its patterns simple):

* paths and intervals are *edge sets* (Section 2 defines a simple path as an edge set), so
  intersection, inclusion and :math:`|I|` count edges: two intervals sharing only a vertex are
  disjoint, and :math:`|I(P_j)| > 1` means the interval has at least two edges;
* only the underlying simple graph matters (loops and parallel edges never change the answer),
  and the diagonal edge output :math:`(a, a)` is the node output at :math:`a`;
* a disconnected rooted pattern: the component holding :math:`w` has :math:`w` as an endpoint of
  its root ear (and that root ear comes first); an edge output whose two special vertices lie in
  different components asks this of both components (the value factorises into two node
  outputs and the invariants of the other components); components without an edge need no ear.
  The endpoint-shared kind keeps the paper's literal reading: one shared endpoint for the whole
  pattern.

:func:`find_ned` searches for a decomposition and returns a :class:`NestedEarDecomposition`
(``None`` when there is none; :func:`explain_no_ned` then says why). :func:`check_ned` verifies
any decomposition against the definition above, independently of the search, so a certificate
can be replayed by hand or by a test.

The search works recursively: once an ear :math:`P` is fixed, every piece of the rest that hangs
below it (a chord, or a connected component of :math:`F - V(P)` with its edges to :math:`P`)
must attach to :math:`P` at one or two vertices, and can always be made a child of :math:`P`:
a piece attached at :math:`x` is a rooted sub-problem whose first ear starts at :math:`x`, a
piece attached at :math:`x, y` one whose first ear runs from :math:`x` to :math:`y`. The
intervals of the children on :math:`P` must then satisfy the condition of the kind. Sub-problems
are memoised; patterns with a dozen edges decide in milliseconds.

Example:
    >>> d = find_ned("ab,bc,cd,da,ac->", "strong")
    >>> print(d.format())                                     # doctest: +SKIP
    strong NED of ab,ac,ad,bc,cd-> (invariant), 3 ears:
      P1: a-b-c-d               root ear
      P2: a-c                   nested on P1, interval a-b-c
      P3: a-d                   nested on P1, interval a-b-c-d
    >>> check_ned("ab,bc,cd,da,ac->", d)                      # raises if the certificate is wrong
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

from .graph import PatternGraph, as_pattern_graph

__all__ = ["KINDS", "Ear", "NestedEarDecomposition", "find_ned", "check_ned", "explain_no_ned"]

#: The NED variants, from the most restrictive to the most general (2-FGNN).
KINDS = ("endpoint_shared", "strong", "almost_strong", "ned")

_KIND_TEXT = {
    "endpoint_shared": "endpoint-shared NED",
    "strong": "strong NED",
    "almost_strong": "almost-strong NED",
    "ned": "NED",
}

Edge = frozenset  # an undirected edge {u, v}


@dataclass(frozen=True)
class Ear:
    """One ear: the path ``path`` (vertex sequence, at least one edge), nested on ear ``parent``
    (an index into the decomposition; ``None`` for a root ear) along ``interval`` (the vertex
    sequence of the nested interval on the parent; empty when only one endpoint lies on it)."""

    path: tuple[int, ...]
    parent: Optional[int]
    interval: tuple[int, ...] = ()


@dataclass(frozen=True)
class NestedEarDecomposition:
    """A nested ear decomposition of ``pattern``'s simple graph, in order (``ears[0]`` is
    :math:`P_1`), of the variant ``kind``. ``shared``: the shared endpoint of an endpoint-shared
    NED (``None`` when no ear has a non-empty interval or for other kinds)."""

    pattern: PatternGraph
    kind: str
    ears: tuple[Ear, ...]
    shared: Optional[int] = None

    def format(self) -> str:
        """The ears one per line: path, parent and nested interval, with the pattern's letters."""
        p = self.pattern
        names = p.names

        def text(seq: tuple[int, ...]) -> str:
            return "-".join(names[v] for v in seq)

        head = f"{_KIND_TEXT[self.kind]} of {p} ({p.output}), {len(self.ears)} ear{'s' * (len(self.ears) != 1)}"
        if self.kind == "endpoint_shared" and self.shared is not None:
            head += f", shared endpoint {names[self.shared]}"
        lines = [head + ":"]
        width = max([len(text(e.path)) for e in self.ears] + [4])
        for j, ear in enumerate(self.ears, 1):
            if ear.parent is None:
                where = "root ear"
            elif ear.interval:
                where = f"nested on P{ear.parent + 1}, interval {text(ear.interval)}"
            else:
                where = f"nested on P{ear.parent + 1} at {names[ear.path[0]]} (one endpoint, empty interval)"
            lines.append(f"  P{j}: {text(ear.path).ljust(width)}  {where}")
        if not self.ears:
            lines.append("  (no edges: the empty decomposition)")
        return "\n".join(lines)

    def check(self) -> None:
        """Verify this decomposition against the definition (:func:`check_ned`)."""
        check_ned(self.pattern, self)

    def __str__(self) -> str:
        return self.format()


# ----------------------------------------------------------------------------- helpers


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return kind


def _simple_edges(p: PatternGraph) -> frozenset:
    return frozenset(Edge((u, v)) for u, v in p.edges if u != v)


def _adjacency(edges) -> dict[int, set[int]]:
    adj: dict[int, set[int]] = {}
    for e in edges:
        u, v = tuple(e)
        adj.setdefault(u, set()).add(v)
        adj.setdefault(v, set()).add(u)
    return adj


def _components(vertices: set[int], edges) -> list[tuple[set[int], frozenset]]:
    """Connected components (vertex set, edge set) of the graph ``(vertices, edges)``."""
    adj = _adjacency(edges)
    seen: set[int] = set()
    out = []
    for s in sorted(vertices):
        if s in seen:
            continue
        comp = {s}
        stack = [s]
        while stack:
            u = stack.pop()
            for w in adj.get(u, ()):
                if w not in comp:
                    comp.add(w)
                    stack.append(w)
        seen |= comp
        out.append((comp, frozenset(e for e in edges if next(iter(e)) in comp)))
    return out


def _root_requirements(p: PatternGraph) -> list[int]:
    """The special vertices, with the diagonal edge output (a, a) read as the node output at a."""
    return list(p.distinct_special)


# ----------------------------------------------------------------------------- the search


def _paths(adj: dict[int, set[int]], ends: tuple[int, ...]):
    """Simple paths (vertex tuples, at least one edge) with the required endpoints, longest first:
    ``()`` any path (one orientation each), ``(x,)`` paths starting at ``x``, ``(x, y)`` paths
    from ``x`` to ``y``."""
    found = []
    starts = [ends[0]] if ends else sorted(adj)

    def grow(path: list[int], on: set[int]) -> None:
        last = path[-1]
        if len(path) > 1:
            if len(ends) == 2:
                if last == ends[1]:
                    found.append(tuple(path))
                    return
            elif ends or path[0] < path[-1]:
                found.append(tuple(path))
        for w in sorted(adj[last]):
            if w not in on:
                path.append(w)
                on.add(w)
                grow(path, on)
                on.discard(w)
                path.pop()

    for s in starts:
        if s in adj:
            grow([s], {s})
    found.sort(key=lambda t: -len(t))
    return found


def _crossing(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Edge intervals [i, j) on a path that overlap without one containing the other."""
    (i1, j1), (i2, j2) = a, b
    if j1 <= i2 or j2 <= i1:  # disjoint as edge sets (sharing a vertex is allowed)
        return False
    inside = (i1 <= i2 and j2 <= j1) or (i2 <= i1 and j1 <= j2)
    return not inside


def _nested(a: tuple[int, int], b: tuple[int, int]) -> bool:
    (i1, j1), (i2, j2) = a, b
    return (i1 <= i2 and j2 <= j1) or (i2 <= i1 and j1 <= j2)


def _interval_violation(kind: str, intervals: list[tuple[int, int]]) -> Optional[tuple]:
    """The first pair of sibling intervals (position pairs on the parent) the kind forbids."""
    for a in range(len(intervals)):
        for b in range(a + 1, len(intervals)):
            x, y = intervals[a], intervals[b]
            if _crossing(x, y):
                return (x, y, "cross")
            if kind == "strong" and not _nested(x, y):
                return (x, y, "disjoint")
            if kind == "almost_strong" and min(x[1] - x[0], y[1] - y[0]) > 1 and not _nested(x, y):
                return (x, y, "disjoint")
    return None


# A solution tree: (path, children) with children a tuple of (solution tree, interval positions or None).


@lru_cache(maxsize=200_000)
def _solve(edges: frozenset, ends: tuple[int, ...], kind: str, shared: Optional[int]):
    """A solution tree for the connected edge set ``edges`` whose first ear has endpoints ``ends``,
    or ``None``."""
    adj = _adjacency(edges)
    for path in _paths(adj, ends):
        tree, _ = _try_ear(edges, path, kind, shared)
        if tree is not None:
            return tree
    return None


def _try_ear(edges: frozenset, path: tuple[int, ...], kind: str, shared: Optional[int]):
    """Make ``path`` the root ear of ``edges``: ``(solution tree, None)`` or ``(None, why)``."""
    pos = {v: i for i, v in enumerate(path)}
    on_path = set(path)
    path_edges = {Edge((path[i], path[i + 1])) for i in range(len(path) - 1)}
    rest = edges - path_edges
    children = []
    intervals = []
    off_vertices = {v for e in rest for v in e} - on_path
    chords = [e for e in rest if e <= on_path]
    for e in chords:
        x, y = sorted(e, key=pos.__getitem__)
        if kind == "endpoint_shared" and shared not in (x, y):
            return None, ("unshared", (x, y))
        intervals.append((pos[x], pos[y]))
        children.append(((tuple((x, y)), ()), (pos[x], pos[y])))
    inner = frozenset(e for e in rest if not e & on_path)
    hanging = [e for e in rest if not e <= on_path]
    for comp, _ in _components(off_vertices, inner):
        # the piece: the component of F - V(P) with all its edges, those to the ear included
        comp_edges = frozenset(e for e in hanging if e & comp)
        attach = sorted({v for e in comp_edges for v in e} & on_path, key=pos.__getitem__)
        if len(attach) > 2:
            return None, ("attach", tuple(attach), comp)
        if len(attach) == 2:
            x, y = attach
            if kind == "endpoint_shared" and shared not in (x, y):
                return None, ("unshared", (x, y), comp)
            sub = _solve(comp_edges, (x, y), kind, shared)
            if sub is None:
                return None, ("sub", (x, y), comp)
            intervals.append((pos[x], pos[y]))
            children.append((sub, (pos[x], pos[y])))
        else:
            (x,) = attach
            sub = _solve(comp_edges, (x,), kind, shared)
            if sub is None:
                return None, ("sub", (x,), comp)
            children.append((sub, None))
    bad = _interval_violation(kind, intervals)
    if bad is not None:
        return None, ("intervals", path[bad[0][0]: bad[0][1] + 1], path[bad[1][0]: bad[1][1] + 1], bad[2])
    # siblings in an order the kind accepts: empty intervals first, then by growing length
    children.sort(key=lambda c: (-1, 0) if c[1] is None else (c[1][1] - c[1][0], c[1][0]))
    return (path, tuple(children)), None


def _flatten(tree, parent: Optional[int], interval: tuple[int, ...], out: list[Ear]) -> None:
    path, children = tree
    me = len(out)
    out.append(Ear(tuple(path), parent, interval))
    for sub, iv in children:
        sub_interval = tuple(path[iv[0]: iv[1] + 1]) if iv is not None else ()
        sub_path = sub[0]
        if iv is not None and sub_path[0] != path[iv[0]]:  # orient the child from the interval's start
            sub = (tuple(reversed(sub_path)), sub[1])
        _flatten(sub, me, sub_interval, out)


def _plan(p: PatternGraph, kind: str) -> list[tuple[frozenset, tuple[int, ...]]]:
    """Components with edges and the endpoints their root ear must have, rooted ones first."""
    edges = _simple_edges(p)
    verts = {v for e in edges for v in e}
    specials = _root_requirements(p)
    plan = []
    for comp, comp_edges in _components(verts, edges):
        ends: tuple[int, ...] = ()
        if kind != "endpoint_shared":
            ends = tuple(s for s in specials if s in comp)
        plan.append((comp_edges, ends))
    plan.sort(key=lambda c: tuple(specials.index(s) for s in c[1]) if c[1] else (len(specials),))
    return plan


def _shared_candidates(p: PatternGraph, kind: str) -> list[Optional[int]]:
    if kind != "endpoint_shared":
        return [None]
    specials = _root_requirements(p)
    if specials:
        return [specials[0]]
    return sorted({v for e in _simple_edges(p) for v in e}) or [None]


def find_ned(pattern: Any, kind: str = "ned") -> Optional[NestedEarDecomposition]:
    """A nested ear decomposition of ``pattern`` of the given ``kind``, or ``None`` if none exists.

    Args:
        pattern: a :class:`~everygraph.contractions.Pattern`, an einsum-like string
            (``"ab,bc,ca->a"``) or a ``(num_vertices, edges, special)`` triple. Its special
            vertices root the decomposition (see the module docstring).
        kind: ``"endpoint_shared"``, ``"strong"``, ``"almost_strong"`` or ``"ned"``.

    Returns:
        The decomposition (check it with :func:`check_ned`), or ``None``.
    """
    p = as_pattern_graph(pattern)
    kind = _check_kind(kind)
    for shared in _shared_candidates(p, kind):
        trees = []
        for comp_edges, ends in _plan(p, kind):
            tree = _solve(comp_edges, ends, kind, shared)
            if tree is None:
                break
            if len(ends) == 1 and tree[0][0] != ends[0]:
                tree = (tuple(reversed(tree[0])), tree[1])
            trees.append(tree)
        else:
            roots: list[Ear] = [Ear(tuple(t[0]), None, ()) for t in trees]
            ears: list[Ear] = list(roots)
            for r, tree in enumerate(trees):
                for sub, iv in tree[1]:
                    path = tree[0]
                    interval = tuple(path[iv[0]: iv[1] + 1]) if iv is not None else ()
                    if iv is not None and sub[0][0] != path[iv[0]]:
                        sub = (tuple(reversed(sub[0])), sub[1])
                    _flatten(sub, r, interval, ears)
            return NestedEarDecomposition(p, kind, tuple(ears), shared if _has_interval(ears) else None)
    return None


def _has_interval(ears) -> bool:
    return any(e.interval for e in ears)


def explain_no_ned(pattern: Any, kind: str = "ned", limit: int = 4) -> str:
    """Why ``pattern`` has no NED of ``kind``: for the component that fails, what goes wrong with
    each choice of its first ear (up to ``limit`` of them), in words."""
    p = as_pattern_graph(pattern)
    kind = _check_kind(kind)
    names = p.names

    def vs(seq) -> str:
        return "-".join(names[v] for v in seq)

    def why_text(why) -> str:
        tag = why[0]
        if tag == "attach":
            return (f"the piece through {','.join(names[v] for v in sorted(why[2]))} touches the ear at "
                    f"{len(why[1])} vertices ({', '.join(names[v] for v in why[1])}); an ear nests on at most two")
        if tag == "unshared":
            return f"an ear would nest on {vs(why[1])}, which avoids the shared endpoint"
        if tag == "sub":
            at = " and ".join(names[v] for v in why[1])
            return (f"the piece through {','.join(names[v] for v in sorted(why[2]))} hanging at {at} has no "
                    f"{_KIND_TEXT[kind]} starting {'there' if len(why[1]) == 1 else 'and ending there'}")
        a, b, how = why[1], why[2], why[3]
        if how == "cross":
            return f"two ears would nest on the intervals {vs(a)} and {vs(b)}, which overlap without nesting"
        need = "a chain" if kind == "strong" else "a chain for intervals of two or more edges"
        return f"two ears would nest on the disjoint intervals {vs(a)} and {vs(b)} (the {_KIND_TEXT[kind]} needs {need})"

    if find_ned(p, kind) is not None:
        return f"{pattern} has a {_KIND_TEXT[kind]}"
    lines = []
    for shared in _shared_candidates(p, kind):
        for comp_edges, ends in _plan(p, kind):
            if _solve(comp_edges, ends, kind, shared) is not None:
                continue
            paths = _paths(_adjacency(comp_edges), ends)
            where = ("any first ear" if not ends else
                     f"every first ear {'starting at ' + names[ends[0]] if len(ends) == 1 else 'from ' + names[ends[0]] + ' to ' + names[ends[1]]}")
            head = f"no {_KIND_TEXT[kind]}"
            if kind == "endpoint_shared" and shared is not None:
                head += f" with shared endpoint {names[shared]}"
            lines.append(f"{head}: {where} fails ({len(paths)} tried)")
            for path in paths[:limit]:
                _, why = _try_ear(comp_edges, path, kind, shared)
                lines.append(f"first ear {vs(path)}: {why_text(why)}")
            if len(paths) > limit:
                lines.append(f"... and {len(paths) - limit} more first ears")
            break
        if kind != "endpoint_shared" or len(_shared_candidates(p, kind)) == 1:
            break
    if kind == "endpoint_shared" and len(_shared_candidates(p, kind)) > 1:
        lines = [f"no vertex serves as the shared endpoint of an endpoint-shared NED "
                 f"({len(_shared_candidates(p, kind))} tried)"] + lines[:1 + limit]
    return "; ".join(lines)


# ----------------------------------------------------------------------------- the checker


def check_ned(pattern: Any, decomposition: NestedEarDecomposition, kind: Optional[str] = None) -> None:
    """Verify ``decomposition`` against Definition 3.3 of Zhang et al. and the condition of its kind.

    Independent of :func:`find_ned`: it reads the ears in order and checks, one by one, that they
    are simple paths partitioning the edges, that the first ears are one per component and
    pairwise disjoint, that each later ear nests on its stated parent with a correct interval,
    that intervals are laminar (edge sets), the sibling condition of the kind, and the root
    conditions of the special vertices. Raises ``ValueError`` naming the first violation.

    Args:
        pattern: the pattern the decomposition claims to decompose.
        decomposition: a :class:`NestedEarDecomposition`.
        kind: check against this kind instead of ``decomposition.kind``.
    """
    p = as_pattern_graph(pattern)
    if not isinstance(decomposition, NestedEarDecomposition):
        raise TypeError(f"decomposition must be a NestedEarDecomposition, got {type(decomposition).__name__}")
    kind = _check_kind(kind or decomposition.kind)
    names = p.names
    edges = _simple_edges(p)
    ears = decomposition.ears

    def fail(msg: str) -> None:
        raise ValueError(f"not a {_KIND_TEXT[kind]} of {p}: {msg}")

    def vs(seq) -> str:
        return "-".join(names[v] for v in seq)

    ear_edges: list[list] = []
    covered: set = set()
    for j, ear in enumerate(ears, 1):
        path = ear.path
        if len(path) < 2 or len(set(path)) != len(path):
            fail(f"P{j} = {vs(path)} is not a simple path with an edge")
        es = [Edge((path[i], path[i + 1])) for i in range(len(path) - 1)]
        for e in es:
            if e not in edges:
                fail(f"P{j} uses {vs(tuple(e))}, which is not an edge of the pattern")
            if e in covered:
                fail(f"the edge {vs(tuple(e))} lies on two ears")
            covered.add(e)
        ear_edges.append(es)
    if covered != edges:
        missing = sorted(tuple(sorted(e)) for e in edges - covered)
        fail(f"the edges {', '.join(vs(e) for e in missing)} lie on no ear")
    verts = {v for e in edges for v in e}
    comps = _components(verts, edges)
    c = len(comps)
    for j in range(min(c, len(ears))):
        if ears[j].parent is not None:
            fail(f"P{j + 1} must be a root ear (the first {c} ears are one per component)")
    for j in range(c):
        for k in range(j + 1, c):
            if set(ears[j].path) & set(ears[k].path):
                fail(f"the root ears P{j + 1} and P{k + 1} intersect")
    seen: set[int] = set()
    for j in range(c):
        seen |= set(ears[j].path)
    children: dict[int, list[int]] = {}
    intervals: dict[int, frozenset] = {}
    for j in range(c, len(ears)):
        ear = ears[j]
        i = ear.parent
        if i is None or not (0 <= i < j):
            fail(f"P{j + 1} needs an earlier parent ear")
        parent = ears[i].path
        ends = (ear.path[0], ear.path[-1])
        on_parent = [v for v in ends if v in parent]
        if not on_parent:
            fail(f"no endpoint of P{j + 1} = {vs(ear.path)} lies on its parent P{i + 1}")
        for v in ear.path:
            if v in seen and v not in on_parent:
                fail(f"the vertex {names[v]} of P{j + 1} lies on an earlier ear but is not an endpoint on its parent")
        if len(on_parent) == 2:
            a, b = sorted(parent.index(v) for v in ends)
            iv = parent[a: b + 1]
            if tuple(ear.interval) not in (iv, tuple(reversed(iv))):
                fail(f"the interval of P{j + 1} on P{i + 1} is {vs(iv)}, not {vs(ear.interval)}")
            intervals[j] = frozenset(Edge((iv[t], iv[t + 1])) for t in range(len(iv) - 1))
        else:
            if ear.interval:
                fail(f"P{j + 1} has one endpoint on its parent, so its interval is empty")
            intervals[j] = frozenset()
        children.setdefault(i, []).append(j)
        seen |= set(ear.path)
    order = sorted(intervals)
    for x in range(len(order)):
        for y in range(x + 1, len(order)):
            j, k = order[x], order[y]
            if intervals[j] & intervals[k] and not intervals[j] <= intervals[k]:
                fail(f"the intervals of P{j + 1} and P{k + 1} overlap but the earlier is not inside the later")
    for sibs in children.values():
        for x in range(len(sibs)):
            for y in range(x + 1, len(sibs)):
                j, k = sibs[x], sibs[y]
                if kind == "strong" and not intervals[j] <= intervals[k]:
                    fail(f"strong: P{j + 1} and P{k + 1} nest on one ear but I(P{j + 1}) is not inside I(P{k + 1})")
                if kind == "almost_strong" and len(intervals[j]) > 1 and not intervals[j] <= intervals[k]:
                    fail(f"almost-strong: |I(P{j + 1})| > 1 but I(P{j + 1}) is not inside I(P{k + 1})")
    specials = _root_requirements(p)
    if kind == "endpoint_shared":
        with_iv = [j for j in intervals if intervals[j]]
        if with_iv:
            common = set.intersection(*({ears[j].path[0], ears[j].path[-1]} for j in with_iv))
            if specials:
                if specials[0] not in common:
                    fail(f"the ears with non-empty intervals do not all end at {names[specials[0]]}")
            elif not common:
                fail("the ears with non-empty intervals share no endpoint")
        return
    root_of = {}
    for j in range(c):
        for v in ears[j].path:
            root_of[v] = j
    need: dict[int, list[int]] = {}
    for s in specials:
        if s in root_of:
            need.setdefault(root_of[s], []).append(s)
    for j, ss in need.items():
        ends = {ears[j].path[0], ears[j].path[-1]}
        for s in ss:
            if s not in ends:
                fail(f"the special vertex {names[s]} is not an endpoint of its component's first ear P{j + 1}")
    rooted = sorted(need, key=lambda j: min(specials.index(s) for s in need[j]))
    if rooted and rooted != list(range(len(rooted))):
        fail("the root ears of the components holding the special vertices must come first")
