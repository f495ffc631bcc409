"""The bundles' pipelines, as the generated configs define them: images are read once (cached), crops are drawn on the
fly, one transform can be swapped by an override."""

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset
from monai.transforms import RandFlipd, RandRotate90d

from monai_embedseg.bundle.paths import bundle_path
from monai_embedseg.bundle.pipelines import as_slices, blur_sigmas, square_in_plane, switch
from monai_embedseg.data.datalist import release_datalist
from monai_embedseg.data.io import TiffReader
from monai_embedseg.data.synthetic import write_synthetic_dataset
from monai_embedseg.transforms import GenerateCenterImaged, RandObjectCropd


def parsed(bundle: str, config: str = "train.json", **overrides) -> ConfigParser:
    """The bundle's config with overrides; ``voxel_spacing`` is given so that no dataset properties are computed."""
    parser = ConfigParser()
    parser.read_config(str(Path(bundle_path(bundle)) / "configs" / config))
    parser.update({"voxel_spacing": None, **overrides})
    return parser


def test_square_in_plane_and_as_slices():
    assert square_in_plane([8, 40, 56]) == [8, 56, 56] and square_in_plane([24, 32]) == [32, 32]
    assert as_slices([[None, None], [256, 512]]) == [slice(None, None), slice(256, 512)] and as_slices(None) is None


def test_training_reads_each_image_once_and_crops_on_the_fly(tmp_path):
    write_synthetic_dataset(
        str(tmp_path), "nuclei_2d", n_train=2, n_test=1, seed=0, shape=(64, 64), n_objects=(4, 6), radius=(4, 6)
    )
    data = release_datalist(str(tmp_path), "train")
    transform = parsed("synthetic_2d", crop_size=[32, 32], num_samples=3).get_parsed_content("train#preprocessing")
    with mock.patch.object(TiffReader, "read", autospec=True, side_effect=TiffReader.read) as read:
        dataset = CacheDataset(data, transform, progress=False)
        assert read.call_count == 4  # 2 images + 2 masks, at caching time
        first = [s["image"] for s in dataset[0]]
        second = [s["image"] for s in dataset[0]]
        assert read.call_count == 4  # no reading after caching
    assert len(first) == 3 and all(tuple(x.shape) == (1, 32, 32) for x in first)
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # new random crops each draw
    sample = dataset[1][0]
    assert set(sample) >= {"image", "label", "center"}
    ids = np.unique(sample["label"].numpy())
    assert int(sample["center"].sum()) == len(ids[ids > 0])  # one center per visible object


def test_training_pipeline_order_and_arguments_follow_the_bundle():
    """2D: flips along y and x, rotations in (y, x); 3D: a z flip too, rotations still in (y, x); crops squared."""
    for bundle, axes, rotate in (("synthetic_2d", [0, 1], (0, 1)), ("synthetic_3d", [0, 1, 2], (1, 2))):
        xs = parsed(bundle, crop_size=[8, 24, 40][-len(axes) :]).get_parsed_content("train#preprocessing").transforms
        names = [type(t).__name__ for t in xs]
        assert names == [
            "LoadImaged",
            "LoadImaged",
            "EnsureTyped",
            "ValidateInstanceLabelsd",
            "ScaleIntensityRangePercentilesd",
            "RandZoomd",
            "EnsureTyped",
            "RandObjectCropd",
            *["RandFlipd"] * len(axes),
            "RandRotate90d",
            "RandAdjustContrastd",
            "RandGaussianSmoothd",
            "RandScaleIntensityd",
            "RandShiftIntensityd",
            "RandGaussianNoised",
            "GenerateCenterImaged",
            "EnsureTyped",
            "EnsureTyped",
        ], names
        assert [t.flipper.spatial_axis for t in xs if isinstance(t, RandFlipd)] == axes
        assert next(t for t in xs if isinstance(t, RandRotate90d)).spatial_axes == rotate
        crop = next(t for t in xs if isinstance(t, RandObjectCropd))
        assert list(crop.cropper.crop_size) == [8, 40, 40][-len(axes) :]


