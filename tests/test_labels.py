import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import FillHoles

from monai_embedseg.labels import instance_bboxes, one_hot_to_label_map
from monai_embedseg.transforms.labels import (
    FillHolesPerObject,
    FillHolesPerObjectd,
    LabelToOneHot,
    LabelToOneHotd,
    OneHotToLabel,
    OneHotToLabelD,
    RelabelConsecutive,
    RelabelConsecutiveDict,
    RemoveSmallInstances,
    RemoveSmallInstancesd,
    ValidateInstanceLabels,
    ValidateInstanceLabelsd,
)

KINDS = [np.asarray, torch.as_tensor]
SHAPES = [(9, 11), (5, 6, 7)]


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _random_label(shape, rng, ids=(0, 3, 7, 12, 40), dtype=np.int32):
    return rng.choice(np.array(ids), size=(1, *shape)).astype(dtype)


def _mt(x, name="/data/img_007.tif"):
    return MetaTensor(torch.as_tensor(x), meta={"filename_or_obj": name})


# ---------------------------------------------------------------------------------------------- relabel / one-hot
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_relabel_consecutive_label_map_matches_reference(kind, shape):
    rng = np.random.default_rng(0)
    lab = _random_label(shape, rng)
    out = RelabelConsecutive()(kind(lab))
    assert type(out) is type(kind(lab)) and out.dtype == kind(lab).dtype
    ids = np.unique(lab[lab > 0])
    ref = np.where(lab > 0, np.searchsorted(ids, lab) + 1, 0)
    np.testing.assert_array_equal(_np(out), ref)


def test_relabel_without_background_starts_at_one_and_keeps_uint16():
    lab = np.array([[[5, 5, 9], [9, 2, 2]]], dtype=np.uint16)
    out = RelabelConsecutive()(lab)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [[[2, 2, 3], [3, 1, 1]]])


@pytest.mark.parametrize("kind", KINDS)
def test_relabel_one_hot_drops_empty_channels_and_keeps_meta(kind):
    oh = np.zeros((4, 5, 5), np.uint8)
    oh[1, :2] = 1
    oh[3, 3:] = 1
    out = RelabelConsecutive()(kind(oh))
    np.testing.assert_array_equal(_np(out), oh[[1, 3]])
    mt = RelabelConsecutive()(_mt(oh))
    assert isinstance(mt, MetaTensor) and mt.meta["filename_or_obj"] == "/data/img_007.tif" and mt.shape[0] == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_label_to_one_hot_and_back_round_trip(kind, shape):
    rng = np.random.default_rng(1)
    lab = _random_label(shape, rng)
    oh = LabelToOneHot()(kind(lab))
    ids = np.unique(lab[lab > 0])
    assert type(oh) is type(kind(lab)) and oh.shape == (len(ids), *shape)
    assert _np(oh).dtype == np.uint8
    for k, i in enumerate(ids):
        np.testing.assert_array_equal(_np(oh)[k], lab[0] == i)
    back = OneHotToLabel()(oh)
    assert back.shape == (1, *shape) and _np(back).dtype == np.int32
    np.testing.assert_array_equal(_np(back), _np(RelabelConsecutive()(lab)))


