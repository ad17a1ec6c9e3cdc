"""everygraph.transforms: PyG transforms that precompute features once per graph.

In the layer of :mod:`everygraph.nn` and :mod:`everygraph.datasets`, above the engines; a
transform calls engine functions (:func:`everygraph.contractions.polynomial_features`) and
holds no ``torch.nn.Module``.
"""

from .add_polynomial_features import AddPolynomialFeatures

__all__: list[str] = [
    "AddPolynomialFeatures",
]