def test_one_transform_is_swapped_by_an_override():
    base = parsed("synthetic_2d", crop_size=[32, 32])
    assert base["train#preprocessing#transforms#11#_target_"] == "RandRotate90d"  # same index in 2D and 3D
    xs = parsed(
        "synthetic_2d",
        crop_size=[32, 32],
        **{"train#preprocessing#transforms#11#prob": 0.3, "train#preprocessing#transforms#17#mode": "centroid"},
    )
    xs = xs.get_parsed_content("train#preprocessing").transforms
    assert next(t for t in xs if isinstance(t, RandRotate90d)).prob == 0.3
    assert next(t for t in xs if isinstance(t, GenerateCenterImaged)).generator.mode == "centroid"


def test_validation_copies_one_hot_labels_and_crops_sub_volumes(tmp_path):
    write_synthetic_dataset(str(tmp_path), "worms_2d", n_train=2, n_test=1, seed=0, shape=(48, 40), n_worms=(2, 3))
    item = release_datalist(str(tmp_path), "test")[0]
    one_hot = {"label_key": "label_onehot", "label_channel_dim": 0, "val_slices": [[4, 36], [None, None]]}
    out = parsed("synthetic_2d", **one_hot).get_parsed_content("validate#preprocessing")(item)
    assert out["image"].shape == (1, 32, 40)
    assert out["label"].shape[1:] == (32, 40) and out["label"].shape[0] >= 2  # one-hot stack under "label"
    assert torch.equal(torch.as_tensor(out["label"]), torch.as_tensor(out["label_onehot"]))
    plain = parsed("synthetic_2d").get_parsed_content("validate#preprocessing")  # label maps, whole images
    assert [type(t).__name__ for t in plain.transforms][-1] == "ScaleIntensityRangePercentilesd"
    out = plain(item)
    assert out["image"].shape == (1, 48, 40) and out["label"].shape == (1, 48, 40)


def _always(bundle: str, crop_size: list[int], **overrides) -> ConfigParser:
    """The bundle's training pipeline with every augmentation drawn on every call."""
    every = {"augmentation#prob": 1.0, "augmentation#zoom_prob": 1.0}
    return parsed(bundle, crop_size=crop_size, **every, **overrides)


def _check_targets(sample: dict, label_ids: set[int], one_hot: bool = False) -> None:
    """The invariants the loss needs: integer labels from the original ids, one center per object, inside it."""
    label, center = np.asarray(sample["label"]), np.asarray(sample["center"])
    assert np.isfinite(np.asarray(sample["image"])).all()
    if one_hot:
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        visible = int((label.reshape(label.shape[0], -1).max(1) > 0).sum())
        assert int(center.sum()) == visible and label.max(0)[center[0]].all()
        return
    assert label.dtype == np.int64
    ids = set(np.unique(label).tolist()) - {0}
    assert ids <= label_ids
    assert int(center.sum()) == len(ids) and (label[center] > 0).all()
    assert sorted(np.unique(label[center]).tolist()) == sorted(ids)  # exactly one center in each object


def test_augmentation_keeps_labels_medoid_targets_and_one_hot_masks(tmp_path):
    """Zoom, contrast, blur, intensity scale and shift and noise, all drawn every time, in 2D, 3D and one-hot."""
    cases = (
        ("synthetic_2d", "nuclei_2d", {"shape": (64, 64), "n_objects": (4, 6), "radius": (4, 6)}, [32, 32], {}),
        ("synthetic_3d", "cells_3d", {"shape": (12, 48, 48), "z_anisotropy": 3}, [8, 32, 32], {}),
        (
            "synthetic_2d",
            "worms_2d",
            {"shape": (48, 40), "n_worms": (2, 3)},
            [32, 32],
            {"label_key": "label_onehot", "label_channel_dim": 0},
        ),
    )
    for bundle, kind, kwargs, crop, extra in cases:
        root = tmp_path / kind
        write_synthetic_dataset(str(root), kind, n_train=2, n_test=1, seed=0, **kwargs)
        data = release_datalist(str(root), "train")
        transform = _always(bundle, crop, num_samples=2, **extra).get_parsed_content("train#preprocessing")
        key = extra.get("label_key", "label")
        for item in data:
            ids = set(np.unique(TiffReader().get_data(TiffReader().read(item["label"]))[0]).tolist()) - {0}
            for _ in range(4):
                for sample in transform(item):
                    _check_targets({**sample, "label": sample[key]}, ids, one_hot=key != "label")


