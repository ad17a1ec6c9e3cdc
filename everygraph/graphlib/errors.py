"""Exceptions raised by the graph core."""

from __future__ import annotations


class CycleError(ValueError):
    """A DAG was required but the edges contain a directed cycle.

    ``cycle`` lists the nodes of one cycle in order (its first node is not repeated).
    """

    def __init__(self, cycle: list[int]):
        self.cycle = list(cycle)
        path = " -> ".join(str(v) for v in self.cycle + self.cycle[:1])
        super().__init__(
            f"the edges contain a directed cycle: {path}. A DAG is required here: remove one "
            f"of these edges, or orient an undirected graph with everygraph.graphlib.dagify."
        )


class IndexDtypeError(TypeError, ValueError):
    """An index or offset tensor (``edge_index``, ``index``, ``batch``, ``ptr``, ``cu_seqlens``)
    has a non-integer dtype.

    A ``TypeError``, and also a ``ValueError`` so that code written against APIs that report
    every bad ``cu_seqlens`` as a ``ValueError`` (``mamba_ssm``, ``flash_attn``) catches it too.
    """
