"""Cross-validation folds of a labelled set: list its items, cut them into k folds, write one fold as a dataset.

A labelled set in the EmbedSeg release layout (``<root>/{train,val,test}/{images,masks}/``, optionally
``masks_onehot/``) has one fixed test split; with a handful of images the test AP of one split says little. Here
every item (an image and its masks, from whichever splits exist) is tested exactly once over k folds::

    items = collect_items("DATA/cho3d")                     # [{"image", "masks", "name", "split"}, ...]
    folds = make_folds(len(items), k=4)                     # fold i: test group i, val group i+1, train the rest
    write_fold(items, folds[0], "CV/fold0")                 # CV/fold0/{train,val,test}/{images,masks}/ (symlinks)

With one or two annotated volumes there are too few items for k >= 3 folds: :func:`tile_dataset` cuts each volume
into ``gy x gx`` tiles along (y, x) (:func:`tile_volume`), writes them as TIFF files keeping the voxel spacing, and
returns the tiles as items. Label ids are renumbered consecutively per tile; an object cut by a tile edge stays as
its parts in the tiles it touches.

Outputs are written only into an empty folder, or into one that :func:`write_fold` / :func:`tile_dataset` wrote
earlier (recorded in a marker file, :data:`MARKER`) and that holds nothing else: its files are then replaced.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_embedseg.data.datalist import file_stem, scan_images
from monai_embedseg.data.io import TIFF_SUFFIXES, as_label_dtype, read_tiff_with_spacing, write_tiff
from monai_embedseg.utils.files import check_output_apart

__all__ = ["collect_items", "make_folds", "tile_volume", "write_fold", "tile_dataset", "SPLITS", "MARKER"]

PathLike = str | os.PathLike

#: the splits of a fold, in the release layout's folder names
SPLITS = ("train", "val", "test")
#: marker file naming the files a writer of this module put in its output folder (so that it may replace them)
MARKER = ".monai_embedseg_written.json"
#: how items are grouped into folds
GROUPINGS = ("consecutive", "interleaved")


# ------------------------------------------------------------------------------------------------------------ items
def _split_items(split_dir: Path, split: str) -> list[dict]:
    images = scan_images(split_dir / "images")
    if not images:
        raise ValueError(f"no image files ({', '.join(TIFF_SUFFIXES)}, .nii, .nii.gz) in {split_dir / 'images'}.")
    folders = {"masks": split_dir / "masks"}
    if (split_dir / "masks_onehot").is_dir():
        folders["masks_onehot"] = split_dir / "masks_onehot"
    found = {}
    for key, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"no masks folder {folder} for the images in {split_dir / 'images'}.")
        found[key] = scan_images(folder)
        missing = sorted(set(images) - set(found[key]))
        if missing:
            shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
            raise FileNotFoundError(f"no mask in {folder} for these images of {split_dir / 'images'}: {shown}")
    items = []
    for stem in sorted(images):
        item = {"image": str(images[stem]), "name": stem, "split": split}
        for key in folders:
            item[key] = str(found[key][stem])
        items.append(item)
    return items


def collect_items(dataset_dir: PathLike, splits: Sequence[str] = SPLITS) -> list[dict]:
    """Every labelled item of a dataset folder, from each split present, in a stable order (split, then file name).

    Args:
        dataset_dir: a folder in the release layout (``<split>/images``, ``<split>/masks`` and optionally
            ``<split>/masks_onehot``, files paired by name), or a folder holding ``images/`` and ``masks/`` itself
            (as :func:`tile_dataset` writes; its items get ``split`` ``""``).
        splits: the split folders to read, in this order; missing ones are skipped.

    Returns:
        one dict per item: ``image`` and ``masks`` (paths as strings; images ``(Y, X)``, ``(C, Y, X)`` or
        ``(Z, Y, X)``, masks the instance label map of the same spatial shape), ``masks_onehot`` when that folder
        exists (``(N, *spatial)`` stacks), ``name`` (the file stem, prefixed with ``<split>-`` when two splits hold
        the same stem, so that names are unique) and ``split``.

    Raises:
        FileNotFoundError: ``dataset_dir`` or its masks folder is missing, none of the splits (nor ``images/``) is
            there, or an image has no mask (the messages name the folder).
        ValueError: a split's ``images`` folder holds no image files.
    """
    root = Path(os.fspath(dataset_dir))
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    items: list[dict] = []
    for split in splits:
        if (root / split / "images").is_dir():
            items += _split_items(root / split, split)
    if not items:
        if (root / "images").is_dir():
            items = _split_items(root, "")
        else:
            raise FileNotFoundError(
                f"no labelled images in {root}: expected {'/, '.join(splits)}/ folders holding images/ and masks/, "
                f"or images/ and masks/ in {root} itself."
            )
    stems = [it["name"] for it in items]
    for it in items:
        if stems.count(it["name"]) > 1:
            it["name"] = f"{it['split']}-{it['name']}"
    return items


# ------------------------------------------------------------------------------------------------------------ folds
def make_folds(n_items: int, k: int, groups: str = "consecutive") -> list[dict[str, list[int]]]:
    """Split items ``0 .. n_items - 1`` into ``k`` cross-validation folds.

    The items are cut into ``k`` groups: ``"consecutive"`` blocks of near-equal size (sizes differ by at most one,
    the larger first) or ``"interleaved"`` round-robin (item ``i`` in group ``i % k``). Fold ``i`` tests group
    ``i``, validates on group ``(i + 1) % k`` and trains on the other ``k - 2`` groups, so every item is tested
    exactly once over the folds and validates exactly once.

    Returns:
        ``k`` dicts ``{"train": [...], "val": [...], "test": [...]}`` of sorted item indices; in each fold the three
        lists are disjoint and together hold every index.

    Raises:
        ValueError: ``k < 3`` (a fold needs a train, a val and a test group), ``n_items < k`` (a group would be
            empty) or an unknown ``groups``.
    """
    n_items, k = int(n_items), int(k)
    if k < 3:
        raise ValueError(
            f"k={k} folds: need at least 3 (each fold tests one group, validates on another and trains on the rest)."
        )
    if n_items < k:
        raise ValueError(
            f"{n_items} item(s) cannot make {k} folds: each fold tests a group of at least one item. Use fewer folds, "
            "or cut the images into tiles (tile_dataset, bench_cv.py --tiles GY GX)."
        )
    if groups == "consecutive":
        parts = [block.tolist() for block in np.array_split(np.arange(n_items), k)]
    elif groups == "interleaved":
        parts = [list(range(g, n_items, k)) for g in range(k)]
    else:
        raise ValueError(f"groups must be one of {GROUPINGS}, got {groups!r}.")
    folds = []
    for i in range(k):
        val = (i + 1) % k
        train = sorted(j for g, part in enumerate(parts) if g not in (i, val) for j in part)
        folds.append({"train": train, "val": list(parts[val]), "test": list(parts[i])})
    return folds


# ------------------------------------------------------------------------------------------------------------ tiles
def _edges(size: int, n: int) -> list[int]:
    """``n + 1`` cut positions splitting ``size`` into ``n`` parts whose sizes differ by at most one."""
    return [(j * size) // n for j in range(n + 1)]


def tile_volume(image: np.ndarray, labels: np.ndarray, grid: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut an image and its label map into ``gy x gx`` near-equal tiles along the last two (y, x) axes.

    Args:
        image: ``(Y, X)`` or ``(Z, Y, X)``, or with a leading channel axis (``(C, Y, X)``, ``(C, Z, Y, X)``) when
            ``image.ndim == labels.ndim + 1``.
        labels: instance label map ``(Y, X)`` or ``(Z, Y, X)`` (integer ids, 0 = background), the image's spatial
            shape.
        grid: ``(gy, gx)`` tiles along y and x; tile sizes along an axis differ by at most one pixel.

    Returns:
        ``gy * gx`` pairs ``(image_tile, label_tile)`` in row-major order (y first), copies of the inputs' dtypes;
        each label tile's ids are renumbered ``1 .. n`` (``skimage.segmentation.relabel_sequential``), and an object
        cut by a tile edge keeps one id per tile for the part inside it.

    Raises:
        ValueError: the shapes do not match (the message gives both), labels are not 2D/3D integers, or the grid
            asks for more tiles than pixels along an axis.
    """
    from skimage.segmentation import relabel_sequential

    image, labels = np.asarray(image), np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be (Y, X) or (Z, Y, X), got shape {labels.shape}.")
    if image.ndim not in (labels.ndim, labels.ndim + 1) or image.shape[image.ndim - labels.ndim :] != labels.shape:
        raise ValueError(
            f"image shape {image.shape} does not match labels shape {labels.shape}: expected the same spatial shape, "
            "with at most a leading channel axis on the image."
        )
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must hold integer ids, got dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"label ids must be >= 0, got {labels.min()}.")
    gy, gx = (int(g) for g in grid)
    ny, nx = labels.shape[-2:]
    if not (1 <= gy <= ny and 1 <= gx <= nx):
        raise ValueError(f"grid ({gy}, {gx}) does not fit a (y, x) plane of {ny} x {nx} pixels.")
    ys, xs = _edges(ny, gy), _edges(nx, gx)
    tiles = []
    for j in range(gy):
        for i in range(gx):
            window = (Ellipsis, slice(ys[j], ys[j + 1]), slice(xs[i], xs[i + 1]))
            lab = relabel_sequential(np.ascontiguousarray(labels[window]))[0]
            tiles.append((np.ascontiguousarray(image[window]), lab))
    return tiles


