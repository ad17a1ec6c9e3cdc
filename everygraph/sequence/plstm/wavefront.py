"""pLSTM's wavefront execution: the engine's level-by-level execution with scalar transitions."""

from __future__ import annotations

from torch import Tensor

from ...graphlib import DAG
from ..executions.wavefront import WavefrontPlan, wavefront, wavefront_plan

__all__ = ["plstm_wavefront", "wavefront_plan", "WavefrontPlan"]


def plstm_wavefront(
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
    """:func:`~everygraph.sequence.executions.wavefront.wavefront` with ``kind="scalar"`` and
    unit boundary gates (the layout of :func:`~everygraph.sequence.plstm_scan`; ``q`` scaled)."""
    return wavefront(dag, q, k, v, source, transition, mark, direct, "scalar", initial_state, None, return_state)
