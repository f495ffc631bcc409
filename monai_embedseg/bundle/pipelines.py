"""Small helpers the bundles' transform pipelines call, and the image-only pipelines of ``monai-embedseg segment``.

The bundles' training, validation and inference pipelines and their postprocessing are written in the bundle
configs themselves (``train#preprocessing``, ``validate#preprocessing``, ``validate#postprocessing``,
``preprocessing``, ``postprocessing``: MONAI ``Compose`` lists, generated from
``monai_embedseg/bundle/template/``), so one transform can be swapped or tuned by an override. Loading and
normalisation are deterministic (cached once by a ``CacheDataset``); cropping and augmentation are random and run on
the fly, so no crop files are ever written.

:func:`infer_transforms` and :func:`postprocessing` serve the ``segment`` command until it runs ``inference.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import Compose, Lambdad, LoadImaged, SaveImaged, ScaleIntensityRangePercentilesd

from monai_embedseg.data.io import TiffReader, TiffWriter, as_label_dtype
from monai_embedseg.transforms.cluster import EmbedSegClusterd

__all__ = ["square_in_plane", "as_slices", "infer_transforms", "postprocessing"]


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


def infer_transforms(image_key: str = "image", image_channel_dim: int | None = None) -> Compose:
    """Images only, for inference on unlabelled data: load, channel first, the paper's percentile normalisation.

    The same loading and normalisation as the bundles' ``preprocessing`` (``inference.json``).
    """
    return Compose(
        [
            LoadImaged(image_key, reader=TiffReader(channel_dim=image_channel_dim), ensure_channel_first=True),
            ScaleIntensityRangePercentilesd(image_key, lower=1.0, upper=99.8, b_min=0.0, b_max=1.0, clip=False,
                                            channel_wise=True, dtype=np.float32),
        ]
    )


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
