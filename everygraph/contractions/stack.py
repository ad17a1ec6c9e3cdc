"""Stacking the wide products of regrouped chains that share one side.

After :mod:`.regroup`, a chain ends in one wide matrix product
``R[a, b] = sum_{c, d} M[a, c, d] L[b, c, d]`` (per graph ``[n, n^2] @ [n^2, n]``), whose
two sides are products of small factors. In the degree-6 basis every such chain has the
same side ``L[b, c, d] = A[b, c] A[b, d]``: each chain computes it again and runs its own
``[32, 1024] @ [1024, 32]`` product. Chains whose sides ``L`` are the same product of the
same factors are computed instead as one group: ``L`` once, the other sides ``M_1 .. M_k``
side by side in one buffer, and one product ``[M_1; ..; M_k] @ L^T`` (per graph
``[k n, n^2] @ [n^2, n]``, a larger GEMM that runs nearer the machine's peak), whose
blocks are copied to the results. When ``L`` is symmetric in its two summed indices (as
``A[b, c] A[b, d]`` is, on any input), the product runs over about half the pairs: the
pairs ``(c, c + e mod n)``, ``e = 0 .. n // 2``, hold every unordered pair ``{c, d}``, so
``sum_{c, d} M[c, d] L[c, d]`` is ``sum_{c, e} (M[c, c + e] + M[c + e, c]) L[c, c + e]``
(one term for ``e = 0``, and for ``e = n / 2``, whose pairs appear both ways round): an
inner size of ``n (n // 2 + 1)`` instead of ``n^2``. The factors are read at those pairs
through strided views (see :meth:`~everygraph.contractions.schedule._Planner._stacked`).
The FLOPs are then about half the chains'; the plan itself (its FLOP count, from which the
benchmark's floor is computed, and the autograd execution) is unchanged.

:func:`stack_shared_sides` finds the groups on the scheduled steps and returns the steps
with each group as one :class:`StackedChains` item, ordered so that every item runs after
the producers of what it reads; :mod:`.schedule` lowers a group into kernels.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

from .pattern import BATCH_LETTER
from .plan import Step
from .regroup import _two_operand

__all__ = ["StackedChains", "stack_shared_sides"]

#: A factor: a tensor id and its letters over the group's alphabet: the batch letter, ``x``
#: (the free vertex of the shared side), ``y`` (the free vertex of the other side) and
#: ``p``, ``q`` (the two summed vertices).
Factor = tuple[int, str]
_RANK = {c: i for i, c in enumerate(BATCH_LETTER + "xypq")}
_SWAP = str.maketrans("pq", "qp")


@dataclass(frozen=True)
class StackedChains:
    """Wide products ``R_i = sum_{p, q} M_i[y, p, q] L[x, p, q]`` sharing their side ``L``.

    Attributes:
        outs: the result tensor ids, one per member.
        out_letters: each result's letters over ``z, x, y`` (``"zyx"``: ``R_i[y, x]``).
        shared: the factors of ``L`` (letters over ``z, x, p, q``).
        sides: per member, ``(from_shared, factors)``: ``M_i`` is ``L`` (its ``x`` renamed
            ``y``) times ``factors`` when ``from_shared``, else the product of ``factors``
            (letters over ``z, y, p, q``).
        inputs: every tensor a factor reads (the dependencies of the group).
    """

    outs: tuple[int, ...]
    out_letters: tuple[str, ...]
    shared: tuple[Factor, ...]
    sides: tuple[tuple[bool, tuple[Factor, ...]], ...]
    inputs: tuple[int, ...]
    #: ``L`` is symmetric in ``p, q`` (its factors are, with those of symmetric inputs
    #: read either way round), so the product needs only about half the pairs ``(p, q)``
    symmetric: bool = False
    is_view: bool = False

    @property
    def num_axes(self) -> int:
        return 2


def stack_shared_sides(steps: list[Step], protected: set[int], symmetric_sources: set[int]) -> list:
    """``steps`` with each group of two or more wide products (two summed indices, a
    ``[B, n, n]`` result) whose one side is the same product of the same factors replaced by
    one :class:`StackedChains`, and the products only those sides read removed.

    ``protected``: tensors read outside the steps (the output assembly), never removed;
    ``symmetric_sources``: tensor ids of symmetric ``[B, n, n]`` inputs (undirected
    channels), whose two axes are interchangeable when factors are compared.
    """
    producer = {s.out: s for s in steps}
    readers: dict[int, set[int]] = defaultdict(set)
    for s in steps:
        for t in s.inputs:
            readers[t].add(s.out)

    def canonical(t: int, letters: str) -> Factor:
        if t in symmetric_sources and len(letters) == 3:
            letters = letters[0] + "".join(sorted(letters[1:], key=_RANK.__getitem__))
        return t, letters

    def resolve(t: int, letters: str) -> Factor:
        step = producer.get(t)
        if step is not None and step.is_view:
            (li,), lo = step.eq.split("->")[0].split(","), step.eq.split("->")[1]
            if len(set(li)) == len(li) == len(lo) and set(li) == set(lo):
                t, letters = step.inputs[0], "".join(letters[lo.index(c)] for c in li)
        return canonical(t, letters)

    def expand(t: int, letters: str, tree: set[int]) -> list[Factor]:
        step = producer.get(t)
        # only the [B, n, n, n] products are recomputed in the group; smaller tensors are read
        large = step is not None and not step.is_view and len(letters) >= 4 and t not in protected
        parts = _two_operand(step.eq) if large else None
        if parts is None or set(parts[0] + parts[1]) != set(parts[2]):
            return [resolve(t, letters)]
        la, lb, lo = parts
        names = dict(zip(lo, letters))
        tree.add(t)
        return expand(step.inputs[0], "".join(names[c] for c in la), tree) + expand(step.inputs[1], "".join(names[c] for c in lb), tree)

    # candidate (wide step, shared side) pairs and the key of the shared side
    candidates: dict[int, list[tuple[tuple, dict]]] = {}
    for s in steps:
        parts = _two_operand(s.eq) if not s.is_view else None
        if parts is None:
            continue
        la, lb, lo = parts
        if len(lo) != 3 or lo[0] != BATCH_LETTER or len(la) != 4 or len(lb) != 4:
            continue
        summed = [c for c in la if c in lb and c not in lo]
        if len(summed) != 2 or la[0] != BATCH_LETTER or lb[0] != BATCH_LETTER:
            continue
        options = []
        for side in (0, 1):
            l_letters, m_letters = (la, lb) if side == 0 else (lb, la)
            free_l = [c for c in l_letters if c in lo and c != BATCH_LETTER]
            free_m = [c for c in m_letters if c in lo and c != BATCH_LETTER]
            if len(free_l) != 1 or len(free_m) != 1:
                break
            for swap in (False, True):
                p, q = summed[::-1] if swap else summed
                rename = {BATCH_LETTER: BATCH_LETTER, free_l[0]: "x", free_m[0]: "y", p: "p", q: "q"}
                tree: set[int] = set()
                shared = expand(s.inputs[side], "".join(rename[c] for c in l_letters), tree)
                other = expand(s.inputs[1 - side], "".join(rename[c] for c in m_letters), tree)
                if any(len(f[1]) > 3 for f in shared + other) or len(shared) < 2:
                    continue
                key = tuple(sorted(shared))
                options.append((key, {
                    "out": s.out, "shared": key, "other": other, "tree": tree,
                    "out_letters": "".join(rename[c] for c in lo), "inputs": [t for t, _ in shared + other],
                }))
        if options:
            candidates[s.out] = options

    counts: dict[tuple, int] = defaultdict(int)
    for options in candidates.values():
        for key in {k for k, _ in options}:
            counts[key] += 1
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for options in candidates.values():
        key, member = max(options, key=lambda o: (counts[o[0]], o[0]))
        groups[key].append(member)

    ancestry: dict[int, frozenset[int]] = {}

    def ancestors(t: int) -> frozenset[int]:
        """Every tensor ``t`` is computed from (iteratively: plans can be deep)."""
        if t in ancestry:
            return ancestry[t]
        stack, order = [t], []
        while stack:
            u = stack.pop()
            if u in ancestry or u in order:
                continue
            order.append(u)
            stack.extend(i for i in (producer[u].inputs if u in producer else ()) if i not in ancestry)
        for u in reversed(order):
            inputs = producer[u].inputs if u in producer else ()
            ancestry[u] = frozenset(inputs).union(*(ancestry.get(i, frozenset()) for i in inputs))
        return ancestry[t]

    items: list = []
    removed: set[int] = set()
    for key, members in groups.items():
        while len(members) > 1:
            tree = set().union(*(m["tree"] for m in members))
            inside = tree | {m["out"] for m in members}
            outs = {m["out"] for m in members}
            # a product another step reads too stays where it is, and a member computed from
            # another member's result cannot run in the same product: such members are left out
            leaking = [
                m for m in members
                if any(not readers[t] <= inside for t in m["tree"])
                or any(({i} | ancestors(i)) & (outs - {m["out"]}) for i in m["inputs"])
            ]
            if not leaking:
                break
            members = [m for m in members if m not in leaking]
        if len(members) < 2:
            continue
        sides = []
        for m in members:
            renamed = sorted((t, letters.replace("x", "y")) for t, letters in key)
            rest = list(m["other"])
            for f in renamed:
                if f in rest:
                    rest.remove(f)
                else:
                    break
            else:
                if rest:
                    sides.append((True, tuple(rest)))
                    continue
            sides.append((False, tuple(m["other"])))
        items.append(StackedChains(
            outs=tuple(m["out"] for m in members),
            out_letters=tuple(m["out_letters"] for m in members),
            shared=key,
            sides=tuple(sides),
            inputs=tuple(dict.fromkeys(t for m in members for t in m["inputs"])),
            symmetric=tuple(sorted(canonical(t, letters.translate(_SWAP)) for t, letters in key)) == key,
        ))
        removed |= set().union(*(m["tree"] for m in members)) | {m["out"] for m in members}
    if not items:
        return steps
    kept = [s for s in steps if s.out not in removed]
    ordered = _topological(steps, kept, items)
    # groups reading each other's results (through other steps) have no order: none is stacked
    return steps if ordered is None else ordered


def _topological(original: list[Step], kept: list[Step], items: list[StackedChains]) -> list | None:
    """``kept`` and ``items`` in an order where each runs after the producers of its inputs,
    as close to ``original``'s order as that allows (a group where its first member was);
    None when there is no such order."""
    position = {s.out: i for i, s in enumerate(original)}
    nodes: list = [*kept, *items]
    key = [position[s.out] for s in kept] + [min(position[o] for o in g.outs) for g in items]
    produces: dict[int, int] = {}
    for k, node in enumerate(nodes):
        for t in (node.outs if isinstance(node, StackedChains) else (node.out,)):
            produces[t] = k
    waiting = [0] * len(nodes)
    dependents: dict[int, list[int]] = defaultdict(list)
    for k, node in enumerate(nodes):
        for t in set(node.inputs):
            if t in produces and produces[t] != k:
                waiting[k] += 1
                dependents[produces[t]].append(k)
    ready = [(key[k], k) for k in range(len(nodes)) if waiting[k] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, k = heapq.heappop(ready)
        order.append(nodes[k])
        for d in dependents[k]:
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, (key[d], d))
    return order if len(order) == len(nodes) else None
