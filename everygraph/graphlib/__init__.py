"""everygraph.graphlib."""

__all__: list[str] = []