# ---------------------------------------------------------------------------------------------------- output folders
def _entries(folder: Path) -> tuple[set[str], set[str]]:
    """Relative paths of the files / links (not followed) and of the real folders under ``folder``."""
    files, dirs = set(), set()
    for top, dirnames, filenames in os.walk(folder):
        rel = Path(top).relative_to(folder)
        for d in dirnames:
            (files if os.path.islink(os.path.join(top, d)) else dirs).add((rel / d).as_posix())
        files.update((rel / f).as_posix() for f in filenames)
    return files, dirs


def _claim_output(out_dir: Path, writer: str, planned: Sequence[str]) -> None:
    """Make ``out_dir`` ready for ``planned`` files (relative paths), recording them in :data:`MARKER`.

    An empty or missing folder is used as is. A folder written earlier by ``writer`` (its marker names every file
    and folder in it, so nothing was added since) is emptied of those files. Anything else is refused.

    Raises:
        FileExistsError: ``out_dir`` is a file, or a non-empty folder this module did not write (naming it).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    files, dirs = _entries(out_dir)
    if files or dirs:
        marker = out_dir / MARKER
        try:
            record = json.loads(marker.read_text())
            recorded = {str(f) for f in record["files"]} if record.get("writer") == writer else None
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
        parents = {p.as_posix() for f in recorded or () for p in Path(f).parents if p != Path(".")}
        foreign = sorted((files - (recorded or set()) - {MARKER, f"{MARKER}.tmp"}) | (dirs - parents))
        if recorded is None or foreign:
            shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
            why = f"it holds files {writer} did not write ({shown})" if recorded is not None else "it is not empty"
            raise FileExistsError(
                f"refusing to write into {out_dir}: {why}. Choose an empty or new folder (a folder written earlier "
                f"by {writer}, holding nothing else, is replaced)."
            )
        for rel in sorted(files & recorded):
            os.unlink(out_dir / rel)
        for rel in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
            try:
                os.rmdir(out_dir / rel)
            except OSError:
                pass
    tmp = out_dir / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"writer": writer, "files": sorted(planned)}, indent=1))
    os.replace(tmp, out_dir / MARKER)


def _link_or_copy(src: PathLike, dst: Path) -> None:
    """Symlink ``dst`` to ``src`` (absolute), or copy it where links cannot be made."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(os.path.abspath(src), dst)
    except OSError:
        shutil.copy2(src, dst)


