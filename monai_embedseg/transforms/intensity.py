"""Per-image percentile normalisation that survives mostly empty images (the rule: :mod:`monai_embedseg.intensity`).

:class:`ScaleIntensityContentPercentiles` gives MONAI's ``ScaleIntensityRangePercentiles`` result unchanged for every
image; a mostly empty one gets a warning naming the file and, with ``content=True``, its percentiles taken over the
tiles that hold content.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, convert_to_tensor

from monai_embedseg.constants import NORMALIZE_PERCENTILES
from monai_embedseg.intensity import (
    CONTENT_TILE,
    SPARSE_RATIO,
    content_level,
    is_mostly_empty,
    sparse_message,
    tile_mask,
    tile_maxima,
)
from monai_embedseg.labels import label_source

__all__ = [
    "SparseImageWarning",
    "ScaleIntensityContentPercentiles",
    "ScaleIntensityContentPercentilesd",
    "ScaleIntensityContentPercentilesD",
    "ScaleIntensityContentPercentilesDict",
]


class SparseImageWarning(UserWarning):
    """A mostly empty image: its intensity percentiles are background values."""


class ScaleIntensityContentPercentiles(Transform):
    """Scale each channel so that its ``lower`` / ``upper`` percentiles map to 0 / 1 (no clipping, float32), as
    ``ScaleIntensityRangePercentiles(lower, upper, 0, 1, clip=False, channel_wise=True)`` (its percentiles, computed
    once); a mostly empty channel (scaled maximum above ``sparse_ratio``) is warned about and, with ``content``,
    scaled by the percentiles of its tiles holding content.

    Args:
        lower: lower percentile (0-100).
        upper: upper percentile (0-100).
        tile: tile side per spatial axis (one value for all), in pixels.
        sparse_ratio: scaled maximum above which a channel counts as mostly empty; tiles whose own maximum scales
            above half of it hold content. A model's own is :func:`monai_embedseg.intensity.model_sparse_ratio` of
            the peak its training images reached (some real training data is mostly empty too: a fluorescence channel
            where few objects glow), as the bundles' inference configs set it.
        content: ``True``: rescale mostly empty channels over their content tiles; ``False`` (default): keep the
            whole-image percentiles and warn (the bundles set it with
            :func:`monai_embedseg.intensity.content_default`).

    Input ``(C, *spatial)`` numpy array or torch tensor (2D or 3D); output of the same kind, float32.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        lower: float = NORMALIZE_PERCENTILES[0],
        upper: float = NORMALIZE_PERCENTILES[1],
        tile: Sequence[int] | int = CONTENT_TILE,
        sparse_ratio: float = SPARSE_RATIO,
        content: bool = False,
    ) -> None:
        self.lower, self.upper = float(lower), float(upper)
        self.tile = tile
        self.sparse_ratio = float(sparse_ratio)
        self.content = bool(content)

    def _content_range(self, channel: np.ndarray, low: float, high: float) -> tuple[float, float, float]:
        """``(low, high, fraction of tiles)`` over the content tiles of a mostly empty ``channel`` ``(*spatial)``
        whose whole-image percentiles are ``low`` / ``high``."""
        tile = [self.tile] * channel.ndim if isinstance(self.tile, int) else list(self.tile)
        content = tile_maxima(channel, tile) > content_level(low, high, self.sparse_ratio)
        values = channel[tile_mask(content, channel.shape, tile)]
        low_c, high_c = (float(v) for v in np.percentile(values, [self.lower, self.upper]))
        return low_c, high_c, float(content.mean())

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Scale ``img`` ``(C, *spatial)``; returns the same kind (MetaTensor kept), float32."""
        img = convert_to_dst_type(img, img, dtype=np.float32)[0]  # torch.quantile needs floating point
        source = label_source(img) or "the image"
        channels = convert_to_tensor(img, track_meta=False)
        # each channel's range as MONAI's ScaleIntensityRangePercentiles computes it (its percentile, per channel)
        ranges = [(percentile(d, self.lower), percentile(d, self.upper)) for d in channels]
        peaks = [float(d.max()) for d in channels]
        sparse = [is_mostly_empty(float(a), float(b), p, self.sparse_ratio) for (a, b), p in zip(ranges, peaks)]
        if any(sparse):
            found = [
                self._content_range(convert_to_numpy(d), float(a), float(b)) if s and self.content else None
                for (a, b), d, s in zip(ranges, channels, sparse)
            ]
            rescued = self.content and not any(f is not None and f[1] <= f[0] for f in found)
            fraction = min(f[2] for f in found if f is not None) if rescued else None
            warnings.warn(sparse_message(source, fraction, self.lower, self.upper), SparseImageWarning, stacklevel=2)
            if rescued:
                ranges = [r if f is None else f[:2] for r, f in zip(ranges, found)]
        scaled = [
            convert_to_tensor(ScaleIntensityRange(a, b, 0.0, 1.0, clip=False, dtype=np.float32)(d), track_meta=False)
            for (a, b), d in zip(ranges, channels)
        ]
        return convert_to_dst_type(torch.stack(scaled), dst=img, dtype=np.float32)[0]


class ScaleIntensityContentPercentilesd(MapTransform):
    """Dictionary twin of :class:`ScaleIntensityContentPercentiles`."""

    backend = ScaleIntensityContentPercentiles.backend

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = NORMALIZE_PERCENTILES[0],
        upper: float = NORMALIZE_PERCENTILES[1],
        tile: Sequence[int] | int = CONTENT_TILE,
        sparse_ratio: float = SPARSE_RATIO,
        content: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleIntensityContentPercentiles(lower, upper, tile, sparse_ratio, content)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Scale every key of ``data`` (each ``(C, *spatial)``)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


ScaleIntensityContentPercentilesD = ScaleIntensityContentPercentilesDict = ScaleIntensityContentPercentilesd
