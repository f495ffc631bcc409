"""Training crops that fit the data: never larger than the volumes, within a voxel budget, objects warned about."""

import logging

import numpy as np
import pytest

from monai_embedseg.data import batch_for_budget, compute_dataset_properties, fit_crop_size
from monai_embedseg.data.synthetic import synthetic_cells_3d
from monai_embedseg.transforms import RandObjectCrop


def _props(crop, mean, std, shape):
    return {"crop_size": crop, "object_extent_mean": mean, "object_extent_std": std, "image_shape_min": shape}


@pytest.mark.parametrize(
    "props",
    [
        _props([64, 120, 136], [30, 40, 40], [7, 16, 19], [60, 128, 128]),  # a deep crop on thin tiles
        _props([8, 144, 112], [4.5, 80.7, 73.6], [0.5, 11.5, 6.8], [5, 443, 512]),  # 5-slice volumes
        _props([16, 40, 40], [6, 18, 18], [1.5, 4, 4], [32, 128, 128]),
        _props([96, 96], [23, 23], [14, 14], [80, 256]),  # 2D, an image narrower than the crop
    ],
)
@pytest.mark.parametrize("budget", [None, 100_000, 262_144])
def test_a_crop_never_exceeds_the_volume(props, budget):
    crop = fit_crop_size(props, max_voxels=budget)
    shape = props["image_shape_min"]
    assert len(crop) == len(shape)
    assert all(c <= s for c, s in zip(crop, shape)), (crop, shape)
    assert crop[-1] == crop[-2]  # square in plane: 90-degree rotations keep the shape
    if budget is not None:
        assert np.prod(crop) <= budget


def test_the_budget_shrinks_every_axis_by_one_factor_and_keeps_the_objects():
    props = _props([64, 256, 256], [20, 60, 60], [2, 6, 6], [200, 1000, 1000])
    crop = fit_crop_size(props, max_voxels=64 * 128 * 128)
    assert np.prod(crop) <= 64 * 128 * 128
    assert crop[1] == crop[2] and crop[1] < 256 and crop[0] < 64
    assert all(c % 8 == 0 for c in crop)
    assert crop[0] >= 24 and crop[1] >= 72  # mean + 2 std rounded up to 8
    assert fit_crop_size(props) == [64, 256, 256]  # no budget: the paper's rule as deduced


def test_objects_larger_than_a_crop_are_warned_about(caplog):
    props = _props([112, 232, 232], [50, 90, 90], [10, 20, 20], [200, 400, 400])  # 70 x 130 x 130 do not fit
    with caplog.at_level(logging.WARNING, logger="monai_embedseg.data.crop_size"):
        crop = fit_crop_size(props, max_voxels=262_144)
    assert np.prod(crop) <= 262_144 and crop[1] == crop[2]
    assert "larger than a training crop can hold" in caplog.text and "z (" in caplog.text and "y (" in caplog.text


def test_real_deduction_on_thin_anisotropic_volumes():
    """The properties of generated anisotropic volumes 12 slices deep: the deduced z crop (16) is cut to 12."""
    labels = [
        synthetic_cells_3d((12, 64, 64), z_anisotropy=3, n_objects=(3, 5), radius=(8, 11), seed=s)[1] for s in (0, 1)
    ]
    props = compute_dataset_properties(labels, spacing=(3, 1, 1))
    assert props["crop_size"][0] > 12
    crop = fit_crop_size(props, max_voxels=262_144)
    assert crop[0] == 12 and crop[1] == crop[2] <= 64


def test_missing_properties_are_named():
    with pytest.raises(ValueError, match="image_shape_min"):
        fit_crop_size({"crop_size": [8, 8], "object_extent_mean": [3, 3], "object_extent_std": [1, 1]})


def test_batch_for_budget_counts_padded_crops():
    assert batch_for_budget([5, 144, 144], 1 << 20) == (1 << 20) // (8 * 144 * 144)  # padded to 8 slices
    assert batch_for_budget([16, 40, 40], 1 << 20) == 16  # capped
    assert batch_for_budget([64, 256, 256], 1 << 20) == 2  # at least two crops


def test_keep_inside_never_pads_where_the_window_fits():
    lab = np.zeros((1, 20, 30, 30), np.int32)
    lab[0, :3, :4, :4] = 1  # in a corner: a centered window would leave the volume on every axis
    img = np.ones((1, 20, 30, 30), np.float32)
    crop = RandObjectCrop((8, 16, 16), num_samples=6, keep_inside=True)
    crop.set_random_state(0)
    for out in crop(img, lab):
        assert out.shape == (1, 8, 16, 16) and out.min() == 1.0  # no padded voxel
    assert all(s >= 0 for start in crop.starts for s in start)
    crop = RandObjectCrop((24, 16, 16), num_samples=2, keep_inside=True)  # deeper than the volume along z
    out = crop(img, lab)[0]
    assert out.shape == (1, 24, 16, 16) and out[:, :, :, :].min() == 0.0  # padded only along z
    assert (out[0, :, 0, 0] == 0).tolist() == [True] * 2 + [False] * 20 + [True] * 2  # the excess, split evenly


def test_objects_cut_by_the_volume_itself_are_not_warned_about(caplog):
    props = _props([8, 144, 112], [4.5, 80.7, 73.6], [0.5, 11.5, 6.8], [5, 443, 512])  # nuclei span all 5 slices
    with caplog.at_level(logging.INFO, logger="monai_embedseg.data.crop_size"):
        assert fit_crop_size(props, max_voxels=262_144) == [5, 144, 144]
    assert "larger than a training crop" not in caplog.text and "training crop [5, 144, 144]" in caplog.text
