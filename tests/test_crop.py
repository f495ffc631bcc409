import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, RandFlipd, RandRotate90d, ScaleIntensityRangePercentilesd

from monai_embedseg.transforms.crop import RandObjectCrop, RandObjectCropD, RandObjectCropd, RandObjectCropDict

KINDS = [np.asarray, torch.as_tensor]


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _scene(shape, seed=0):
    """Image (2, *shape) and a label map (1, *shape) with a few boxes, one touching the image corner."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((1, *shape), np.int32)
    lab[(0, *[slice(0, 3)] * len(shape))] = 4  # at the origin corner: its windows leave the image
    lab[(0, *[slice(s // 2 - 2, s // 2 + 1) for s in shape])] = 9
    lab[(0, *[slice(s - 5, s - 1) for s in shape])] = 11
    img = rng.random((2, *shape)).astype(np.float32) + 1.0  # > 0 so padding (0) is visible
    return img, lab


def _reference_crop(img, start, roi):
    """Brute force: zero-pad by a wide margin, then slice."""
    m = max(roi) + 1
    padded = np.pad(img, [(0, 0)] + [(m, m)] * (img.ndim - 1))
    return padded[(slice(None), *[slice(s + m, s + m + r) for s, r in zip(start, roi)])]


def _bbox(mask):
    idx = np.argwhere(mask)
    return idx.min(0), idx.max(0) + 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,roi", [((20, 24), (8, 9)), ((10, 12, 14), (5, 6, 7))])
def test_crops_have_crop_size_and_match_reference(kind, shape, roi):
    img, lab = _scene(shape)
    c = RandObjectCrop(roi, num_samples=12, jitter=0.5)
    c.set_random_state(0)
    out = c(kind(img), kind(lab))
    assert isinstance(out, list) and len(out) == 12
    for i, o in enumerate(out):
        assert type(o) is type(kind(img)) and tuple(o.shape) == (2, *roi)
        np.testing.assert_array_equal(_np(o), _reference_crop(img, c.starts[i], roi))
        # the chosen object's bounding-box center lies inside the window (jitter <= 0.5)
        lo, hi = _bbox(lab[0] == c.objects[i])
        center = (lo + hi - 1) / 2
        assert np.all(center >= np.array(c.starts[i]) - 0.5) and np.all(center <= np.array(c.starts[i]) + roi - 0.5)
    assert any(min(s) < 0 for s in c.starts)  # some windows left the image: padding was exercised
    assert set(c.objects) <= {4, 9, 11}
    per_object = {}
    for k, s in zip(c.objects, c.starts):
        per_object.setdefault(k, set()).add(s)
    assert max(len(v) for v in per_object.values()) > 1  # the jitter moves the window


@pytest.mark.parametrize("shape,roi", [((20, 24), (8, 9)), ((10, 12, 14), (6, 6, 7))])
def test_zero_jitter_centers_the_object(shape, roi):
    img, lab = _scene(shape)
    c = RandObjectCropd(["image", "label"], "label", roi, num_samples=20, jitter=0.0)
    c.set_random_state(1)
    out = c({"image": img, "label": lab})
    for i, d in enumerate(out):
        k = c.cropper.objects[i]
        lo, hi = _bbox(lab[0] == k)
        crop_center = np.array(c.cropper.starts[i]) + (np.array(roi) - 1) / 2
        assert np.all(np.abs(crop_center - (lo + hi - 1) / 2) <= 0.5)
        # every object is smaller than the roi, so the whole chosen object is in the crop
        assert (d["label"] == k).sum() == (lab == k).sum()
        np.testing.assert_array_equal(d["label"], _reference_crop(lab, c.cropper.starts[i], roi))
    assert {c.cropper.objects[i] for i in range(20)} == {4, 9, 11}


def test_border_padding_of_corner_object():
    img, lab = _scene((16, 16))
    lab[lab != 4] = 0  # only the corner object (0..2, 0..2)
    c = RandObjectCrop((9, 9), jitter=0.0, mode="constant")
    (o,) = c(torch.as_tensor(img), lab)
    # bbox center (1, 1) -> window starts at -3: three padded rows/cols of zeros
    assert c.starts == [(-3, -3)]
    assert (o[:, :3] == 0).all() and (o[:, :, :3] == 0).all() and (o[:, 3:, 3:] > 0).all()
    (r,) = RandObjectCrop((9, 9), jitter=0.0, mode="reflect")(img, lab)
    np.testing.assert_array_equal(r, np.pad(img, [(0, 0), (3, 0), (3, 0)], mode="reflect")[:, :9, :9])


def test_num_samples_and_dict_outputs():
    img, lab = _scene((20, 20))
    data = {"image": img, "label": lab, "meta": {"id": 3}, "name": "a"}
    out = RandObjectCropD(["image", "label"], "label", 8, num_samples=5)(data)
    assert len(out) == 5
    for d in out:
        assert d["image"].shape == (2, 8, 8) and d["label"].shape == (1, 8, 8) and d["label"].dtype == np.int32
        assert d["meta"] == {"id": 3} and d["meta"] is not data["meta"] and d["name"] == "a"
    assert RandObjectCropDict is RandObjectCropd


def test_determinism_with_set_random_state():
    img, lab = _scene((10, 12, 14))

    def run(seed):
        c = RandObjectCropd(["image", "label"], "label", (4, 5, 6), num_samples=6).set_random_state(seed)
        out = c({"image": torch.as_tensor(img), "label": torch.as_tensor(lab)})
        return c.cropper.starts, torch.stack([d["image"] for d in out])

    s1, a = run(7)
    s2, b = run(7)
    s3, _ = run(8)
    assert s1 == s2 and torch.equal(a, b) and s1 != s3


def test_size_weighting_prefers_big_objects():
    lab = np.zeros((1, 40, 40), np.int32)
    lab[0, 5:25, 5:25] = 1  # 400 px
    lab[0, 35:37, 35:37] = 2  # 4 px
    n = 400
    uni = RandObjectCrop(8, num_samples=n, weighting="uniform").set_random_state(0)
    uni.randomize(lab)
    big = RandObjectCrop(8, num_samples=n, weighting="size").set_random_state(0)
    big.randomize(lab)
    frac_uni = np.mean(np.array(uni.objects) == 1)  # expected 0.5 (sd 0.025)
    frac_big = np.mean(np.array(big.objects) == 1)  # expected 400/404 = 0.99
    assert 0.4 < frac_uni < 0.6 and frac_big > 0.95


@pytest.mark.parametrize("kind", KINDS)
def test_empty_label_falls_back_to_uniform_random_crop(kind):
    img = np.random.default_rng(0).random((1, 12, 30)).astype(np.float32)
    lab = np.zeros((1, 12, 30), np.int32)
    c = RandObjectCrop((8, 10), num_samples=200).set_random_state(0)
    out = c(kind(img), kind(lab))
    starts = np.array(c.starts)
    assert c.objects == [-1] * 200
    assert starts.min(0).tolist() == [0, 0] and starts.max(0).tolist() == [4, 20]  # all positions, all inside
    assert len({tuple(s) for s in starts}) > 50
    for o, s in zip(out[:5], c.starts):
        np.testing.assert_array_equal(_np(o), img[:, s[0] : s[0] + 8, s[1] : s[1] + 10])
    # a window larger than the image is centered and padded
    (o,) = RandObjectCrop((16, 10))(img, lab)
    assert o.shape == (1, 16, 10) and (o[:, :2] == 0).all() and (o[:, -2:] == 0).all() and (o[:, 2:14] > 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_one_hot_labels(kind):
    oh = np.zeros((4, 20, 20), np.uint8)
    oh[0, 2:6, 2:6] = 1
    oh[2, 4:9, 4:12] = 1  # overlaps channel 0; channels 1 and 3 are empty padding
    img = np.ones((1, 20, 20), np.float32)
    c = RandObjectCropd(["image", "label"], "label", (6, 9), num_samples=30, jitter=0.0).set_random_state(0)
    out = c({"image": kind(img), "label": kind(oh)})
    assert set(c.cropper.objects) == {0, 2}
    for i, d in enumerate(out):
        k = c.cropper.objects[i]
        assert d["label"].shape == (4, 6, 9)
        lo, hi = _bbox(oh[k] > 0)
        crop_center = np.array(c.cropper.starts[i]) + (np.array([6, 9]) - 1) / 2
        assert np.all(np.abs(crop_center - (lo + hi - 1) / 2) <= 0.5)
        assert _np(d["label"])[k].sum() == oh[k].sum()
    # size weighting on one-hot uses channel sums (16 px vs 40 px)
    w = RandObjectCrop(6, num_samples=600, weighting="size").set_random_state(0)
    w.randomize(kind(oh))
    assert abs(np.mean(np.array(w.objects) == 2) - 40 / 56) < 0.08  # sd of the estimate ~0.02


def test_whole_axis_roi_and_meta():
    img, lab = _scene((12, 16))
    c = RandObjectCrop((-1, 6), num_samples=2)
    out = c(img, lab)
    assert all(o.shape == (2, 12, 6) for o in out)
    assert RandObjectCrop(None)(img, lab)[0].shape == (2, 12, 16)
    mt = MetaTensor(torch.as_tensor(img), meta={"filename_or_obj": "/x/im.tif"})
    out = RandObjectCrop((7, 7), num_samples=2, jitter=0.0)(mt, lab)
    assert all(isinstance(o, MetaTensor) and o.meta["filename_or_obj"] == "/x/im.tif" for o in out)
    assert [o.meta["patch_index"] for o in out] == [0, 1] and len(out[0].applied_operations) >= 1


def test_bad_inputs():
    img, lab = _scene((12, 16))
    with pytest.raises(ValueError, match="label spatial shape"):
        RandObjectCrop(5)(img[:, :10], lab)
    with pytest.raises(ValueError, match="non-negative"):
        RandObjectCrop(5)(img, -lab)
    with pytest.raises(ValueError, match="jitter"):
        RandObjectCrop(5, jitter=0.7)
    with pytest.raises(ValueError, match="weighting"):
        RandObjectCrop(5, weighting="area")
    with pytest.raises(ValueError, match="num_samples"):
        RandObjectCrop(5, num_samples=0)
    with pytest.raises(KeyError, match="lbl"):
        RandObjectCropd("image", "lbl", 5)({"image": img})


def test_pipeline_with_monai_transforms():
    center = pytest.importorskip("monai_embedseg.transforms.center")
    rng = np.random.default_rng(0)
    img, lab = _scene((32, 32))
    img = img[:1] * 1000.0 + rng.normal(0, 5, (1, 32, 32)).astype(np.float32)
    pipeline = Compose(
        [
            ScaleIntensityRangePercentilesd("image", 1, 99.8, 0, 1),
            RandObjectCropd(["image", "label"], "label", (16, 16), num_samples=4),
            center.GenerateCenterImaged("label", center_key="center"),
            RandFlipd(["image", "label", "center"], prob=0.5, spatial_axis=0),
            RandRotate90d(["image", "label", "center"], prob=0.5),
        ]
    )
    pipeline.set_random_state(0)
    out = pipeline({"image": img, "label": lab})
    assert isinstance(out, list) and len(out) == 4
    for d in out:
        assert d["image"].shape == (1, 16, 16) and d["label"].shape == (1, 16, 16) and d["center"].shape == (1, 16, 16)
        ids = set(np.unique(_np(d["label"])).tolist()) - {0}
        assert ids and ids <= {4, 9, 11}
        assert int(_np(d["center"]).sum()) == len(ids)  # one center per visible object, computed on the crop
        assert (_np(d["label"])[_np(d["center"]).astype(bool)] > 0).all()
        assert float(d["image"].max()) <= 1.1 and float(d["image"].min()) >= -0.1
