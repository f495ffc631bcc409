"""Tests for monai_embedseg.data.datalist (release layout, train/val split)."""

from __future__ import annotations

import os

import pytest

from monai_embedseg.data import release_datalist, split_train_val
from monai_embedseg.data.datalist import file_stem


def _touch(path) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def _layout(root, split="train", names=("b", "a", "c"), onehot=False, ext=".tif"):
    for n in names:
        _touch(root / split / "images" / f"{n}{ext}")
        _touch(root / split / "masks" / f"{n}{ext}")
        if onehot:
            _touch(root / split / "masks_onehot" / f"{n}{ext}")


def test_file_stem():
    assert file_stem("x/a.tif") == "a" and file_stem("a.TIFF") == "a" and file_stem("a.b.nii.gz") == "a.b"
    assert file_stem("a.nii") == "a" and file_stem("a.png") is None and file_stem(".tif") is None


def test_pairs_sorted_with_keys(tmp_path):
    _layout(tmp_path)
    _touch(tmp_path / "train" / "images" / ".DS_Store")
    _touch(tmp_path / "train" / "masks" / "notes.txt")
    dl = release_datalist(tmp_path)
    assert [d["name"] for d in dl] == ["a", "b", "c"]
    assert dl[0] == {
        "image": str(tmp_path / "train" / "images" / "a.tif"),
        "label": str(tmp_path / "train" / "masks" / "a.tif"),
        "name": "a",
    }


def test_mixed_suffixes_pair_by_stem(tmp_path):
    _touch(tmp_path / "train" / "images" / "x.tiff")
    _touch(tmp_path / "train" / "masks" / "x.tif")
    _touch(tmp_path / "train" / "images" / "y.nii.gz")
    _touch(tmp_path / "train" / "masks" / "y.nii.gz")
    _touch(tmp_path / "train" / "images" / "z.nii")
    _touch(tmp_path / "train" / "masks" / "z.nii")
    dl = release_datalist(tmp_path, "train")
    assert [(d["name"], os.path.basename(d["image"]), os.path.basename(d["label"])) for d in dl] == [
        ("x", "x.tiff", "x.tif"),
        ("y", "y.nii.gz", "y.nii.gz"),
        ("z", "z.nii", "z.nii"),
    ]


def test_one_hot(tmp_path):
    _layout(tmp_path, onehot=True)
    dl = release_datalist(tmp_path)
    assert all(d["label_onehot"] == str(tmp_path / "train" / "masks_onehot" / f"{d['name']}.tif") for d in dl)
    assert all("label_onehot" not in d for d in release_datalist(tmp_path, one_hot=False))
    assert release_datalist(tmp_path, one_hot=True) == dl
    _layout(tmp_path, split="test")
    assert all("label_onehot" not in d for d in release_datalist(tmp_path, "test"))  # auto: absent -> no key
    with pytest.raises(FileNotFoundError, match="masks_onehot"):
        release_datalist(tmp_path, "test", one_hot=True)
    with pytest.raises(ValueError, match="one_hot"):
        release_datalist(tmp_path, one_hot="yes")
    os.remove(tmp_path / "train" / "masks_onehot" / "b.tif")
    with pytest.raises(ValueError, match="no one-hot mask .*: b"):
        release_datalist(tmp_path)


def test_unpaired_files_listed(tmp_path):
    _layout(tmp_path, names=("a", "b", "c"))
    os.remove(tmp_path / "train" / "masks" / "b.tif")
    _touch(tmp_path / "train" / "masks" / "zz.tif")
    with pytest.raises(ValueError) as err:
        release_datalist(tmp_path)
    msg = str(err.value)
    assert "no mask in" in msg and ": b" in msg and "no image for these masks" in msg and "zz" in msg


def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        release_datalist(tmp_path / "nowhere")
    _layout(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match=r"split 'test' not found.*\['train'\]"):
        release_datalist(tmp_path, "test")
    os.makedirs(tmp_path / "val" / "images")
    with pytest.raises(FileNotFoundError, match=os.path.join("val", "masks")):
        release_datalist(tmp_path, "val")
    os.makedirs(tmp_path / "val" / "masks")
    with pytest.raises(ValueError, match="no image files"):
        release_datalist(tmp_path, "val")


def test_duplicate_stems(tmp_path):
    _layout(tmp_path, names=("a",))
    _touch(tmp_path / "train" / "images" / "a.tiff")
    with pytest.raises(ValueError, match="same name stem 'a'"):
        release_datalist(tmp_path)


def test_split_train_val():
    dl = [{"name": f"img{i:02d}", "image": f"i{i}"} for i in range(20)]
    train, val = split_train_val(dl, val_fraction=0.15, seed=1000)
    assert len(val) == 3 and len(train) == 17
    names_t, names_v = [d["name"] for d in train], [d["name"] for d in val]
    assert set(names_t).isdisjoint(names_v) and set(names_t) | set(names_v) == {d["name"] for d in dl}
    assert names_t == sorted(names_t) and names_v == sorted(names_v)
    # independent of the input order, reproducible, seed-dependent
    assert split_train_val(dl[::-1], 0.15, 1000) == (train, val)
    others = {tuple(d["name"] for d in split_train_val(dl, 0.15, s)[1]) for s in range(5)}
    assert len(others) > 1
    # at least one of each
    for n in (2, 3):
        t, v = split_train_val(dl[:n], val_fraction=0.01)
        assert len(v) == 1 and len(t) == n - 1
        t, v = split_train_val(dl[:n], val_fraction=0.99)
        assert len(t) == 1 and len(v) == n - 1
    # items without names sort by image
    t, v = split_train_val([{"image": "b"}, {"image": "a"}], 0.5)
    assert {d["image"] for d in t + v} == {"a", "b"}


def test_split_train_val_errors():
    with pytest.raises(ValueError, match="at least 2"):
        split_train_val([{"name": "a"}])
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val([{"name": "a"}, {"name": "b"}], val_fraction=1.0)
    with pytest.raises(ValueError, match="duplicate"):
        split_train_val([{"name": "a"}, {"name": "a"}])
