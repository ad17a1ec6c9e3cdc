r"""The multiset second-minimum task (learnable commutative monoids, Ong & Velickovic 2022)."""

from __future__ import annotations

import torch

from torch import Tensor
from torch.utils.data import Dataset

from ..graphlib import check_size

__all__ = ["SecondMinimum"]


class SecondMinimum(Dataset):
    r"""Multisets of small integers; the label is the second-smallest element.

    The task of `"Learnable Commutative Monoids for Graph Neural Networks"
    <https://arxiv.org/abs/2212.08541>`_ (Ong & Velickovic, LoG 2022): for a multiset
    :math:`S = \{s_1, \dots, s_n\}`, :math:`n \ge 2`, of integers in ``[0, num_values)``,

    .. math::  y(S) = \mathrm{sort}(S)_2 ,

    the second element of the sorted multiset (so ``{3, 3, 5}`` has label 3). Sum-like
    aggregators do not extrapolate to larger sets; a monoid (``min`` of pairs, carried with
    the runner-up) does exactly, and a learned one can approximate it.

    Sampling (ours; chosen so that the label is uniform at *every* set size, so accuracy
    vs size is comparable across sizes and chance is ``1 / num_values``): the size ``n`` is
    uniform in ``[min_size, max_size]``; the label ``y`` is uniform in ``[0, num_values)``;
    the multiset is one element ``m`` uniform in ``[0, y]``, one element equal to ``y``, and
    ``n - 2`` elements uniform in ``[y, num_values)``, in a random order. Then
    ``m <= y <= every other element``, so ``y`` is the second minimum by construction.
    (With uniform i.i.d. elements the second minimum of a large set is almost always 0, and
    a constant predictor would look good at large sizes.)

    Args:
        num_sets: number of multisets.
        min_size, max_size: inclusive range of set sizes (``min_size >= 2``).
        num_values: elements are integers in ``[0, num_values)``; also the number of classes.
        seed: the data set is a pure function of all arguments.

    Attributes:
        values: ``[E]`` long, the elements of all sets, set after set.
        index: ``[E]`` long, the set id of each element (sorted).
        ptr: ``[num_sets + 1]`` offsets of each set in ``values``.
        sizes: ``[num_sets]`` set sizes.
        labels: ``[num_sets]`` long, the second minimum of each set.

    Items are ``(values_of_set, label)``. :meth:`batch` gathers many sets into the flat
    ``(values, index, labels)`` form aggregations take.

    Example:
        >>> train = SecondMinimum(10000, 2, 16, seed=0)
        >>> values, index, labels = train.batch(torch.arange(128))
        >>> # embed values -> [E, F], aggregate over index -> [128, F], classify -> labels
    """

    def __init__(self, num_sets: int, min_size: int = 2, max_size: int = 16, num_values: int = 10, seed: int = 0):
        num_sets = check_size(num_sets, "num_sets", 0)
        min_size = check_size(min_size, "min_size", 0)
        max_size = check_size(max_size, "max_size", 0)
        num_values = check_size(num_values, "num_values", 0)
        seed = check_size(seed, "seed", 0)
        if min_size < 2:
            raise ValueError(f"min_size must be >= 2 (a second minimum needs two elements), got {min_size}")
        if max_size < min_size:
            raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")
        if num_values < 1:
            raise ValueError(f"num_values must be >= 1, got {num_values}")
        if num_sets < 0:
            raise ValueError(f"num_sets must be >= 0, got {num_sets}")
        self.num_values, self.min_size, self.max_size, self.seed = num_values, min_size, max_size, seed
        g = torch.Generator().manual_seed(seed)
        sizes = torch.randint(min_size, max_size + 1, (num_sets,), generator=g)
        labels = torch.randint(0, num_values, (num_sets,), generator=g)
        index = torch.repeat_interleave(torch.arange(num_sets), sizes)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        position = torch.arange(index.numel()) - ptr[index]
        y = labels[index]
        u = torch.rand(index.numel(), generator=g, dtype=torch.float64)
        below = (u * (y + 1)).long()  # uniform in [0, y]
        above = y + (u * (num_values - y)).long()  # uniform in [y, num_values)
        values = torch.where(position == 0, below, torch.where(position == 1, y, above))
        # random order inside each set: sort by (set, random key)
        key = torch.rand(index.numel(), generator=g, dtype=torch.float64)
        order = torch.argsort(index.double() * 2 + key)
        self.values = values[order]
        self.index = index
        self.ptr = ptr
        self.sizes = sizes
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.values[self.ptr[i] : self.ptr[i + 1]], self.labels[i]

    def batch(self, set_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(values [E_b], index [E_b], labels [B])`` for the sets ``set_ids`` ``[B]``, in that order
        (``index`` sorted, ``0..B-1``)."""
        set_ids = torch.as_tensor(set_ids, dtype=torch.long)
        sizes = self.sizes[set_ids]
        index = torch.repeat_interleave(torch.arange(set_ids.numel()), sizes)
        starts = torch.repeat_interleave(self.ptr[set_ids], sizes)
        position = torch.arange(index.numel()) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
        return self.values[starts + position], index, self.labels[set_ids]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({len(self)}, sizes {self.min_size}..{self.max_size}, "
                f"values 0..{self.num_values - 1}, seed={self.seed})")
