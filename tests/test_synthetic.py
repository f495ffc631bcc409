"""Tests for monai_embedseg.data.synthetic."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from scipy import ndimage

from monai_embedseg.data import (
    TiffReader,
    read_tiff,
    release_datalist,
    synthetic_cells_3d,
    synthetic_nuclei_2d,
    synthetic_worms_2d,
    write_synthetic_dataset,
)
from monai_embedseg.data.io import read_tiff_spacing


def _touching_ids(lab: np.ndarray) -> set[int]:
    """Ids of objects that share a face with another object."""
    out: set[int] = set()
    for ax in range(lab.ndim):
        a, b = np.moveaxis(lab, ax, 0)[1:], np.moveaxis(lab, ax, 0)[:-1]
        m = (a > 0) & (b > 0) & (a != b)
        out |= set(a[m].tolist()) | set(b[m].tolist())
    return out


def _check_label_map(lab: np.ndarray) -> None:
    assert lab.dtype == np.uint16
    ids = np.unique(lab)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, lab.max() + 1))  # sequential 1..N
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):  # every object is one connected piece
        assert ndimage.label(lab[sl] == k)[1] == 1


def test_nuclei_2d():
    image, lab = synthetic_nuclei_2d(seed=0)
    assert image.shape == lab.shape == (256, 256) and image.dtype == np.float32
    _check_label_map(lab)
    assert 15 <= lab.max() <= 40
    assert len(_touching_ids(lab)) >= 5  # touching nuclei
    assert image[lab > 0].mean() > 3 * image[lab == 0].mean()  # objects are visible
    assert np.isfinite(image).all() and image.min() >= 0
    # varied orientations: principal-axis angles spread over more than 90 degrees
    from skimage.measure import regionprops

    angles = np.array([r.orientation for r in regionprops(lab) if r.area > 60])
    assert np.ptp(angles) > np.pi / 2
    # deterministic
    i2, l2 = synthetic_nuclei_2d(seed=0)
    assert np.array_equal(i2, image) and np.array_equal(l2, lab)
    i3, l3 = synthetic_nuclei_2d(seed=1)
    assert not np.array_equal(l3, lab)
    # explicit counts and shapes
    _, l4 = synthetic_nuclei_2d((64, 48), n_objects=3, radius=5, seed=3)
    assert l4.shape == (64, 48) and 1 <= l4.max() <= 3


def test_nuclei_fast_enough():
    t = time.perf_counter()
    for s in range(20):
        synthetic_nuclei_2d(seed=s)
    assert time.perf_counter() - t < 8.0  # ~0.7 s on a 2-core CPU


def test_worms_2d_overlap_and_shape():
    image, one_hot, lab = synthetic_worms_2d(seed=0)
    n = one_hot.shape[0]
    assert 6 <= n <= 12 and one_hot.shape[1:] == (256, 256) and one_hot.dtype == np.uint8
    assert image.shape == (256, 256) and image.dtype == np.float32 and lab.dtype == np.uint16
    assert set(np.unique(one_hot).tolist()) == {0, 1} and np.all(one_hot.reshape(n, -1).sum(1) > 50)
    assert (one_hot.sum(0) > 1).sum() > 20  # overlapping objects
    # flattened label: the highest id covering a pixel
    expected = np.max(one_hot * np.arange(1, n + 1)[:, None, None], axis=0)
    assert np.array_equal(lab, expected)
    # long and curved: not star-convex, so well below a convex shape's solidity
    from skimage.measure import regionprops

    solidity = [regionprops(one_hot[k].astype(np.uint8))[0].solidity for k in range(n)]
    assert min(solidity) < 0.5 and np.median(solidity) < 0.7
    elong = [
        r.axis_major_length / max(r.axis_minor_length, 1)
        for r in (regionprops(one_hot[k].astype(np.uint8))[0] for k in range(n))
    ]
    assert max(elong) > 3
    # overlaps are brighter (intensities add up)
    assert image[one_hot.sum(0) > 1].mean() > image[one_hot.sum(0) == 1].mean()
    i2, o2, l2 = synthetic_worms_2d(seed=0)
    assert np.array_equal(image, i2) and np.array_equal(one_hot, o2)


def test_cells_3d_anisotropy():
    image, lab = synthetic_cells_3d(shape=(16, 64, 64), z_anisotropy=3, n_objects=(6, 10), radius=(6, 10), seed=0)
    assert image.shape == lab.shape == (16, 64, 64) and image.dtype == np.float32
    _check_label_map(lab)
    assert lab.max() >= 4
    ext = np.array([[s.stop - s.start for s in sl] for sl in ndimage.find_objects(lab)], float)
    big = ext[:, 1] >= 8
    # objects are roughly isotropic in physical space, so they span ~3x fewer slices than pixels in y / x
    ratio = ext[big, 0] * 3 / ((ext[big, 1] + ext[big, 2]) / 2)
    assert 0.5 < np.median(ratio) < 1.6
    assert np.median(ext[big, 0]) < np.median(ext[big, 1]) / 1.8
    assert image[lab > 0].mean() > 2 * image[lab == 0].mean()
    _, iso = synthetic_cells_3d(shape=(48, 64, 64), z_anisotropy=1, n_objects=(6, 10), radius=(6, 10), seed=0)
    e_iso = np.array([[s.stop - s.start for s in sl] for sl in ndimage.find_objects(iso)], float)
    assert 0.6 < np.median(e_iso[:, 0] / e_iso[:, 1]) < 1.6
    i2, l2 = synthetic_cells_3d(shape=(16, 64, 64), z_anisotropy=3, n_objects=(6, 10), radius=(6, 10), seed=0)
    assert np.array_equal(l2, lab) and np.array_equal(i2, image)


def test_generator_errors():
    with pytest.raises(ValueError, match="shape"):
        synthetic_nuclei_2d((64,))
    with pytest.raises(ValueError, match="n_objects"):
        synthetic_nuclei_2d((64, 64), n_objects=(5, 2))
    with pytest.raises(ValueError, match="z_anisotropy"):
        synthetic_cells_3d((8, 32, 32), z_anisotropy=1.5)
    with pytest.raises(ValueError, match="radius"):
        synthetic_cells_3d((8, 32, 32), radius=-1)


def test_write_dataset_nuclei(tmp_path):
    root = tmp_path / "nuc"
    kw = dict(kind="nuclei_2d", n_train=3, n_test=2, seed=5, shape=(64, 64), n_objects=(3, 6), radius=(4, 8))
    assert write_synthetic_dataset(root, **kw) == str(root)
    train = release_datalist(root, "train")
    test = release_datalist(root, "test")
    assert [d["name"] for d in train] == ["nuclei_2d_000", "nuclei_2d_001", "nuclei_2d_002"] and len(test) == 2
    img, lab = read_tiff(train[1]["image"]), read_tiff(train[1]["label"])
    ref_img, ref_lab = synthetic_nuclei_2d((64, 64), n_objects=(3, 6), radius=(4, 8), seed=[5, 0, 1])
    assert np.array_equal(img, ref_img) and np.array_equal(lab, ref_lab) and lab.dtype == np.uint16
    assert not np.array_equal(read_tiff(test[1]["label"]), lab)  # test split uses its own seeds
    # complete dataset: left alone
    mtimes = {p: os.stat(p).st_mtime_ns for d in train for p in (d["image"], d["label"])}
    write_synthetic_dataset(root, **kw)
    assert mtimes == {p: os.stat(p).st_mtime_ns for p in mtimes}
    # other parameters: refused
    with pytest.raises(ValueError, match="other parameters"):
        write_synthetic_dataset(root, **{**kw, "seed": 6})
    # partial: refused
    os.remove(train[0]["label"])
    with pytest.raises(ValueError, match="incomplete"):
        write_synthetic_dataset(root, **kw)
    os.remove(root / "synthetic.json")
    with pytest.raises(ValueError, match="partial dataset"):
        write_synthetic_dataset(root, **kw)
    with pytest.raises(ValueError, match="kind"):
        write_synthetic_dataset(tmp_path / "x", kind="blobs")


def test_write_dataset_worms_and_cells(tmp_path):
    root = write_synthetic_dataset(tmp_path / "w", kind="worms_2d", n_train=2, n_test=0, shape=(96, 96), n_worms=(3, 4))
    dl = release_datalist(root)
    assert len(dl) == 2 and all("label_onehot" in d for d in dl)
    assert not os.path.exists(os.path.join(root, "test"))
    arr, meta = TiffReader().get_data(TiffReader().read(dl[0]["label_onehot"]))
    assert meta["original_channel_dim"] == 0 and arr.shape[1:] == (96, 96) and 3 <= arr.shape[0] <= 4
    lab = read_tiff(dl[0]["label"])
    assert np.array_equal(lab, np.max(arr * np.arange(1, arr.shape[0] + 1)[:, None, None], axis=0))
    root3 = write_synthetic_dataset(
        tmp_path / "c",
        kind="cells_3d",
        n_train=1,
        n_test=1,
        shape=(8, 32, 32),
        z_anisotropy=2,
        n_objects=(2, 4),
        radius=(4, 6),
    )
    d3 = release_datalist(root3, "test")[0]
    assert read_tiff(d3["image"]).shape == (8, 32, 32)
    assert read_tiff_spacing(d3["label"]) == (2.0, 1.0, 1.0)
