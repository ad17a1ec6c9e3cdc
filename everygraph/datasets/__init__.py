"""everygraph.datasets."""

__all__: list[str] = []