def _suffix(path: PathLike) -> str:
    base = os.path.basename(os.fspath(path))
    stem = file_stem(base)
    return base[len(stem) :] if stem is not None else os.path.splitext(base)[1]


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def _spatial_axes(n: int) -> str:
    return "ZYX"[-n:]


def _write_arrays(image_path: Path, mask_path: Path, image: np.ndarray, labels: np.ndarray, spacing) -> None:
    """Write one image / label map pair as TIFF (label map in uint16/uint32), spacing per spatial axis kept."""
    labels = np.asarray(labels)
    image = np.asarray(image)
    spacing = None if spacing is None else tuple(float(s) for s in spacing)
    axes = ("C" if image.ndim == labels.ndim + 1 else "") + _spatial_axes(labels.ndim)
    write_tiff(image_path, image, spacing=spacing, axes=axes)
    write_tiff(mask_path, as_label_dtype(labels), spacing=spacing, axes=_spatial_axes(labels.ndim))


def write_fold(
    items_or_tiles: Sequence[Mapping[str, Any]], fold: Mapping[str, Sequence[int]], out_dir: PathLike
) -> dict:
    """Write one fold as a release-layout dataset ``<out_dir>/{train,val,test}/{images,masks}/``.

    Args:
        items_or_tiles: the items the fold's indices refer to. File items (from :func:`collect_items` or
            :func:`tile_dataset`: ``image``, ``masks``, optional ``masks_onehot`` paths, and ``name``) are linked
            (symbolic links to the absolute paths; copies where links cannot be made), so their spacing metadata is
            the originals'. In-memory tiles (``image`` ``(Y, X)`` / ``(Z, Y, X)`` / ``(C, *spatial)`` and ``masks``
            ``(*spatial)`` arrays, ``name``, optional ``spacing`` per spatial axis) are written as TIFF files
            (``<name>.tif``, the spacing in their metadata as :func:`~monai_embedseg.data.io.write_tiff` records
            it). Without ``name`` an item is called ``item<index>``.
        fold: ``{"train": [...], "val": [...], "test": [...]}`` item indices (one entry of :func:`make_folds`).
        out_dir: the fold's folder: missing, empty, or one this function wrote earlier and nothing else did (its
            files are replaced).

    Returns:
        ``{"train": [names], "val": [names], "test": [names]}``.

    Raises:
        ValueError: an index out of range, an item in two splits, an empty split, duplicate names, items of mixed
            kinds (only some with ``masks_onehot``), in-memory one-hot masks, or an ``out_dir`` holding (or inside)
            an item's file.
        FileExistsError: ``out_dir`` holds anything this function did not write.
    """
    out = Path(os.fspath(out_dir))
    items = list(items_or_tiles)
    seen: dict[int, str] = {}
    for split in SPLITS:
        if not fold.get(split):
            raise ValueError(f"fold has no {split!r} items: {dict(fold)}")
        for idx in fold[split]:
            if not 0 <= int(idx) < len(items):
                raise ValueError(f"fold index {idx} ({split}) is out of range for {len(items)} items.")
            if int(idx) in seen:
                raise ValueError(f"item {idx} is in both {seen[int(idx)]!r} and {split!r} of the fold.")
            seen[int(idx)] = split
    chosen = [(split, int(i)) for split in SPLITS for i in fold[split]]
    names = {i: str(items[i].get("name", f"item{i}")) for _, i in chosen}
    if len(set(names.values())) != len(names):
        dup = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
        raise ValueError(f"items share names {dup[:10]}; give each item a unique 'name'.")
    onehot = {"masks_onehot" in items[i] for _, i in chosen}
    if len(onehot) > 1:
        raise ValueError("some items have 'masks_onehot' and others not: the fold's splits would be unreadable.")
    keys = ("image", "masks", "masks_onehot") if onehot == {True} else ("image", "masks")
    folders = {"image": "images", "masks": "masks", "masks_onehot": "masks_onehot"}

    def target(split: str, i: int, key: str) -> str:
        value = items[i][key]
        suffix = ".tif" if _is_array(value) else _suffix(value)
        return f"{split}/{folders[key]}/{names[i]}{suffix}"

    planned = [target(split, i, key) for split, i in chosen for key in keys]
    for _, i in chosen:
        arrays = [_is_array(items[i][key]) for key in keys]
        if any(arrays) and (len(keys) > 2 or not all(arrays)):
            raise ValueError(
                f"item {names[i]}: an in-memory item needs 'image' and 'masks' arrays and no 'masks_onehot'."
            )
    check_output_apart([items[i][key] for _, i in chosen for key in keys if not _is_array(items[i][key])], out)
    _claim_output(out, "write_fold", planned)
    written: dict[str, list[str]] = {split: [] for split in SPLITS}
    for split, i in chosen:
        item = items[i]
        if _is_array(item["image"]):
            _write_arrays(
                out / target(split, i, "image"),
                out / target(split, i, "masks"),
                item["image"],
                item["masks"],
                item.get("spacing"),
            )
        else:
            for key in keys:
                _link_or_copy(item[key], out / target(split, i, key))
        written[split].append(names[i])
    return written


