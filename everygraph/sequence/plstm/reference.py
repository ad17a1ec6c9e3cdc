"""pLSTM's reference execution: the engine's topological loop with scalar transitions."""

from __future__ import annotations

from torch import Tensor

from ...graphlib import DAG
from ..executions.reference import reference


def plstm_reference(
    dag: DAG,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    source: Tensor,
    transition: Tensor,
    mark: Tensor,
    direct: Tensor,
    initial_state: Tensor | None,
    return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """:func:`~everygraph.sequence.executions.reference.reference` with ``kind="scalar"`` and
    unit boundary gates (the layout of :func:`~everygraph.sequence.plstm_scan`; ``q`` scaled)."""
    return reference(dag, q, k, v, source, transition, mark, direct, "scalar", initial_state, None, return_state)
