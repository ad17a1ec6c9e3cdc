"""Regrouping chains of one-index contractions on ``[B, n, n, n]`` tensors into one wide
matrix product.

A plan's ``dp`` path sums one index at a time. For a pattern such as the 4-cycle with a
chord and two open vertices ``a, b`` it reads (per graph)::

    T[b, c, d] = A[b, d] A[c, d]              (product, n^3)
    T[b, c, d] = A[b, c] T[b, c, d]           (product, n^3)
    U[a, b, c] = sum_d A[a, d] T[b, c, d]     ([n, n] x [n, n^2]: an inner size of n)
    R[a, b]    = sum_c U[a, b, c] A[a, c]     (matrix-vector products, n^3)

Every factor of that chain holds ``a`` or ``b`` (or neither), never both, and the two summed
indices ``c, d`` are shared by both groups, so the same value is::

    L[a, c, d] = A[a, c] A[a, d]              (product, n^3)
    M[b, c, d] = L[b, c, d] A[c, d]           (product, n^3; the left group renamed a -> b)
    R[a, b]    = sum_{c, d} L[a, c, d] M[b, c, d]   ([n, n^2] x [n^2, n]: an inner size of n^2)

the same FLOPs up to an ``n^3`` term, one kernel fewer, no matrix-vector step, and the
``n^4`` part one matrix product whose inner size is ``n^2`` instead of ``n`` (the measured
rates and gains are in ``docs/contractions-performance.md``). :func:`regroup_wide_products` rewrites the
plan's steps so; the plan itself (its FLOP count, the autograd execution) is unchanged.
"""

from __future__ import annotations

import itertools
import string
from collections import Counter

from .pattern import BATCH_LETTER
from .plan import Step

__all__ = ["regroup_wide_products"]

#: A leaf of a chain: a tensor id and its letters in the combined expression.
Leaf = tuple[int, str]


def _two_operand(eq: str) -> tuple[str, str, str] | None:
    """``(la, lb, lo)`` of a two-operand einsum without repeated letters, else None."""
    lhs, lo = eq.split("->")
    terms = lhs.split(",")
    if len(terms) != 2 or any(len(set(t)) != len(t) for t in (*terms, lo)):
        return None
    return terms[0], terms[1], lo


def regroup_wide_products(steps: list[Step], protected: set[int]) -> list[Step]:
    """``steps`` with every chain that ends in a ``[B, n, n]`` result and sums two indices
    in two separate steps through ``[B, n, n, n]`` intermediates rewritten as two products
    (one per open vertex) and one matrix product summing both indices at once.

    A chain is the step producing the result plus, recursively, the steps producing its
    ``[B, n, n, n]`` inputs that are not in ``protected`` (tensors the output assembly
    reads) and have no other reader, or are plain products (recomputed in the chain; a step
    no one reads any more is dropped). The rewrite is made only when each factor of the
    chain holds at most one of the two open vertices, both summed indices appear on both
    sides, and it needs at most one kernel more than the steps it removes.
    """
    producer = {s.out: s for s in steps}
    readers = Counter(t for s in steps for t in s.inputs)
    next_id = max([s.out for s in steps] + [t for s in steps for t in s.inputs], default=-1) + 1
    removed: set[int] = set()
    replacement: dict[int, list[Step]] = {}
    for root in steps:
        if root.is_view:
            continue
        found = _chain(root, producer, readers, protected)
        if found is None:
            continue
        chain, shared, leaves = found
        new = _regrouped(root, chain, shared, leaves, next_id)
        if new is None:
            continue
        next_id += len(new) - 1
        removed.update(s.out for s in chain)
        replacement[root.out] = new
    if not replacement:
        return steps
    result: list[Step] = []
    for s in steps:
        if s.out not in removed:
            result.extend(replacement.get(s.out, [s]))
    return _without_unread(result, protected)


def _without_unread(steps: list[Step], protected: set[int]) -> list[Step]:
    """``steps`` without those whose result no step and no assembly reads any more."""
    while True:
        read = {t for s in steps for t in s.inputs} | protected
        kept = [s for s in steps if s.out in read or s.is_view]
        if len(kept) == len(steps):
            return steps
        steps = kept


def _chain(root: Step, producer: dict[int, Step], readers: Counter, protected: set[int]):
    """``(chain, shared, leaves)``: the inner steps of ``root``'s chain read by it alone,
    the plain products it recomputes although others read them too, and its leaves (in
    ``root``'s letters, fresh letters for indices summed inside); None when ``root`` heads
    no chain."""
    parsed = _two_operand(root.eq)
    if parsed is None or len(parsed[2]) != 3 or parsed[2][0] != BATCH_LETTER:
        return None
    la, lb, lo = parsed
    unused = iter(c for c in string.ascii_letters if c not in la + lb + lo and c != BATCH_LETTER)
    chain: list[Step] = []  # steps whose result only this chain reads
    shared: list[Step] = []  # products recomputed here that others may read too
    leaves: list[Leaf] = []

    def expand(t: int, letters: str) -> bool:
        step = producer.get(t)
        large = step is not None and not step.is_view and len(letters) >= 4 and t not in protected
        parts = _two_operand(step.eq) if large else None
        # a tensor read elsewhere too is expanded only when it is a plain product (no summed
        # index), recomputed here; it is dropped later if every reader was regrouped
        if parts is None or (readers[t] > 1 and set(parts[0] + parts[1]) != set(parts[2])):
            leaves.append(_resolve_view(t, letters, producer))
            return True
        pa, pb, po = parts
        names = dict(zip(po, letters))
        for c in pa + pb:
            if c not in names:
                try:
                    names[c] = next(unused)
                except StopIteration:
                    return False
        (chain if readers[t] == 1 else shared).append(step)
        return expand(step.inputs[0], "".join(names[c] for c in pa)) and expand(step.inputs[1], "".join(names[c] for c in pb))

    if not (expand(root.inputs[0], la) and expand(root.inputs[1], lb)) or not chain + shared:
        return None
    return chain, shared, leaves


