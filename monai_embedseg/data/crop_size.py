"""Training crop size and batch that fit the data: never larger than the volumes, within a voxel budget.

The crop size deduced from the masks (``mean + 5 std`` object extent per axis, rounded up to 8:
:func:`~monai_embedseg.data.properties.compute_dataset_properties`) is the paper's rule. On small or thin volumes it can
exceed the volume itself (a 60-slice tile and a 64-slice crop: the crop is padding along z), and in 3D its voxel count
sets the cost of every step. :func:`fit_crop_size` keeps the rule's proportions, shrinks the crop uniformly (the same
factor on every axis, i.e. the same factor in physical units, so an anisotropic crop stays anisotropic like its
objects) until it fits a voxel budget, not below what holds a typical object (``mean + 2 std``) unless that alone
is over the budget, and clips every axis to the smallest training volume. :func:`batch_for_budget` then picks how
many such crops make one step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from monai_embedseg.data.properties import CROP_MULTIPLE

__all__ = ["fit_crop_size", "batch_for_budget", "OBJECT_N_STD"]

logger = logging.getLogger(__name__)

#: a crop should hold an object of ``mean + OBJECT_N_STD * std`` extent along every axis
OBJECT_N_STD = 2.0


def _round_up(values: np.ndarray, multiple: int) -> np.ndarray:
    return np.ceil(values / multiple) * multiple


def fit_crop_size(
    properties: Mapping,
    max_voxels: int | None = None,
    multiple: int = CROP_MULTIPLE,
    square_in_plane: bool = True,
) -> list[int]:
    """A training crop size ``[Z,] Y, X`` that fits the training volumes and, optionally, a voxel budget.

    Args:
        properties: dataset properties (``crop_size``, ``object_extent_mean``, ``object_extent_std``,
            ``image_shape_min``), as written to ``dataset_properties.json``.
        max_voxels: largest crop in voxels (``None``: no budget, only the clipping to the volumes). The crop is
            scaled down by one factor on every axis until it fits, not below ``mean + 2 std`` object extent unless
            that alone is over the budget (then that extent is scaled down, and a warning says so).
        multiple: axes are rounded up to a multiple of this (the network's downsampling), then clipped to the
            smallest volume, so an axis shorter than the volume is a multiple and a clipped axis is the volume's size.
        square_in_plane: make the last two axes equal (90-degree rotations in the y-x plane keep the crop shape).

    Returns:
        the crop size, one int per spatial axis. A warning is logged when typical objects (``mean + 2 std``) are
        larger than the crop along an axis where the volumes are not smaller still: they are then seen only in parts
        during training (objects cut by the volume's own border are what the data holds, at inference too).

    Raises:
        ValueError: properties without the needed keys, or lengths that do not match.
    """
    needed = ("crop_size", "object_extent_mean", "object_extent_std", "image_shape_min")
    missing = [k for k in needed if k not in properties]
    if missing:
        raise ValueError(f"dataset properties lack {missing}; recompute them (monai-embedseg properties DATASET_DIR).")
    start = np.asarray(properties["crop_size"], np.float64)
    mean = np.asarray(properties["object_extent_mean"], np.float64)
    std = np.asarray(properties["object_extent_std"], np.float64)
    limit = np.asarray(properties["image_shape_min"], np.float64)
    if not len(start) == len(mean) == len(std) == len(limit):
        raise ValueError(
            f"crop size {start.tolist()}, extents {mean.tolist()} and image shape {limit.tolist()} differ in length."
        )
    need = mean + OBJECT_N_STD * std
    if square_in_plane and len(start) >= 2:
        start[-2:] = start[-2:].max()
        need[-2:] = need[-2:].max()
        limit[-2:] = limit[-2:].min()

    def clipped(size: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(_round_up(size, multiple), multiple), limit)

    def largest(fitted, budget: float) -> np.ndarray:
        """``fitted(s)`` for the largest ``s`` in [0, 1] within ``budget`` voxels (it only grows with ``s``)."""
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.prod(fitted(mid)) <= budget else (lo, mid)
        return fitted(lo)

    crop = clipped(np.maximum(start, need))
    if max_voxels is not None and np.prod(crop) > max_voxels:
        if np.prod(clipped(need)) <= max_voxels:  # shrink towards what holds a typical object
            crop = largest(lambda s: clipped(np.maximum(start * s, need)), max_voxels)
        else:  # even a typical object is over the budget: the budget wins, the objects are cut (warned below)
            crop = largest(lambda s: clipped(need * s), max_voxels)
    logger.info(
        f"training crop {crop.astype(int).tolist()} (the masks ask for {start.astype(int).tolist()}; smallest volume "
        f"{limit.astype(int).tolist()}; budget {max_voxels or 'none'} voxels)"
    )
    short = np.flatnonzero((need > crop) & (crop < limit))  # where the volume itself is not what limits the crop
    if len(short):
        axes = "zyx"[-len(crop) :]
        logger.warning(
            "objects are larger than a training crop can hold along "
            + ", ".join(f"{axes[a]} (mean + 2 std extent {need[a]:.0f} > crop {int(crop[a])})" for a in short)
            + ": the network sees them only in parts; use larger training volumes or a coarser sampling"
        )
    return [int(c) for c in crop]


def batch_for_budget(crop_size: Sequence[int], voxels_per_step: int, minimum: int = 2, maximum: int = 16) -> int:
    """Crops per step so that a step holds about ``voxels_per_step`` voxels (within ``[minimum, maximum]``).

    The network pads every axis to a multiple of its downsampling (``CROP_MULTIPLE``), so the padded crop is what
    counts.
    """
    padded = math.prod(int(math.ceil(c / CROP_MULTIPLE) * CROP_MULTIPLE) for c in crop_size)
    return int(min(max(voxels_per_step // max(padded, 1), minimum), maximum))
