"""BREC: the expressiveness benchmark's graph pairs, read from its published graph6 files.

Wang and Zhang, "Towards Better Evaluation of GNN Expressiveness with BREC Dataset" (2023,
https://arxiv.org/abs/2304.07702; data at https://github.com/GraphPKU/BREC). The release
stores graphs as graph6 strings; this loader reads them when you have the files (it downloads
nothing). Put one file in ``root/raw/``:

* ``<name>.npy``: a NumPy array of graph6 strings (bytes or str), either flat or ``[k, 2]``;
* ``<name>.g6``: a text file, one graph6 string per line (an optional ``>>graph6<<`` header).

Two layouts (``layout=``):

* ``"pairs"``: consecutive graphs ``2i, 2i+1`` (or row ``i`` of a ``[k, 2]`` array) are pair
  ``i`` -- the per-category raw files of the release (``basic.npy``, ``regular.npy``,
  ``str.npy``, ``extension.npy``, ``cfi.npy``, ``4vtx.npy``, ``dr.npy``);
* ``"relabeled"``: the processed ``brec_v3.npy``: for each of the ``P`` pairs a block of
  ``2 * num_relabel`` graphs alternating the two graphs' relabellings, then for each pair a
  block of ``2 * num_relabel`` relabellings of one of its graphs (BREC's reliability check);
* ``"auto"`` (default): ``[k, 2]`` arrays and files of any other length are ``"pairs"``; a flat
  file of exactly ``400 * 4 * num_relabel`` graphs (the published ``brec_v3.npy``) is
  ``"relabeled"``.

Every graph becomes a ``Data`` with ``edge_index`` (both directions), ``num_nodes``,
``x = 1`` (``[n, 1]``) and integer tags: ``pair`` (the pair id), ``side`` (0 or 1; -1 in a
reliability block), ``relabel`` (the relabelling's index, 0 in ``"pairs"``), ``reliability``
(1 in a reliability block). :meth:`BREC.pairs` hands the pairs to
:func:`everygraph.contractions.probe_model`, with BREC's category as the family when the file
holds the 400 published pairs.

Example:
    >>> from everygraph.datasets import BREC
    >>> data = BREC("data/brec", name="brec_v3")            # doctest: +SKIP
    >>> report = probe_model(model, pairs=data.pairs()[:60])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data, InMemoryDataset

from ..contractions import GraphPair
from ..graphlib import check_choice, check_size

__all__ = ["BREC", "BREC_CATEGORIES"]

#: The pair ranges of BREC's 400 published pairs (``brec_v3``), by category.
BREC_CATEGORIES: dict[str, tuple[int, int]] = {
    "basic": (0, 60),
    "regular": (60, 110),
    "strongly regular": (110, 160),
    "extension": (160, 260),
    "cfi": (260, 360),
    "4-vertex condition": (360, 380),
    "distance regular": (380, 400),
}
_PUBLISHED_PAIRS = 400
LAYOUTS = ("auto", "pairs", "relabeled")


def _category(pair: int, num_pairs: int) -> str:
    if num_pairs != _PUBLISHED_PAIRS:
        return "brec"
    return next(f"brec {name}" for name, (lo, hi) in BREC_CATEGORIES.items() if lo <= pair < hi)


def read_graph6_strings(path: str) -> tuple[list[bytes], bool]:
    """``(strings, paired)``: the graph6 strings of a ``.npy`` or ``.g6`` file, and whether the
    file was a ``[k, 2]`` array (explicit pairs)."""
    if path.endswith(".npy"):
        array = np.load(path, allow_pickle=True)
        paired = array.ndim == 2 and array.shape[1] == 2
        if array.ndim not in (1, 2) or (array.ndim == 2 and not paired):
            raise ValueError(f"{path}: expected a flat array or a [k, 2] array of graph6 strings, got shape {array.shape}")
        items = array.reshape(-1).tolist()
    else:
        with open(path, "rb") as f:
            items = [line.strip().removeprefix(b">>graph6<<") for line in f]
        items = [s for s in items if s]
        paired = False
    strings = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes):
            raise ValueError(f"{path}: entry {i} is {type(item).__name__}, not a graph6 string")
        strings.append(item.strip().removeprefix(b">>graph6<<"))
    return strings, paired


def _to_data(graph: nx.Graph, **tags: int) -> Data:
    n = graph.number_of_nodes()
    edges = torch.tensor(sorted(graph.edges), dtype=torch.long).reshape(-1, 2).t()
    data = Data(x=torch.ones(n, 1), edge_index=torch.cat([edges, edges.flip(0)], 1), num_nodes=n)
    for key, value in tags.items():
        data[key] = torch.tensor([value])
    return data


class BREC(InMemoryDataset):
    """The BREC graphs of ``root/raw/<name>.npy`` (or ``.g6``) as a PyG dataset (see the module).

    Args:
        root: the dataset folder; the graph6 file goes in ``root/raw/``, the processed tensors
            are written to ``root/processed/``.
        name: the file's name without extension (``"brec_v3"``, ``"cfi"``, ...).
        layout: ``"auto"``, ``"pairs"`` or ``"relabeled"``.
        num_relabel: relabellings per graph in the ``"relabeled"`` layout (BREC: 32).
        transform, pre_transform, pre_filter, force_reload: as in PyG's ``InMemoryDataset``.
    """

    def __init__(
        self,
        root: str,
        name: str = "brec_v3",
        layout: str = "auto",
        num_relabel: int = 32,
        transform: Optional[Callable] = None,
        pre_transform: Optional[Callable] = None,
        pre_filter: Optional[Callable] = None,
        force_reload: bool = False,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a folder path, got {type(root).__name__}")
        if not isinstance(name, str) or not name or os.sep in name:
            raise ValueError(f"name must be a file name without folder or extension, got {name!r}")
        self.name = name
        self.layout = check_choice(layout, "layout", LAYOUTS)
        self.num_relabel = check_size(num_relabel, "num_relabel", 1)
        super().__init__(os.fspath(root), transform, pre_transform, pre_filter, force_reload=force_reload)
        self.load(self.processed_paths[0])
        self.num_pairs = int(self._data.pair.max()) + 1 if len(self) else 0

    @property
    def raw_file_names(self) -> list[str]:
        for ext in (".npy", ".g6"):
            if os.path.exists(os.path.join(self.raw_dir, self.name + ext)):
                return [self.name + ext]
        return [self.name + ".npy"]

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{self.name}-{self.layout}-{self.num_relabel}.pt"]

    def download(self) -> None:
        raise FileNotFoundError(
            f"no BREC file {self.name}.npy or {self.name}.g6 in {self.raw_dir}: this loader does not download; "
            "get the graph6 files of https://github.com/GraphPKU/BREC (e.g. brec_v3.npy, or customize/Data/raw/*.npy) "
            "and put one there"
        )

    def _resolve_layout(self, count: int, paired: bool) -> str:
        if self.layout != "auto":
            return self.layout
        if not paired and count == _PUBLISHED_PAIRS * 4 * self.num_relabel:
            return "relabeled"
        return "pairs"

    def process(self) -> None:
        path = self.raw_paths[0]
        strings, paired = read_graph6_strings(path)
        layout = self._resolve_layout(len(strings), paired)
        graphs = []
        for i, s in enumerate(strings):
            try:
                graphs.append(nx.from_graph6_bytes(s))
            except Exception as exc:  # networkx raises NetworkXError or ValueError on bad bytes
                raise ValueError(f"{path}: entry {i} is not a valid graph6 string ({exc})") from None
        data_list = []
        if layout == "pairs":
            if len(graphs) % 2:
                raise ValueError(f"{path}: layout 'pairs' needs an even number of graphs, got {len(graphs)}")
            for i, g in enumerate(graphs):
                data_list.append(_to_data(g, pair=i // 2, side=i % 2, relabel=0, reliability=0))
        else:
            block = 2 * self.num_relabel
            if len(graphs) % (2 * block):
                raise ValueError(f"{path}: layout 'relabeled' needs a multiple of 4 * num_relabel = {2 * block} graphs "
                                 f"(pair blocks, then reliability blocks), got {len(graphs)}")
            num_pairs = len(graphs) // (2 * block)
            for i, g in enumerate(graphs):
                b, k = divmod(i, block)
                if b < num_pairs:
                    tags = dict(pair=b, side=k % 2, relabel=k // 2, reliability=0)
                else:
                    tags = dict(pair=b - num_pairs, side=-1, relabel=k, reliability=1)
                data_list.append(_to_data(g, **tags))
        if self.pre_filter is not None:
            data_list = [d for d in data_list if self.pre_filter(d)]
        if self.pre_transform is not None:
            data_list = [self.pre_transform(d) for d in data_list]
        self.save(data_list, self.processed_paths[0])

    def pairs(self) -> list[GraphPair]:
        """Each pair once, as :class:`~everygraph.contractions.GraphPair` (the first
        relabelling of each graph), family ``"brec <category>"`` for the published 400 pairs."""
        firsts: dict[tuple[int, int], nx.Graph] = {}
        for i in range(len(self)):
            d = self.get(i)
            key = (int(d.pair), int(d.side))
            if d.side < 0 or key in firsts:
                continue
            g = nx.Graph()
            g.add_nodes_from(range(d.num_nodes))
            g.add_edges_from(d.edge_index.t().tolist())
            firsts[key] = g
        ids = sorted({p for p, _ in firsts})
        return [GraphPair(f"BREC {p}", _category(p, len(ids)), firsts[(p, 0)], firsts[(p, 1)],
                          known="from the BREC benchmark") for p in ids if (p, 1) in firsts]