def _resolve_view(t: int, letters: str, producer: dict[int, Step]) -> Leaf:
    """A leaf that is an axis permutation of a source, as that source with permuted letters
    (so that equal factors are recognised as equal)."""
    step = producer.get(t)
    if step is not None and step.is_view:
        (li,), lo = step.eq.split("->")[0].split(","), step.eq.split("->")[1]
        if len(set(li)) == len(li) == len(lo) and set(li) == set(lo):
            return step.inputs[0], "".join(letters[lo.index(c)] for c in li)
    return t, letters


def _summing_steps(chain: list[Step], root: Step) -> int:
    count = 0
    for s in (*chain, root):
        la, lb, lo = _two_operand(s.eq)
        count += any(c not in lo for c in la + lb)
    return count


def _regrouped(root: Step, chain: list[Step], shared: list[Step], leaves: list[Leaf], next_id: int) -> list[Step] | None:
    """The steps computing ``root.out`` as one product per open vertex and one wide matrix
    product, or None when the chain does not split so or would need too many kernels."""
    lo = _two_operand(root.eq)[2]
    a, b = lo[1], lo[2]
    if any(BATCH_LETTER not in letters for _, letters in leaves):
        return None
    if any(a in letters and b in letters for _, letters in leaves):
        return None
    summed = sorted({c for _, letters in leaves for c in letters} - {BATCH_LETTER, a, b})
    if len(summed) != 2 or _summing_steps(chain + shared, root) < 2:
        return None
    left = [f for f in leaves if a in f[1]]
    right = [f for f in leaves if b in f[1]]
    neutral = [f for f in leaves if a not in f[1] and b not in f[1]]
    best = None
    for sides in itertools.product((0, 1), repeat=len(neutral)):
        lefts = left + [f for f, s in zip(neutral, sides) if s == 0]
        rights = right + [f for f, s in zip(neutral, sides) if s == 1]
        if any({c for _, letters in group for c in letters} != {BATCH_LETTER, free, *summed} for group, free in ((lefts, a), (rights, b))):
            continue
        option = _side_products(lefts, rights, a, b, summed)
        if best is None or option[0] < best[0]:
            best = option
    # one kernel more than the steps it removes is allowed: the wide product is the gain,
    # and recomputed products are dropped when every reader of theirs is regrouped
    if best is None or best[0] + 1 > len(chain) + 2:
        return None
    _, recipe = best
    return _emit(recipe, root, a, b, summed, next_id)


def _renamed(group: list[Leaf], old: str, new: str) -> Counter:
    return Counter((t, letters.replace(old, new)) for t, letters in group)


def _side_products(lefts: list[Leaf], rights: list[Leaf], a: str, b: str, summed: list[str]):
    """(number of products, recipe): the recipe builds the first side from its factors and
    the second from the first (renamed) times its remaining factors when the first side's
    factors, renamed, are among the second's; otherwise each from its own factors."""
    options = []
    for first, second, x, y in ((lefts, rights, a, b), (rights, lefts, b, a)):
        shared = _renamed(first, x, y)
        if not shared - Counter(second):  # the first side's factors, renamed, are among the second's
            rest = Counter(second) - shared
            count = (len(first) - 1) + sum(rest.values())
            options.append((count, ("shared", first, x, list(rest.elements()), y)))
    options.append(((len(lefts) - 1) + (len(rights) - 1), ("separate", lefts, a, rights, b)))
    return min(options, key=lambda o: o[0])


def _emit(recipe, root: Step, a: str, b: str, summed: list[str], next_id: int) -> list[Step]:
    """Steps for ``recipe``; each side stored with its letters in the order (batch, open
    vertex, summed indices), the same for both sides, so the final product reads both as
    matrices of rows and summed-index columns without copies."""
    steps: list[Step] = []
    ids = itertools.count(next_id)

    def product(factors: list[Leaf], free: str, start: Leaf | None = None) -> Leaf:
        current = start if start is not None else factors[0]
        for t, letters in factors if start is not None else factors[1:]:
            have = set(current[1]) | set(letters)
            out = BATCH_LETTER + "".join(c for c in (free, *summed) if c in have)
            tid = next(ids)
            steps.append(Step(tid, f"{current[1]},{letters}->{out}", (current[0], t), len(out) - 1, False))
            current = (tid, out)
        return current

    kind, first, x, second, y = recipe
    if kind == "shared":
        made = product(first, x)
        other = product(second, y, start=(made[0], made[1].replace(x, y)))
        sides = {x: made, y: other}
    else:
        sides = {x: product(first, x), y: product(second, y)}
    (lt, ll), (rt, rl) = sides[a], sides[b]
    steps.append(Step(root.out, f"{ll},{rl}->{root.eq.split('->')[1]}", (lt, rt), root.num_axes, False))
    return steps
