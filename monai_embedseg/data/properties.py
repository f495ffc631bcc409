"""Dataset properties computed from instance labels: object sizes and extents, crop size, foreground weight.

Usage from the command line (release layout, see :mod:`monai_embedseg.data.datalist`)::

    monai-embedseg properties DATASET_DIR [--splits train val] [--spacing 2 1 1] [--output FILE]

prints the properties as JSON and writes them to ``FILE`` when ``--output`` is given.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_embedseg.embedding import resolve_spacing
from monai_embedseg.labels import check_instance_labels, instance_bboxes
from monai_embedseg.utils.files import atomic_output

__all__ = [
    "compute_dataset_properties",
    "compute_release_properties",
    "save_properties",
    "load_properties",
    "CROP_MULTIPLE",
    "CROP_N_STD",
]

#: crop sizes are rounded up to a multiple of this
CROP_MULTIPLE = 8
#: crop size = mean object extent + CROP_N_STD standard deviations
CROP_N_STD = 5.0
#: percentile of the training objects' sizes recorded as ``small_object_size``
SMALL_OBJECT_PERCENTILE = 5.0

PathLike = str | os.PathLike


def _load_label_file(path: PathLike) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Read a label file (TIFF or NIfTI) and the spacing it records (None if none)."""
    name = os.fspath(path)
    low = name.lower()
    if low.endswith((".tif", ".tiff")):
        from monai_embedseg.data.io import read_tiff_with_spacing

        return read_tiff_with_spacing(name)
    if low.endswith((".nii", ".nii.gz")):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"label file not found: {name}")
        import nibabel as nib

        try:
            img = nib.load(name)
            arr = np.asanyarray(img.dataobj)
            zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
        except Exception as e:
            raise ValueError(f"cannot read NIfTI file {name}: {type(e).__name__}: {e}") from e
        return arr, zooms
    raise ValueError(f"unsupported label file type (need .tif, .tiff, .nii or .nii.gz): {name}")


def _as_label(arr: Any, where: str, one_hot: bool) -> np.ndarray:
    """Validate one label array (:func:`~monai_embedseg.labels.check_instance_labels`); return it channel-first.

    A label map may come as ``(Y, X)``, ``(Z, Y, X)`` or with a leading channel of 1; a one-hot stack as
    ``(N, *spatial)``.
    """
    arr = np.asarray(arr.detach().cpu() if hasattr(arr, "detach") else arr)
    if not one_hot and not (arr.ndim in (3, 4) and arr.shape[0] == 1):
        arr = arr[None]
    return np.asarray(check_instance_labels(arr, one_hot=one_hot, source=where))


