"""everygraph.sequence."""

__all__: list[str] = []
