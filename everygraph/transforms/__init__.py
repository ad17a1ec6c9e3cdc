"""everygraph.transforms."""

__all__: list[str] = []
