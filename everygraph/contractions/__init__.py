"""everygraph.contractions."""

__all__: list[str] = []
