"""SecondMinimum: every label checked directly against sorted(set)[1]."""

from __future__ import annotations

import pytest
import torch

from everygraph.datasets import SecondMinimum


def test_labels_are_second_minimum_by_direct_check():
    data = SecondMinimum(500, 2, 20, num_values=7, seed=3)
    assert len(data) == 500
    for i in range(len(data)):
        values, label = data[i]
        assert 2 <= values.numel() <= 20
        assert values.min() >= 0 and values.max() < 7
        assert int(label) == sorted(values.tolist())[1]


def test_flat_views_and_batch_agree_with_items():
    data = SecondMinimum(50, 2, 9, seed=4)
    assert torch.equal(data.index, torch.repeat_interleave(torch.arange(50), data.sizes))
    assert int(data.ptr[-1]) == data.values.numel() == int(data.sizes.sum())
    ids = torch.tensor([7, 0, 49, 7])
    values, index, labels = data.batch(ids)
    expected = torch.cat([data[int(i)][0] for i in ids])
    assert torch.equal(values, expected)
    assert torch.equal(index, torch.repeat_interleave(torch.arange(4), data.sizes[ids]))
    assert torch.equal(labels, data.labels[ids])


def test_deterministic_balanced_and_shuffled():
    a, b = SecondMinimum(4000, 2, 64, seed=5), SecondMinimum(4000, 2, 64, seed=5)
    assert torch.equal(a.values, b.values) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.values, SecondMinimum(4000, 2, 64, seed=6).values)
    counts = torch.bincount(a.labels, minlength=10).float()
    assert counts.min() > 0.7 * counts.mean()  # labels uniform over the 10 classes
    # the second minimum is not always at the same position inside a set
    positions = torch.tensor([int((v == l).nonzero()[0]) for v, l in (a[i] for i in range(300))])
    assert positions.unique().numel() > 5


def test_errors():
    with pytest.raises(ValueError, match="min_size"):
        SecondMinimum(10, 1, 5)
    with pytest.raises(ValueError, match="max_size"):
        SecondMinimum(10, 5, 4)