def _channel_first(image: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """``image`` with its channel axis (if any) first, given the label map's spatial shape."""
    if image.shape == labels.shape or (image.ndim == labels.ndim + 1 and image.shape[1:] == labels.shape):
        return image
    if image.ndim == labels.ndim + 1 and image.shape[:-1] == labels.shape:  # channels last (RGB)
        return np.moveaxis(image, -1, 0)
    raise ValueError(f"{name}: image shape {image.shape} does not match mask shape {labels.shape}.")


def tile_dataset(
    dataset_dir_or_items: PathLike | Sequence[Mapping[str, Any] | tuple[PathLike, PathLike]],
    grid: Sequence[int],
    out_dir: PathLike,
) -> list[dict]:
    """Cut every labelled TIFF volume / image of a set into ``gy x gx`` tiles and write them with their spacing.

    For a user with one or two annotated volumes: 2 x 2 tiles of one volume are four items, enough for
    :func:`make_folds` with ``k = 4``.

    Args:
        dataset_dir_or_items: a dataset folder (read with :func:`collect_items`), or items: dicts with ``image`` and
            ``masks`` paths (and optionally ``name``), or ``(image_path, mask_path)`` pairs. TIFF files only;
            images ``(Y, X)``, ``(Z, Y, X)`` or with a channel axis (first, or last as in RGB files), masks the
            instance label map ``(Y, X)`` / ``(Z, Y, X)``.
        grid: ``(gy, gx)`` tiles along y and x (see :func:`tile_volume`).
        out_dir: where the tiles go, as ``<out_dir>/images/<name>_y<j>x<i>.tif`` and ``<out_dir>/masks/...``;
            missing, empty, or a folder this function wrote earlier (replaced).

    Returns:
        the tiles as file items (for :func:`write_fold`): ``image``, ``masks`` (paths), ``name``, ``split``
        (``""``), ``source`` (the image they were cut from), ``tile`` (``(j, i)`` along y, x), ``shape`` (spatial
        shape) and ``n_objects``. The spacing recorded in each mask (else in its image) is written into both tiles.

    Raises:
        ValueError: one-hot masks (not tiled), a file that is not TIFF, mismatched shapes, duplicate names, or an
            ``out_dir`` holding (or inside) an input.
        FileExistsError: ``out_dir`` holds anything this function did not write.
    """
    if isinstance(dataset_dir_or_items, (str, os.PathLike)):
        items = collect_items(dataset_dir_or_items)
    else:
        items = [
            dict(it) if isinstance(it, Mapping) else {"image": str(it[0]), "masks": str(it[1])}
            for it in dataset_dir_or_items
        ]
    if not items:
        raise ValueError("no items to tile.")
    for it in items:
        it.setdefault("name", file_stem(it["image"]) or Path(it["image"]).stem)
        if "masks_onehot" in it:
            raise ValueError(
                f"{it['image']}: one-hot masks are not tiled; tile the instance masks only (drop 'masks_onehot')."
            )
        for key in ("image", "masks"):
            if not str(it[key]).lower().endswith(TIFF_SUFFIXES):
                raise ValueError(f"only TIFF files are tiled, got {it[key]}.")
    names = [it["name"] for it in items]
    if len(set(names)) != len(names):
        raise ValueError(f"items share names {sorted({n for n in names if names.count(n) > 1})[:10]}.")
    gy, gx = (int(g) for g in grid)
    tile_names = [f"{it['name']}_y{j}x{i}" for it in items for j in range(gy) for i in range(gx)]
    out = Path(os.fspath(out_dir))
    check_output_apart([it[key] for it in items for key in ("image", "masks")], out)
    _claim_output(out, "tile_dataset", [f"{sub}/{n}.tif" for n in tile_names for sub in ("images", "masks")])
    tiles = []
    for it in items:
        labels, mask_spacing = read_tiff_with_spacing(it["masks"])
        image, image_spacing = read_tiff_with_spacing(it["image"])
        image = _channel_first(image, labels, str(it["image"]))
        spacing = next((s for s in (mask_spacing, image_spacing) if s is not None and len(s) == labels.ndim), None)
        for n, (im, lab) in enumerate(tile_volume(image, labels, (gy, gx))):
            j, i = divmod(n, gx)
            name = f"{it['name']}_y{j}x{i}"
            image_path, mask_path = out / "images" / f"{name}.tif", out / "masks" / f"{name}.tif"
            _write_arrays(image_path, mask_path, im, lab, spacing)
            tiles.append(
                {
                    "image": str(image_path),
                    "masks": str(mask_path),
                    "name": name,
                    "split": "",
                    "source": str(it["image"]),
                    "tile": (j, i),
                    "shape": tuple(lab.shape),
                    "n_objects": int(lab.max()),
                }
            )
    return tiles
