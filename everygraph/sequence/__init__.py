"""everygraph.sequence."""

from .plstm import lattice_gates, plstm_scan
from .mamba import selective_scan, selective_scan_reference

__all__: list[str] = ["plstm_scan", "lattice_gates", "selective_scan", "selective_scan_reference"]
