"""The per-image intensity normalisation rule, and what makes an image "mostly empty".

Every image is scaled so that its 1st / 99.8th intensity percentiles (:data:`~monai_embedseg.constants.
NORMALIZE_PERCENTILES`) become 0 / 1. In a mostly empty image (a small field of objects in a large slide) both
percentiles are background values and the objects end up tens of times above the range the network was trained on.
Such an image is recognised by its peak: scaled by its own percentiles, it exceeds :data:`SPARSE_RATIO` (a slide with
objects on 0.1 % of it peaks at about 22; every image of the DSB 2018, Usiigaci, HeLa and CHO sets at 1.0-2.7). On
request its percentiles are then taken over the tiles of :data:`CONTENT_TILE` pixels per axis that hold content: those
whose brightest pixel scales above half of :data:`SPARSE_RATIO`. Not by default: real training data can be mostly
empty too (BBBC010's GFP channel, where few worms glow, peaks at up to 21 in 19 of its 98 images), and a model trained
on such images expects them scaled as in training. The in-memory transform
(:class:`~monai_embedseg.transforms.ScaleIntensityContentPercentiles`) and the block-wise path
(:func:`~monai_embedseg.data.percentiles.content_percentiles`) apply this same rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["CONTENT_TILE", "SPARSE_RATIO", "content_level", "is_mostly_empty", "tile_mask", "tile_maxima"]

#: a channel whose maximum, scaled by its percentiles, exceeds this is mostly empty
SPARSE_RATIO = 6.0
#: side of the tiles (pixels per axis) over which a mostly empty channel's percentiles are taken
CONTENT_TILE = 64


def is_mostly_empty(low: float, high: float, peak: float, ratio: float = SPARSE_RATIO) -> bool:
    """Whether a channel with percentiles ``low`` / ``high`` and maximum ``peak`` is mostly empty (non-finite
    values are left to the checks downstream: ``False``)."""
    if not all(math.isfinite(v) for v in (low, high, peak)):
        return False
    spread = high - low
    return peak > high if spread <= 0 else (peak - low) / spread > ratio


def content_level(low: float, high: float, ratio: float = SPARSE_RATIO) -> float:
    """Tiles whose maximum exceeds this hold content (half of ``ratio`` on the percentile scale)."""
    return low + max(high - low, 0.0) * ratio / 2


def tile_maxima(channel: np.ndarray, tile: Sequence[int]) -> np.ndarray:
    """Maximum of every tile of ``channel`` ``(*spatial)``: ``(*ceil(spatial / tile))`` (last tiles may be short)."""
    out = channel
    for axis, (n, t) in enumerate(zip(channel.shape, tile)):
        out = np.maximum.reduceat(out, np.arange(0, n, max(1, int(t))), axis=axis)
    return out


def tile_mask(content: np.ndarray, shape: Sequence[int], tile: Sequence[int], start: Sequence[int] | None = None):
    """Pixel mask of the tiles marked in ``content`` (the tile grid of :func:`tile_maxima` over the whole image),
    for the region of ``shape`` pixels starting at ``start`` (default: the whole image from 0)."""
    start = [0] * len(shape) if start is None else list(start)
    index = [(np.arange(s, s + n) // max(1, int(t))) for s, n, t in zip(start, shape, tile)]
    return content[np.ix_(*index)]
