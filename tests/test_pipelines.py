"""The bundles' pipelines, as the generated configs define them: images are read once (cached), crops are drawn on the
fly, one transform can be swapped by an override."""

from pathlib import Path
from unittest import mock

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset
from monai.transforms import RandFlipd, RandRotate90d

from monai_embedseg.bundle.paths import bundle_path
from monai_embedseg.bundle.pipelines import as_slices, square_in_plane
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
            "RandObjectCropd",
            *["RandFlipd"] * len(axes),
            "RandRotate90d",
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
    assert base["train#preprocessing#transforms#9#_target_"] == "RandRotate90d"  # same index in 2D and 3D
    xs = parsed(
        "synthetic_2d",
        crop_size=[32, 32],
        **{"train#preprocessing#transforms#9#prob": 0.3, "train#preprocessing#transforms#10#mode": "centroid"},
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
