"""Compile many polynomial patterns into one shared contraction plan.

``compile_plan(patterns)`` turns a list of :class:`~everygraph.contractions.Pattern` into a
:class:`ContractionPlan`: a straight-line program of small ``torch.einsum`` steps over the
batched input, followed by an assembly stage that writes one output channel per pattern.

What is shared (and why it pays):

1. **Identical patterns** (equal canonical keys) are computed once; duplicates only copy.
2. **Connected components.** A disconnected pattern is the product of its components
   (``P_{H1 + H2} = P_{H1} * P_{H2}``, outer product when both carry a special vertex). Each
   distinct component (by canonical key) is contracted once for the whole plan; the
   degree-6 simple basis has 2292 patterns (all outputs) but only 859 distinct components.
3. **Sub-contractions.** Each component is contracted along an opt_einsum path (found once
   per component and cached by its canonical key and the size class ``n_hint``). Every
   intermediate of a path is itself a sub-multigraph with *open* vertices (those still
   touching other edges, or special); it is keyed by its canonical form with open vertices
   marked, and stored with its axes in canonical order, so ``A @ A``, row sums, ``A * A^2``
   and longer shared prefixes are computed once across all patterns that contain them.
   Vertices that no remaining edge touches are summed out as soon as possible.

The semantics is one formula, the pattern's einsum (see :mod:`.pattern`); the plan is an
execution of it, and :func:`~everygraph.contractions.evaluate_reference` is the plain
left-to-right execution it is tested against.

Example:
    >>> from everygraph.contractions import basis, compile_plan
    >>> plan = compile_plan(basis(3, "node"))
    >>> plan.num_patterns, plan.flops(32) < plan.flops_left_to_right(32)  # doctest: +SKIP
    (14, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import opt_einsum
from opt_einsum.helpers import flop_count

from ..graphlib import check_choice, check_size
from .canonical import canonical_components, connected_components
from .pattern import BATCH_LETTER, VERTEX_LETTERS, Pattern

__all__ = ["ContractionPlan", "compile_plan", "compile", "clear_path_cache"]

# opt_einsum's path strategies
OPTIMIZE = tuple(opt_einsum.paths._PATH_OPTIONS)
_PATH_CACHE: dict[tuple, list[tuple[int, ...]]] = {}


def clear_path_cache() -> None:
    """Forget the cached opt_einsum paths (they are keyed by canonical pattern and n_hint)."""
    _PATH_CACHE.clear()


@dataclass(frozen=True)
class Step:
    """One einsum ``eq`` over tensors ``inputs`` producing tensor ``out`` (``num_axes``
    node axes after the batch axis); ``is_view`` when it only re-indexes a source."""

    out: int
    eq: str
    inputs: tuple[int, ...]
    num_axes: int
    is_view: bool


@dataclass(frozen=True)
class Assembly:
    """How one distinct pattern is built from component tensors.

    ``scalars``: component tensors ``[B]`` multiplied in; ``rooted``: the tensors carrying the
    special vertices with their axis permutation into special order (one ``[B, n, n]``, one
    ``[B, n]``, or two ``[B, n]`` for an outer product); ``diagonal`` puts a node value on the
    diagonal.
    """

    output: str
    scalars: tuple[int, ...]
    rooted: tuple[tuple[int, tuple[int, ...]], ...]
    diagonal: bool


@dataclass
class ContractionPlan:
    """A compiled set of patterns; evaluate it with :func:`~everygraph.contractions.evaluate`.

    Attributes:
        patterns: the patterns as given (output channel ``j`` is ``patterns[j]``).
        sources: tensor ids ``0..len(sources)-1`` are inputs: ``("mask",)`` or
            ``("channel", c, directed)`` (undirected channels are symmetrised).
        steps: the einsum program, in execution order.
        assemblies: one per distinct pattern; ``pattern_slot[j]`` indexes it for pattern j.
    """

    patterns: list[Pattern]
    sources: list[tuple]
    steps: list[Step]
    assemblies: list[Assembly]
    pattern_slot: list[int]
    n_hint: int
    optimize: str
    stats: dict = field(default_factory=dict)
    #: tensor ids of ``[B, n, n]`` intermediates known to be symmetric on undirected inputs
    #: (their sub-pattern has an automorphism swapping its two open vertices, e.g. ``A @ A``)
    symmetric_tensors: frozenset = frozenset()

    @property
    def num_patterns(self) -> int:
        return len(self.patterns)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output types present, in the order invariant, node, edge."""
        present = {p.output for p in self.patterns}
        return tuple(o for o in ("invariant", "node", "edge") if o in present)

    @property
    def num_channels(self) -> int:
        """Input channels the plan reads."""
        return max([p.num_channels for p in self.patterns] + [1])

    def indices(self, output: str) -> list[int]:
        """Positions in :attr:`patterns` of the patterns of one output type."""
        return [j for j, p in enumerate(self.patterns) if p.output == output]

    # --------------------------------------------------------------- estimates
    def _step_flops(self, step: Step, n: int) -> int:
        lhs, rhs = step.eq.split("->")
        letters = set(lhs.replace(",", "")) - {BATCH_LETTER}
        inner = bool(letters - set(rhs))
        return flop_count(letters, inner, max(1, len(step.inputs)), {c: n for c in letters})

    def flops(self, n: int, batch: int = 1) -> int:
        """Estimated floating point operations for ``batch`` graphs of ``n`` nodes: the
        einsum steps (opt_einsum's count) plus the assembly products."""
        total = sum(self._step_flops(s, n) for s in self.steps if not s.is_view)
        for a in self.assemblies:
            size = n ** (2 if a.output == "edge" else 1 if a.output == "node" else 0)
            total += size * (len(a.scalars) + len(a.rooted))
        return int(total * batch)

    def flops_left_to_right(self, n: int, batch: int = 1) -> int:
        """FLOPs of the plain per-pattern left-to-right einsum (the authors' execution)."""
        return int(sum(left_to_right_flops(p, n) for p in self.patterns) * batch)

    def flops_per_pattern_optimal(self, n: int, batch: int = 1) -> int:
        """FLOPs of per-pattern opt_einsum paths without any sharing."""
        total = 0
        for p in self.patterns:
            eq, shapes = _opt_equation(p, n)
            info = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=self.optimize)[1]
            total += int(info.opt_cost)
        return total * batch

    def peak_memory(self, n: int, batch: int, element_size: int = 4, num_channels: int | None = None) -> int:
        """Estimated peak bytes of one :func:`evaluate` call: the masked (and symmetrised)
        input channels, live intermediates (freed after their last use, operand copies an
        einsum may make counted once more) and the output tensors."""
        num_channels = self.num_channels if num_channels is None else num_channels
        unit = batch * element_size
        sym = sum(1 for s in self.sources if s[0] == "channel" and not s[2])
        base = unit * n * n * (num_channels + sym) + unit * n
        out_elems = 0
        for j in self.pattern_slot:
            a = self.assemblies[j]
            out_elems += n ** (2 if a.output == "edge" else 1 if a.output == "node" else 0)
        base += out_elems * unit
        last_use = self._last_use()
        sizes: dict[int, int] = {}
        live = 0
        peak = base
        for i, step in enumerate(self.steps):
            size = 0 if step.is_view else unit * n**step.num_axes
            temp = sum(sizes.get(t, 0) for t in step.inputs)
            peak = max(peak, base + live + size + temp)
            sizes[step.out] = size
            live += size
            for t in set(step.inputs):
                if last_use.get(t) == i:
                    live -= sizes.pop(t, 0)
        return int(max(peak, base + live + unit * n * n))

    def _last_use(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for i, step in enumerate(self.steps):
            for t in step.inputs:
                last[t] = i
        end = len(self.steps)
        for a in self.assemblies:
            for t in a.scalars:
                last[t] = end
            for t, _ in a.rooted:
                last[t] = end
        return last

    def __repr__(self) -> str:
        counts = {o: len(self.indices(o)) for o in self.outputs}
        return (
            f"ContractionPlan(patterns={self.num_patterns} {counts}, distinct={len(self.assemblies)}, "
            f"components={self.stats.get('components', 0)}, steps={len(self.steps)})"
        )


# ------------------------------------------------------------------------ helpers
def _opt_equation(p: Pattern, n: int) -> tuple[str, list[tuple[int, ...]]]:
    """The pattern's einsum for opt_einsum (loops as diagonal operands ``za``)."""
    L = VERTEX_LETTERS
    base = p if not p.is_diagonal else Pattern(p.edges, p.special[:1], p.num_vertices, p.directed, p.channels)
    terms = []
    for u, v in base.edges:
        terms.append(BATCH_LETTER + (L[u] if u == v else L[u] + L[v]))
    terms += [BATCH_LETTER + L[v] for v in base.isolated_vertices]
    out = BATCH_LETTER + "".join(L[s] for s in base.special)
    shapes = [tuple([1] + [n] * (len(t) - 1)) for t in terms]
    if not terms:
        return "->", []
    return ",".join(terms) + "->" + out, shapes


def left_to_right_flops(p: Pattern, n: int) -> int:
    """FLOPs of contracting the pattern's operands strictly left to right (each index summed
    as soon as no later operand or the output needs it), per graph."""
    eq, _ = _opt_equation(p, n)
    if eq == "->":
        return 0
    lhs, rhs = eq.split("->")
    terms = lhs.split(",")
    acc = set(terms[0])
    total = 0
    for k in range(1, len(terms)):
        needed = set(rhs).union(*map(set, terms[k + 1 :])) if k + 1 < len(terms) else set(rhs)
        letters = acc | set(terms[k])
        keep = {c for c in letters if c in needed or c == BATCH_LETTER}
        inner = bool(letters - keep)
        total += flop_count(letters - {BATCH_LETTER}, inner, 2, {c: n for c in letters})
        acc = keep
    return int(total)


def _find_path(key: tuple, terms: list[str], out: str, n_hint: int, optimize: str) -> list[tuple[int, ...]]:
    cache_key = (key, n_hint, optimize)
    path = _PATH_CACHE.get(cache_key)
    if path is None:
        shapes = [tuple([2] + [n_hint] * (len(t) - 1)) for t in terms]
        path = [tuple(s) for s in opt_einsum.contract_path(",".join(terms) + "->" + out, *shapes, shapes=True, optimize=optimize)[0]]
        _PATH_CACHE[cache_key] = path
    return path


class _Builder:
    def __init__(self, n_hint: int, optimize: str) -> None:
        self.n_hint = n_hint
        self.optimize = optimize
        self.sources: list[tuple] = [("mask",)]
        self.source_id: dict[tuple, int] = {("mask",): 0}
        self.pending: list[tuple] = []  # steps, tensor ids assigned after sources are known
        self.node_id: dict[tuple, int] = {}
        self.next_tensor = 0
        self.component_id: dict[tuple, tuple[int, tuple[int, ...]]] = {}
        self.symmetric: set[tuple] = set()
        self._last_symmetric = False

    def _source(self, key: tuple) -> tuple:
        if key not in self.source_id:
            self.source_id[key] = len(self.sources)
            self.sources.append(key)
        return ("src", self.source_id[key])

    def _new_tensor(self) -> tuple:
        self.next_tensor += 1
        return ("tmp", self.next_tensor - 1)

    def _sub_key(self, comp: Pattern, edge_ids: frozenset[int]) -> tuple[tuple, list[int]]:
        """Canonical key and open-vertex axis order of the sub-multigraph ``edge_ids``."""
        special = set(comp.special)
        inside = [comp._triples[i] for i in sorted(edge_ids)]
        outside = [comp.edges[i] for i in range(comp.degree) if i not in edge_ids]
        verts = sorted({x for u, v, _ in inside for x in (u, v)})
        touching = {x for e in outside for x in e}
        open_set = {v for v in verts if v in special or v in touching}
        local = {v: i for i, v in enumerate(verts)}
        cert, order = canonical_components(
            len(verts),
            [(local[u], local[v], c) for u, v, c in inside],
            comp.directed,
            [0 if v in open_set else 1 for v in verts],
        )
        axes = [verts[i] for i in order if verts[i] in open_set]
        self._last_symmetric = False
        if not comp.directed and len(axes) == 2:
            # symmetric iff an automorphism swaps the two open vertices: the certificates with
            # the open vertices told apart agree in both orders
            edges = [(local[u], local[v], c) for u, v, c in inside]
            first = [0 if v == axes[0] else 1 if v == axes[1] else 2 for v in verts]
            swapped = [1 if v == axes[0] else 0 if v == axes[1] else 2 for v in verts]
            self._last_symmetric = (
                canonical_components(len(verts), edges, False, first)[0]
                == canonical_components(len(verts), edges, False, swapped)[0]
            )
        return ("sub", comp.directed, cert), axes

    def _letters(self, vertices: Sequence[int]) -> str:
        return BATCH_LETTER + "".join(VERTEX_LETTERS[v] for v in vertices)

    def _node(self, comp: Pattern, edge_ids: frozenset[int], make_inputs) -> tuple[tuple, list[int]]:
        key, axes = self._sub_key(comp, edge_ids)
        if key not in self.node_id:
            eq, inputs, is_view = make_inputs(axes)
            tid = self._new_tensor()
            if self._last_symmetric:
                self.symmetric.add(tid)
            self.pending.append((tid, eq, tuple(inputs), len(axes), is_view))
            self.node_id[key] = tid
        return self.node_id[key], axes

    def component(self, comp: Pattern) -> tuple[tuple, tuple[int, ...]]:
        """Tensor id and axis permutation (into special order) of a connected component."""
        key = comp.canonical_key
        if key in self.component_id:
            return self.component_id[key]
        comp = comp.canonical()
        if comp.degree == 0:
            if comp.special:
                result = (self._source(("mask",)), (0,))
            else:
                tid = self._new_tensor()
                self.pending.append((tid, "za->z", (self._source(("mask",)),), 0, False))
                result = (tid, ())
            self.component_id[key] = result
            return result
        terms = []  # current operands: (edge set, tensor id, axes)
        for i, ((u, v), c) in enumerate(zip(comp.edges, comp.channels)):
            src = self._source(("channel", c, comp.directed))

            def leaf(axes, u=u, v=v, src=src):
                eq = self._letters([u, v]) + "->" + self._letters(axes)
                return eq, [src], len(axes) == 2 or (u == v and len(axes) == 1)

            tid, axes = self._node(comp, frozenset([i]), leaf)
            terms.append((frozenset([i]), tid, axes))
        out_letters = self._letters(comp.special)
        path = _find_path(key, [self._letters(t[2]) for t in terms], out_letters, self.n_hint, self.optimize)
        for contraction in path:
            chosen = [terms[i] for i in contraction]
            for i in sorted(contraction, reverse=True):
                terms.pop(i)
            union = frozenset().union(*[c[0] for c in chosen])

            def contract(axes, chosen=chosen):
                eq = ",".join(self._letters(c[2]) for c in chosen) + "->" + self._letters(axes)
                return eq, [c[1] for c in chosen], False

            if len(chosen) == 1:
                tid, axes = chosen[0][1], chosen[0][2]  # already summed at creation
            else:
                tid, axes = self._node(comp, union, contract)
            terms.append((union, tid, axes))
        assert len(terms) == 1 and len(terms[0][0]) == comp.degree
        _, tid, axes = terms[0]
        perm = tuple(axes.index(s) for s in comp.special)
        self.component_id[key] = (tid, perm)
        return tid, perm


def compile_plan(
    patterns: Iterable[Pattern | str],
    n_hint: int = 32,
    optimize: str = "dp",
) -> ContractionPlan:
    """Compile patterns into one shared :class:`ContractionPlan`.

    Args:
        patterns: :class:`Pattern` objects or pattern strings (undirected).
        n_hint: the graph size the contraction paths are optimised for (the size class of
            the path cache).
        optimize: opt_einsum path strategy per component (``"dp"``, ``"optimal"``,
            ``"greedy"``, ``"auto"`` ...).

    Returns:
        the plan; output channel ``j`` of :func:`evaluate` is ``patterns[j]``.
    """
    if isinstance(patterns, (str, Pattern)) or not hasattr(patterns, "__iter__"):
        raise TypeError(f"patterns must be a list of Pattern objects or pattern strings, got {patterns!r}")
    pats = []
    for j, p in enumerate(patterns):
        if isinstance(p, str):
            try:
                p = Pattern.from_string(p)
            except ValueError as exc:
                raise ValueError(f"patterns[{j}] is not a valid pattern: {exc}") from exc
        if not isinstance(p, Pattern):
            raise TypeError(f"patterns must hold Pattern objects or strings, got patterns[{j}] of type {type(p).__name__}")
        pats.append(p)
    n_hint = check_size(n_hint, "n_hint", 1)
    check_choice(optimize, "optimize", OPTIMIZE)
    builder = _Builder(n_hint, optimize)
    slot_of: dict[tuple, int] = {}
    assemblies: list[Assembly] = []
    pattern_slot = []
    for p in pats:
        key = p.canonical_key
        if key not in slot_of:
            diagonal = p.is_diagonal
            base = Pattern(p.edges, p.special[:1], p.num_vertices, p.directed, p.channels) if diagonal else p
            scalars, rooted = [], []
            for vertices in connected_components(base.num_vertices, base._triples):
                local = {v: i for i, v in enumerate(vertices)}
                inside = [(e, c) for e, c in zip(base.edges, base.channels) if e[0] in local]
                which = [k for k, s in enumerate(base.special) if s in local]
                comp = Pattern(
                    [(local[u], local[v]) for (u, v), _ in inside],
                    special=[local[base.special[k]] for k in which],
                    num_vertices=len(vertices),
                    directed=base.directed,
                    channels=[c for _, c in inside],
                )
                tid, perm = builder.component(comp)
                if which:
                    rooted.append((tid, perm, which))
                else:
                    scalars.append(tid)
            rooted.sort(key=lambda r: min(r[2]))
            slot_of[key] = len(assemblies)
            assemblies.append(
                Assembly(p.output, tuple(scalars), tuple((t, perm) for t, perm, _ in rooted), diagonal)
            )
        pattern_slot.append(slot_of[key])
    # Tensor ids: sources first, then temporaries in creation order.
    num_sources = len(builder.sources)

    def tid(x: tuple) -> int:
        return x[1] if x[0] == "src" else num_sources + x[1]

    steps = [Step(tid(t), eq, tuple(tid(i) for i in ins), k, view) for t, eq, ins, k, view in builder.pending]
    assemblies = [
        Assembly(a.output, tuple(tid(s) for s in a.scalars), tuple((tid(t), perm) for t, perm in a.rooted), a.diagonal)
        for a in assemblies
    ]
    stats = {"distinct_patterns": len(assemblies), "components": len(builder.component_id)}
    symmetric = frozenset(tid(t) for t in builder.symmetric)
    return ContractionPlan(pats, builder.sources, steps, assemblies, pattern_slot, int(n_hint), optimize, stats, symmetric)


def compile(patterns: Iterable[Pattern | str], n_hint: int = 32, optimize: str = "dp") -> ContractionPlan:
    """Deprecated name of :func:`compile_plan` (it shadowed the builtin ``compile``); kept for
    one more release, warns with a ``DeprecationWarning``."""
    import warnings

    warnings.warn(
        "everygraph.contractions.compile is deprecated and will be removed in the next release; "
        "use everygraph.contractions.compile_plan",
        DeprecationWarning,
        stacklevel=2,
    )
    return compile_plan(patterns, n_hint=n_hint, optimize=optimize)
