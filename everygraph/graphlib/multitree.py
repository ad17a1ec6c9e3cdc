"""Pruning a DAG's line graph to a multitree (pLSTM's D-mode)."""

from __future__ import annotations

import torch
from torch import Tensor

from .dag import DAG


def prune_to_multitree(dag: DAG) -> Tensor:
    r"""Which line-graph edges to keep so that at most one path joins any two DAG edges.

    pLSTM's diffusive mode (D-mode) bounds its states by keeping, between any two edges of
    the DAG, at most one chain of transitions; then entrywise :math:`|T| \le 1` suffices
    for stability. A line graph with that property is a *multitree*.

    The pruning is greedy and maximal. Transitions are visited node by node in topological
    order (inside a node, in the order of :meth:`DAG.line_graph`: by incoming, then
    outgoing edge id). A transition ``p -> c`` through node ``n`` is kept unless an edge
    that reaches ``p`` (or is ``p``) already reaches ``c``: that would be a second path.
    Transitions out of ``c`` sit at later nodes and are not decided yet, so this test sees
    every path the new transition could duplicate, and every dropped transition would
    create one: no multitree of the line graph strictly contains the kept set.

    Cost: O(L x E / 64) bit operations (ancestor sets as Python integers); meant for
    molecule- and mesh-sized graphs. Dense lattices take pLSTM's own D-mode (one turning
    transition zeroed at every node) instead.

    Args:
        dag: the DAG.

    Returns:
        ``[num_line_edges]`` boolean mask over ``dag.line_graph().edge_index`` columns.
    """
    if not isinstance(dag, DAG):
        raise TypeError(f"dag must be an everygraph.graphlib.DAG (build one with DAG(edge_index) or dagify), got {type(dag).__name__}")
    line = dag.line_graph()
    e_in, e_out = line.edge_index.tolist()
    node_level = dag.levels[line.node].tolist()
    visit = sorted(range(len(e_in)), key=lambda j: node_level[j])  # stable: keeps in-node order
    ancestors = [0] * dag.num_edges  # bitset of the line-graph ancestors of each DAG edge
    keep = [False] * len(e_in)
    for j in visit:
        parent, child = e_in[j], e_out[j]
        reach_parent = ancestors[parent] | (1 << parent)
        if reach_parent & ancestors[child]:
            continue
        ancestors[child] |= reach_parent
        keep[j] = True
    return torch.tensor(keep, dtype=torch.bool, device=dag.device)
