"""Verdicts: "can model M compute basis element P_H?", with a replayable certificate.

A *yes* carries the sequence of model operations that computes :math:`P_H` (Puny et al.,
"Equivariant Polynomials for Graph Neural Networks", ICML 2023,
https://arxiv.org/abs/2302.11556, section 5: a model computes :math:`P_H` when its
operations contract away every non-special vertex of :math:`H`). Each step is a small
contraction on tensors indexed by pattern vertices (a node feature is indexed by one vertex,
an edge-valued matrix by two, a k-FWL tensor by up to k), named by the model operation it is
(row sum, matrix product, elementwise product of parallel edges, message passing ...).
:meth:`Verdict.replay` executes exactly those steps on a dense adjacency and returns the
value of the basis element, so a certificate can be checked against
:func:`everygraph.contractions.evaluate` or a brute-force homomorphism count.

A *no* carries the reason: what is left when no operation of the model applies (the
obstruction), and the treewidth where that is the criterion.

Example:
    >>> v = computable("ab,bc,ca->", "ppgn")
    >>> bool(v)
    True
    >>> print(v.explain())                      # doctest: +SKIP
    ppgn computes ab,bc,ca-> (invariant, degree 3):
      1. contract c by matrix product of (a,c) and (c,b) -> (a,b)
      ...
    >>> v.replay(adj)                           # [B]  (6 x number of triangles on 0/1 graphs)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from .graph import PatternGraph

if TYPE_CHECKING:  # the decomposition type lives in .ned, which imports nothing from here
    from .ned import NestedEarDecomposition

__all__ = ["Step", "Verdict"]

_LETTERS = "ijklmnopqrstuvwxyzacdefgh"


@dataclass(frozen=True)
class Step:
    """One model operation: multiply the tensors ``inputs`` and sum out what ``out_vars`` lacks.

    ``inputs`` are factor ids: ``"X:i"`` is pattern edge ``i`` read from the adjacency
    (indexed by its two endpoints; a loop reads the diagonal), ``"1:v"`` the constant node
    feature of vertex ``v`` (the node mask), other ids name results of earlier steps.
    ``kind`` names the operation (``loop``, ``merge``, ``sum``, ``leaf``, ``series``,
    ``eliminate``, ``mark``, ``output``); ``text`` says it in words.
    """

    kind: str
    inputs: tuple[str, ...]
    in_vars: tuple[tuple[int, ...], ...]
    output: str
    out_vars: tuple[int, ...]
    text: str


@dataclass
class Verdict:
    """Whether ``model`` computes ``pattern``, with a certificate.

    ``computable``: the answer (also ``bool(verdict)``). ``steps``: for a yes, the operations
    in execution order (the last has ``kind == "output"``). ``reason``: for a no, why (the
    obstruction left when no model operation applies); for a yes, a one-line summary.
    ``treewidth``: the treewidth of the underlying simple graph with the special vertices
    joined (the k-FWL criterion), when the decider computed it. ``decomposition``: for the
    ear-decomposition models (``local_2gnn``, ``local_2fgnn``), the nested ear decomposition
    that certifies a yes (:class:`~.ned.NestedEarDecomposition`; ``.check()`` replays it
    against the definition); ``obstruction``: for a no, the edges of a minimal obstruction.
    """

    pattern: PatternGraph
    model: str
    computable: bool
    steps: list[Step] = field(default_factory=list)
    reason: str = ""
    treewidth: Optional[int] = None
    obstruction: Optional[tuple] = None
    decomposition: Optional["NestedEarDecomposition"] = None

    def __bool__(self) -> bool:
        return self.computable

    def __repr__(self) -> str:
        answer = "yes" if self.computable else "no"
        return f"Verdict({self.model}, {self.pattern}: {answer}, {len(self.steps)} steps)"

    def explain(self) -> str:
        """The verdict in words: the certificate step by step, or the reason it fails."""
        p = self.pattern
        head = (
            f"{self.model} {'computes' if self.computable else 'cannot compute'} {p} "
            f"({p.output}, degree {p.degree})"
        )
        lines = [head + (":" if self.computable else ".")]
        if self.computable:
            for i, step in enumerate(self.steps, 1):
                lines.append(f"  {i}. {step.text}")
            if self.decomposition is not None:
                lines.extend("  " + ln for ln in self.decomposition.format().splitlines())
        if self.reason:
            lines.append(("  " if self.computable else "  reason: ") + self.reason)
        if self.treewidth is not None:
            ab = "".join(p.names[s] for s in p.distinct_special)
            lines.append(f"  treewidth of the pattern{f' with the edge {ab} added' if len(ab) == 2 else ''}: "
                         f"{self.treewidth}")
        return "\n".join(lines)

    def replay(self, adj: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Evaluate the pattern by executing the certificate on ``adj``.

        Args:
            adj: dense adjacency ``[B, n, n]`` (any real values: weights, loops, asymmetric),
                or ``[B, n, n, c]`` when pattern edges read channels. As in
                :func:`~everygraph.contractions.evaluate`, an undirected pattern reads the
                symmetric part ``(X + X^T) / 2``, a directed one reads ``X[i_u, i_v]``.
            mask: optional node mask ``[B, n]`` (bool or 0/1); padding never contributes.

        Returns:
            ``[B]`` for an invariant, ``[B, n]`` for a node output, ``[B, n, n]`` for an edge
            output (an edge output with ``a == b`` is diagonal).
        """
        if not self.computable:
            raise ValueError(f"{self.model} cannot compute {self.pattern}: no certificate to replay ({self.reason})")
        if not self.steps and self.decomposition is not None:
            raise ValueError(
                f"the {self.model} certificate is a nested ear decomposition, not a sequence of tensor operations: "
                "verify it with verdict.decomposition.check(), and evaluate the pattern with "
                "everygraph.contractions.evaluate"
            )
        if adj.dim() not in (3, 4) or adj.shape[1] != adj.shape[2]:
            raise ValueError(f"adj must be [B, n, n] or [B, n, n, c], got {tuple(adj.shape)}")
        p = self.pattern
        if adj.dim() == 3:
            adj = adj.unsqueeze(-1)
        need = max(p.channels, default=-1) + 1
        if adj.shape[-1] < need:
            raise ValueError(f"the pattern reads channel {need - 1} but adj has {adj.shape[-1]} channel(s)")
        b, n = adj.shape[0], adj.shape[1]
        if mask is None:
            mask_f = adj.new_ones(b, n)
        else:
            if tuple(mask.shape) != (b, n):
                raise ValueError(f"mask must be [B, n] = {(b, n)} for adj {tuple(adj.shape)}, got {tuple(mask.shape)}")
            mask_f = mask.to(adj.dtype)
        x = adj * mask_f[:, :, None, None] * mask_f[:, None, :, None]
        if not p.directed:
            x = (x + x.transpose(1, 2)) / 2
        values: dict[str, Tensor] = {}

        def get(fid: str) -> Tensor:
            if fid in values:
                return values[fid]
            if fid.startswith("X:"):
                return x[..., p.channels[int(fid[2:])]]
            if fid.startswith("1:"):
                return mask_f
            raise KeyError(fid)

        result = None
        for step in self.steps:
            if step.kind == "mark":  # bookkeeping: the mark is the kept vertex, nothing to compute
                continue
            letters: dict[int, str] = {}
            for vars_ in step.in_vars + (step.out_vars,):
                for v in vars_:
                    letters.setdefault(v, _LETTERS[len(letters)])
            lhs = ",".join("b" + "".join(letters[v] for v in vars_) for vars_ in step.in_vars)
            rhs = "b" + "".join(letters[v] for v in step.out_vars)
            if not step.inputs:  # the empty pattern: the constant polynomial 1
                out = adj.new_ones(b)
            else:
                out = torch.einsum(f"{lhs}->{rhs}", *[get(f) for f in step.inputs])
            values[step.output] = out
            result = out
        if result is None:  # pragma: no cover - every certificate ends with an output step
            raise RuntimeError("empty certificate")
        if p.output == "edge" and p.special[0] == p.special[1]:
            result = torch.diag_embed(result)
        return result
