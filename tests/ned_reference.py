"""Reference for the ear-decomposition deciders: an exhaustive search over ear sequences.

Shared by tests/contractions/test_ned_zoo.py and tests/test_cli.py; written from Definition 3.3
of Zhang et al., "Beyond Weisfeiler-Lehman: A Quantitative Framework for GNN Expressiveness"
(ICLR 2024), independently of everygraph/contractions/expressivity/ned.py.
"""

from functools import lru_cache

import networkx as nx


@lru_cache(maxsize=None)
def all_paths(edges: frozenset) -> tuple:
    """Every simple path with at least one edge, in both orientations (depth-first)."""
    adj = {}
    for e in edges:
        u, v = tuple(e)
        adj.setdefault(u, []).append(v)
        adj.setdefault(v, []).append(u)
    out = []

    def walk(path):
        if len(path) > 1:
            out.append(tuple(path))
        for w in adj[path[-1]]:
            if w not in path:
                walk(path + [w])

    for s in adj:
        walk([s])
    return tuple(out)


@lru_cache(maxsize=None)
def brute_force_ned(edges: frozenset, specials: tuple, kind: str) -> bool:
    """Exhaustive search over ear *sequences*, straight from Definition 3.3 of Zhang et al.

    Every ordered choice of simple paths covering the edges is tried, each later ear with every
    possible earlier parent; each new ear is checked against the earlier ones (root ears
    pairwise disjoint, nesting, laminar intervals as edge sets, the kind's sibling condition in
    sequence order, the shared endpoint, the root conditions of the special vertices).
    Deliberately simple and slow:
    written separately from ``ned.py``, it shares no code with the decider.
    """
    g = nx.Graph()
    g.add_edges_from(tuple(e) for e in edges)
    comps = [set(c) for c in nx.connected_components(g)]
    c = len(comps)
    paths = all_paths(edges)
    path_edges = {p: frozenset(frozenset(p[i: i + 2]) for i in range(len(p) - 1)) for p in paths}
    all_edges = frozenset(edges)

    comp_of = {v: i for i, comp in enumerate(comps) for v in comp}

    def allowed(seq, p, parent, iv) -> bool:
        """The definition's conditions that involve the new ear and the earlier ones."""
        if parent is None:
            if comp_of[p[0]] in {comp_of[q[0]] for q, _, _ in seq}:
                return False  # a second root ear in one component can never be completed
            if kind != "endpoint_shared":
                for s in specials:
                    if s in comps[comp_of[p[0]]] and s not in (p[0], p[-1]):
                        return False
            return True
        new = iv or frozenset()
        for q, par, old in seq[c:]:
            old = old or frozenset()
            if old & new and not old <= new:
                return False
            if par == parent and kind == "strong" and not old <= new:
                return False
            if par == parent and kind == "almost_strong" and len(old) > 1 and not old <= new:
                return False
        if kind == "endpoint_shared" and iv:
            ends = {p[0], p[-1]}
            if specials and specials[0] not in ends:
                return False
            for q, _, old in seq[c:]:
                if old:
                    ends &= {q[0], q[-1]}
            if not ends:
                return False
        return True

    def finished(seq) -> bool:
        if kind == "endpoint_shared":
            return True
        # rooted: the root ears of the special vertices' components come first, in order
        firsts = []
        for s in specials:
            if s not in g:
                continue  # an isolated special vertex needs no ear
            j = next(j for j in range(c) if s in seq[j][0])
            if j not in firsts:
                firsts.append(j)
        return firsts == list(range(len(firsts)))

    dead = set()  # states known to fail; later ears only see the *set* of earlier ears

    def extend(seq, used, seen) -> bool:
        if used == all_edges:
            return finished(seq)
        j = len(seq)
        state = (tuple(q for q, _, _ in seq[:c]), frozenset((q, seq[par][0], iv) for q, par, iv in seq[c:]))
        if state in dead:
            return False
        dead.add(state)
        for p in paths:
            pe = path_edges[p]
            if pe & used or p[0] > p[-1] and j < c:
                continue
            if j < c:
                if set(p) & seen or not allowed(seq, p, None, None):
                    continue
                if extend(seq + [(p, None, None)], used | pe, seen | set(p)):
                    return True
                continue
            # a later ear starts on its parent (both orientations are listed) and its inner
            # vertices are new; its last vertex is new or on the same parent
            if p[0] not in seen or any(v in seen for v in p[1:-1]):
                continue
            for i, (q, _, _) in enumerate(seq):
                if p[0] not in q or (p[-1] in seen and p[-1] not in q):
                    continue
                iv = None
                if p[-1] in q:
                    a, b = sorted((q.index(p[0]), q.index(p[-1])))
                    iv = frozenset(frozenset(q[t: t + 2]) for t in range(a, b))
                if not allowed(seq, p, i, iv):
                    continue
                if extend(seq + [(p, i, iv)], used | pe, seen | set(p)):
                    return True
        return False

    return extend([], frozenset(), set())
