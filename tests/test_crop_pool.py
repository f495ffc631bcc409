"""The cached crop pool of the fast profiles: crops hold their objects, centers are medoids, the pool refreshes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import Dataset, MetaTensor, get_track_meta
from monai.transforms import Compose, EnsureTyped, RandFlipd, RandRotate90d

from monai_embedseg.data import CropPoolDataset, split_pool_pipeline
from monai_embedseg.data.synthetic import synthetic_nuclei_2d
from monai_embedseg.medoid import exact_medoid
from monai_embedseg.transforms import GenerateCenterImaged, RandObjectCropd

CROP = (40, 40)


def _images(n: int = 4) -> list[dict]:
    out = []
    for i in range(n):
        img, lab = synthetic_nuclei_2d(shape=(96, 96), n_objects=(6, 10), radius=(5, 9), seed=i)
        out.append({"image": img[None].astype(np.float32), "label": lab[None].astype(np.int64)})
    return out


def _pipeline() -> Compose:
    """The bundles' training order: crop, augmentation (with the center key), then the center target."""
    keys = ["image", "label", "center"]
    return Compose(
        [
            RandObjectCropd(["image", "label"], label_key="label", crop_size=CROP, num_samples=2),
            RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
            RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True),
            RandRotate90d(keys, prob=0.75, max_k=3, allow_missing_keys=True),
            GenerateCenterImaged("label", center_key="center"),
            EnsureTyped(["image", "label", "center"], track_meta=False),
        ]
    )


def _pool(pool_size=12, refresh_rate=0.25, seed=0):
    cut, augment = split_pool_pipeline(_pipeline(), RandObjectCropd)
    cut.set_random_state(seed)
    augment.set_random_state(seed + 1)
    return CropPoolDataset(Dataset(_images(), cut), pool_size, refresh_rate, transform=augment, seed=seed)


def test_split_moves_augmentation_behind_the_targets():
    cut, augment = split_pool_pipeline(_pipeline(), RandObjectCropd)
    assert [type(t).__name__ for t in cut.transforms] == ["RandObjectCropd", "GenerateCenterImaged", "EnsureTyped"]
    assert [type(t).__name__ for t in augment.transforms] == ["RandFlipd", "RandFlipd", "RandRotate90d"]
    with pytest.raises(ValueError, match="no crop transform"):
        split_pool_pipeline(Compose([EnsureTyped("image")]), RandObjectCropd)


def test_served_crops_hold_objects_whose_centers_are_medoids():
    pool = _pool()
    for i in range(len(pool)):
        item = pool[i]
        image, label, center = item["image"], item["label"], item["center"]
        assert isinstance(image, torch.Tensor) and image.shape == (1, *CROP) and label.shape == center.shape
        ids = [int(v) for v in torch.unique(label) if v > 0]
        assert ids, "an object-centered crop must contain an object"
        for k in ids:
            obj = (label[0] == k).numpy()
            marked = np.argwhere(center[0].numpy() & obj)
            assert len(marked) == 1, f"object {k}: {len(marked)} center pixels"
            pts = np.argwhere(obj).astype(float)
            dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1).sum(1)
            at = np.flatnonzero((pts == marked[0]).all(1))[0]
            # a medoid of the cropped object (flips and rotations map a medoid to a medoid; ties may differ)
            assert dist[at] <= dist.min() * (1 + 1e-9), f"object {k}: center is not a medoid"
            assert exact_medoid(pts) >= 0


def test_pool_refreshes_at_its_rate_and_serves_each_crop_again():
    pool = _pool(pool_size=12, refresh_rate=0.25)
    pool[0]
    assert pool.crops_cut == 12  # filled once
    first = [id(c) for c in pool.pool]
    for i in range(40):
        pool[i]
    # 41 crops served at 0.25 new crops each: 10 re-cut, the oldest first
    assert pool.crops_cut == 12 + 10
    pool._credit = 0.0  # the check below serves one more crop
    now = [id(c) for c in pool.pool]
    assert sum(a != b for a, b in zip(first, now)) == 10 and now[10:] == first[10:]
    # augmentation runs without MONAI's metadata tracking (plain tensors out), and the global setting is restored
    assert get_track_meta() and not isinstance(pool[3]["image"], MetaTensor) and get_track_meta()
    # served items are fresh dicts: augmentation never alters the pool
    before = pool.pool[11]["image"].clone()
    for _ in range(5):
        pool[11]
    assert torch.equal(pool.pool[11]["image"], before)


def test_pool_without_refresh_keeps_its_crops_and_checks_arguments():
    pool = _pool(pool_size=5, refresh_rate=0.0)
    for i in range(20):
        pool[i]
    assert pool.crops_cut == 6  # 3 source items of 2 crops, the last pair cut to fit
    with pytest.raises(ValueError, match="refresh_rate"):
        CropPoolDataset(_images(), 4, refresh_rate=1.5)
    with pytest.raises(ValueError, match="pool_size"):
        CropPoolDataset(_images(), 0)
    with pytest.raises(ValueError, match="empty"):
        CropPoolDataset([], 4)
