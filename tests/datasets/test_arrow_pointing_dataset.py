"""ArrowPointing: labels checked by recovering the arrow and the disk from the pixels alone."""

import math

import pytest
import torch

from everygraph.datasets import ArrowPointing


def _components(black: list[list[bool]]) -> list[list[tuple[int, int]]]:
    """8-connected components of the black pixels, as lists of (row, col)."""
    rows, cols = len(black), len(black[0])
    seen = [[False] * cols for _ in range(rows)]
    found = []
    for r0 in range(rows):
        for c0 in range(cols):
            if not black[r0][c0] or seen[r0][c0]:
                continue
            seen[r0][c0] = True
            stack, pixels = [(r0, c0)], []
            while stack:
                r, c = stack.pop()
                pixels.append((r, c))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < rows and 0 <= cc < cols and black[rr][cc] and not seen[rr][cc]:
                            seen[rr][cc] = True
                            stack.append((rr, cc))
            found.append(pixels)
    return found


def _label_from_pixels(image: torch.Tensor) -> tuple[int, float]:
    """Recover disk and arrow from a rendered image and ray-test them.

    Returns the label and the ray's clearance ``|distance to the disk centre - radius|``
    (pixels), which says how much estimation error the recovered label tolerates.
    """
    comps = _components((image[0] < 0.5).tolist())
    assert len(comps) == 2, f"expected an arrow and a disk, found {len(comps)} components"
    stats = []
    for pixels in comps:
        pts = torch.tensor(pixels, dtype=torch.float64)[:, [1, 0]] + 0.5  # (x, y) pixel centres
        centre = pts.mean(0)
        reach = (pts - centre).norm(dim=1).max() + 0.5
        stats.append((pts, centre, len(pixels) / (math.pi * reach**2)))
    # The disk fills its bounding circle; a long thin arrow does not.
    (disk_pts, disk_centre, _), (arrow_pts, arrow_centre, _) = sorted(stats, key=lambda s: -s[2])
    radius = math.sqrt(disk_pts.shape[0] / math.pi)
    # Arrow axis: the principal direction of its pixels.
    rel = arrow_pts - arrow_centre
    _, vecs = torch.linalg.eigh(rel.T @ rel)
    axis = vecs[:, -1]
    # Head side: pixels farther from the axis than a shaft can reach belong to the head.
    along, across = rel @ axis, (rel @ torch.stack([-axis[1], axis[0]])).abs()
    wide = across > across.quantile(0.8) - 1e-9
    if along[wide].mean() < along.mean():
        axis = -axis
    d = disk_centre - arrow_centre
    t = float(d @ axis)
    passing = float((d - t * axis).norm())
    hit = t > 0 and passing <= radius
    return int(hit), abs(passing - radius)


def test_labels_match_pixels_at_paper_sizes():
    """Large objects: the recovered geometry is precise, every label must agree."""
    data = ArrowPointing(60, image_size=192, seed=3, **ArrowPointing.paper_sizes())
    images, labels = data.tensors()
    for image, label in zip(images, labels):
        recovered, _ = _label_from_pixels(image)
        assert recovered == int(label)


def test_labels_match_pixels_at_default_sizes():
    """Small objects: pixel estimates are coarser; every sample whose ray clears the rim by
    more than the estimation error must agree, and nearly all samples do clear it."""
    data = ArrowPointing(200, image_size=48, seed=5)
    images, labels = data.tensors()
    clear = agree_clear = agree = 0
    for image, label in zip(images, labels):
        recovered, clearance = _label_from_pixels(image)
        agree += recovered == int(label)
        if clearance > 3.0:
            clear += 1
            agree_clear += recovered == int(label)
    assert agree_clear == clear
    assert clear >= 0.6 * len(data)
    assert agree >= 0.9 * len(data)


def test_label_is_the_ray_test_on_the_stored_geometry():
    data = ArrowPointing(300, image_size=64, seed=1)
    g = data.geometry
    u = torch.stack([torch.cos(g[:, 2]), torch.sin(g[:, 2])], 1)
    d = g[:, [5, 6]] - g[:, [0, 1]]
    t = (d * u).sum(1)
    passing = (d - t[:, None] * u).norm(dim=1)
    hit = (t > 0) & (passing <= g[:, 7])
    assert torch.equal(hit.long(), data.labels)
    # and the ray clears the rim by at least the margin
    assert bool(((passing - g[:, 7]).abs()[t > 0] >= data.margin - 1e-9).all())


def test_deterministic_and_balanced():
    a, b = ArrowPointing(101, 48, seed=7), ArrowPointing(101, 48, seed=7)
    assert torch.equal(a.tensors()[0], b.tensors()[0])
    assert not torch.equal(a.geometry, ArrowPointing(101, 48, seed=8).geometry)
    # a sample depends on (seed, index) only
    assert torch.equal(ArrowPointing(10, 48, seed=7).geometry, a.geometry[:10])
    assert int(a.labels.sum()) == 50
    assert int(ArrowPointing(100, 48, seed=0).labels.sum()) == 50
    image, label = a[3]
    assert image.shape == (1, 48, 48) and image.dtype == torch.float32 and int(label) == 1
    assert torch.equal(image, a.tensors()[0][3])


def test_extrapolation_keeps_pixel_sizes():
    small, large = ArrowPointing(200, 48, seed=0), ArrowPointing(200, 96, seed=0)
    # same size distribution, in pixels
    for col in (3, 4, 7):
        assert small.geometry[:, col].min() >= [0, 0, 0, 10, 1.5, 0, 0, 4][col] - 1e-9
        assert large.geometry[:, col].max() <= [0, 0, 0, 16, 2.5, 0, 0, 7][col] + 1e-9
    black_small = (1 - small.tensors()[0]).sum((1, 2, 3)).mean()
    black_large = (1 - large.tensors()[0]).sum((1, 2, 3)).mean()
    assert abs(black_small - black_large) < 0.1 * black_small
    # objects spread over the larger canvas
    assert float(large.geometry[:, [0, 5]].max()) > 60
    images, _ = large.tensors(torch.arange(4))
    assert images.shape == (4, 1, 96, 96)
    assert ArrowPointing(4, 48, seed=0, channels=3)[0][0].shape == (3, 48, 48)


def test_bad_arguments():
    with pytest.raises(ValueError, match="too small"):
        ArrowPointing(4, image_size=20)
    with pytest.raises(ValueError, match="channels"):
        ArrowPointing(4, channels=2)
    with pytest.raises(ValueError, match="arrow_length"):
        ArrowPointing(4, arrow_length=(5.0, 3.0))
    with pytest.raises(IndexError):
        ArrowPointing(4)[4]
