"""Polynomial patterns: small multigraphs with 0, 1 or 2 special (output) vertices.

Paper: Puny, Lim, Kiani, Maron, Lipman, *Equivariant Polynomials for Graph Neural Networks*,
ICML 2023, https://arxiv.org/abs/2302.11556.

A pattern :math:`H = (V, E)` with special vertices :math:`s` names the polynomial

.. math::
    P_H(X)_{i_s} = \\sum_{i: V \\to [n],\\ i \\text{ fixed on } s}\\ \\prod_{(r, t) \\in E} X_{i_r i_t}

of an input :math:`X \\in \\mathbb{R}^{n \\times n}` (adjacency, or one channel of a
``[n, n, c]`` tensor). Its degree is :math:`|E|` (loops and parallel edges counted). With no
special vertex it is an invariant scalar, with one a node vector ``[n]``, with an ordered pair
``(a, b)`` an edge matrix ``[n, n]``.

Conventions fixed here:

* **Edge output with a = b.** The basis-size table of Puny et al. (2023) counts edge-valued basis elements as the
  patterns with two distinct special vertices *plus* those where the two coincide. A
  coinciding pair is written ``special=(a, a)`` (string ``"ab->aa"``): its value is the
  node polynomial of ``(H, a)`` placed on the diagonal of an ``[n, n]`` matrix
  (``output == "edge"``, ``is_diagonal == True``).
* **Vertices without edges.** A special vertex without edges contributes an all-ones operand
  (so ``"a,b->ab"`` is the all-ones matrix and ``"a->aa"`` the identity); a non-special one
  multiplies by the number of (unmasked) nodes. In strings they are single-letter terms.
* **Undirected patterns** (``directed=False``) assume a symmetric input; evaluation reads the
  symmetric part ``(X + X^T) / 2`` of each channel, which is ``X`` itself on symmetric inputs.
  Directed patterns read ``X[i_u, i_v]`` for an edge ``(u, v)``.
* **Channels.** Each edge reads one channel of a ``[B, n, n, c]`` input (default 0, the
  adjacency); in strings ``"ab@2"`` is an edge reading channel 2.

Example:
    >>> from everygraph.contractions import Pattern
    >>> triangle = Pattern.from_string("ab,bc,ca->")
    >>> triangle.degree, triangle.output
    (3, 'invariant')
    >>> triangle == Pattern([(0, 1), (1, 2), (0, 2)])
    True
    >>> Pattern.from_string("ab,bc->a").einsum
    'zab,zbc->za'
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Iterable, Sequence

import networkx as nx
import numpy as np

from ..graphlib import check_size

from .canonical import canonical_components, connected_components

__all__ = ["Pattern", "VERTEX_LETTERS", "BATCH_LETTER"]

#: Letters naming pattern vertices in einsum equations (vertex i -> VERTEX_LETTERS[i]).
VERTEX_LETTERS = "abcdefghijklmnopqrstuvwxy" + "ABCDEFGHIJKLMNOPQRSTUVWXY"
#: The leading batch letter of :attr:`Pattern.einsum`.
BATCH_LETTER = "z"

_OUTPUTS = ("invariant", "node", "edge")


def _pattern_string_error(text: str, pos: int, message: str) -> ValueError:
    caret = " " * pos + "^"
    return ValueError(f"invalid pattern string: {message} at position {pos}\n  {text}\n  {caret}")



def _vertex(value: object, name: str) -> int:
    """A vertex id: a non-negative integer (a fraction such as 1.5 is refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must hold non-negative integer vertex ids, got {value!r}")
    if int(value) < 0:
        raise ValueError(f"{name} must hold non-negative integer vertex ids, got {value!r}")
    return int(value)

class Pattern:
    """A multigraph with 0, 1 or 2 special vertices naming one equivariant polynomial.

    Args:
        edges: ``(u, v)`` pairs on vertices ``0..num_vertices-1``; loops ``(u, u)`` and
            repeated pairs are allowed. Undirected edges are stored as ``(min, max)``.
        special: the output vertices: ``()`` invariant, ``(a,)`` node, ``(a, b)`` edge;
            ``(a, a)`` is the diagonal edge output (see the module docstring).
        num_vertices: defaults to one more than the largest vertex named.
        directed: whether ``(u, v)`` reads ``X[i_u, i_v]`` (general inputs) or the edge is
            unordered (symmetric inputs).
        channels: the input channel each edge reads (default all 0), aligned with ``edges``.

    Equality and hashing are by :attr:`canonical_key`: two patterns are equal iff they are
    isomorphic with the special vertices fixed in order (and channels, directions kept).
    """

    def __init__(
        self,
        edges: Iterable[Sequence[int]] = (),
        special: Sequence[int] = (),
        num_vertices: int | None = None,
        directed: bool = False,
        channels: Sequence[int] | None = None,
    ) -> None:
        if isinstance(edges, (str, bytes)) or not hasattr(edges, "__iter__"):
            raise TypeError(f"edges must be a sequence of vertex pairs (u, v); for an einsum string use "
                            f"Pattern.from_string, got {edges!r}")
        edge_list = []
        for e in edges:
            if isinstance(e, (str, bytes)) or not hasattr(e, "__iter__") or len(tuple(e)) != 2:
                raise ValueError(f"edges must hold pairs (u, v), got {e!r}")
            e = tuple(e)
            u, v = (_vertex(x, "edges") for x in e)
            edge_list.append((u, v))
        if isinstance(special, (str, bytes)) or not hasattr(special, "__iter__"):
            raise TypeError(f"special must be a sequence of vertex ids, got {special!r}")
        special = tuple(_vertex(s, "special") for s in special)
        if len(special) > 2:
            raise ValueError(
                f"a pattern has at most two special vertices (node or edge output), got {len(special)}: {special}"
            )
        if any(s < 0 for s in special):
            raise ValueError(f"special vertices must be non-negative, got {special}")
        named = [x for e in edge_list for x in e] + list(special)
        if num_vertices is None:
            num_vertices = max(named) + 1 if named else 0
        num_vertices = check_size(num_vertices, "num_vertices", 0)
        for x in named:
            if x >= num_vertices:
                what = "special vertex" if x in special else "edge endpoint"
                raise ValueError(f"{what} {x} is not in the graph: num_vertices={num_vertices} (vertices 0..{num_vertices - 1})")
        if len(VERTEX_LETTERS) < num_vertices:
            raise ValueError(f"patterns have at most {len(VERTEX_LETTERS)} vertices, got {num_vertices}")
        if channels is None:
            channels = [0] * len(edge_list)
        channels = [int(c) for c in channels]
        if len(channels) != len(edge_list):
            raise ValueError(f"channels has {len(channels)} entries for {len(edge_list)} edges")
        if any(c < 0 for c in channels):
            raise ValueError(f"channels must be non-negative, got {channels}")
        triples = []
        for (u, v), c in zip(edge_list, channels):
            if not directed and u > v:
                u, v = v, u
            triples.append((u, v, c))
        triples.sort()
        self.num_vertices = num_vertices
        self.edges = tuple((u, v) for u, v, _ in triples)
        self.channels = tuple(c for _, _, c in triples)
        self.special = special
        self.directed = bool(directed)

    # ----------------------------------------------------------------- basic properties
    @property
    def degree(self) -> int:
        """Number of edges, loops and repeated edges included."""
        return len(self.edges)

    @property
    def output(self) -> str:
        """``"invariant"``, ``"node"`` or ``"edge"`` (by the number of special vertices)."""
        return _OUTPUTS[len(self.special)]

    @property
    def is_diagonal(self) -> bool:
        """An edge output whose two special vertices coincide (value on the diagonal)."""
        return len(self.special) == 2 and self.special[0] == self.special[1]

    @property
    def num_channels(self) -> int:
        """One more than the largest channel an edge reads (0 without edges)."""
        return max(self.channels) + 1 if self.channels else 0

    @property
    def is_connected(self) -> bool:
        """Whether the multigraph (specials included, directions ignored) is connected."""
        return len(connected_components(self.num_vertices, self._triples)) <= 1

    @property
    def _triples(self) -> list[tuple[int, int, int]]:
        return [(u, v, c) for (u, v), c in zip(self.edges, self.channels)]

    def _vertex_colors(self) -> list[int]:
        colors = [2] * self.num_vertices
        for pos, s in reversed(list(enumerate(self.special))):
            colors[s] = pos
        return colors

    # ----------------------------------------------------------------- canonical form
    @cached_property
    def _canonical(self) -> tuple[tuple, list[int]]:
        return canonical_components(self.num_vertices, self._triples, self.directed, self._vertex_colors())

    @cached_property
    def canonical_key(self) -> tuple:
        """Hashable; equal iff isomorphic with the special vertices fixed in order."""
        return (self.output, self.is_diagonal, self.directed, self._canonical[0])

    def canonical(self) -> "Pattern":
        """The canonical representative: specials first (``a``, ``b``), then the other
        vertices in canonical order. Isomorphic patterns give identical representatives."""
        order = [s for i, s in enumerate(self.special) if s not in self.special[:i]]
        order += [v for v in self._canonical[1] if v not in order]
        new = {v: i for i, v in enumerate(order)}
        return Pattern(
            [(new[u], new[v]) for u, v in self.edges],
            special=[new[s] for s in self.special],
            num_vertices=self.num_vertices,
            directed=self.directed,
            channels=self.channels,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pattern):
            return NotImplemented
        return self.canonical_key == other.canonical_key

    def __hash__(self) -> int:
        return hash(self.canonical_key)

    # ----------------------------------------------------------------- einsum / strings
    @property
    def einsum(self) -> str:
        """The einsum equation with a leading batch letter ``z``: one operand per edge
        (``"zab"``; a loop is ``"zaa"``), one all-ones operand ``"za"`` per vertex without
        edges, the special letters on the right. A diagonal edge output (``(a, a)``) is given
        in its node form ``...->za``; :func:`evaluate` puts it on the diagonal."""
        L = VERTEX_LETTERS
        terms = [BATCH_LETTER + L[u] + L[v] for u, v in self.edges]
        terms += [BATCH_LETTER + L[v] for v in self.isolated_vertices]
        out = BATCH_LETTER + "".join(L[s] for s in dict.fromkeys(self.special))
        return ",".join(terms) + "->" + out

    @property
    def isolated_vertices(self) -> tuple[int, ...]:
        """Vertices without any edge (special or not)."""
        touched = {x for e in self.edges for x in e}
        return tuple(v for v in range(self.num_vertices) if v not in touched)

    def to_string(self) -> str:
        """The einsum-like string (``"ab,bc,ca->"``) that :meth:`from_string` reads back."""
        L = VERTEX_LETTERS
        terms = [L[u] + L[v] + (f"@{c}" if c else "") for (u, v), c in zip(self.edges, self.channels)]
        terms += [L[v] for v in self.isolated_vertices]
        return ",".join(terms) + "->" + "".join(L[s] for s in self.special)

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        extra = ", directed=True" if self.directed else ""
        return f"Pattern({self.to_string()!r}{extra})"

    @classmethod
    def from_string(cls, text: str, directed: bool = False) -> "Pattern":
        """Read an einsum-like string: comma-separated two-letter edges (``"ab"``; a loop is
        ``"aa"``; ``"ab@2"`` reads channel 2), single letters for vertices without edges, then
        ``->`` and the 0, 1 or 2 special letters. Spaces are ignored.

        Raises:
            ValueError: pointing at the offending character; also for more than two special
                letters or a special letter that is not a vertex of the graph.
        """
        if not isinstance(text, str):
            raise TypeError(f"pattern string must be a str, got {type(text).__name__}")
        arrow = text.find("->")
        if arrow < 0:
            raise _pattern_string_error(text, len(text), "missing '->' (write e.g. 'ab,bc,ca->')")
        if text.find("->", arrow + 1) >= 0:
            raise _pattern_string_error(text, text.find("->", arrow + 1), "second '->'")
        index: dict[str, int] = {}
        edges: list[tuple[int, int]] = []
        channels: list[int] = []
        isolated: list[int] = []

        def vertex(ch: str) -> int:
            if ch not in index:
                index[ch] = len(index)
            return index[ch]

        def close_term(letters: list[tuple[int, str]], channel: str | None, end: int, chan_pos: int) -> None:
            if not letters:
                raise _pattern_string_error(text, end, "empty term (two commas, or a comma at an end)")
            if len(letters) > 2:
                raise _pattern_string_error(
                    text, letters[2][0], f"term has {len(letters)} letters; an edge has two (a loop is 'aa')"
                )
            if channel is not None and channel == "":
                raise _pattern_string_error(text, chan_pos, "'@' must be followed by a channel number")
            ids = [vertex(ch) for _, ch in letters]
            if len(ids) == 1:
                if channel is not None:
                    raise _pattern_string_error(text, chan_pos, "a single vertex has no channel")
                isolated.append(ids[0])
            else:
                edges.append((ids[0], ids[1]))
                channels.append(int(channel) if channel else 0)

        letters: list[tuple[int, str]] = []
        channel: str | None = None
        chan_pos = 0
        lhs_has_terms = text[:arrow].strip() != ""
        for pos in range(arrow):
            ch = text[pos]
            if ch == " ":
                continue
            if ch == ",":
                close_term(letters, channel, pos, chan_pos)
                letters, channel = [], None
            elif ch == "@":
                if channel is not None or not letters:
                    raise _pattern_string_error(text, pos, "unexpected '@'")
                channel, chan_pos = "", pos
            elif channel is not None:
                if not ch.isdigit():
                    raise _pattern_string_error(text, pos, f"unexpected character {ch!r} in a channel number")
                channel += ch
            elif ch.isascii() and ch.isalpha():
                letters.append((pos, ch))
            else:
                raise _pattern_string_error(text, pos, f"unexpected character {ch!r}")
        if lhs_has_terms:
            close_term(letters, channel, arrow, chan_pos)
        special_pos = [(p, text[p]) for p in range(arrow + 2, len(text)) if text[p] != " "]
        for p, ch in special_pos:
            if not (ch.isascii() and ch.isalpha()):
                raise _pattern_string_error(text, p, f"unexpected character {ch!r} among the special vertices")
        if len(special_pos) > 2:
            raise _pattern_string_error(
                text, special_pos[2][0], f"{len(special_pos)} special vertices; a pattern has at most two"
            )
        for p, ch in special_pos:
            if ch not in index:
                raise _pattern_string_error(
                    text,
                    p,
                    f"special vertex {ch!r} is not in the graph (a special vertex without edges is "
                    f"declared as a single-letter term, e.g. '{ch},bc->{ch}')",
                )
        if len(special_pos) == 2 and special_pos[0][1] == special_pos[1][1]:
            pass  # diagonal edge output, documented in the module docstring
        return cls(
            edges,
            special=[index[ch] for _, ch in special_pos],
            num_vertices=len(index),
            directed=directed,
            channels=channels,
        )

    # ----------------------------------------------------------------- networkx
    def to_networkx(self) -> nx.MultiGraph | nx.MultiDiGraph:
        """``nx.MultiGraph`` (``nx.MultiDiGraph`` if directed) on nodes ``0..n-1``; node
        attribute ``special`` is the position in :attr:`special` (``None`` otherwise), edge
        attribute ``channel``; graph attribute ``special`` holds the tuple itself (so the
        diagonal ``(a, a)`` round-trips)."""
        g = nx.MultiDiGraph() if self.directed else nx.MultiGraph()
        g.graph["special"] = self.special
        for v in range(self.num_vertices):
            g.add_node(v, special=self.special.index(v) if v in self.special else None)
        for (u, v), c in zip(self.edges, self.channels):
            g.add_edge(u, v, channel=c)
        return g

    @classmethod
    def from_networkx(cls, graph: nx.Graph) -> "Pattern":
        """From any networkx graph (multi or not, directed or not). Special vertices come
        from ``graph.graph["special"]`` (node labels) if present, else from the node attribute
        ``special`` (0 / 1). Edge attribute ``channel`` is read when present. Nodes are
        numbered in ``graph.nodes`` order."""
        nodes = list(graph.nodes)
        ids = {v: i for i, v in enumerate(nodes)}
        if "special" in graph.graph:
            special = [ids[v] for v in graph.graph["special"]]
        else:
            marked = sorted(
                (d["special"], ids[v]) for v, d in graph.nodes(data=True) if d.get("special") is not None
            )
            special = [i for _, i in marked]
        edges, channels = [], []
        for u, v, d in graph.edges(data=True):
            edges.append((ids[u], ids[v]))
            channels.append(int(d.get("channel", 0)))
        return cls(edges, special, num_vertices=len(nodes), directed=graph.is_directed(), channels=channels)

    # ----------------------------------------------------------------- pieces
    def components(self) -> list["Pattern"]:
        """The connected components as patterns (each keeps the specials it contains, in
        order), each relabelled ``0..k-1`` in increasing vertex order."""
        parts = []
        for comp in connected_components(self.num_vertices, self._triples):
            local = {v: i for i, v in enumerate(comp)}
            sub = [((local[u], local[v]), c) for (u, v), c in zip(self.edges, self.channels) if u in local]
            parts.append(
                Pattern(
                    [e for e, _ in sub],
                    special=[local[s] for s in self.special if s in local],
                    num_vertices=len(comp),
                    directed=self.directed,
                    channels=[c for _, c in sub],
                )
            )
        return parts

    def relabel(self, mapping: Sequence[int], special: Sequence[int] | None = None) -> "Pattern":
        """The same pattern with vertex ``v`` renamed ``mapping[v]`` (a permutation)."""
        return Pattern(
            [(mapping[u], mapping[v]) for u, v in self.edges],
            special=[mapping[s] for s in (self.special if special is None else special)],
            num_vertices=self.num_vertices,
            directed=self.directed,
            channels=self.channels,
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "num_vertices": self.num_vertices,
            "edges": self.edges,
            "channels": self.channels,
            "special": self.special,
            "directed": self.directed,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
