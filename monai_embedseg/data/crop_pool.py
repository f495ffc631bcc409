"""A pool of object-centered crops, cut once and refreshed a few at a time, served with on-the-fly augmentation.

Cutting a crop and computing its medoid center image costs far less than a network step, but on a 2-core laptop it
still takes either a core away from PyTorch (a DataLoader worker) or time from every step (the main process). The
pool cuts each crop once and serves it about ``1 / refresh_rate`` times, each time through the cheap random
augmentation (flips, 90-degree rotations applied to image, labels and center alike), and replaces the oldest crops
continuously, so the network keeps seeing new objects. The original EmbedSeg cuts its crops once, to disk, before
training; the pool is as cheap per step (at ``refresh_rate`` 0.1, a tenth of the cutting) without a fixed crop set.

MONAI's ``SmartCacheDataset`` refreshes a cache of the *deterministic* part of a pipeline, which stops before the
first random transform, i.e. before the crop; here the random crops themselves are pooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, Randomizable, RandomizableTrait
from torch.utils.data import Dataset

__all__ = ["CropPoolDataset", "split_pool_pipeline"]


class CropPoolDataset(Dataset, Randomizable):
    """Serve ``pool_size`` cached crops, re-cutting ``refresh_rate`` new crops per crop served (oldest out first).

    Args:
        source: dataset whose items are freshly cut crops, e.g. a MONAI ``CacheDataset`` over the full images whose
            transform loads and normalises (cached once), then cuts object-centered crops and their center images
            (run on every access). An item is one dict or a list of dicts (``num_samples`` crops).
        pool_size: crops held; ``len(self)``.
        refresh_rate: new crops cut per crop served, in ``[0, 1]``: each crop is served about ``1 / refresh_rate``
            times (0: the first crops forever, 1: every crop served once on average, like no pool).
        transform: random augmentation applied to a pooled crop each time it is served (it must treat every dense
            key alike, the center image included); ``None`` serves the crops as cut.
        seed: seed of the order in which source items are drawn.
        track_meta: keep MONAI's metadata tracking on while ``transform`` runs (``False``: it is switched off for
            that call, so the served arrays are plain tensors; tracking made up most of the serving time of 80 x 80
            crops).

    Each served item is a dict of ``(C, *spatial)`` arrays, as ``source`` makes them. The pool is filled on first
    access (in each DataLoader worker separately; with a pool, ``num_workers=0`` is the intended use).
    """

    def __init__(
        self,
        source: Sequence[Any],
        pool_size: int,
        refresh_rate: float = 0.1,
        transform: Callable | None = None,
        seed: int = 0,
        track_meta: bool = False,
    ) -> None:
        if len(source) == 0:
            raise ValueError("CropPoolDataset: the source dataset is empty (no training images)")
        if int(pool_size) < 1:
            raise ValueError(f"CropPoolDataset: pool_size must be >= 1, got {pool_size}")
        if not 0.0 <= float(refresh_rate) <= 1.0:
            raise ValueError(f"CropPoolDataset: refresh_rate must be in [0, 1], got {refresh_rate}")
        self.source = source
        self.pool_size = int(pool_size)
        self.refresh_rate = float(refresh_rate)
        self.transform = transform
        self.track_meta = bool(track_meta)
        self.set_random_state(seed)
        self.pool: list[dict] = []
        self._next = 0  # slot replaced next (oldest crop)
        self._order: list[int] = []
        self._spare: list[dict] = []
        self._credit = 0.0
        #: crops cut so far (pool fill included)
        self.crops_cut = 0

    def __len__(self) -> int:
        return self.pool_size

    def randomize(self, data: Any = None) -> None:
        """Draw a new order of the source items."""
        self._order = list(self.R.permutation(len(self.source)))

    def _new_crop(self) -> dict:
        """One new crop: the next one cut from the last source item, else from the next item of the order."""
        if not self._spare:
            if not self._order:
                self.randomize()
            crops = self.source[int(self._order.pop())]
            self._spare = list(crops) if isinstance(crops, (list, tuple)) else [crops]
            self.crops_cut += len(self._spare)
        return self._spare.pop(0)

    def fill(self) -> None:
        """Cut crops until the pool holds ``pool_size``."""
        while len(self.pool) < self.pool_size:
            self.pool.append(self._new_crop())

    def refresh(self, n: int) -> None:
        """Replace the ``n`` oldest crops by new ones."""
        self.fill()
        for _ in range(int(n)):
            self.pool[self._next] = self._new_crop()
            self._next = (self._next + 1) % self.pool_size

    def __getitem__(self, index: int) -> dict:
        self.fill()
        self._credit += self.refresh_rate
        if self._credit >= 1.0:
            n = math.floor(self._credit)
            self._credit -= n
            self.refresh(n)
        item = dict(self.pool[int(index) % self.pool_size])
        if self.transform is None:
            return item
        if self.track_meta:
            return self.transform(item)
        was = get_track_meta()
        set_track_meta(False)  # plain tensors: MONAI's metadata tracking was most of the serving time
        try:
            return self.transform(item)
        finally:
            set_track_meta(was)


def split_pool_pipeline(pipeline: Compose, crop_type: type | tuple[type, ...]) -> tuple[Compose, Compose]:
    """Split a training pipeline into the part a :class:`CropPoolDataset` caches and the part run on each access.

    The random transforms after the crop (flips, rotations: augmentation) move to the second pipeline; everything
    else keeps its order in the first (loading, normalisation, the crop, then the targets computed from the cropped
    labels, e.g. the center image). The center image is thus computed before the flips and must be flipped with
    them (add its key to the augmentation's keys); a medoid maps to a medoid under flips and 90-degree rotations.

    Args:
        pipeline: the whole training ``Compose``.
        crop_type: class of the crop transform (e.g. ``RandObjectCropd``); the pipeline must contain one.

    Returns:
        ``(cut, augment)`` ``Compose`` pipelines.
    """
    transforms = list(pipeline.transforms)
    at = next((i for i, t in enumerate(transforms) if isinstance(t, crop_type)), None)
    if at is None:
        raise ValueError(f"split_pool_pipeline: the pipeline has no crop transform of type {crop_type}")
    later = transforms[at + 1 :]
    augment = [t for t in later if isinstance(t, RandomizableTrait)]
    cut = transforms[: at + 1] + [t for t in later if not isinstance(t, RandomizableTrait)]
    return Compose(cut, map_items=pipeline.map_items), Compose(augment, map_items=pipeline.map_items)
