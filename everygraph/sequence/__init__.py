"""everygraph.sequence."""

from .plstm import lattice_gates, plstm_scan

__all__: list[str] = ["plstm_scan", "lattice_gates"]
