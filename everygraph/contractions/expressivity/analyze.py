r"""Expressivity tables: how many basis elements each model computes, degree by degree.

For every degree :math:`d`, output type and model, :func:`analyze` enumerates the basis
(:func:`everygraph.contractions.basis`) and decides each element with
:func:`~.models.computable`. Counts come in two conventions:

* **connected**: connected patterns whose special vertices are distinct (an edge output with
  :math:`a \ne b`), the convention of the code of Puny et al., "Equivariant Polynomials for
  Graph Neural Networks" (ICML 2023, https://arxiv.org/abs/2302.11556): on simple graphs the
  edge-based model (PPGN) misses nothing up to degree 4, one edge element at degree 5,
  1 / 1 / 9 (invariant / node / edge) at degree 6 and 2 / 6 / 65 at degree 7;
* **all**: the whole basis (disconnected patterns and the diagonal edge output
  :math:`a = b` included).

Example:
    >>> table = analyze(5, outputs=("edge",), models=("mpnn", "ppgn"))
    >>> print(table.format())                                   # doctest: +SKIP
    >>> [str(p) for p in table.missing("ppgn", degree=5, output="edge")]
    ['ab,ac,ad,bc,cd->bd']                                       # up to isomorphism
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from ...graphlib import check_size
from ..pattern import Pattern
from .models import get_model

__all__ = ["ExpressivityRow", "ExpressivityTable", "analyze", "OUTPUTS", "is_paper_convention"]

OUTPUTS = ("invariant", "node", "edge")


def is_paper_convention(pattern: Any) -> bool:
    """Connected, and the special vertices are distinct (no diagonal edge output)."""
    if isinstance(pattern, str):
        try:
            pattern = Pattern.from_string(pattern)
        except ValueError as exc:
            raise ValueError(f"pattern is not a valid pattern string: {exc}") from exc
    if not hasattr(pattern, "special") or not hasattr(pattern, "is_connected"):
        raise TypeError(f"pattern must be a Pattern or a pattern string, got {type(pattern).__name__}")
    special = tuple(pattern.special)
    return bool(pattern.is_connected) and len(set(special)) == len(special)


@dataclass
class ExpressivityRow:
    """Counts for one degree and output type.

    ``total`` / ``total_connected``: basis elements (whole basis / connected with distinct
    specials). ``missing[model]`` / ``missing_connected[model]``: the elements the model
    cannot compute (``Pattern`` objects, basis order).
    """

    degree: int
    output: str
    total: int
    total_connected: int
    missing: dict[str, list] = field(default_factory=dict)
    missing_connected: dict[str, list] = field(default_factory=dict)

    def computed(self, model: str, connected: bool = True) -> int:
        if connected:
            return self.total_connected - len(self.missing_connected[model])
        return self.total - len(self.missing[model])


@dataclass
class ExpressivityTable:
    """The result of :func:`analyze`: one :class:`ExpressivityRow` per (degree, output)."""

    rows: list[ExpressivityRow]
    models: list[str]
    domain: str

    def row(self, degree: int, output: str) -> ExpressivityRow:
        for r in self.rows:
            if r.degree == degree and r.output == output:
                return r
        raise KeyError(f"no row for degree {degree}, output {output!r}")

    def missing(self, model: str, degree: Optional[int] = None, output: Optional[str] = None,
                connected: bool = True) -> list:
        """Patterns ``model`` misses (optionally of one degree / output type)."""
        out = []
        for r in self.rows:
            if (degree is None or r.degree == degree) and (output is None or r.output == output):
                out.extend((r.missing_connected if connected else r.missing)[model])
        return out

    def format(self, list_missing: bool = False) -> str:
        """Plain aligned text: per model ``computed/total``, connected convention first."""
        head = ["degree", "output"] + [f"{m}" for m in self.models]
        lines_c = [head]
        lines_a = [head]
        for r in self.rows:
            lines_c.append([str(r.degree), r.output] + [f"{r.computed(m, True)}/{r.total_connected}" for m in self.models])
            lines_a.append([str(r.degree), r.output] + [f"{r.computed(m, False)}/{r.total}" for m in self.models])
        out = [
            f"Basis elements each model computes ({self.domain} domain), computed/total",
            "",
            "connected patterns, distinct special vertices (the paper's convention):",
            _align(lines_c),
            "",
            "whole basis (disconnected patterns and the diagonal edge output a = b included):",
            _align(lines_a),
        ]
        if list_missing:
            out += ["", "missing (connected, distinct specials), as einsum-like strings:"]
            for m in self.models:
                for r in self.rows:
                    miss = r.missing_connected[m]
                    if miss:
                        out.append(f"  {m}, degree {r.degree}, {r.output} ({len(miss)}): "
                                   + "  ".join(str(p) for p in miss))
        return "\n".join(out)

    def to_dict(self) -> dict:
        """JSON-ready: counts and missing einsum strings for both conventions."""
        return {
            "domain": self.domain,
            "models": list(self.models),
            "rows": [
                {
                    "degree": r.degree,
                    "output": r.output,
                    "total": r.total,
                    "total_connected": r.total_connected,
                    "computed": {m: r.computed(m, False) for m in self.models},
                    "computed_connected": {m: r.computed(m, True) for m in self.models},
                    "missing_connected": {m: [str(p) for p in r.missing_connected[m]] for m in self.models},
                    "missing": {m: [str(p) for p in r.missing[m]] for m in self.models},
                }
                for r in self.rows
            ],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def plot(self, path: str) -> str:
        """Bar chart: fraction of (connected) basis elements each model computes, per degree."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        outputs = [o for o in OUTPUTS if any(r.output == o for r in self.rows)]
        fig, axes = plt.subplots(1, len(outputs), figsize=(4.2 * len(outputs), 3.4), squeeze=False)
        width = 0.8 / max(1, len(self.models))
        for ax, o in zip(axes[0], outputs):
            rows = [r for r in self.rows if r.output == o and r.total_connected > 0]
            xs = list(range(len(rows)))
            for i, m in enumerate(self.models):
                fr = [r.computed(m, True) / r.total_connected for r in rows]
                ax.bar([x + (i - (len(self.models) - 1) / 2) * width for x in xs], fr, width, label=m)
            ax.set_xticks(xs, [str(r.degree) for r in rows])
            ax.set_xlabel("degree")
            ax.set_title(f"{o} outputs")
            ax.set_ylim(0, 1.05)
        axes[0][0].set_ylabel("fraction of basis computed")
        axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle(f"Which model computes which basis element ({self.domain} domain, connected)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        cells = [c.ljust(widths[i]) if i == 1 else c.rjust(widths[i]) for i, c in enumerate(r)]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def analyze(
    degree: int,
    outputs: Iterable[str] = OUTPUTS,
    models: Sequence[Any] = ("mpnn", "subgraph", "local_2gnn", "local_2fgnn", "ppgn"),
    domain: str = "simple",
    min_degree: int = 0,
    progress: bool = False,
) -> ExpressivityTable:
    """Count, per degree ``min_degree..degree`` and output type, the basis elements each model computes.

    Args:
        degree: largest degree (number of pattern edges).
        outputs: any of ``"invariant"``, ``"node"``, ``"edge"``.
        models: names (see :func:`~.models.known_models`) or :class:`~.models.Model` objects.
        domain: ``"simple"`` (0/1 graphs), ``"symmetric"`` or ``"general"`` (the basis domain).
        min_degree: smallest degree tabulated.
        progress: show a tqdm bar while enumerating and deciding.

    Returns:
        An :class:`ExpressivityTable` (``.format()``, ``.missing(model, ...)``, ``.to_json()``,
        ``.plot(path)``).
    """
    if isinstance(outputs, str) or not hasattr(outputs, "__iter__"):
        raise TypeError(f"outputs must be a sequence of output types such as ({outputs!r},), got {outputs!r}")
    degree = check_size(degree, "degree", 0)
    outputs = list(outputs)
    for o in outputs:
        if o not in OUTPUTS:
            raise ValueError(f"outputs must hold {', '.join(OUTPUTS)}; got {o!r}")
    if domain not in ("simple", "symmetric", "general"):
        raise ValueError(f"unknown domain {domain!r}; choose from simple, symmetric, general")
    if not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    model_objs = [get_model(m) for m in models]
    names = [m.name for m in model_objs]
    if len(set(names)) != len(names):
        raise ValueError(f"models listed twice: {names}")

    from everygraph.contractions import basis

    jobs = [(d, o) for d in range(min_degree, degree + 1) for o in outputs]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="enumerating and deciding", unit="(degree,output)", leave=False)
    rows = []
    for d, o in jobs:
        if bar is not None:
            bar.set_postfix_str(f"degree {d} {o}")
        patterns = basis(d, o, domain=domain)
        row = ExpressivityRow(d, o, total=len(patterns), total_connected=0,
                              missing={n: [] for n in names}, missing_connected={n: [] for n in names})
        for p in patterns:
            conn = is_paper_convention(p)
            row.total_connected += conn
            for name, m in zip(names, model_objs):
                if not m.decide(p).computable:
                    row.missing[name].append(p)
                    if conn:
                        row.missing_connected[name].append(p)
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return ExpressivityTable(rows, names, domain)