def test_label_to_one_hot_num_channels_pads_and_rejects_too_few():
    lab = np.array([[[0, 4], [4, 8]]])
    oh = LabelToOneHot(num_channels=5)(lab)
    assert oh.shape == (5, 2, 2) and oh[2:].sum() == 0 and oh[0].sum() == 2 and oh[1].sum() == 1
    with pytest.raises(ValueError, match="more than num_channels"):
        LabelToOneHot(num_channels=1)(lab)
    with pytest.raises(ValueError, match="one channel"):
        LabelToOneHot()(np.zeros((2, 3, 3), np.int32))
    assert LabelToOneHot()(np.zeros((1, 3, 3), np.int32)).shape == (0, 3, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_one_hot_to_label_later_channel_wins(kind):
    rng = np.random.default_rng(2)
    oh = (rng.random((5, 6, 4, 5)) < 0.3).astype(np.uint8)  # heavy overlaps, 3D
    ref = np.zeros((1, 6, 4, 5), np.int64)
    for c in range(5):  # brute force: paint channels in order
        ref[0][oh[c] > 0] = c + 1
    out = OneHotToLabel()(kind(oh))
    np.testing.assert_array_equal(_np(out), ref)
    assert OneHotToLabelD("x")({"x": np.zeros((0, 3, 3), np.uint8)})["x"].shape == (1, 3, 3)


# ---------------------------------------------------------------------------------------------- fill holes
def _blobs_with_holes(shape, cell, rng, p_hole=0.25):
    """Separated objects (one per grid cell, no nesting) with random interior holes."""
    lab = np.zeros((1, *shape), np.int32)
    grid = [range(0, s - cell + 1, cell) for s in shape]
    idx = 1
    for corner in np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, len(shape)):
        sl = tuple(slice(c + 1, c + cell - 1) for c in corner)
        block = np.ones([cell - 2] * len(shape), bool)
        block &= rng.random(block.shape) > p_hole  # random holes, some touching the object's outside
        lab[(0, *sl)][block] = idx * 3  # non-consecutive ids
        idx += 1
    return lab


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,cell,p_hole", [((24, 30), 6, 0.25), ((16, 16, 16), 8, 0.1)])
def test_fill_holes_matches_monai_without_nesting(kind, shape, cell, p_hole):
    rng = np.random.default_rng(3)
    lab = _blobs_with_holes(shape, cell, rng, p_hole)
    ref = _np(FillHoles()(lab.copy()))
    assert (ref != lab).any()  # the case does have holes
    out = FillHolesPerObject()(kind(lab))
    assert type(out) is type(kind(lab)) and out.dtype == kind(lab).dtype
    np.testing.assert_array_equal(_np(out), ref)
    for conn in (1, len(shape)):
        ours = _np(FillHolesPerObject(connectivity=conn)(lab))
        np.testing.assert_array_equal(ours, FillHoles(connectivity=conn)(lab.copy()))


def _ring(a, lo, hi, v):
    a[lo:hi, lo:hi] = v
    a[lo + 1 : hi - 1, lo + 1 : hi - 1] = 0


def test_fill_holes_keeps_nested_objects_and_inner_object_wins():
    lab = np.zeros((1, 13, 13), np.int32)
    _ring(lab[0], 1, 12, 1)  # outer ring, interior 2..10
    _ring(lab[0], 4, 9, 2)  # inner ring, interior 5..7, inside the outer ring's hole
    out = FillHolesPerObject()(lab)
    assert (out[0, 5:8, 5:8] == 2).all()  # innermost enclosing object gets its hole
    assert (out[0, 4:9, 4:9] == 2).all()  # inner object kept
    outer_hole = np.zeros((13, 13), bool)
    outer_hole[2:11, 2:11] = True
    outer_hole[4:9, 4:9] = False
    assert (out[0][outer_hole] == 1).all() and (out[0] == 0).sum() == 13 * 13 - 11 * 11
    assert (_np(FillHoles()(lab.copy()))[0] == 2).sum() == 0  # MONAI erases the nested object


def test_fill_holes_one_hot_channel_zero_and_open_holes():
    oh = np.zeros((2, 9, 9), np.uint8)
    _ring(oh[0], 1, 6, 1)  # closed ring in channel 0, hole 2..4
    oh[1, 5:9, 5:9] = 1
    oh[1, 7:9, 7] = 0  # notch open to the image border: not a hole
    out = FillHolesPerObject()(torch.as_tensor(oh))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    exp = oh.copy()
    exp[0, 2:5, 2:5] = 1
    np.testing.assert_array_equal(out.numpy(), exp)
    assert _np(FillHoles()(oh.copy()))[0, 3, 3] == 0  # MONAI treats channel 0 as background
    d = FillHolesPerObjectd("l")({"l": _mt(oh)})
    assert d["l"].meta["filename_or_obj"] == "/data/img_007.tif" and int(d["l"][0, 3, 3]) == 1


def test_fill_holes_diagonal_leak_depends_on_connectivity():
    lab = np.zeros((1, 7, 7), np.int32)
    _ring(lab[0], 1, 6, 5)  # hole 2..4
    lab[0, 1, 1] = 0  # corner removed: the hole touches the outside diagonally through (1, 1)
    full = FillHolesPerObject()(lab)  # 8-connected background leaks: nothing to fill
    four = FillHolesPerObject(connectivity=1)(lab)  # 4-connected background: enclosed
    np.testing.assert_array_equal(full, lab)
    assert (four[0, 2:5, 2:5] == 5).all() and (four != lab).sum() == 9
    np.testing.assert_array_equal(full, FillHoles()(lab.copy()))
    np.testing.assert_array_equal(four, FillHoles(connectivity=1)(lab.copy()))


