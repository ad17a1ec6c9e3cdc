"""Conversions between PyG ``Data`` and networkx graphs that keep every attribute."""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch
from torch import Tensor


def to_networkx(data, *, undirected: bool = False) -> nx.Graph:
    """A networkx graph from a PyG ``Data``, carrying all node- and edge-level attributes.

    Node- and edge-level attributes are told apart as PyG does (``Data.is_node_attr`` /
    ``is_edge_attr``: by size, and by the ``edge_`` prefix where sizes agree).
    Values are stored as Python scalars or lists; graph-level attributes go to
    ``graph.graph``. Directed edges give a ``DiGraph`` (``MultiDiGraph`` when an edge
    repeats); ``undirected=True`` keeps one edge per unordered pair (the attributes of its
    first occurrence) in a ``Graph``.
    """
    if isinstance(data, torch.Tensor) or not hasattr(data, "edge_index") or not hasattr(data, "num_nodes"):
        raise TypeError(f"data must be a PyG Data object (with edge_index and num_nodes), got {type(data).__name__}")
    num_nodes = data.num_nodes
    edge_index = data.edge_index if getattr(data, "edge_index", None) is not None else torch.empty(2, 0, dtype=torch.long)
    node_attrs, edge_attrs, graph_attrs = {}, {}, {}
    for key, value in data.items():
        if key == "edge_index":
            continue
        # PyG decides by name and size (edge tensors are edge_*), which settles the case of a
        # tensor exactly as long as both the node and the edge list.
        if isinstance(value, Tensor) and data.is_edge_attr(key):
            edge_attrs[key] = value
        elif isinstance(value, Tensor) and data.is_node_attr(key):
            node_attrs[key] = value
        else:
            graph_attrs[key] = value.tolist() if isinstance(value, Tensor) else value

    pairs = edge_index.t().tolist()
    if undirected:
        graph: nx.Graph = nx.Graph()
    elif len(set(map(tuple, pairs))) < len(pairs):
        graph = nx.MultiDiGraph()
    else:
        graph = nx.DiGraph()
    graph.graph.update(graph_attrs)
    for v in range(num_nodes):
        graph.add_node(v, **{k: _python(t[v]) for k, t in node_attrs.items()})
    for e, (u, v) in enumerate(pairs):
        if undirected and graph.has_edge(u, v):
            continue
        graph.add_edge(u, v, **{k: _python(t[e]) for k, t in edge_attrs.items()})
    return graph


def from_networkx(graph: nx.Graph):
    """A PyG ``Data`` from a networkx graph, with its node, edge and graph attributes.

    Nodes are renumbered ``0..n-1`` in ``graph.nodes`` order. An undirected graph gives both
    directions of each edge (PyG's convention), each with the edge's attributes. Attributes
    present on every node (edge) and convertible to tensors become ``Data`` fields; the
    others are kept as lists. Python floats become ``torch.get_default_dtype()`` tensors;
    attributes stored as tensors keep their dtype.
    """
    if not isinstance(graph, nx.Graph):
        raise TypeError(f"graph must be a networkx graph, got {type(graph).__name__}")
    from torch_geometric.data import Data

    index = {v: i for i, v in enumerate(graph.nodes)}
    sources, targets, edge_rows = [], [], []
    for u, v, attrs in graph.edges(data=True):
        sources.append(index[u])
        targets.append(index[v])
        edge_rows.append(attrs)
        if not graph.is_directed():
            sources.append(index[v])
            targets.append(index[u])
            edge_rows.append(attrs)
    data = Data(edge_index=torch.tensor([sources, targets], dtype=torch.long).view(2, -1), num_nodes=len(index))
    node_rows = [attrs for _, attrs in graph.nodes(data=True)]
    for rows in (node_rows, edge_rows):
        keys = set().union(*rows) if rows else set()
        for key in sorted(keys):
            values = [row.get(key) for row in rows]
            data[key] = _tensor_or_list(values)
    for key, value in graph.graph.items():
        data[key] = _tensor_or_list(value) if isinstance(value, list) else value
    return data


def _python(value: Tensor) -> Any:
    return value.item() if value.dim() == 0 else value.tolist()


def _tensor_or_list(values: list) -> Any:
    if any(v is None for v in values):
        return values
    if all(isinstance(v, Tensor) for v in values):
        return torch.stack(values)  # keeps the dtype, unlike a trip through Python floats
    try:
        return torch.tensor(values)
    except (TypeError, ValueError, RuntimeError):
        return values
