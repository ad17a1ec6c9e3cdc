"""The probe's report: each pair, what each model class predicts, what the model did.

``str(report)`` is a table, one row per pair::

    pair                    family      n    mpnn subgraph ppgn 3fwl | model   T^2      same-graph
    C6 vs 2xC3              regular     6    no   yes      yes  yes  | yes     4.1e+13  11.2

*Theory columns*: ``yes`` when a pattern the class computes (at most ``degree`` edges) has
different homomorphism counts on the two graphs, ``no`` when none has (a larger pattern may).
*Model*: ``yes`` (separates: T^2 above the threshold, reliability check passed), ``no``, or
``UNRELIABLE`` (the model told a graph from a relabelled copy of itself). Below the table,
the rows where the model disagrees with a class it is meant to match are easy to spot with
:meth:`ProbeReport.agreement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .homcounts import pattern_name
from .reliable import SeparationTest
from .theory import PairTheory

__all__ = ["ProbeRow", "ProbeReport"]


@dataclass
class ProbeRow:
    """One pair: the theory (:class:`PairTheory`) and the model's test (:class:`SeparationTest`)."""

    theory: PairTheory
    test: Optional[SeparationTest]

    @property
    def name(self) -> str:
        return self.theory.pair.name

    @property
    def model_separates(self) -> Optional[bool]:
        """True / False, or None when the test was unreliable or not run."""
        if self.test is None or not self.test.reliable:
            return None
        return self.test.separated


@dataclass
class ProbeReport:
    """Rows of a probe (see the module); ``model_classes``, ``degree`` and ``settings`` say how
    it was run."""

    rows: list[ProbeRow]
    model_classes: list[str]
    degree: int
    settings: dict[str, Any] = field(default_factory=dict)
    model_name: str = "model"

    def agreement(self, model_class: str) -> dict[str, int]:
        """How the model's verdicts compare with one class's predictions, over reliable rows:
        ``both`` (both separate), ``neither``, ``model_only`` (the model separates a pair the
        class cannot, up to the degree), ``class_only`` (the class can, the model did not),
        ``unreliable``."""
        if model_class not in self.model_classes:
            raise ValueError(f"model_class must be one of {self.model_classes}, got {model_class!r}")
        tally = {"both": 0, "neither": 0, "model_only": 0, "class_only": 0, "unreliable": 0}
        for row in self.rows:
            m = row.model_separates
            if m is None:
                tally["unreliable"] += 1
                continue
            c = row.theory.separates(model_class)
            tally["both" if m and c else "neither" if not m and not c else "model_only" if m else "class_only"] += 1
        return tally

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        rows = []
        for row in self.rows:
            p = row.theory.pair
            entry = {
                "pair": p.name, "family": p.family, "nodes": list(p.num_nodes), "known": p.known,
                "theory": {c: row.theory.separates(c) for c in self.model_classes},
                "witness": {c: str(row.theory.predictions[c].witness) for c in self.model_classes
                            if row.theory.predictions[c].separates},
            }
            if row.test is not None:
                entry.update(verdict=row.test.verdict, t2=row.test.t2, t2_self=row.test.t2_self,
                             threshold=row.test.threshold)
            rows.append(entry)
        return {"model": self.model_name, "degree": self.degree, "model_classes": list(self.model_classes),
                "settings": dict(self.settings), "rows": rows}

    def __str__(self) -> str:
        classes = self.model_classes
        width = max([len("pair")] + [len(r.name) for r in self.rows]) + 2
        fam = max([len("family")] + [len(r.theory.pair.family) for r in self.rows]) + 2
        head = f"{'pair':<{width}}{'family':<{fam}}{'n':>4}  " + " ".join(f"{c:>{max(len(c), 3)}}" for c in classes)
        head += f" | {'model':<12} {'T^2':>9} {'same-graph':>10}"
        lines = [
            f"Probe of {self.model_name}: theory = some pattern the class computes, with at most {self.degree} edges, "
            "has different homomorphism counts",
            "('no' = none up to that degree); model = reliable paired comparison (Hotelling T^2 over relabellings)",
            "",
            head,
            "-" * len(head),
        ]
        for row in self.rows:
            p = row.theory.pair
            n1, n2 = p.num_nodes
            n = str(n1) if n1 == n2 else f"{n1}/{n2}"
            cells = " ".join(f"{('yes' if row.theory.separates(c) else 'no'):>{max(len(c), 3)}}" for c in classes)
            if row.test is None:
                model = f"{'-':<12} {'':>9} {'':>10}"
            else:
                verdict = {"separates": "yes", "does not separate": "no", "unreliable": "UNRELIABLE"}[row.test.verdict]
                model = f"{verdict:<12} {row.test.t2:>9.3g} {row.test.t2_self:>10.3g}"
            lines.append(f"{row.name:<{width}}{p.family:<{fam}}{n:>4}  {cells} | {model}")
        if any(r.test is not None for r in self.rows):
            t = next(r.test for r in self.rows if r.test is not None)
            lines.append("")
            lines.append(f"threshold T^2 > {t.threshold:.3g} (alpha {t.alpha:g}, {t.dim} dims, "
                         f"{t.num_permutations} relabellings per graph)")
        witnesses = []
        for row in self.rows:
            yes = [c for c in classes if row.theory.separates(c)]
            if yes:
                w = row.theory.predictions[yes[0]].witness
                witnesses.append(f"  {row.name}: {pattern_name(w)} ({w}) first separates, for {', '.join(yes)}")
        if witnesses:
            lines.append("smallest separating pattern of the weakest class that separates:")
            lines += witnesses
        return "\n".join(lines)