# ---------------------------------------------------------------------------------------------- remove small objects
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_remove_small_objects_per_id_reference(kind, shape):
    rng = np.random.default_rng(4)
    lab = rng.choice(np.arange(0, 60), size=(1, *shape)).astype(np.int32)
    counts = np.bincount(lab.ravel())
    min_size = int(np.median(counts[1:][counts[1:] > 0]))
    ref = np.where(counts[lab] >= min_size, lab, 0)
    out = RemoveSmallInstances(min_size=min_size)(kind(lab))
    assert type(out) is type(kind(lab))
    np.testing.assert_array_equal(_np(out), ref)
    relabelled = RemoveSmallInstances(min_size, relabel=True)(kind(lab))
    np.testing.assert_array_equal(_np(relabelled), _np(RelabelConsecutive()(ref)))


def test_remove_small_objects_measures_whole_id_and_physical_units():
    lab = np.zeros((1, 8, 8), np.int32)
    lab[0, :3, :3] = 4  # 9 px
    lab[0, 7, 7] = 4  # stray pixel of the same id: the object has 10 px
    lab[0, 5, 0:2] = 2  # 2 px
    out = RemoveSmallInstances(min_size=3)(lab)
    np.testing.assert_array_equal(out, np.where(lab == 2, 0, lab))
    # spacing (2, 1.5): 1 px = 3 area units; id 2 -> 6, id 4 -> 30
    np.testing.assert_array_equal(RemoveSmallInstances(min_size=6, spacing=(2.0, 1.5))(lab), lab)
    np.testing.assert_array_equal(RemoveSmallInstances(min_size=7, spacing=(2.0, 1.5))(lab), out)
    d = RemoveSmallInstancesd("l", min_size=3, relabel=True)({"l": torch.as_tensor(lab)})
    np.testing.assert_array_equal(d["l"].numpy(), (lab == 4).astype(np.int32))
    with pytest.raises(ValueError, match="spacing"):
        RemoveSmallInstances(min_size=3, spacing=(1.0, 1.0, 1.0))(lab)


def test_remove_small_objects_one_hot_channels_are_independent():
    oh = np.zeros((3, 6, 6), np.uint8)
    oh[0, :2, :2] = 1  # 4 px
    oh[1, 1, 1] = 1  # 1 px, overlapping channel 0 (MONAI/skimage would merge them along the channel axis)
    oh[2, 3:, 3:] = 1  # 9 px
    out = RemoveSmallInstances(min_size=2)(oh)
    np.testing.assert_array_equal(out, oh * np.array([1, 0, 1], np.uint8)[:, None, None])
    dropped = RemoveSmallInstances(min_size=5, relabel=True)(torch.as_tensor(oh))
    np.testing.assert_array_equal(dropped.numpy(), oh[[2]])


# ---------------------------------------------------------------------------------------------- validation
BAD_CASES = [
    (np.zeros((4, 4)), ValueError, "2 or 3 spatial dims"),
    (np.zeros((1, 2, 2, 2, 2)), ValueError, "2 or 3 spatial dims"),
    (np.full((1, 3, 3), 1.5), ValueError, "integer-valued"),
    (np.full((1, 3, 3), -2), ValueError, "non-negative"),
    (np.array([[[0.0, np.nan], [1.0, 2.0]]]), ValueError, "NaN"),
    (np.array([[[0, 1], [1, 0]], [[0, 3], [0, 0]]]), ValueError, "binary"),
    (np.zeros((1, 3, 3), complex), TypeError, "dtype"),
]


@pytest.mark.parametrize("arr,exc,msg", BAD_CASES)
def test_validate_errors_name_problem_and_file(arr, exc, msg):
    for x in (arr, torch.as_tensor(arr) if arr.dtype != complex else arr):
        with pytest.raises(exc, match=msg):
            ValidateInstanceLabels()(x)
    with pytest.raises(exc, match=msg) as err:
        ValidateInstanceLabels()(_mt(arr))
    assert "img_007.tif" in str(err.value)


def test_validate_other_errors_and_type():
    with pytest.raises(ValueError, match="no objects") as err:
        ValidateInstanceLabels(require_objects=True)(_mt(np.zeros((1, 3, 3), np.uint8)))
    assert "img_007.tif" in str(err.value)
    with pytest.raises(ValueError, match="exactly one channel"):
        ValidateInstanceLabels(one_hot=False)(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="binary"):  # a one-channel one-hot stack must be binary too
        ValidateInstanceLabels(one_hot=True)(np.full((1, 3, 3), 2))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        ValidateInstanceLabels()([[[0, 1]]])


