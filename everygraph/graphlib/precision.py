"""The precision rule for long sums and products, written once for every engine and layer.

Scans and contractions accumulate many products: in bfloat16 (8 mantissa bits) or float16
(11) the rounding error of a sum over thousands of terms swamps the result. So every engine
computes in float32 when its inputs are half precision, keeps float64 as float64 (a
double-precision check must mean something), and casts the result back to the input's dtype.
``mamba_ssm``'s reference scan (``selective_scan_ref``) follows the same rule.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_dtype", "upcast"]


def compute_dtype(*inputs: Tensor | torch.dtype | None) -> torch.dtype:
    """The dtype a long reduction over ``inputs`` runs in.

    ``torch.float64`` when any input (a tensor or a dtype; ``None`` is skipped) is float64,
    else ``torch.float32``: half-precision inputs are computed in float32.

    Example:
        >>> compute_dtype(torch.bfloat16)
        torch.float32
        >>> compute_dtype(torch.ones(2, dtype=torch.float16), torch.ones(2, dtype=torch.float64))
        torch.float64
    """
    for t in inputs:
        dtype = t if isinstance(t, torch.dtype) else getattr(t, "dtype", None)
        if dtype == torch.float64:
            return torch.float64
    return torch.float32


def upcast(t: Tensor) -> Tensor:
    """``t`` in its compute dtype (:func:`compute_dtype`): half precision becomes float32,
    float32 and float64 are returned unchanged (no copy)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    return t.to(compute_dtype(t))
