"""everygraph.transforms."""

from .add_polynomial_features import AddPolynomialFeatures

__all__: list[str] = [
    "AddPolynomialFeatures",
]
