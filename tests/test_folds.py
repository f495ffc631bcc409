"""Tests for monai_embedseg.data.folds: cross-validation folds, tiling with renumbered labels, fold folders."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from monai_embedseg.bundle import datasets
from monai_embedseg.data import collect_items, make_folds, read_tiff, tile_dataset, tile_volume, write_fold
from monai_embedseg.data.folds import MARKER
from monai_embedseg.data.io import read_tiff_spacing, write_tiff


def _labels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A random instance label map: overlapping boxes with non-consecutive ids (gaps, large values)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint16)
    for obj_id in rng.choice(np.arange(10, 5000), size=12, replace=False):
        lo = [int(rng.integers(0, s)) for s in shape]
        size = [int(rng.integers(1, max(2, s // 2))) for s in shape]
        lab[tuple(slice(a, a + b) for a, b in zip(lo, size))] = obj_id
    assert len(np.unique(lab)) > 5
    return lab


def _release_set(root, splits: dict[str, int], shape=(24, 30), spacing=None, onehot: bool = False) -> None:
    """A tiny release-layout set: ``splits`` maps split -> number of items (names ``a00``, ``a01``, ...)."""
    k = 0
    for split, n in splits.items():
        for _ in range(n):
            lab = _labels(shape, seed=k)
            write_tiff(root / split / "images" / f"a{k:02d}.tif", (lab > 0).astype(np.float32), spacing=spacing)
            write_tiff(root / split / "masks" / f"a{k:02d}.tif", lab, spacing=spacing)
            if onehot:
                stack = np.stack([lab == v for v in np.unique(lab)[1:]]).astype(np.uint8)
                (root / split / "masks_onehot").mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(root / split / "masks_onehot" / f"a{k:02d}.tif", stack)
            k += 1


# ------------------------------------------------------------------------------------------------------------ folds
@pytest.mark.parametrize("groups", ["consecutive", "interleaved"])
@pytest.mark.parametrize("n, k", [(3, 3), (4, 4), (10, 4), (11, 5), (20, 3)])
def test_folds_test_every_item_once_with_disjoint_complete_splits(n, k, groups):
    folds = make_folds(n, k, groups)
    assert len(folds) == k
    tested = sorted(i for f in folds for i in f["test"])
    assert tested == list(range(n))
    validated = sorted(i for f in folds for i in f["val"])
    assert validated == list(range(n))
    sizes = sorted(len(f["test"]) for f in folds)
    assert sizes[-1] - sizes[0] <= 1
    for i, f in enumerate(folds):
        train, val, test = set(f["train"]), set(f["val"]), set(f["test"])
        assert train and val and test
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(range(n))
        assert f["val"] == folds[(i + 1) % k]["test"]  # the next fold's test group, never this fold's
        assert f["val"] != f["test"]


def test_fold_groups_are_blocks_or_round_robin():
    assert [f["test"] for f in make_folds(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [f["test"] for f in make_folds(7, 3, "interleaved")] == [[0, 3, 6], [1, 4], [2, 5]]


@pytest.mark.parametrize("n, k, match", [(10, 2, "at least 3"), (10, 1, "at least 3"), (3, 4, "3 item"), (0, 3, "0")])
def test_fold_errors(n, k, match):
    with pytest.raises(ValueError, match=match):
        make_folds(n, k)
    with pytest.raises(ValueError, match="groups"):
        make_folds(6, 3, groups="random")


# ------------------------------------------------------------------------------------------------------------ tiles
@pytest.mark.parametrize("shape, grid", [((37, 41), (2, 3)), ((5, 30, 33), (2, 2)), ((4, 17, 16), (3, 1))])
def test_tiles_reassemble_to_the_foreground_with_consecutive_ids(shape, grid):
    lab = _labels(shape)
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    tiles = tile_volume(image, lab, grid)
    assert len(tiles) == grid[0] * grid[1]
    rows = [tiles[j * grid[1] : (j + 1) * grid[1]] for j in range(grid[0])]
    img_back = np.concatenate([np.concatenate([t[0] for t in row], axis=-1) for row in rows], axis=-2)
    lab_back = np.concatenate([np.concatenate([t[1] for t in row], axis=-1) for row in rows], axis=-2)
    assert np.array_equal(img_back, image)
    assert np.array_equal(lab_back > 0, lab > 0)
    heights = {t[1].shape[-2] for t in tiles}
    widths = {t[1].shape[-1] for t in tiles}
    assert max(heights) - min(heights) <= 1 and max(widths) - min(widths) <= 1
    for im, t in tiles:
        assert im.shape == t.shape
        ids = np.unique(t)
        assert list(ids) == list(range(len(ids)))  # 0, 1, ..., n without gaps
    # each tile's objects are the original objects' parts inside it, one id each
    for j, row in enumerate(rows):
        for i, (_, t) in enumerate(row):
            y0 = sum(rows[r][0][1].shape[-2] for r in range(j))
            x0 = sum(row[c][1].shape[-1] for c in range(i))
            orig = lab[..., y0 : y0 + t.shape[-2], x0 : x0 + t.shape[-1]]
            pairs = {(a, b) for a, b in zip(orig.ravel(), t.ravel())}
            assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})


def test_multichannel_2d_tiles_and_shape_errors():
    lab = _labels((20, 26))
    image = np.random.default_rng(2).random((3, 20, 26)).astype(np.float32)
    tiles = tile_volume(image, lab, (2, 2))
    assert [t[0].shape for t in tiles] == [(3, 10, 13)] * 4
    assert np.array_equal(np.concatenate([tiles[0][0], tiles[1][0]], axis=-1), image[:, :10])
    with pytest.raises(ValueError, match=r"\(3, 20, 25\).*\(20, 26\)"):
        tile_volume(image[..., :25], lab, (2, 2))
    with pytest.raises(ValueError, match="shape"):
        tile_volume(np.zeros((2, 3, 20, 26)), lab, (2, 2))
    with pytest.raises(ValueError, match="integer"):
        tile_volume(image[0], lab.astype(np.float32), (2, 2))
    with pytest.raises(ValueError, match="grid"):
        tile_volume(image[0], lab, (21, 1))


# ---------------------------------------------------------------------------------------------------- fold folders
def test_collect_items_and_written_fold_read_back_by_the_bundles(tmp_path):
    data = tmp_path / "data"
    _release_set(data, {"train": 3, "val": 1, "test": 2}, onehot=True)
    items = collect_items(data)
    assert [it["name"] for it in items] == [f"a{k:02d}" for k in range(6)]
    assert [it["split"] for it in items] == ["train"] * 3 + ["val", "test", "test"]
    assert all(os.path.isfile(it["masks_onehot"]) for it in items)
    assert collect_items(data, splits=("test",))[0]["name"] == "a04"

    fold = make_folds(len(items), 3)[1]  # test items 2-3, val 4-5, train 0-1
    names = write_fold(items, fold, tmp_path / "fold1")
    assert names == {"train": ["a00", "a01"], "val": ["a04", "a05"], "test": ["a02", "a03"]}
    lists = datasets.training_datalists(str(tmp_path / "fold1"))
    assert [d["name"] for d in lists["train"]] == ["a00", "a01"]
    assert [d["name"] for d in lists["val"]] == ["a04", "a05"]
    assert all("label_onehot" in d for d in lists["train"] + lists["val"])
    assert [d["name"] for d in datasets.test_datalist(str(tmp_path / "fold1"))] == ["a02", "a03"]
    linked = tmp_path / "fold1" / "test" / "masks" / "a02.tif"
    assert np.array_equal(read_tiff(linked), read_tiff(items[2]["masks"]))

    # rewriting the same folder with another fold replaces it (nothing of the first fold stays)
    write_fold(items, make_folds(len(items), 3)[0], tmp_path / "fold1")
    assert sorted(os.listdir(tmp_path / "fold1" / "test" / "images")) == ["a00.tif", "a01.tif"]
    assert sorted(os.listdir(tmp_path / "fold1" / "train" / "images")) == ["a04.tif", "a05.tif"]
    assert os.path.isfile(items[2]["image"])  # the sources are untouched


def test_collect_items_errors_name_the_folder(tmp_path):
    _release_set(tmp_path / "ok", {"train": 2})
    os.remove(tmp_path / "ok" / "train" / "masks" / "a01.tif")
    with pytest.raises(FileNotFoundError, match=r"train/masks.*a01"):
        collect_items(tmp_path / "ok")
    (tmp_path / "empty" / "val" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty/val/images"):
        collect_items(tmp_path / "empty")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="nothing"):
        collect_items(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="missing"):
        collect_items(tmp_path / "missing")


def test_same_names_in_two_splits_get_unique_names(tmp_path):
    _release_set(tmp_path, {"train": 1, "test": 1})
    os.rename(tmp_path / "test" / "images" / "a01.tif", tmp_path / "test" / "images" / "a00.tif")
    os.rename(tmp_path / "test" / "masks" / "a01.tif", tmp_path / "test" / "masks" / "a00.tif")
    assert [it["name"] for it in collect_items(tmp_path)] == ["train-a00", "test-a00"]


def test_refuses_a_foreign_or_changed_output_folder(tmp_path):
    _release_set(tmp_path / "data", {"train": 3})
    items = collect_items(tmp_path / "data")
    fold = make_folds(3, 3)[0]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="foreign"):
        write_fold(items, fold, foreign)
    assert os.listdir(foreign) == ["notes.txt"]
    out = tmp_path / "fold"
    write_fold(items, fold, out)
    assert (out / MARKER).is_file()
    (out / "train" / "images" / "extra.tif").write_bytes(b"")
    with pytest.raises(FileExistsError, match="extra.tif"):
        write_fold(items, fold, out)
    assert (out / "train" / "images" / "extra.tif").is_file()
    with pytest.raises(FileExistsError):  # another writer's folder is not this one's to replace
        tile_dataset(tmp_path / "data", (1, 1), out)
    with pytest.raises(ValueError, match="both"):
        write_fold(items, {"train": [0, 1], "val": [1], "test": [2]}, tmp_path / "bad")


def test_in_memory_tiles_written_with_their_spacing(tmp_path):
    lab = _labels((6, 20, 22))
    tiles = tile_volume(lab.astype(np.float32), lab, (1, 3))
    items = [{"image": im, "masks": t, "name": f"t{n}", "spacing": (2.0, 0.5, 0.25)} for n, (im, t) in enumerate(tiles)]
    write_fold(items, make_folds(3, 3)[2], tmp_path / "fold")
    mask = tmp_path / "fold" / "test" / "masks" / "t2.tif"
    assert np.array_equal(read_tiff(mask), tiles[2][1])
    assert read_tiff_spacing(mask) == (2.0, 0.5, 0.25)
    assert len(datasets.training_datalists(str(tmp_path / "fold"))["train"]) == 1


def test_tile_dataset_keeps_imagej_spacing_and_makes_enough_items(tmp_path):
    # one volume as ImageJ writes it (z spacing in the ImageJ metadata, y/x in the resolution tags)
    lab = _labels((5, 44, 52))
    src = tmp_path / "one"
    for sub, arr in (("images", (lab > 0).astype(np.uint8) * 200), ("masks", lab)):
        (src / "train" / sub).mkdir(parents=True)
        tifffile.imwrite(
            src / "train" / sub / "t014.tif",
            arr,
            imagej=True,
            resolution=(1 / 0.202, 1 / 0.202),
            metadata={"spacing": 1.0, "unit": "micron", "axes": "ZYX"},
        )
    spacing = read_tiff_spacing(src / "train" / "masks" / "t014.tif")
    assert spacing == pytest.approx((1.0, 0.202, 0.202))
    tiles = tile_dataset(src, (2, 2), tmp_path / "tiles")
    assert [t["name"] for t in tiles] == ["t014_y0x0", "t014_y0x1", "t014_y1x0", "t014_y1x1"]
    assert [t["shape"] for t in tiles] == [(5, 22, 26)] * 4
    for t in tiles:
        assert read_tiff_spacing(t["masks"]) == spacing and read_tiff_spacing(t["image"]) == spacing
        back = read_tiff(t["masks"])
        assert back.max() == t["n_objects"] and list(np.unique(back)) == list(range(t["n_objects"] + 1))
    assert np.array_equal(read_tiff(tiles[3]["image"]), (lab[:, 22:, 26:] > 0).astype(np.uint8) * 200)
    # the tiles folder reads back as items, and four of them make four folds
    assert [it["name"] for it in collect_items(tmp_path / "tiles")] == [t["name"] for t in tiles]
    folds = make_folds(len(tiles), 4)
    for n, fold in enumerate(folds):
        write_fold(tiles, fold, tmp_path / f"fold{n}")
        lists = datasets.training_datalists(str(tmp_path / f"fold{n}"))
        assert (len(lists["train"]), len(lists["val"])) == (2, 1)
        test = datasets.test_datalist(str(tmp_path / f"fold{n}"))
        assert [d["name"] for d in test] == [tiles[n]["name"]]
        assert read_tiff_spacing(test[0]["label"]) == spacing
    # tiling again into the same folder replaces its tiles; tiling tiles into their own folder is refused
    with pytest.raises(ValueError, match="input"):
        tile_dataset([(tiles[0]["image"], tiles[0]["masks"])], (1, 2), tmp_path / "tiles")
    assert len(tile_dataset(src, (1, 2), tmp_path / "tiles")) == 2
    assert sorted(os.listdir(tmp_path / "tiles" / "masks")) == ["t014_y0x0.tif", "t014_y0x1.tif"]
