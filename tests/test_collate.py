"""Tests for monai_embedseg.data.collate.pad_one_hot_collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from monai_embedseg.data.collate import pad_one_hot_collate

RNG = np.random.default_rng(0)


def _onehot(n, spatial=(5, 6)):
    return (RNG.random((n, *spatial)) > 0.5).astype(np.uint8)


def _expected(stacks):
    """Brute force: zero array of (B, max N, *spatial) with each stack copied into its first channels."""
    n_max = max(s.shape[0] for s in stacks)
    out = np.zeros((len(stacks), n_max, *stacks[0].shape[1:]), dtype=stacks[0].dtype)
    for i, s in enumerate(stacks):
        out[i, : s.shape[0]] = s
    return out


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_varying_n(kind, spatial):
    stacks = [_onehot(n, spatial) for n in (3, 1, 0, 2)]
    conv = {"numpy": lambda a: a, "torch": torch.as_tensor, "meta": lambda a: MetaTensor(torch.as_tensor(a))}[kind]
    batch = [{"image": torch.rand(1, *spatial), "label": conv(s), "name": f"n{i}"} for i, s in enumerate(stacks)]
    out = pad_one_hot_collate(batch)
    assert tuple(out["label"].shape) == (4, 3, *spatial) and out["image"].shape == (4, 1, *spatial)
    np.testing.assert_array_equal(np.asarray(out["label"]), _expected(stacks))
    assert out["label"].dtype == torch.uint8 and out["name"] == ["n0", "n1", "n2", "n3"]
    for i, s in enumerate(stacks):  # the padded channels are all zero
        assert not out["label"][i, s.shape[0] :].any()
    if kind == "meta":
        assert isinstance(out["label"], MetaTensor) and out["label"].is_batch
        assert tuple(out["label"].affine.shape) == (4, 4, 4)
    assert [b["label"].shape[0] for b in batch] == [3, 1, 0, 2]  # the caller's items are not modified


def test_list_of_lists_from_num_samples():
    stacks = [_onehot(n) for n in (1, 4, 2)]
    batch = [
        [{"label": torch.as_tensor(stacks[0])}, {"label": torch.as_tensor(stacks[1])}],
        [{"label": torch.as_tensor(stacks[2])}],
    ]
    out = pad_one_hot_collate(batch)
    assert tuple(out["label"].shape) == (3, 4, 5, 6)
    np.testing.assert_array_equal(out["label"].numpy(), _expected(stacks))


def test_with_rand_object_cropd_in_dataloader():
    from monai_embedseg.transforms.crop import RandObjectCropd

    data = []
    for n in (2, 5):
        lab = np.zeros((n, 16, 16), np.uint8)
        for k in range(n):
            lab[k, 3 * k : 3 * k + 2, 2 : 6 + k] = 1
        data.append({"image": np.random.rand(1, 16, 16).astype(np.float32), "label": lab})
    crop = RandObjectCropd(keys=["image", "label"], label_key="label", crop_size=(8, 8), num_samples=3)
    crop.set_random_state(0)
    loader = DataLoader(Dataset(data, Compose([crop])), batch_size=2, collate_fn=pad_one_hot_collate)
    out = next(iter(loader))
    assert tuple(out["image"].shape) == (6, 1, 8, 8) and tuple(out["label"].shape) == (6, 5, 8, 8)
    assert not out["label"][:3, 2:].any()  # samples of the 2-object image: channels 2..4 are padding


def test_label_maps_unaffected():
    maps = [RNG.integers(0, 6, (1, 4, 5)).astype(np.int32) for _ in range(3)]
    out = pad_one_hot_collate([{"label": torch.as_tensor(m)} for m in maps])
    np.testing.assert_array_equal(out["label"].numpy(), np.stack(maps))
    # a label map among one-hot stacks cannot be padded
    with pytest.raises(ValueError, match="label map"):
        pad_one_hot_collate([{"label": maps[0]}, {"label": _onehot(3, (4, 5))}])


def test_keys_and_errors():
    a, b = _onehot(2), _onehot(3)
    out = pad_one_hot_collate([{"x": a, "y": b}, {"x": b, "y": a}], keys=("x", "y"))
    assert tuple(out["x"].shape) == tuple(out["y"].shape) == (2, 3, 5, 6)
    out = pad_one_hot_collate([{"x": a}, {"x": b}], keys="x")
    np.testing.assert_array_equal(out["x"].numpy(), _expected([a, b]))
    assert "label" not in pad_one_hot_collate([{"x": a}], allow_missing_keys=True)
    with pytest.raises(KeyError, match="not found"):
        pad_one_hot_collate([{"x": a}])
    with pytest.raises(KeyError, match="missing from 1 of 2"):
        pad_one_hot_collate([{"label": a}, {"x": a}])
    with pytest.raises(ValueError, match="spatial shape"):
        pad_one_hot_collate([{"label": a}, {"label": _onehot(2, (5, 7))}])
    with pytest.raises(ValueError, match=r"\(N, \*spatial\)"):
        pad_one_hot_collate([{"label": np.zeros(4)}, {"label": np.zeros(4)}])
    with pytest.raises(TypeError, match="numpy arrays or torch tensors"):
        pad_one_hot_collate([{"label": [1, 2]}, {"label": [1]}])
    # non-dict items go straight to list_data_collate
    assert tuple(pad_one_hot_collate([torch.zeros(2), torch.ones(2)]).shape) == (2, 2)