def test_intensity_augmentation_changes_the_image_only():
    """The intensity transforms act on ``image`` alone: labels and center images pass through unchanged."""
    xs = _always("synthetic_3d", [8, 32, 32]).get_parsed_content("train#preprocessing").transforms
    names = ("RandAdjustContrastd", "RandGaussianSmoothd", "RandScaleIntensityd", "RandShiftIntensityd")
    intensity = [t for t in xs if type(t).__name__ in (*names, "RandGaussianNoised")]
    assert len(intensity) == 5
    rng = np.random.default_rng(0)
    label = torch.as_tensor(rng.integers(0, 4, (1, 8, 32, 32)))
    center = label == 2
    for t in intensity:
        image = torch.as_tensor(rng.random((1, 8, 32, 32), dtype=np.float32))
        out = t({"image": image.clone(), "label": label.clone(), "center": center.clone()})
        assert torch.equal(out["label"], label) and torch.equal(out["center"], center)
        assert not torch.equal(torch.as_tensor(out["image"]), image)  # drawn with probability 1: it changed


def test_zoom_scales_every_axis_alike_and_blur_keeps_the_physical_width():
    """One zoom factor on every axis, so an anisotropic volume keeps its spacing ratio; the blur's sigma per axis
    is the same physical width."""
    xs = _always("synthetic_3d", [8, 32, 32]).get_parsed_content("train#preprocessing").transforms
    zoom = next(t for t in xs if type(t).__name__ == "RandZoomd")
    zoom.set_random_state(3)
    label = torch.zeros((1, 20, 60, 60), dtype=torch.int64)
    label[0, 5:15, 10:40, 20:50] = 1
    out = zoom({"image": torch.rand(1, 20, 60, 60), "label": label})
    factors = np.array(out["label"].shape[1:]) / np.array(label.shape[1:])
    assert not np.allclose(factors, 1.0) and np.ptp(factors) < 0.06  # one factor, up to rounding of each size
    assert 0.85 - 0.05 <= factors.mean() <= 1.15 + 0.05
    assert blur_sigmas([0.5, 1.0], [1.0, 0.25, 0.25], 3) == [(0.125, 0.25), (0.5, 1.0), (0.5, 1.0)]
    assert blur_sigmas([0.5, 1.0], None, 2) == [(0.5, 1.0), (0.5, 1.0), (0.5, 1.0)]
    with pytest.raises(ValueError, match="blur sigma"):
        blur_sigmas([1.0, 0.5], None, 2)


def test_augmentation_is_switched_off_in_the_config():
    """``augmentation#intensity`` / ``augmentation#zoom`` false: the training pipeline of before (flips, rotations)."""
    xs = parsed("synthetic_2d", crop_size=[32, 32], **{"augmentation#intensity": False, "augmentation#zoom": False})
    names = [type(t).__name__ for t in xs.get_parsed_content("train#preprocessing").transforms]
    assert not {"RandZoomd", "RandAdjustContrastd", "RandGaussianSmoothd", "RandGaussianNoised"} & set(names)
    assert "RandScaleIntensityd" not in names and "RandShiftIntensityd" not in names
    as_typed = parsed("synthetic_2d", crop_size=[32, 32], **{"augmentation#zoom": "false"})  # a command-line override
    assert "RandZoomd" not in [type(t).__name__ for t in as_typed.get_parsed_content("train#preprocessing").transforms]
    assert switch("True") is True and switch(False) is False
    with pytest.raises(ValueError, match="augmentation#zoom must be true or false, got 'no'"):
        switch("no", "augmentation::zoom")  # the name as MONAI passes it from a "$" expression
