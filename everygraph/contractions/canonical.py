"""Canonical forms of small coloured multigraphs (individualisation-refinement).

A multigraph on vertices ``0..n-1`` is given by its edges ``(u, v, colour)`` (loops and
parallel edges allowed, directed or not) and an initial colour per vertex. The canonical form
is a certificate that is equal for two inputs iff there is an isomorphism between them that
preserves vertex colours and edge colours (and directions), together with a canonical vertex
order realising it.

The search is the textbook one (McKay's individualisation-refinement without automorphism
groups): refine the vertex colouring to an equitable one (colour refinement / 1-WL with edge
multiplicities), individualise each vertex of the first non-singleton cell in turn, recurse,
and keep the smallest certificate over the leaves. Two cheap prunings keep it fast on the
graphs polynomial patterns are made of: vertices that are *twins* (swapping them is an
automorphism) are branched on only once, and disconnected graphs are canonised component by
component (see :func:`canonical_components`), so ``6 K_2`` costs six small searches instead of
``12 * 10 * 8 * 6 * 4 * 2`` leaves.
"""

from __future__ import annotations

from typing import Sequence

Edge = tuple[int, int, int]


def _adjacency(n: int, edges: Sequence[Edge], directed: bool):
    out: list[dict[int, list[int]]] = [dict() for _ in range(n)]
    inn: list[dict[int, list[int]]] = [dict() for _ in range(n)]
    for u, v, c in edges:
        out[u].setdefault(v, []).append(c)
        if directed:
            inn[v].setdefault(u, []).append(c)
        elif u != v:
            out[v].setdefault(u, []).append(c)
    out_t = [{v: tuple(sorted(cs)) for v, cs in d.items()} for d in out]
    inn_t = [{v: tuple(sorted(cs)) for v, cs in d.items()} for d in inn] if directed else None
    return out_t, inn_t


def _refine(colors: list[int], out, inn) -> list[int]:
    n = len(colors)
    num = len(set(colors))
    while True:
        sigs = []
        for v in range(n):
            s_out = tuple(sorted((colors[u], m) for u, m in out[v].items()))
            s_in = tuple(sorted((colors[u], m) for u, m in inn[v].items())) if inn is not None else ()
            sigs.append((colors[v], s_out, s_in))
        ranks = {s: i for i, s in enumerate(sorted(set(sigs)))}
        new = [ranks[s] for s in sigs]
        if len(ranks) == num:
            return new
        colors, num = new, len(ranks)


def _twins(u: int, v: int, out, inn) -> bool:
    """Whether the transposition (u v) is an automorphism (given equal vertex colours)."""

    def swap(w: int) -> int:
        return v if w == u else u if w == v else w

    for adj in (out, inn) if inn is not None else (out,):
        mapped = {swap(w): m for w, m in adj[u].items()}
        if mapped != adj[v]:
            return False
    return True


def canonical_form(
    n: int, edges: Sequence[Edge], directed: bool, vertex_colors: Sequence[int]
) -> tuple[tuple, list[int]]:
    """Certificate and canonical order of a coloured multigraph.

    Args:
        n: number of vertices.
        edges: ``(u, v, colour)`` triples; for undirected graphs the orientation is ignored.
        directed: whether ``(u, v)`` and ``(v, u)`` differ.
        vertex_colors: ``[n]`` initial colours (e.g. the position of a special vertex).

    Returns:
        ``(certificate, order)``: ``order[i]`` is the vertex placed at canonical position
        ``i``; two inputs are isomorphic iff their certificates are equal.
    """
    out, inn = _adjacency(n, edges, directed)
    init = list(vertex_colors)
    best: list = [None, None]

    def certificate(colors: list[int]):
        order = sorted(range(n), key=colors.__getitem__)
        rank = {v: i for i, v in enumerate(order)}
        rows = tuple(tuple(sorted((rank[u], m) for u, m in out[v].items())) for v in order)
        return (tuple(init[v] for v in order), rows), order

    def search(colors: list[int]) -> None:
        colors = _refine(colors, out, inn)
        cells: dict[int, list[int]] = {}
        for v, c in enumerate(colors):
            cells.setdefault(c, []).append(v)
        target = None
        for c in sorted(cells):
            if len(cells[c]) > 1:
                target = cells[c]
                break
        if target is None:
            cert, order = certificate(colors)
            if best[0] is None or cert < best[0]:
                best[0], best[1] = cert, order
            return
        representatives: list[int] = []
        for v in target:
            if not any(_twins(r, v, out, inn) for r in representatives):
                representatives.append(v)
        for v in representatives:
            individual = [2 * c for c in colors]
            individual[v] -= 1
            search(individual)

    # Initial colours are arbitrary hashables; rank them so refinement compares ints.
    ranks = {c: i for i, c in enumerate(sorted(set(init)))}
    search([ranks[c] for c in init])
    return (n, directed, best[0]), best[1]


def connected_components(n: int, edges: Sequence[Edge]) -> list[list[int]]:
    """Vertex sets of the connected components (edge directions ignored), sorted lists."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v, _ in edges:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[ru] = rv
    groups: dict[int, list[int]] = {}
    for v in range(n):
        groups.setdefault(find(v), []).append(v)
    return sorted(groups.values())


def canonical_components(
    n: int, edges: Sequence[Edge], directed: bool, vertex_colors: Sequence[int]
) -> tuple[tuple, list[int]]:
    """Like :func:`canonical_form`, but canonises each connected component separately.

    The certificate is the sorted tuple of component certificates; the order lists the
    components in that sorted order, each in its own canonical order.
    """
    parts = []
    for comp in connected_components(n, edges):
        local = {v: i for i, v in enumerate(comp)}
        sub = [(local[u], local[v], c) for u, v, c in edges if u in local]
        cert, order = canonical_form(len(comp), sub, directed, [vertex_colors[v] for v in comp])
        parts.append((cert, [comp[i] for i in order]))
    parts.sort(key=lambda p: p[0])
    return tuple(p[0] for p in parts), [v for p in parts for v in p[1]]
