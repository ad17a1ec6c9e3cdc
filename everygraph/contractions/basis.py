"""Enumeration of the basis of equivariant polynomials by degree.

Paper: Puny et al., *Equivariant Polynomials for Graph Neural Networks*, ICML 2023,
https://arxiv.org/abs/2302.11556 (Theorem: the patterns of degree ``d`` with 0 / 1 / 2
special vertices, up to isomorphism, form a basis of the invariant / node / edge equivariant
polynomials of degree ``d``).

Domains (what the input ``X`` is, hence which multigraphs are distinct polynomials):

* ``"general"``: any ``X`` -- directed multigraphs with loops;
* ``"symmetric"``: symmetric ``X`` -- undirected multigraphs with loops;
* ``"simple"``: 0/1 symmetric adjacency with zero diagonal -- simple graphs (a loop vanishes,
  repeated edges collapse, since ``A * A = A``).

In every domain a non-special vertex has at least one edge (an isolated one only multiplies
by ``n``); special vertices may be isolated. Edge outputs count the ordered pairs ``(a, b)``
with ``a != b`` and the diagonal ones ``(a, a)`` (see :mod:`.pattern`), which is how the
basis-size table of Puny et al. (2023) counts them.

How: a pattern is a disjoint union of connected pieces, at most two of them holding the
special vertices. The connected pieces are generated edge by edge (every connected multigraph
with ``k >= 2`` edges loses one edge -- on a cycle, or a leaf edge -- and stays connected),
deduplicated by canonical form, rooted by trying every vertex / ordered vertex pair, and then
combined as multisets. No isomorphism test between whole patterns is needed, so the degree-7
simple basis takes seconds. Results are cached in memory and on disk (``EVERYGRAPH_CACHE_DIR``,
default ``~/.cache/everygraph``) under a version key.

Example:
    >>> from everygraph.contractions import basis
    >>> [len(basis(d, "invariant", "simple")) for d in range(5)]
    [1, 1, 2, 5, 11]
    >>> basis(3, "invariant", "simple")[-1]  # doctest: +SKIP
    Pattern('ab,ac,bc->')
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from ..graphlib import check_size
from .pattern import Pattern

__all__ = ["basis", "connected_patterns", "cache_dir", "DOMAINS", "OUTPUTS", "BASIS_CACHE_VERSION"]

DOMAINS = ("simple", "symmetric", "general")
OUTPUTS = ("invariant", "node", "edge")
#: Bump when the enumeration order or pattern representation changes (invalidates disk cache).
BASIS_CACHE_VERSION = 2

_RULES = {  # domain -> (directed, loops allowed, parallel edges allowed)
    "simple": (False, False, False),
    "symmetric": (False, True, True),
    "general": (True, True, True),
}


def _check(domain: str, output: str | None = None) -> None:
    if domain not in _RULES:
        raise ValueError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
    if output is not None and output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; valid: {', '.join(OUTPUTS)}")


def cache_dir() -> Path:
    """Where enumerations are cached: ``$EVERYGRAPH_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/everygraph``, else ``~/.cache/everygraph``."""
    if os.environ.get("EVERYGRAPH_CACHE_DIR"):
        return Path(os.environ["EVERYGRAPH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "everygraph"


# --------------------------------------------------------------------------- connected pieces
@lru_cache(maxsize=None)
def _unrooted(domain: str, k: int) -> tuple[Pattern, ...]:
    """Connected patterns without specials, ``k`` edges (``k = 0``: one vertex), canonical."""
    directed, loops, parallel = _RULES[domain]
    if k == 0:
        return (Pattern([], (), num_vertices=1, directed=directed),)
    found: dict[tuple, Pattern] = {}
    for parent in _unrooted(domain, k - 1):
        n = parent.num_vertices
        present = set(parent.edges)
        candidates = []
        for u in range(n):
            for v in range(n) if directed else range(u, n):
                if u == v and not loops:
                    continue
                if not parallel and (u, v) in present:
                    continue
                candidates.append(((u, v), n))
            candidates.append(((u, n), n + 1))
            if directed:
                candidates.append(((n, u), n + 1))
        for edge, size in candidates:
            child = Pattern(parent.edges + (edge,), (), num_vertices=size, directed=directed)
            key = child.canonical_key
            if key not in found:
                found[key] = child.canonical()
    return tuple(found.values())


@lru_cache(maxsize=None)
def _rooted(domain: str, k: int, num_special: int) -> tuple[Pattern, ...]:
    """Connected patterns with ``num_special`` distinct specials and ``k`` edges."""
    if num_special == 0:
        return _unrooted(domain, k) if k > 0 else ()
    found: dict[tuple, Pattern] = {}
    for g in _unrooted(domain, k):
        n = g.num_vertices
        if num_special == 1:
            choices = [(a,) for a in range(n)]
        else:
            choices = [(a, b) for a in range(n) for b in range(n) if a != b]
        for special in choices:
            p = Pattern(g.edges, special, num_vertices=n, directed=g.directed)
            key = p.canonical_key
            if key not in found:
                found[key] = p.canonical()
    return tuple(found.values())


def connected_patterns(degree: int, output: str, domain: str = "simple") -> list[Pattern]:
    """Connected basis elements of exactly ``degree`` (edge outputs: ``a != b`` only)."""
    _check(domain, output)
    degree = check_size(degree, "degree", 0)
    return list(_rooted(domain, degree, OUTPUTS.index(output)))


# --------------------------------------------------------------------------- assembly
def _multisets(domain: str, total: int) -> list[tuple[Pattern, ...]]:
    """All multisets of unrooted connected pieces whose degrees sum to ``total``."""
    items = [p for k in range(1, total + 1) for p in _unrooted(domain, k)]
    result: list[tuple[Pattern, ...]] = []

    def rec(start: int, remaining: int, chosen: list[Pattern]) -> None:
        if remaining == 0:
            result.append(tuple(chosen))
            return
        for i in range(start, len(items)):
            d = items[i].degree
            if d <= remaining:
                chosen.append(items[i])
                rec(i, remaining - d, chosen)
                chosen.pop()

    rec(0, total, [])
    return result


def _union(pieces: list[Pattern], special_of: list[tuple[int, int]], directed: bool) -> Pattern:
    """Disjoint union; ``special_of`` lists ``(piece index, vertex in piece)`` per special."""
    offsets, edges, total = [], [], 0
    for p in pieces:
        offsets.append(total)
        edges += [(u + total, v + total) for u, v in p.edges]
        total += p.num_vertices
    special = [offsets[i] + v for i, v in special_of]
    return Pattern(edges, special, num_vertices=total, directed=directed).canonical()


def _enumerate(degree: int, output: str, domain: str, connected_only: bool) -> list[Pattern]:
    d = degree
    directed = _RULES[domain][0]
    result: list[Pattern] = []
    if output == "invariant":
        if connected_only:
            return list(_unrooted(domain, d)) if d > 0 else [Pattern(directed=directed)]
        for ms in _multisets(domain, d):
            result.append(_union(list(ms), [], directed))
        return result
    node: list[Pattern] = []
    for k in range(d + 1):
        if connected_only and k != d:
            continue
        rest = _multisets(domain, d - k)
        for r in _rooted(domain, k, 1):
            for ms in rest:
                node.append(_union([r, *ms], [(0, 0)], directed))
    if output == "node":
        return node
    for k in range(1, d + 1):
        if connected_only and k != d:
            continue
        rest = _multisets(domain, d - k)
        for r in _rooted(domain, k, 2):
            for ms in rest:
                result.append(_union([r, *ms], [(0, 0), (0, 1)], directed))
    if not connected_only:
        for ka in range(d + 1):
            for kb in range(d + 1 - ka):
                rest = _multisets(domain, d - ka - kb)
                for ra in _rooted(domain, ka, 1):
                    for rb in _rooted(domain, kb, 1):
                        for ms in rest:
                            result.append(_union([ra, rb, *ms], [(0, 0), (1, 0)], directed))
    result += [Pattern(p.edges, (p.special[0], p.special[0]), p.num_vertices, p.directed) for p in node]
    return result


def _to_records(patterns: list[Pattern]) -> list[tuple]:
    return [(p.num_vertices, p.edges, p.special, p.directed) for p in patterns]


def _from_records(records: list[tuple]) -> list[Pattern]:
    return [Pattern(e, s, num_vertices=n, directed=d) for n, e, s, d in records]


@lru_cache(maxsize=256)
def _basis_cached(degree: int, output: str, domain: str, connected_only: bool) -> tuple[Pattern, ...]:
    name = f"basis-v{BASIS_CACHE_VERSION}-{domain}-{output}-d{degree}{'-connected' if connected_only else ''}.pkl"
    path = cache_dir() / name
    if path.exists():
        try:
            with open(path, "rb") as f:
                return tuple(_from_records(pickle.load(f)))
        except Exception:  # a corrupt or foreign file: recompute and overwrite
            pass
    patterns = _enumerate(degree, output, domain, connected_only)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(_to_records(patterns), f)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the basis cache {path}: {exc}", RuntimeWarning, stacklevel=3)
    return tuple(patterns)


def basis(
    degree: int,
    output: str = "invariant",
    domain: str = "simple",
    exact: bool = True,
    connected_only: bool = False,
) -> list[Pattern]:
    """All non-isomorphic basis elements of a degree, in a deterministic order.

    Args:
        degree: number of edges (``>= 0``).
        output: ``"invariant"`` (0 specials), ``"node"`` (1) or ``"edge"`` (2: ordered pairs
            ``a != b`` first, then the diagonal ``(a, a)`` elements).
        domain: ``"simple"``, ``"symmetric"`` or ``"general"`` (see the module docstring).
        exact: ``True`` for degree exactly ``degree``, ``False`` for all degrees ``<= degree``
            (increasing degree).
        connected_only: keep only connected patterns (special vertices included in the
            connectivity; the diagonal edge elements are kept when connected).

    Returns:
        list of canonical :class:`Pattern` (special vertices are ``a`` and ``b``).
    """
    _check(domain, output)
    degree = check_size(degree, "degree", 0)
    degrees = [degree] if exact else range(degree + 1)
    result: list[Pattern] = []
    for d in degrees:
        result += _basis_cached(d, output, domain, bool(connected_only))
    return result
