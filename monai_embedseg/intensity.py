"""The per-image intensity normalisation rule, and what makes an image "mostly empty".

Every image is scaled so that its 1st / 99.8th intensity percentiles (:data:`~monai_embedseg.constants.
NORMALIZE_PERCENTILES`) become 0 / 1. In a mostly empty image (a small field of objects in a large slide) both
percentiles are background values and the objects end up tens of times above the range the network was trained on.
Such an image is recognised by its peak: scaled by its own percentiles, it exceeds :data:`SPARSE_RATIO` (a slide with
objects on 0.1 % of it peaks at about 22; every image of the DSB 2018, Usiigaci, HeLa and CHO sets at 1.0-2.7). On
request its percentiles are then taken over the tiles of :data:`CONTENT_TILE` pixels per axis that hold content: those
whose brightest pixel scales above half of :data:`SPARSE_RATIO`. Real training data can be mostly empty too
(BBBC010's GFP channel, where few worms glow, peaks at up to 21 in 19 of its 98 images), and a model trained on such
images expects them scaled as in training. So the threshold is the model's: training records the highest peak of its
images (``intensity_peak`` in ``dataset_properties.json``), and an image counts as mostly empty for that model when it
peaks above :data:`SPARSE_RATIO` and :data:`PEAK_MARGIN` times that (:func:`model_sparse_ratio`); such an image is then
scaled over its content by default (:func:`content_default`). A model whose properties lack the peak (trained by an
earlier version) keeps the whole-image scaling unless asked, with a warning. The in-memory transform
(:class:`~monai_embedseg.transforms.ScaleIntensityContentPercentiles`) and the block-wise path
(:func:`~monai_embedseg.data.percentiles.content_percentiles`) apply this same rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CONTENT_TILE",
    "PEAK_MARGIN",
    "SPARSE_RATIO",
    "content_default",
    "content_level",
    "image_peak",
    "is_mostly_empty",
    "model_sparse_ratio",
    "sparse_message",
    "tile_mask",
    "tile_maxima",
]

#: a channel whose maximum, scaled by its percentiles, exceeds this is mostly empty
SPARSE_RATIO = 6.0
#: side of the tiles (pixels per axis) over which a mostly empty channel's percentiles are taken
CONTENT_TILE = 64
#: an image is mostly empty for a model when it peaks this many times higher than the model's training images did
PEAK_MARGIN = 1.5


def is_mostly_empty(low: float, high: float, peak: float, ratio: float = SPARSE_RATIO) -> bool:
    """Whether a channel with percentiles ``low`` / ``high`` and maximum ``peak`` is mostly empty (non-finite
    values are left to the checks downstream: ``False``)."""
    if not all(math.isfinite(v) for v in (low, high, peak)):
        return False
    spread = high - low
    return peak > high if spread <= 0 else (peak - low) / spread > ratio


def image_peak(image: np.ndarray, lower: float, upper: float) -> float | None:
    """The highest scaled peak ``(max - p_lower) / (p_upper - p_lower)`` over the channels of ``image``
    ``(C, *spatial)``; ``None`` when no channel has a finite, positive percentile spread."""
    found = []
    for channel in np.asarray(image):
        low, high = (float(v) for v in np.percentile(channel, [lower, upper]))
        peak = float(channel.max())
        if all(math.isfinite(v) for v in (low, high, peak)) and high > low:
            found.append((peak - low) / (high - low))
    return max(found) if found else None


def model_sparse_ratio(training_peak: float | None) -> float:
    """The scaled peak above which an image is mostly empty for a model whose training images peaked at
    ``training_peak`` (``None``: unknown): :data:`SPARSE_RATIO`, or :data:`PEAK_MARGIN` times that peak if higher."""
    if training_peak is None or not math.isfinite(float(training_peak)):
        return SPARSE_RATIO
    return max(SPARSE_RATIO, PEAK_MARGIN * float(training_peak))


def content_default(normalize_content: bool | None, training_peak: float | None) -> bool:
    """Whether to scale mostly empty images over their content: as asked, or (``None``) when the model records the
    peak of its training images, so that the threshold is its own."""
    return bool(normalize_content) if normalize_content is not None else training_peak is not None


def sparse_message(source: str, fraction: float | None, lower: float, upper: float) -> str:
    """The line that names a mostly empty image ``source``: normalised over the ``fraction`` of its tiles holding
    content, or (``None``) scaled by its whole-image ``lower`` / ``upper`` percentiles, with what to do about it."""
    if fraction is not None:
        return (
            f"{source}: a mostly empty image (its {lower:g} / {upper:g} % intensity percentiles are background "
            f"values); normalised over the {100 * fraction:.1f} % of it that holds objects."
        )
    return (
        f"{source}: its brightest pixels are far above its {lower:g} / {upper:g} % intensity percentiles, which are "
        "background values (a mostly empty image?). Objects may be over-segmented: crop the image to the region "
        "holding objects, or normalise over it (segment --normalize content)."
    )


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
