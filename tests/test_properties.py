"""Tests for monai_embedseg.data.properties."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from monai_embedseg.cli.properties_command import main
from monai_embedseg.data import compute_dataset_properties, load_properties, save_properties, write_tiff
from monai_embedseg.data.properties import compute_release_properties


def _brute_force(labels, one_hot=False):
    """Reference: per object, np.nonzero -> size and bbox extent."""
    sizes, extents, fg, total = [], [], 0, 0
    for lab in labels:
        masks = [lab[k] != 0 for k in range(lab.shape[0])] if one_hot else [lab == i for i in np.unique(lab) if i]
        for m in masks:
            idx = np.nonzero(m)
            if len(idx[0]) == 0:
                continue
            sizes.append(len(idx[0]))
            extents.append([int(ix.max() - ix.min() + 1) for ix in idx])
        union = np.any(lab != 0, axis=0) if one_hot else lab != 0
        fg += int(union.sum())
        total += union.size
    ext = np.asarray(extents, float)
    return np.asarray(sizes), ext, (total - fg) / fg


def test_hand_made_2d():
    lab = np.zeros((50, 60), np.int32)
    lab[0:10, 0:20] = 3  # extent (10, 20), 200 px
    lab[15:45, 30:34] = 9  # extent (30, 4), 120 px
    p = compute_dataset_properties([lab])
    assert p["n_images"] == 1 and p["n_objects"] == 2 and p["spatial_dims"] == 2
    assert p["min_object_size"] == 120 and p["max_object_size"] == 200 and p["mean_object_size"] == 160
    assert p["small_object_size"] == 124  # 5th percentile of (120, 200)
    assert p["object_extent_mean"] == [20.0, 12.0] and p["object_extent_std"] == [10.0, 8.0]
    assert p["crop_size"] == [72, 56]  # ceil((20 + 50) / 8) * 8, ceil((12 + 40) / 8) * 8
    assert p["foreground_weight"] == pytest.approx((3000 - 320) / 320)
    assert p["spacing"] == [1.0, 1.0] and p["one_hot"] is False
    assert p["image_shape_min"] == [50, 60] and p["max_objects_per_image"] == 2
    json.dumps(p)  # JSON-ready
    # a leading channel of 1 and torch input give the same result
    assert compute_dataset_properties([torch.from_numpy(lab[None])]) == p
    assert compute_dataset_properties(lab) == p


def test_against_brute_force_2d_3d():
    rng = np.random.default_rng(0)
    from monai_embedseg.data import synthetic_nuclei_2d

    labs = [synthetic_nuclei_2d((96, 80), n_objects=(8, 12), radius=(4, 9), seed=s)[1] for s in range(3)]
    sizes, ext, fw = _brute_force(labs)
    p = compute_dataset_properties(labs, spacing=(0.5, 0.5))
    assert p["n_objects"] == len(sizes) and p["min_object_size"] == sizes.min()
    assert np.allclose(p["object_extent_mean"], ext.mean(0)) and np.allclose(p["object_extent_std"], ext.std(0))
    crop = [int(math.ceil((m + 5 * s) / 8) * 8) for m, s in zip(ext.mean(0), ext.std(0))]
    assert p["crop_size"] == crop and p["foreground_weight"] == pytest.approx(fw)
    assert p["spacing"] == [0.5, 0.5] and p["image_shape_max"] == [96, 80]
    vol = rng.integers(0, 6, size=(7, 9, 11)).astype(np.uint16)  # fragmented ids: bbox spans all pieces
    sizes, ext, fw = _brute_force([vol])
    p = compute_dataset_properties([vol])
    assert p["spatial_dims"] == 3 and p["n_objects"] == 5
    assert np.allclose(p["object_extent_mean"], ext.mean(0)) and p["foreground_weight"] == pytest.approx(fw)


def test_one_hot_overlapping():
    st = np.zeros((4, 20, 30), np.uint8)
    st[0, 2:8, 3:20] = 1
    st[1, 5:18, 10:14] = 1  # overlaps object 0
    st[2, 0:1, 0:1] = 1
    # channel 3 empty = padding
    p = compute_dataset_properties([st], one_hot=True)
    sizes, ext, fw = _brute_force([st], one_hot=True)
    assert p["n_objects"] == 3 and p["max_objects_per_image"] == 3 and p["min_object_size"] == 1
    assert np.allclose(p["object_extent_mean"], ext.mean(0)) and np.allclose(p["object_extent_std"], ext.std(0))
    assert p["foreground_weight"] == pytest.approx(fw) and p["one_hot"] is True
    assert p["spatial_dims"] == 2
    with pytest.raises(ValueError, match="binary"):
        compute_dataset_properties([st * 2], one_hot=True)


def test_files_and_spacing(tmp_path):
    vol = np.zeros((6, 20, 20), np.uint16)
    vol[1:3, 2:10, 4:8] = 1
    write_tiff(tmp_path / "a.tif", vol, spacing=(3.0, 1.0, 1.0))
    write_tiff(tmp_path / "b.tif", vol)
    p = compute_dataset_properties([tmp_path / "a.tif", str(tmp_path / "b.tif")])
    assert p["spacing"] == [3.0, 1.0, 1.0] and p["n_objects"] == 2 and p["object_extent_mean"] == [2.0, 8.0, 4.0]
    assert compute_dataset_properties([tmp_path / "b.tif"], spacing=2.0)["spacing"] == [2.0, 2.0, 2.0]
    assert compute_dataset_properties([tmp_path / "b.tif"])["spacing"] == [1.0, 1.0, 1.0]


def test_validation_errors(tmp_path):
    good = np.zeros((8, 8), np.int32)
    good[2:4, 2:4] = 1
    # one rule everywhere (monai_embedseg.labels): integer-valued floats are labels, fractional ones are not
    assert compute_dataset_properties([good, good.astype(np.float32)])["n_objects"] == 2
    with pytest.raises(ValueError, match="integer-valued.*label array #1"):
        compute_dataset_properties([good, good.astype(np.float32) * 0.5])
    write_tiff(tmp_path / "float.tif", good.astype(np.float32) + 0.25)
    with pytest.raises(ValueError, match="float.tif"):
        compute_dataset_properties([tmp_path / "float.tif"])
    with pytest.raises(ValueError, match="non-negative"):
        compute_dataset_properties([good - 1])
    with pytest.raises(ValueError, match="2 or 3 spatial dims"):
        compute_dataset_properties([np.zeros(5, np.int32)])
    with pytest.raises(ValueError, match="3D labels mixed with 2D"):
        compute_dataset_properties([good, np.stack([good, good])])
    with pytest.raises(ValueError, match="no objects"):
        compute_dataset_properties([np.zeros((4, 4), np.uint8)])
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        compute_dataset_properties([tmp_path / "nope.tif"])
    with pytest.raises(ValueError, match="unsupported"):
        compute_dataset_properties([tmp_path / "x.png"])
    with pytest.raises(ValueError, match="no label images"):
        compute_dataset_properties([])


def test_save_load(tmp_path):
    props = {"crop_size": [64, 64], "foreground_weight": 3.5}
    path = tmp_path / "sub" / "props.json"
    save_properties(props, path)
    assert load_properties(path) == props
    with pytest.raises(FileExistsError, match="props.json"):
        save_properties({"x": 1}, path)
    assert load_properties(path) == props
    save_properties({"x": 1}, path, overwrite=True)
    assert load_properties(path) == {"x": 1}
    with pytest.raises(TypeError):
        save_properties({"x": object()}, tmp_path / "bad.json")
    assert sorted(os.listdir(tmp_path / "sub")) == ["props.json"] and not (tmp_path / "bad.json").exists()
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_properties(tmp_path / "missing.json")
    (tmp_path / "corrupt.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt.json"):
        load_properties(tmp_path / "corrupt.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json"):
        load_properties(tmp_path / "list.json")


def _tiny_release(root):
    lab = np.zeros((16, 16), np.uint16)
    lab[2:6, 3:11] = 1
    for split, n in (("train", 2), ("test", 1)):
        for i in range(n):
            write_tiff(root / split / "images" / f"{i}.tif", lab.astype(np.float32))
            write_tiff(root / split / "masks" / f"{i}.tif", (lab * (i + 1)).astype(np.uint16))
    return lab


def test_release_and_cli(tmp_path, capsys):
    _tiny_release(tmp_path / "ds")
    p = compute_release_properties(tmp_path / "ds")
    assert p["n_images"] == 2 and p["splits"] == ["train"] and p["object_extent_mean"] == [4.0, 8.0]
    assert compute_release_properties(tmp_path / "ds", ["train", "test"])["n_images"] == 3
    out = tmp_path / "props.json"
    assert main([str(tmp_path / "ds"), "--splits", "train", "test", "--spacing", "2", "1", "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == load_properties(out) and printed["n_images"] == 3 and printed["spacing"] == [2.0, 1.0]
    assert main([str(tmp_path / "ds"), "--output", str(out)]) == 2  # refuses to overwrite
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main([str(tmp_path / "ds"), "--splits", "val"]) == 2
    assert "split 'val' not found" in capsys.readouterr().err


def test_monai_embedseg_properties_command(tmp_path, capsys):
    """``monai-embedseg properties DIR`` prints the JSON."""
    from monai_embedseg.cli import main as cli_main

    _tiny_release(tmp_path / "ds")
    assert cli_main(["properties", str(tmp_path / "ds")]) == 0
    assert json.loads(capsys.readouterr().out)["crop_size"] == [8, 8]
