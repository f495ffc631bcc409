"""Datalists for the EmbedSeg release layout.

Layout (one folder per split, files paired by name)::

    <root>/<split>/images/<name>.tif
    <root>/<split>/masks/<name>.tif            instance label map, plain (Y, X) or (Z, Y, X)
    <root>/<split>/masks_onehot/<name>.tif     optional, (N, Y, X) / (N, Z, Y, X) stacks for overlapping objects

``.tif``, ``.tiff``, ``.nii`` and ``.nii.gz`` files are recognised; ``<name>`` is the file name without these
suffixes. Other files (e.g. ``.DS_Store``, notes) are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PathLike = str | os.PathLike

__all__ = ["release_datalist", "split_train_val", "scan_images", "IMAGE_SUFFIXES", "file_stem"]

#: recognised image suffixes (lower case), longest first so that ``.nii.gz`` wins over ``.gz``
IMAGE_SUFFIXES = (".nii.gz", ".tiff", ".tif", ".nii")


def file_stem(name: PathLike) -> str | None:
    """File name without its image suffix (``a.nii.gz`` -> ``a``), or None if the suffix is not recognised."""
    base = os.path.basename(os.fspath(name))
    low = base.lower()
    for suf in IMAGE_SUFFIXES:
        if low.endswith(suf) and len(base) > len(suf):
            return base[: -len(suf)]
    return None


def scan_images(folder: Path) -> dict[str, str]:
    """Map stem -> path for the image files in ``folder`` (hidden and unrecognised files ignored); duplicate stems
    are an error, a missing folder too."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    found: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        stem = file_stem(entry.name)
        if stem is None:
            continue
        if stem in found:
            raise ValueError(f"two files with the same name stem {stem!r} in {folder}: {found[stem]} and {entry}")
        found[stem] = str(entry)
    return found


def _missing_report(kind: str, folder: Path, names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(sorted(names)[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return f"{kind} {folder}: {shown}"


def release_datalist(root: PathLike, split: str = "train", one_hot: bool | str = "auto") -> list[dict]:
    """List the image / label files of one split of a release-layout dataset.

    Args:
        root: dataset folder holding ``<split>/images`` and ``<split>/masks``.
        split: sub-folder name, e.g. ``"train"``, ``"val"`` or ``"test"``.
        one_hot: ``"auto"``: add ``"label_onehot"`` when ``<split>/masks_onehot`` exists; ``True``: require it;
            ``False``: ignore it.

    Returns:
        dicts sorted by name with keys ``"image"``, ``"label"``, ``"name"`` (the file stem) and, with one-hot masks,
        ``"label_onehot"``; paths are strings.

    Raises:
        FileNotFoundError: ``root``, the split or one of its folders does not exist (the message names it).
        ValueError: images and masks do not pair up (the message lists the unpaired names), no images, or a bad
            ``one_hot`` value.
    """
    if one_hot not in ("auto", True, False):
        raise ValueError(f"one_hot must be 'auto', True or False, got {one_hot!r}.")
    root_p = Path(os.fspath(root))
    if not root_p.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root_p}")
    split_p = root_p / split
    if not split_p.is_dir():
        available = sorted(p.name for p in root_p.iterdir() if (p / "images").is_dir())
        raise FileNotFoundError(
            f"split {split!r} not found: {split_p} does not exist "
            f"(splits available in {root_p}: {available or 'none'})."
        )
    images = scan_images(split_p / "images")
    masks = scan_images(split_p / "masks")
    onehot_dir = split_p / "masks_onehot"
    use_onehot = one_hot is True or (one_hot == "auto" and onehot_dir.is_dir())
    onehots = scan_images(onehot_dir) if use_onehot else {}
    if not images:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {split_p / 'images'}.")
    problems = []
    if set(images) - set(masks):
        problems.append(_missing_report("no mask in", split_p / "masks", list(set(images) - set(masks))))
    if set(masks) - set(images):
        problems.append(
            _missing_report("no image for these masks in", split_p / "masks", list(set(masks) - set(images)))
        )
    if use_onehot:
        if set(images) - set(onehots):
            problems.append(_missing_report("no one-hot mask in", onehot_dir, list(set(images) - set(onehots))))
        if set(onehots) - set(images):
            problems.append(
                _missing_report("no image for these one-hot masks in", onehot_dir, list(set(onehots) - set(images)))
            )
    if problems:
        raise ValueError(f"unpaired files in {split_p}:\n  " + "\n  ".join(problems))
    out = []
    for name in sorted(images):
        item = {"image": images[name], "label": masks[name], "name": name}
        if use_onehot:
            item["label_onehot"] = onehots[name]
        out.append(item)
    return out


def split_train_val(
    datalist: Sequence[dict], val_fraction: float = 0.15, seed: int = 1000
) -> tuple[list[dict], list[dict]]:
    """Split a datalist into training and validation parts, reproducibly.

    Items are sorted by ``"name"`` (or ``"image"`` when there is no name) before a shuffle with
    ``numpy.random.default_rng(seed)``, so the split does not depend on the input order. The validation part has
    ``round(val_fraction * n)`` items, but at least one and at most ``n - 1``.

    Args:
        datalist: items (dicts); they are not copied.
        val_fraction: fraction in (0, 1) for validation.
        seed: shuffle seed.

    Returns:
        ``(train, val)``, each sorted by name.

    Raises:
        ValueError: fewer than 2 items, a fraction outside (0, 1), or duplicate names.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    items = list(datalist)
    if len(items) < 2:
        first = items[0] if items and isinstance(items[0], dict) else {}
        where = f" ({Path(str(first['image'])).parent})" if "image" in first else ""
        raise ValueError(
            f"need at least 2 training images to hold some out for validation, got {len(items)}{where}; add more, "
            "or a val/ split beside train/."
        )

    def key(d: dict) -> str:
        return str(d.get("name", d.get("image", "")))

    keys = [key(d) for d in items]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate item names in datalist: {dup[:10]}")
    items.sort(key=key)
    n = len(items)
    n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    train = [d for i, d in enumerate(items) if i not in val_idx]
    val = [d for i, d in enumerate(items) if i in val_idx]
    return train, val