def _label_stats(lab: np.ndarray, one_hot: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Object sizes ``(K,)``, bounding-box extents ``(K, D)`` and foreground voxel count of ``(C, *spatial)`` labels."""
    _, starts, stops, sizes = instance_bboxes(lab, one_hot)
    foreground = int((lab != 0).any(0).sum()) if one_hot else int(sizes.sum())
    return sizes, stops - starts, foreground


def compute_dataset_properties(
    label_files_or_arrays: Sequence[PathLike | np.ndarray] | PathLike | np.ndarray,
    spacing: Sequence[float] | float | None = None,
    one_hot: bool = False,
    default_spacing: Sequence[float] | float | None = None,
) -> dict:
    """Statistics of the objects in a set of instance label images.

    Args:
        label_files_or_arrays: label maps ``(Y, X)`` / ``(Z, Y, X)`` (a leading channel of 1 is dropped) or, with
            ``one_hot=True``, stacks ``(N, Y, X)`` / ``(N, Z, Y, X)``; arrays (numpy / torch) or TIFF / NIfTI files.
        spacing: pixel size per spatial axis (z, y, x order). ``None``: the spacing recorded in the first file that
            has one, else ``default_spacing``, else 1 per axis.
        one_hot: the inputs are one-hot stacks (overlapping objects) instead of label maps.
        default_spacing: the spacing to use when ``spacing`` is ``None`` and no file records one.

    Returns:
        JSON-ready dict: ``n_images``, ``n_objects``, ``max_objects_per_image``, ``spatial_dims``, ``spacing``,
        ``spacing_source`` (``"argument"``, ``"metadata"``, ``"default"`` or ``"unit"``),
        ``min_object_size``, ``mean_object_size``, ``max_object_size``, ``small_object_size`` (the 5th percentile of
        the object sizes: the threshold search never drops objects larger than it; pixels), ``object_extent_mean`` and
        ``object_extent_std`` (bounding-box extent per axis, pixels), ``crop_size`` (per axis:
        ``mean + 5 std`` rounded up to a multiple of 8), ``foreground_weight`` (background / foreground voxels),
        ``image_shape_min``, ``image_shape_max``, ``one_hot``.

    Raises:
        TypeError: a label array of a non-numeric dtype.
        ValueError: fractional, NaN or negative labels, wrong dimensions, mixed 2D / 3D inputs, no objects at all.
        FileNotFoundError: a missing file.
    """
    if isinstance(label_files_or_arrays, (str, os.PathLike, np.ndarray)) or hasattr(label_files_or_arrays, "detach"):
        label_files_or_arrays = [label_files_or_arrays]
    items = list(label_files_or_arrays)
    if not items:
        raise ValueError("no label images given.")
    stats, file_spacing = _collect_label_stats(items, spacing, one_hot)
    sizes = np.concatenate([st["sizes"] for st in stats])
    if len(sizes) == 0:
        folders = sorted({str(Path(i).parent) for i in items if isinstance(i, (str, os.PathLike))})
        where = f" in {', '.join(folders[:3])}" if folders else ""
        raise ValueError(f"no objects found in any of the {len(items)} label images{where}: every mask is empty.")
    extents = np.concatenate([st["extents"] for st in stats]).astype(np.float64)
    spatial_dims = extents.shape[1]
    candidates = {"argument": spacing, "metadata": file_spacing, "default": default_spacing}
    source = next((name for name, value in candidates.items() if value is not None), "unit")
    sp = resolve_spacing(candidates.get(source), spatial_dims)
    mean, std = extents.mean(0), extents.std(0)
    crop = [
        int(max(CROP_MULTIPLE, math.ceil((m + CROP_N_STD * s) / CROP_MULTIPLE) * CROP_MULTIPLE))
        for m, s in zip(mean, std)
    ]
    shapes = np.asarray([st["shape"] for st in stats])
    n_fg = sum(st["foreground"] for st in stats)
    n_total = int(sum(np.prod(st["shape"]) for st in stats))
    return {
        "n_images": len(items),
        "n_objects": int(len(sizes)),
        "max_objects_per_image": int(max(len(st["sizes"]) for st in stats)),
        "spatial_dims": int(spatial_dims),
        "spacing": [float(s) for s in sp],
        "spacing_source": source,
        "min_object_size": int(sizes.min()),
        "mean_object_size": float(sizes.mean()),
        "max_object_size": int(sizes.max()),
        "small_object_size": int(np.percentile(sizes, SMALL_OBJECT_PERCENTILE)),
        "object_extent_mean": [float(m) for m in mean],
        "object_extent_std": [float(s) for s in std],
        "crop_size": crop,
        "foreground_weight": float((n_total - n_fg) / n_fg),
        "image_shape_min": [int(s) for s in shapes.min(0)],
        "image_shape_max": [int(s) for s in shapes.max(0)],
        "one_hot": bool(one_hot),
    }


def _collect_label_stats(
    items: Sequence, spacing: Sequence[float] | float | None, one_hot: bool
) -> tuple[list[dict], tuple[float, ...] | None]:
    """Per label image: object ``sizes (K,)``, ``extents (K, D)``, ``foreground`` count and spatial ``shape``.

    Returns:
        the per-image stats and the spacing recorded in the first file that has one (``None`` if none does).

    Raises:
        ValueError: invalid labels (naming the file) or 2D and 3D labels mixed.
    """
    stats: list[dict] = []
    file_spacing: tuple[float, ...] | None = None
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            where = os.fspath(item)
            arr, sp = _load_label_file(where)
        else:
            where, arr, sp = f"label array #{i}", item, None
        lab = _as_label(arr, where, one_hot)
        spatial = lab.shape[1:]
        if stats and len(spatial) != len(stats[0]["shape"]):
            raise ValueError(
                f"{where}: {len(spatial)}D labels mixed with {len(stats[0]['shape'])}D labels (shape {lab.shape})."
            )
        if sp is not None and len(sp) == len(spatial):
            if file_spacing is None:
                file_spacing = tuple(sp)
            elif spacing is None and not np.allclose(sp, file_spacing):
                warnings.warn(
                    f"{where}: spacing {sp} differs from {file_spacing} (first file); using the first.", stacklevel=2
                )
        sizes, extents, foreground = _label_stats(lab, one_hot)
        stats.append({"sizes": sizes, "extents": extents, "foreground": foreground, "shape": tuple(spatial)})
    return stats, file_spacing


def compute_release_properties(
    root: PathLike,
    splits: Sequence[str] = ("train",),
    spacing: Sequence[float] | float | None = None,
    one_hot: bool | str = "auto",
) -> dict:
    """:func:`compute_dataset_properties` over the masks of some splits of a release-layout dataset.

    Args:
        root: dataset folder (``<root>/<split>/masks/...``).
        splits: split folders to include (default only ``"train"``, so test labels do not leak into settings).
        spacing: as in :func:`compute_dataset_properties`.
        one_hot: ``"auto"``: use ``masks_onehot`` when every split has it; True: require it; False: label maps.

    Returns:
        the properties dict, with ``dataset_dir`` and ``splits`` added.
    """
    from monai_embedseg.data.datalist import release_datalist

    if isinstance(splits, str):
        splits = [splits]
    items = []
    for split in splits:
        items += release_datalist(root, split=split, one_hot=one_hot)
    use_onehot = one_hot is not False and all("label_onehot" in d for d in items)
    files = [d["label_onehot"] if use_onehot else d["label"] for d in items]
    props = compute_dataset_properties(files, spacing=spacing, one_hot=use_onehot)
    props["dataset_dir"] = os.path.abspath(os.fspath(root))
    props["splits"] = list(splits)
    return props


def save_properties(props: dict, path: PathLike, overwrite: bool = False) -> str:
    """Atomically write a properties dict as JSON (temporary file in the same folder, then moved into place).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        TypeError: ``props`` is not JSON-serialisable.
    """
    path = os.fspath(path)
    text = json.dumps(props, indent=2, sort_keys=True) + "\n"  # fails before any file is touched
    with atomic_output(path, overwrite) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return path


def load_properties(path: PathLike) -> dict:
    """Read a properties JSON file written by :func:`save_properties`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON or does not hold a dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"properties file not found: {path}")
    try:
        with open(path) as f:
            props = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"properties file {path} is not valid JSON: {e}") from e
    if not isinstance(props, dict):
        raise ValueError(f"properties file {path} must hold a JSON object, got {type(props).__name__}.")
    return props
