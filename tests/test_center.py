"""GenerateCenterImage(d): one center pixel per object, numpy/torch/MetaTensor, 2D/3D, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.spatial.distance import cdist

from monai_embedseg.transforms import (
    GenerateCenterImage,
    GenerateCenterImageD,
    GenerateCenterImaged,
    GenerateCenterImageDict,
)


def brute_medoid_pixel(mask, spacing):
    pix = np.argwhere(mask)
    energy = cdist(pix * spacing, pix * spacing).sum(axis=1)
    return tuple(pix[np.flatnonzero(energy <= energy.min() * (1 + 1e-9))[0]])


def label_map(dims):
    if dims == 2:
        lab = np.zeros((1, 20, 24), dtype=np.int64)
        lab[0, 1:8, 2:10] = 1
        lab[0, 10:19, 3:22] = 4
        lab[0, 12:17, 8:12] = 0  # hole: object 4 is an annulus
        lab[0, 2:5, 14:16] = 2
    else:
        lab = np.zeros((1, 8, 12, 14), dtype=np.int64)
        lab[0, 1:5, 1:7, 2:9] = 1
        lab[0, 4:8, 7:12, 6:14] = 3
        lab[0, 0, 11, 0] = 6
    return lab


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_label_map_one_medoid_per_object(dims, kind):
    lab = label_map(dims)
    spacing = (1.0, 0.6) if dims == 2 else (2.0, 0.4, 0.5)
    inp = torch.as_tensor(lab) if kind == "torch" else lab
    out = GenerateCenterImage(spacing=spacing)(inp)
    assert isinstance(out, torch.Tensor if kind == "torch" else np.ndarray)
    out = np.asarray(out)
    assert out.dtype == bool and out.shape == lab.shape
    ids = [i for i in np.unique(lab) if i]
    assert out.sum() == len(ids)
    for i in ids:
        obj = lab[0] == i
        assert out[0][obj].sum() == 1  # exactly one center, inside its object
        assert out[0][tuple(brute_medoid_pixel(obj, spacing))]


@pytest.mark.parametrize("center", ["centroid", "approximate-medoid"])
def test_other_modes_one_pixel_per_object(center):
    lab = label_map(3)
    out = GenerateCenterImage(mode=center, max_points=20)(torch.as_tensor(lab, dtype=torch.float32))
    for i in (1, 3, 6):
        assert out[0][torch.as_tensor(lab[0] == i)].sum() == 1
    assert out.sum() == 3


def test_spacing_changes_the_center():
    lab = np.zeros((1, 9, 9), dtype=np.uint8)  # L shape
    lab[0, :, :3] = 1
    lab[0, 6:, :] = 1
    assert np.argwhere(GenerateCenterImage()(lab)[0]).tolist() == [[5, 2]]
    assert np.argwhere(GenerateCenterImage(spacing=(3.0, 1.0))(lab)[0]).tolist() == [[6, 3]]


def test_one_hot_overlapping_objects():
    stack = torch.zeros(5, 10, 12, dtype=torch.uint8)
    stack[0, 2:6, 2:6] = 1
    stack[1, 2:6, 2:6] = 1  # same object twice
    stack[3, 3:9, 4:11] = 1  # overlaps the others
    out = GenerateCenterImage()(stack)
    assert out.shape == (1, 10, 12) and out.dtype == torch.bool
    assert out.sum() == 3  # channels 2 and 4 are empty padding
    for ch in (0, 1, 3):
        assert (out[0] & stack[ch].bool()).sum() >= 1
    # the 4x4 square: the two copies get the two lowest tied pixels
    assert torch.nonzero(out[0] & stack[0].bool()).tolist() == [[3, 3], [3, 4]]


def test_one_hot_bool_3d():
    stack = np.zeros((2, 6, 7, 8), dtype=bool)
    stack[0, :3, :3, :3] = True
    stack[1, 2:6, 2:7, 3:8] = True
    out = GenerateCenterImage(mode="centroid")(stack)
    assert out.shape == (1, 6, 7, 8) and out.sum() == 2
    assert (out[0] & stack[0]).sum() == 1 and (out[0] & stack[1]).sum() == 1


def test_metatensor_keeps_meta():
    lab = MetaTensor(torch.as_tensor(label_map(2)), meta={"pixdim": [1.0, 0.5, 0.5], "filename_or_obj": "x.tif"})
    out = GenerateCenterImage()(lab)
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "x.tif"
    assert out.dtype == torch.bool and out.sum() == 3


def test_dictionary_transform():
    lab = label_map(3)
    data = {"label": torch.as_tensor(lab), "image": torch.zeros(1, 8, 12, 14)}
    for cls in (GenerateCenterImaged, GenerateCenterImageD, GenerateCenterImageDict):
        out = cls(keys="label", center_key="center", spacing=(2.0, 0.4, 0.5))(data)
        assert set(out) == {"label", "image", "center"}
        assert out["label"] is data["label"]
        expected = GenerateCenterImage(spacing=(2.0, 0.4, 0.5))(lab)
        assert np.array_equal(out["center"].numpy(), expected)
    assert "center" not in data
    two = GenerateCenterImaged(keys=["a", "b"], center_key=["ca", "cb"])({"a": lab, "b": lab})
    assert np.array_equal(two["ca"], two["cb"])
    missing = GenerateCenterImaged(keys=["label", "other"], center_key=["c", "d"], allow_missing_keys=True)(data)
    assert "c" in missing and "d" not in missing
    with pytest.raises(KeyError):
        GenerateCenterImaged(keys="other")(data)
    with pytest.raises(ValueError, match="center_key"):
        GenerateCenterImaged(keys=["a", "b"], center_key="center")


@pytest.mark.parametrize(
    "bad, err, match",
    [
        (np.zeros((10, 10), dtype=int), ValueError, "3 or 4 dims"),
        (np.zeros((1, 1, 2, 3, 4), dtype=int), ValueError, "3 or 4 dims"),
        (np.full((1, 4, 4), 1.5), ValueError, "integer-valued"),
        (np.full((1, 4, 4), np.nan), ValueError, "NaN"),
        (-np.ones((1, 4, 4), dtype=int), ValueError, "non-negative"),
        (np.full((3, 4, 4), 2, dtype=np.uint8), ValueError, "binary"),
        (np.zeros((1, 4, 4), dtype=complex), TypeError, "dtype"),
        ([[[0, 1]]], TypeError, "numpy array or torch tensor"),
    ],
)
def test_validation_errors(bad, err, match):
    with pytest.raises(err, match=match):
        GenerateCenterImage()(bad)


def test_constructor_errors():
    with pytest.raises(ValueError, match="mode must be"):
        GenerateCenterImage(mode="middle")
    with pytest.raises(ValueError, match="max_points"):
        GenerateCenterImage(max_points=0)
    with pytest.raises(ValueError, match="spacing"):
        GenerateCenterImage(spacing=(1.0, 1.0, 1.0))(label_map(2))


def test_empty_label_gives_empty_center_image():
    out = GenerateCenterImage()(torch.zeros(1, 5, 6, dtype=torch.int32))
    assert out.shape == (1, 5, 6) and out.dtype == torch.bool and not out.any()
