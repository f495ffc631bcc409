"""The transform pipelines every EmbedSeg bundle uses, built from MONAI transforms and ours.

Loading and normalisation are deterministic (cached once by a ``CacheDataset``); cropping and augmentation are
random and run on the fly, so no crop files are ever written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import (
    Compose,
    CopyItemsd,
    DeleteItemsd,
    EnsureTyped,
    Lambdad,
    LoadImaged,
    RandFlipd,
    RandRotate90d,
    SaveImaged,
    SpatialCropd,
    ScaleIntensityRangePercentilesd,
)

from monai_embedseg.data.io import TiffReader, TiffWriter, as_label_dtype
from monai_embedseg.transforms.center import GenerateCenterImaged
from monai_embedseg.transforms.cluster import EmbedSegClusterd
from monai_embedseg.transforms.crop import RandObjectCropd
from monai_embedseg.transforms.labels import ValidateInstanceLabelsd

__all__ = ["square_in_plane", "load_transforms", "train_transforms", "val_transforms", "infer_transforms", "postprocessing"]


def square_in_plane(crop_size: Sequence[int]) -> list[int]:
    """Make the last two (y, x) crop sizes equal (their maximum), so 90-degree rotations keep the crop shape."""
    roi = [int(r) for r in crop_size]
    roi[-2:] = [max(roi[-2:])] * 2
    return roi


def load_transforms(
    image_key: str = "image",
    label_key: str | None = "label",
    image_channel_dim: int | None = None,
    label_channel_dim: int | None = None,
    percentiles: Sequence[float] = (1.0, 99.8),
) -> list:
    """Load (TIFF via tifffile, NIfTI via nibabel), make channel-first, normalise percentiles, validate labels.

    Args:
        image_channel_dim: axis of the image channels on disk (``None``: single-channel YX/ZYX images).
        label_channel_dim: ``0`` for one-hot stacks ``(N, *spatial)``, ``None`` for label maps.
        percentiles: the paper's per-image normalisation: these percentiles map to 0 and 1, no clipping.

    Returns:
        a list of transforms producing ``image (C, *sp)`` float32 and ``label (1 or N, *sp)`` int.
    """
    xs: list = [LoadImaged(image_key, reader=TiffReader(channel_dim=image_channel_dim), ensure_channel_first=True)]
    if label_key is not None:
        xs.append(LoadImaged(label_key, reader=TiffReader(channel_dim=label_channel_dim), ensure_channel_first=True,
                             dtype=None))
        xs.append(EnsureTyped(label_key, dtype=np.int64 if label_channel_dim is None else np.uint8))
        xs.append(ValidateInstanceLabelsd(label_key, image_key=image_key))
    lo, hi = percentiles
    xs.append(ScaleIntensityRangePercentilesd(image_key, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=False,
                                              channel_wise=True, dtype=np.float32))
    return xs


def train_transforms(
    crop_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    num_samples: int = 4,
    image_key: str = "image",
    label_key: str = "label",
    center_key: str = "center",
    image_channel_dim: int | None = None,
    label_channel_dim: int | None = None,
    jitter: float = 0.25,
) -> Compose:
    """The training pipeline: deterministic loading/normalisation, then random object crops and augmentation.

    One flat ``Compose``, so a ``CacheDataset`` caches everything up to the first random transform
    (``RandObjectCropd``): images are read once, crops are drawn on the fly.

    Args:
        crop_size: crop size per spatial axis (y/x made square so 90-degree rotations keep the shape).
        spacing: physical voxel size, for the medoid centers.
        num_samples: object-centered crops per image per draw.

    Returns:
        a ``Compose`` producing ``num_samples`` dicts with ``image (C, *crop)``, ``label`` and ``center (1, *crop)``.
    """
    keys = [image_key, label_key]
    spatial_dims = len(crop_size)
    return Compose(
        [
            *load_transforms(image_key, label_key, image_channel_dim, label_channel_dim),
            RandObjectCropd(keys, label_key=label_key, crop_size=square_in_plane(crop_size), num_samples=num_samples,
                            jitter=jitter),
            *[RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)],
            RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(spatial_dims - 2, spatial_dims - 1)),
            GenerateCenterImaged(label_key, center_key=center_key, spacing=spacing),
            EnsureTyped([image_key, center_key], track_meta=False),
            EnsureTyped(label_key, dtype=np.int64 if label_channel_dim is None else np.uint8, track_meta=False),
        ]
    )


def val_transforms(
    image_key: str = "image",
    label_key: str = "label",
    image_channel_dim: int | None = None,
    label_channel_dim: int | None = None,
    crop_slices: Sequence[Sequence[int | None]] | None = None,
) -> Compose:
    """Whole validation/test images, loaded and normalised (no random cropping: inference tiles them).

    The ground truth always ends up under ``"label"`` (copied there from ``label_key``, e.g. ``"label_onehot"``),
    where MONAI's ``SupervisedEvaluator`` puts the label of its output.

    Args:
        crop_slices: optional fixed sub-volume ``[[start, stop], ...]`` per spatial axis (``None`` = whole axis), e.g.
            the paper's Mouse-Skull test protocol ``[[null, null], [null, null], [256, 512]]``.
    """
    xs = load_transforms(image_key, label_key, image_channel_dim, label_channel_dim)
    if crop_slices is not None:
        roi = [slice(*(ax if ax is not None else (None, None))) for ax in crop_slices]
        xs.append(SpatialCropd([image_key, label_key], roi_slices=roi))
    if label_key != "label":
        xs += [DeleteItemsd("label"), CopyItemsd(label_key, names="label")]
    return Compose(xs)


def infer_transforms(image_key: str = "image", image_channel_dim: int | None = None) -> Compose:
    """Images only, for inference on unlabelled data."""
    return Compose(load_transforms(image_key, None, image_channel_dim))


def postprocessing(
    pred_key: str = "pred",
    output_key: str = "pred_labels",
    spacing: Sequence[float] | None = None,
    seed_thresh: float = 0.9,
    fg_thresh: float = 0.5,
    min_object_size: int = 0,
    output_dir: str | None = None,
    overwrite: bool = False,
) -> Compose:
    """Cluster the raw prediction into instances and (if ``output_dir``) write ``<name>_labels.tif`` per image.

    The label TIFFs are uint16, or uint32 when an image has more than 65,535 objects (ids never wrap).
    """
    xs: list = [
        EmbedSegClusterd(pred_key, output_keys=output_key, spacing=spacing, seed_thresh=seed_thresh,
                         fg_thresh=fg_thresh, min_object_size=min_object_size),
    ]
    if output_dir is not None:
        xs.append(Lambdad(output_key, as_label_dtype))  # uint16, or uint32 past 65,535 objects: never wraps
        save = SaveImaged(output_key, output_dir=output_dir, output_postfix="labels", output_ext=".tif",
                          separate_folder=False, resample=False, output_dtype=None, print_log=False,
                          writer=TiffWriter)
        save.set_options(init_kwargs={"overwrite": overwrite})
        xs.append(save)
    return Compose(xs)
