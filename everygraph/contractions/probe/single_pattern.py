"""Pairs separated by exactly one basis element, found by search over small graphs.

A pair qualifies at degree ``k`` when the two graphs have equal homomorphism counts for every
connected pattern with fewer than ``k`` edges, and at ``k`` edges differ on exactly one
connected pattern ``H``. Up to degree ``k`` the pair is then a test of ``H`` alone: a model
class separates it (with patterns of at most ``k`` edges) iff it computes ``H``. Larger
patterns usually differ too; the theory column of a probe is computed at its own degree.

The search runs over every graph with at most 7 nodes (the networkx graph atlas), seeded
random regular graphs on 8 to 12 nodes, and the graphs of the other generators, and keeps one
pair per separating pattern (both graphs connected when possible, then the fewest nodes).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

import networkx as nx
import numpy as np

from ...graphlib import check_size
from .homcounts import hom_counts, pattern_name, probe_patterns
from .pair import GraphPair

__all__ = ["single_pattern_pairs", "find_single_pattern_pairs"]


def _default_candidates() -> list[nx.Graph]:
    from networkx.generators.atlas import graph_atlas_g

    from .cfi import cfi_pairs
    from .regular import regular_pairs
    from .strongly_regular import strongly_regular_pairs

    graphs = [g for g in graph_atlas_g() if g.number_of_nodes() > 0]
    for n in (8, 10, 12):
        for k in (3, 4):
            graphs += [nx.random_regular_graph(k, n, seed=1000 * n + 10 * k + s) for s in range(40)]
    for pair in regular_pairs() + strongly_regular_pairs() + cfi_pairs():
        graphs += [pair.first, pair.second]
    return graphs


def find_single_pattern_pairs(graphs: Sequence[nx.Graph], max_degree: int = 6) -> list[GraphPair]:
    """Search ``graphs`` for pairs separated by exactly one connected pattern (see the module).

    Args:
        graphs: candidate simple graphs.
        max_degree: the largest number of pattern edges considered.

    Returns:
        one :class:`GraphPair` per separating pattern found, ordered by the pattern's degree.
    """
    max_degree = check_size(max_degree, "max_degree", 1)
    graphs = list(graphs)
    patterns = probe_patterns(max_degree)
    counts = hom_counts(graphs, max_degree).numpy()
    degrees = np.array([p.degree for p in patterns])
    connected = np.array([g.number_of_nodes() > 0 and nx.is_connected(g) for g in graphs])
    sizes = np.array([g.number_of_nodes() for g in graphs])
    best: dict[int, tuple[tuple, int, int]] = {}
    for k in range(1, max_degree + 1):
        columns = np.nonzero(degrees == k)[0]
        if not len(columns):
            continue
        lower, current = counts[:, degrees < k], counts[:, columns]
        groups: dict[bytes, list[int]] = {}
        for i in range(len(graphs)):
            groups.setdefault(lower[i].tobytes(), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            index = np.array(members)
            block = current[index]
            differ = block[:, None, :] != block[None, :, :]
            a, b = np.nonzero(np.triu(differ.sum(-1) == 1))
            if not len(a):
                continue
            which = columns[np.argmax(differ[a, b], axis=1)]
            i, j = index[a], index[b]
            # rank: both connected first, then fewest nodes, then candidate order
            key = np.stack([~(connected[i] & connected[j]), sizes[i], i, j], 1).astype(np.int64)
            for column in np.unique(which).tolist():
                rows = np.nonzero(which == column)[0]
                top = rows[np.lexsort(key[rows].T[::-1])[0]]
                rank = tuple(key[top].tolist())
                if column not in best or rank < best[column][0]:
                    best[column] = (rank, int(i[top]), int(j[top]))
    pairs = []
    for column in sorted(best, key=lambda c: (degrees[c], c)):
        _, i, j = best[column]
        first, second = graphs[i], graphs[j]  # a count differs, so they are not isomorphic
        p = patterns[column]
        name = pattern_name(p)
        lo, hi = int(counts[i, column]), int(counts[j, column])
        pairs.append(GraphPair(
            f"only {name}", "single pattern", first, second,
            known=(f"equal on every connected pattern with fewer than {p.degree} edges; with {p.degree} edges "
                   f"they differ only on {name} ({p}: {lo} vs {hi} homomorphisms)"),
        ))
    return pairs


@lru_cache(maxsize=4)
def _cached(max_degree: int) -> tuple[GraphPair, ...]:
    return tuple(find_single_pattern_pairs(_default_candidates(), max_degree))


def single_pattern_pairs(max_degree: int = 6, graphs: Optional[Sequence[nx.Graph]] = None) -> list[GraphPair]:
    """Pairs separated by exactly one connected pattern of at most ``max_degree`` edges, from
    the default candidates (see the module; a few seconds, cached per process) or ``graphs``."""
    max_degree = check_size(max_degree, "max_degree", 1)
    if graphs is not None:
        return find_single_pattern_pairs(graphs, max_degree)
    return list(_cached(max_degree))
