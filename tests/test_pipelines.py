"""The bundles' shared pipelines: images are read once (cached), crops are drawn on the fly."""

from unittest import mock

import numpy as np
import torch
from monai.data import CacheDataset

from monai_embedseg.bundle.pipelines import square_in_plane, train_transforms, val_transforms
from monai_embedseg.data.datalist import release_datalist
from monai_embedseg.data.io import TiffReader
from monai_embedseg.data.synthetic import write_synthetic_dataset


def test_square_in_plane():
    assert square_in_plane([8, 40, 56]) == [8, 56, 56] and square_in_plane([24, 32]) == [32, 32]


def test_training_reads_each_image_once_and_crops_on_the_fly(tmp_path):
    write_synthetic_dataset(str(tmp_path), "nuclei_2d", n_train=2, n_test=1, seed=0, shape=(64, 64),
                            n_objects=(4, 6), radius=(4, 6))
    data = release_datalist(str(tmp_path), "train")
    with mock.patch.object(TiffReader, "read", autospec=True, side_effect=TiffReader.read) as read:
        dataset = CacheDataset(data, train_transforms([32, 32], num_samples=3), progress=False)
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


def test_val_transforms_copy_one_hot_labels_and_crop_sub_volumes(tmp_path):
    write_synthetic_dataset(str(tmp_path), "worms_2d", n_train=2, n_test=1, seed=0, shape=(48, 40), n_worms=(2, 3))
    item = release_datalist(str(tmp_path), "test")[0]
    out = val_transforms(label_key="label_onehot", label_channel_dim=0, crop_slices=[[4, 36], [None, None]])(item)
    assert out["image"].shape == (1, 32, 40)
    assert out["label"].shape[1:] == (32, 40) and out["label"].shape[0] >= 2  # one-hot stack under "label"
    assert torch.equal(torch.as_tensor(out["label"]), torch.as_tensor(out["label_onehot"]))