@pytest.mark.parametrize("kind", KINDS)
def test_validate_accepts_and_casts(kind):
    lab = np.array([[[0, 2], [5, 5]]], np.uint16)
    assert ValidateInstanceLabels(require_objects=True)(lab) is lab
    f = ValidateInstanceLabels()(kind(lab.astype(np.float32)))
    assert type(f) is type(kind(lab)) and str(f.dtype).endswith("int32")
    np.testing.assert_array_equal(_np(f), lab)
    oh = ValidateInstanceLabels()(kind(np.stack([np.eye(2), 1 - np.eye(2)])[:, None]))  # float one-hot, 3D
    assert str(oh.dtype).endswith("uint8") and oh.shape == (2, 1, 2, 2)
    mt = ValidateInstanceLabels()(_mt(lab.astype(np.float64)))
    assert isinstance(mt, MetaTensor) and mt.dtype == torch.int32 and mt.meta["filename_or_obj"].endswith("img_007.tif")
    assert ValidateInstanceLabels()(np.ones((1, 2, 2), bool)).dtype == bool


def test_validated_dict_checks_image_shape():
    image = MetaTensor(torch.zeros(2, 8, 9), meta={"filename_or_obj": "/data/raw_3.tif"})
    good = {"image": image, "label": np.zeros((1, 8, 9), np.int32)}
    out = ValidateInstanceLabelsd("label", image_key="image")(good)
    assert out["label"] is good["label"]
    bad = {"image": image, "label": np.zeros((1, 8, 10), np.int32)}
    with pytest.raises(ValueError) as err:
        ValidateInstanceLabelsd("label", image_key="image")(bad)
    assert "(8, 9)" in str(err.value) and "(8, 10)" in str(err.value) and "raw_3.tif" in str(err.value)
    with pytest.raises(ValueError, match="non-negative") as err:  # the image's file name is used for plain labels
        ValidateInstanceLabelsd("label", image_key="image")({"image": image, "label": -np.ones((1, 8, 9))})
    assert "raw_3.tif" in str(err.value)
    with pytest.raises(KeyError):
        ValidateInstanceLabelsd("label", image_key="img")(good)
    assert ValidateInstanceLabelsd(["label", "other"], allow_missing_keys=True)(good)["label"] is good["label"]


# ---------------------------------------------------------------------------------------------- misc
def test_instance_bboxes_label_map_and_one_hot_agree():
    rng = np.random.default_rng(5)
    lab = _random_label((6, 7, 8), rng, ids=(0, 0, 0, 2, 9))
    keys, st, sp, sz = instance_bboxes(lab)
    oh = LabelToOneHot()(lab)
    k2, st2, sp2, sz2 = instance_bboxes(oh)
    np.testing.assert_array_equal(keys, [2, 9])
    np.testing.assert_array_equal(k2, [0, 1])
    for a, b in ((st, st2), (sp, sp2), (sz, sz2)):
        np.testing.assert_array_equal(a, b)
    for k, s0, s1, n in zip(keys, st, sp, sz):
        idx = np.argwhere(lab[0] == k)
        np.testing.assert_array_equal(s0, idx.min(0))
        np.testing.assert_array_equal(s1, idx.max(0) + 1)
        assert n == len(idx)


def test_dict_twins_and_no_warnings():
    lab = np.array([[[0, 7], [7, 3]]], np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = RelabelConsecutiveDict("l")({"l": lab})
        d = LabelToOneHotd("l")(d)
        assert d["l"].shape == (2, 2, 2)
        d = RemoveSmallInstancesd("l", min_size=1)(d)
    assert d["l"].shape == (2, 2, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_one_hot_to_label_map_is_the_one_collapse(kind):
    """The labels module's collapse: later channel wins, empty stack -> background, same kind, chosen dtype."""
    stack = np.zeros((3, 4, 5), np.uint8)
    stack[0, :2] = 1
    stack[2, 1:3] = 1  # overlaps channel 0 on row 1
    out = one_hot_to_label_map(kind(stack), np.uint16)
    assert type(out) is type(kind(stack)) and tuple(out.shape) == (1, 4, 5)
    ref = np.zeros((4, 5), np.int64)
    ref[:2] = 1
    ref[1:3] = 3
    assert np.array_equal(_np(out)[0], ref)
    assert _np(one_hot_to_label_map(kind(np.zeros((0, 4, 5), np.uint8)))).sum() == 0
