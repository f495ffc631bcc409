"""Small helpers the bundles' transform pipelines call.

The bundles' training, validation and inference pipelines and their postprocessing are written in the bundle
configs themselves (``train#preprocessing``, ``validate#preprocessing``, ``validate#postprocessing``,
``preprocessing``, ``postprocessing``: MONAI ``Compose`` lists, generated from
``monai_embedseg/bundle/template/``), so one transform can be swapped or tuned by an override. Loading and
normalisation are deterministic (cached once by a ``CacheDataset``); cropping and augmentation are random and run on
the fly, so no crop files are ever written.

``monai-embedseg segment`` runs the bundle's ``inference.json`` itself, so a bundle and the command share one
pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["square_in_plane", "as_slices"]


def square_in_plane(crop_size: Sequence[int]) -> list[int]:
    """Make the last two (y, x) crop sizes equal (their maximum), so 90-degree rotations keep the crop shape."""
    roi = [int(r) for r in crop_size]
    roi[-2:] = [max(roi[-2:])] * 2
    return roi


def as_slices(crop_slices: Sequence[Sequence[int | None] | None] | None) -> list[slice] | None:
    """``[[start, stop], ...]`` per spatial axis (``None`` or ``[null, null]``: the whole axis) as slices.

    For ``SpatialCropd(roi_slices=...)``, e.g. the paper's Mouse-Skull test sub-volume
    ``[[null, null], [null, null], [256, 512]]``; ``None`` stays ``None`` (no crop).
    """
    if crop_slices is None:
        return None
    return [slice(*(ax if ax is not None else (None, None))) for ax in crop_slices]
