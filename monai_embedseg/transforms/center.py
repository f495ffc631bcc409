"""Center images: one marked pixel per object, the seed targets of EmbedSeg."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type, ensure_tuple_rep

from monai_embedseg.labels import check_instance_labels
from monai_embedseg.medoid import CENTER_MODES, object_centers

__all__ = ["GenerateCenterImage", "GenerateCenterImaged", "GenerateCenterImageD", "GenerateCenterImageDict"]


def _validated_labels(label: NdarrayOrTensor) -> np.ndarray:
    """Labels ``(1, *spatial)`` or ``(N, *spatial)`` as int64, checked by ``labels.check_instance_labels``."""
    checked = check_instance_labels(label)
    return convert_data_type(checked, np.ndarray)[0].astype(np.int64, copy=False)


class GenerateCenterImage(Transform):
    """Mark one center pixel per object.

    Input: an instance label map ``(1, *spatial)`` (0 = background, ids >= 1, integer-valued) or a binary one-hot
    stack ``(N, *spatial)`` with ``N > 1`` (one channel per object, objects may overlap, empty channels are
    ignored); 2 or 3 spatial dims; numpy or torch (a MetaTensor keeps its metadata).

    Output: ``(1, *spatial)`` bool of the same kind, with exactly one True pixel per object, always inside its
    object. Overlapping one-hot objects never share a center: if a later channel's best pixel is already the
    center of an earlier one, it gets its own next-best pixel (see
    :func:`monai_embedseg.medoid.object_centers`).

    Args:
        mode: ``"medoid"`` (exact medoid, default), ``"centroid"`` (the object pixel nearest to the physical
            centroid) or ``"approximate-medoid"`` (exact medoid of a seeded subsample of ``max_points`` pixels).
        spacing: physical pixel size per spatial axis (z, y, x), ``None`` = 1. Given explicitly: it is not read
            from MetaTensor metadata.
        max_points: subsample size for ``"approximate-medoid"``.
        seed: subsampling seed for ``"approximate-medoid"`` (the result is deterministic).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        mode: str = "medoid",
        spacing: Sequence[float] | float | None = None,
        max_points: int = 1000,
        seed: int = 0,
    ) -> None:
        if mode not in CENTER_MODES:
            raise ValueError(f"mode must be one of {CENTER_MODES}, got {mode!r}.")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}.")
        self.mode = mode
        self.spacing = spacing
        self.max_points = int(max_points)
        self.seed = int(seed)

    def __call__(self, label: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: label ``(1, *spatial)`` or ``(N, *spatial)``. Returns: ``(1, *spatial)`` bool center image."""
        lab = _validated_labels(label)
        _, coords = object_centers(lab, self.spacing, self.mode, max_points=self.max_points, seed=self.seed)
        out = np.zeros((1, *lab.shape[1:]), dtype=bool)
        out[(0, *coords.T)] = True
        return convert_to_dst_type(out, label, dtype=torch.bool)[0]


class GenerateCenterImaged(MapTransform):
    """Dictionary twin of :class:`GenerateCenterImage`: writes the center image of ``data[key]`` under ``center_key``.

    Args:
        keys: keys of the instance label maps ``(1, *spatial)`` or one-hot stacks ``(N, *spatial)``.
        center_key: output key(s), one per key (a single string for a single key), default ``"center"``.
        mode, spacing, max_points, seed: see :class:`GenerateCenterImage` (``spacing`` is not read from metadata).
        allow_missing_keys: skip missing keys instead of raising.

    Example::

        GenerateCenterImaged(keys="label", center_key="center", spacing=(2.0, 0.4, 0.4))
    """

    backend = GenerateCenterImage.backend

    def __init__(
        self,
        keys: KeysCollection,
        center_key: str | Sequence[str] = "center",
        mode: str = "medoid",
        spacing: Sequence[float] | float | None = None,
        max_points: int = 1000,
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.center_keys = ensure_tuple_rep(center_key, len(self.keys))
        if len(set(self.center_keys)) != len(self.center_keys):
            raise ValueError(f"give one distinct center_key per key, got keys {self.keys} -> {self.center_keys}.")
        self.generator = GenerateCenterImage(mode=mode, spacing=spacing, max_points=max_points, seed=seed)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Add ``(1, *spatial)`` bool center images to a copy of ``data``."""
        d = dict(data)
        for key, center_key in self.key_iterator(d, self.center_keys):
            d[center_key] = self.generator(d[key])
        return d


GenerateCenterImageD = GenerateCenterImageDict = GenerateCenterImaged
