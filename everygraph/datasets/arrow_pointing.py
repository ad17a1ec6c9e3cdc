"""The arrow-pointing extrapolation task of pLSTM (a black arrow, a black disk, does it hit?)."""

from __future__ import annotations

import math

import numpy as np
import torch

from torch import Tensor
from torch.utils.data import Dataset

from ..graphlib import check_size

__all__ = ["ArrowPointing"]

# Column order of ``ArrowPointing.geometry``.
GEOMETRY_FIELDS = (
    "arrow_x",
    "arrow_y",
    "arrow_angle",
    "arrow_length",
    "arrow_width",
    "disk_x",
    "disk_y",
    "disk_radius",
)


class ArrowPointing(Dataset):
    r"""Images of one arrow and one disk; the label says whether the arrow points at the disk.

    From `pLSTM: parallelizable Linear Source Transition Mark networks
    <https://arxiv.org/abs/2506.11997>`_ (Poeppel et al., 2025). A white image holds a black
    arrow (a shaft and a triangular head) and a black filled disk that do not touch. The
    label is 1 when the ray that starts at the arrow's centre and runs along the arrow hits
    the disk:

    .. math::
        y = [\,t^* \ge 0 \;\wedge\; \lVert d - t^* u \rVert \le r\,],\qquad
        d = p_\text{disk} - p_\text{arrow},\; t^* = d \cdot u,

    with :math:`u` the arrow's unit direction and :math:`r` the disk radius. Half the samples
    are positive by construction: sample ``i`` has label ``i % 2``; the positions, sizes and
    the disk are drawn first and the arrow's angle is then drawn uniformly among the angles
    that give the wanted label, keeping the ray at least ``margin`` pixels inside or outside
    the disk so no label hinges on one pixel. Sample ``i`` depends only on ``(seed, i)``.

    Objects have a fixed size in **pixels**, independent of ``image_size``: a dataset with a
    larger ``image_size`` (same object sizes) is the paper's extrapolation test (train at
    192 px, test at 384 px there; the objects are just placed in a larger canvas and
    usually lie farther apart).

    Defaults are scaled for CPU training on 48-px images, about a quarter of the paper's
    192 px: disk radius 4-7 px, padding 4 px; the arrow is relatively larger (length 10-16 px,
    width 1.5-2.5 px) because the paper's 15-30 x 2-4 px divided by four would leave no
    visible head. :meth:`paper_sizes` gives the paper's object sizes (use with
    ``image_size=192`` and 384).

    Rendering is binary: a pixel is black (0) when its centre lies in an object, else
    white (1). The head is a triangle of length ``0.45 * length`` and half-width
    ``width / 2 + max(2, width)``, so it overhangs the shaft by at least 2 px.

    Args:
        num_samples: number of images.
        image_size: side of the square image in pixels.
        seed: the seed; the data set is a pure function of all arguments.
        arrow_length: ``(min, max)`` arrow length in pixels (tail to tip), drawn uniformly.
        arrow_width: ``(min, max)`` shaft width in pixels.
        disk_radius: ``(min, max)`` disk radius in pixels.
        padding: no object comes closer than this to the image border (pixels).
        gap: minimum free distance between the arrow's bounding circle and the disk (pixels).
        margin: the ray passes at least this far inside (positives) or outside (negatives)
            the disk's rim (pixels).
        channels: 1 (grey) or 3 (the grey image repeated, for RGB models).

    Items are ``(image, label)`` with ``image`` a float tensor ``[channels, image_size,
    image_size]`` in ``{0, 1}`` and ``label`` a long scalar. :meth:`tensors` renders many
    at once. ``geometry`` ``[num_samples, 8]`` (float64) holds the drawn parameters, columns
    named in ``GEOMETRY_FIELDS`` (x = column, y = row, angle in radians, ``atan2(dy, dx)``).

    Example:
        >>> train = ArrowPointing(1000, image_size=48, seed=0)
        >>> image, label = train[0]
        >>> image.shape, int(label)
        (torch.Size([1, 48, 48]), 0)
        >>> test_2x = ArrowPointing(1000, image_size=96, seed=1)  # same pixel sizes, 2x canvas
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int = 48,
        seed: int = 0,
        *,
        arrow_length: tuple[float, float] = (10.0, 16.0),
        arrow_width: tuple[float, float] = (1.5, 2.5),
        disk_radius: tuple[float, float] = (4.0, 7.0),
        padding: float = 4.0,
        gap: float = 2.0,
        margin: float = 1.0,
        channels: int = 1,
    ):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
        image_size = check_size(image_size, "image_size", 1)
        channels = check_size(channels, "channels", 1)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        for name, (low, high) in (("arrow_length", arrow_length), ("arrow_width", arrow_width), ("disk_radius", disk_radius)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(low, high)}")
        if not margin >= 0 or not gap >= 0 or not padding >= 0:
            raise ValueError(f"padding, gap and margin must be >= 0, got {padding}, {gap}, {margin}")
        if margin >= disk_radius[0]:
            raise ValueError(f"margin={margin} must be smaller than the smallest disk radius {disk_radius[0]}")
        # The farthest-apart placement must fit: the largest arrow and disk side by side.
        arrow_reach = _arrow_bounding_radius(arrow_length[1], arrow_width[1])
        need = 2 * padding + 2 * arrow_reach + 2 * disk_radius[1] + gap
        if image_size < need:
            raise ValueError(
                f"image_size={image_size} is too small for these objects: the largest arrow and disk with "
                f"padding={padding} and gap={gap} need at least {math.ceil(need)} px"
            )
        self.num_samples = num_samples
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.arrow_length = tuple(map(float, arrow_length))
        self.arrow_width = tuple(map(float, arrow_width))
        self.disk_radius = tuple(map(float, disk_radius))
        self.padding, self.gap, self.margin = float(padding), float(gap), float(margin)
        self.channels = channels
        self.labels = torch.arange(num_samples) % 2
        self.geometry = torch.tensor(
            [self._draw(i, bool(i % 2)) for i in range(num_samples)], dtype=torch.float64
        ).reshape(num_samples, len(GEOMETRY_FIELDS))

    @staticmethod
    def paper_sizes() -> dict:
        """The paper's object sizes in pixels (for 192-px training and 384-px test images)."""
        return dict(arrow_length=(15.0, 30.0), arrow_width=(2.0, 4.0), disk_radius=(15.0, 30.0), padding=30.0)

    # -- generation ----------------------------------------------------------------------------
    def _draw(self, index: int, positive: bool) -> list[float]:
        rng = np.random.default_rng([self.seed, index])
        size, pad = self.image_size, self.padding
        for _ in range(10_000):
            length = rng.uniform(*self.arrow_length)
            width = rng.uniform(*self.arrow_width)
            radius = rng.uniform(*self.disk_radius)
            reach = _arrow_bounding_radius(length, width)
            ax, ay = rng.uniform(pad + reach, size - pad - reach, size=2)
            dx, dy = rng.uniform(pad + radius, size - pad - radius, size=2)
            distance = math.hypot(dx - ax, dy - ay)
            if distance >= reach + radius + self.gap:
                break
        else:  # pragma: no cover - the size check in __init__ makes this practically unreachable
            raise RuntimeError("could not place a non-overlapping arrow and disk; enlarge image_size")
        towards = math.atan2(dy - ay, dx - ax)
        # The ray passes the disk centre at distance distance * sin|offset| (for |offset| < pi/2).
        inner = math.asin((radius - self.margin) / distance)
        outer = math.asin(min(1.0, (radius + self.margin) / distance))
        if positive:
            offset = rng.uniform(-inner, inner)
        else:
            offset = rng.choice([-1.0, 1.0]) * rng.uniform(outer, math.pi)
        angle = math.remainder(towards + offset, 2 * math.pi)
        return [ax, ay, angle, length, width, dx, dy, radius]

    # -- rendering -------------------------------------------------------------------------------
    def render(self, geometry: Tensor) -> Tensor:
        """Binary images ``[n, image_size, image_size]`` (1 = white) from ``geometry`` ``[n, 8]``."""
        g = geometry.to(torch.float64)
        centre = torch.arange(self.image_size, dtype=torch.float64) + 0.5
        px = centre.view(1, 1, -1)  # x = column
        py = centre.view(1, -1, 1)  # y = row
        ax, ay, angle, length, width, dx, dy, radius = (g[:, j].view(-1, 1, 1) for j in range(8))
        disk = (px - dx) ** 2 + (py - dy) ** 2 <= radius**2
        ux, uy = torch.cos(angle), torch.sin(angle)
        # Coordinates along the arrow (t, from the tail) and across it (s).
        t = (px - ax) * ux + (py - ay) * uy + length / 2
        s = (-(px - ax) * uy + (py - ay) * ux).abs()
        head_length = 0.45 * length
        head_half = _head_half_width(width)
        shaft = (t >= 0) & (t <= length - head_length) & (s <= width / 2)
        head = (t >= length - head_length) & (t <= length) & (s <= head_half * (length - t) / head_length)
        return (~(disk | shaft | head)).to(torch.float32)

    def tensors(self, indices: Tensor | None = None, chunk: int = 1024) -> tuple[Tensor, Tensor]:
        """All (or the given) samples at once: images ``[n, channels, H, W]``, labels ``[n]``."""
        indices = torch.arange(self.num_samples) if indices is None else torch.as_tensor(indices).long()
        parts = [self.render(self.geometry[indices[i:i + chunk]]) for i in range(0, indices.numel(), chunk)]
        images = torch.cat(parts) if parts else torch.empty(0, self.image_size, self.image_size)
        images = images.unsqueeze(1).expand(-1, self.channels, -1, -1).contiguous()
        return images, self.labels[indices]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        index = index % self.num_samples
        image = self.render(self.geometry[index:index + 1])[0]
        return image.unsqueeze(0).expand(self.channels, -1, -1).contiguous(), self.labels[index]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_samples}, image_size={self.image_size}, seed={self.seed})"


def _head_half_width(width):
    if isinstance(width, Tensor):
        return width / 2 + torch.clamp(width, min=2.0)
    return width / 2 + max(2.0, width)


def _arrow_bounding_radius(length: float, width: float) -> float:
    """Radius around the arrow's centre that holds the whole arrow, whatever its angle."""
    return math.hypot(length / 2, _head_half_width(width))
