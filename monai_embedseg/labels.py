"""Instance labels: the two formats, the one validator every module uses, the one-hot collapse, bounding boxes,
the objects cut by the image border.

Two label formats are used throughout the package:

* **label map** ``(1, *spatial)``, integer, 0 = background, ids >= 1 (ids need not be consecutive);
* **one-hot stack** ``(N, *spatial)``, binary, one channel per object, channels may overlap (empty channels allowed).

With ``one_hot=None`` the format is decided from the channel count (1 channel = label map, otherwise one-hot).
Every error message names the file the labels came from (``meta["filename_or_obj"]`` of a MetaTensor, or the
``source`` given).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.utils import convert_data_type, convert_to_dst_type, convert_to_tensor
from scipy import ndimage

from monai_embedseg.constants import BINCOUNT_ID_LIMIT, SPARSE_ID_LIMIT

__all__ = [
    "label_source",
    "file_hint",
    "is_one_hot",
    "check_channel_first",
    "check_instance_labels",
    "one_hot_to_label_map",
    "instance_bboxes",
    "unique_ids",
    "compute_tensor",
    "border_ids",
]

# unsigned types that torch can hold but not reduce/compare in all ops: widen them for computation
_TORCH_WIDEN = {getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n)}


def label_source(*arrays: Any) -> str | None:
    """Return the file name (``meta["filename_or_obj"]``) of the first MetaTensor among ``arrays`` that has one."""
    for a in arrays:
        if isinstance(a, MetaTensor):
            name = a.meta.get("filename_or_obj")
            if isinstance(name, (list, tuple)):  # collated batch
                name = ", ".join(str(n) for n in name)
            if name is not None and str(name) != "":
                return str(name)
    return None


def file_hint(source: str | None) -> str:
    """`` [file: name]`` for error messages (says so when the file is unknown)."""
    return f" [file: {source}]" if source else " [file: unknown, no MetaTensor 'filename_or_obj']"


def is_one_hot(x: NdarrayOrTensor, one_hot: bool | None) -> bool:
    """Whether ``x`` ``(C, *spatial)`` is a one-hot stack: ``one_hot`` if given, else ``C != 1``."""
    return x.shape[0] != 1 if one_hot is None else bool(one_hot)


def check_channel_first(x: Any, what: str, source: str | None = None) -> None:
    """Raise unless ``x`` is an array/tensor ``(C, *spatial)`` with 2 or 3 spatial dims; messages name ``source``."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}{file_hint(source)}.")
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{what} must be channel-first (C, *spatial) with 2 or 3 spatial dims (3 or 4 dims in all), "
            f"got shape {tuple(x.shape)}{file_hint(source)}."
        )


def compute_tensor(x: NdarrayOrTensor) -> torch.Tensor:
    """Plain torch tensor for computation (unsigned types torch cannot reduce are widened to int64)."""
    t = convert_to_tensor(x, track_meta=False)
    if t.dtype in _TORCH_WIDEN:
        t = t.to(torch.int64)
    return t


def unique_ids(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted unique values, inverse indices and counts of ``t`` (as ``torch.unique``).

    Non-negative integer labels with moderate ids go through a bincount lookup table, several times faster than
    ``torch.unique`` on CPU.
    """
    if t.numel() and not t.is_floating_point() and t.dtype != torch.bool:
        lo, hi = int(t.min()), int(t.max())
        if lo >= 0 and hi <= max(4 * t.numel(), BINCOUNT_ID_LIMIT):
            flat = t.reshape(-1).to(torch.int64)
            present = torch.bincount(flat, minlength=hi + 1)
            uniq = present.nonzero(as_tuple=True)[0]
            lut = torch.zeros(hi + 1, dtype=torch.int64, device=t.device)
            lut[uniq] = torch.arange(uniq.numel(), device=t.device)
            return uniq.to(t.dtype), lut[flat].reshape(t.shape), present[uniq]
    return torch.unique(t, sorted=True, return_inverse=True, return_counts=True)


def instance_bboxes(
    label: NdarrayOrTensor, one_hot: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounding boxes and sizes of all instances present in ``label``.

    Label maps use one ``scipy.ndimage.find_objects`` pass; one-hot stacks use per-axis projections (vectorised).

    Args:
        label: label map ``(1, *spatial)`` (non-negative integers) or one-hot stack ``(N, *spatial)``.
        one_hot: format; ``None`` = decide from the channel count.

    Returns:
        ``(keys, starts, stops, sizes)``: ``keys (K,)`` the label ids (label map) or channel indices (one-hot) of the
        ``K`` non-empty instances, ``starts``/``stops (K, D)`` the half-open bounding boxes, ``sizes (K,)`` voxel
        counts.
    """
    arr = convert_data_type(label, np.ndarray)[0]
    sd = arr.ndim - 1
    if is_one_hot(arr, one_hot):
        mask = arr != 0
        n = mask.shape[0]
        sizes = mask.reshape(n, int(np.prod(mask.shape[1:]))).sum(1)
        keys = np.nonzero(sizes)[0]
        mask = mask[keys]
        starts = np.zeros((len(keys), sd), np.int64)
        stops = np.zeros((len(keys), sd), np.int64)
        for d in range(sd):
            proj = mask.any(axis=tuple(a + 1 for a in range(sd) if a != d))  # (K, size_d)
            starts[:, d] = proj.argmax(1)
            stops[:, d] = proj.shape[1] - proj[:, ::-1].argmax(1)
        return keys, starts, stops, sizes[keys].astype(np.int64)
    lab = arr[0]
    if lab.dtype == bool or (lab.dtype.kind == "u" and lab.dtype.itemsize >= 8):
        lab = lab.astype(np.int64)
    if lab.size == 0 or lab.max() == 0:
        empty = np.zeros((0, sd), np.int64)
        return np.zeros(0, np.int64), empty, empty.copy(), np.zeros(0, np.int64)
    values = None
    if lab.max() > max(SPARSE_ID_LIMIT, lab.size):  # sparse huge ids: compact them first
        values, inverse = np.unique(np.concatenate([[0], lab.ravel()]), return_inverse=True)
        lab = inverse[1:].reshape(lab.shape)  # values[k] is the original id of compact id k
    counts = np.bincount(lab.ravel())
    boxes = ndimage.find_objects(lab)
    compact = np.array([i + 1 for i, b in enumerate(boxes) if b is not None], np.int64)
    starts = np.array([[s.start for s in boxes[k - 1]] for k in compact], np.int64).reshape(-1, sd)
    stops = np.array([[s.stop for s in boxes[k - 1]] for k in compact], np.int64).reshape(-1, sd)
    keys = compact if values is None else values[compact].astype(np.int64)
    return keys, starts, stops, counts[compact].astype(np.int64)


def check_instance_labels(
    label: NdarrayOrTensor,
    one_hot: bool | None = None,
    require_objects: bool = False,
    source: str | None = None,
    what: str = "instance labels",
) -> NdarrayOrTensor:
    """Check that ``label`` is a valid label map ``(1, *spatial)`` or one-hot stack ``(N, *spatial)``.

    Integer and bool arrays pass unchanged. Float arrays are accepted only when every value is an integer (as when a
    label map was saved as float); they are cast to ``int32`` (label map; ``int64`` if an id exceeds the int32 range)
    or ``uint8`` (one-hot). Any other float value is an error.

    Args:
        label: the labels to check (numpy or torch, MetaTensor metadata is kept).
        one_hot: ``True`` one-hot stack, ``False`` label map (exactly one channel), ``None`` decide from channels.
        require_objects: raise when there is no object at all.
        source: file name for messages; defaults to ``label.meta["filename_or_obj"]`` for a MetaTensor.
        what: what the labels are called in messages (e.g. ``"y_pred"``).

    Returns:
        ``label``, cast to an integer type if it was an integer-valued float array; same kind as the input.

    Raises:
        TypeError: not an array/tensor, or complex/object dtype.
        ValueError: wrong number of dims, one-channel requirement violated, NaN/inf, non-integer or negative values,
            non-binary one-hot values, or no objects while ``require_objects``. Every message names the file.
    """
    source = source or label_source(label)
    check_channel_first(label, what, source)
    oh = is_one_hot(label, one_hot)
    if one_hot is False and label.shape[0] != 1:
        raise ValueError(
            f"a label map must have exactly one channel, got shape {tuple(label.shape)}; pass one_hot=True for a "
            f"one-hot stack{file_hint(source)}."
        )
    is_np = isinstance(label, np.ndarray)
    dtype = label.dtype
    if (dtype.kind not in "biuf") if is_np else dtype.is_complex:
        raise TypeError(f"{what} must be integer (or integer-valued float), dtype {dtype}{file_hint(source)}.")
    if (label.size if is_np else label.numel()) == 0:
        if require_objects:
            raise ValueError(f"{what} contain no objects (empty array {tuple(label.shape)}){file_hint(source)}.")
        return label
    if (dtype == np.bool_) if is_np else (dtype == torch.bool):
        if require_objects and not bool(label.any()):
            raise ValueError(f"{what} contain no objects (all background){file_hint(source)}.")
        return label
    t = compute_tensor(label)
    is_float = t.is_floating_point()
    if is_float:
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_bad = int((~finite).sum())
            raise ValueError(f"{what} contain {n_bad} NaN or infinite values{file_hint(source)}.")
        frac = t != torch.round(t)
        if bool(frac.any()):
            example = float(t[frac].reshape(-1)[0])
            raise ValueError(
                f"{what} must be integer-valued, found non-integer value {example} (dtype {dtype}); "
                f"labels should not be interpolated{file_hint(source)}."
            )
    lo, hi = float(t.min()), float(t.max())
    if lo < 0:
        raise ValueError(f"{what} must be non-negative (0 = background), found min {lo:g}{file_hint(source)}.")
    if oh and hi > 1:
        raise ValueError(
            f"one-hot {what} {tuple(label.shape)} must be binary, found value {hi:g}; a multi-channel "
            f"label map is not supported (one channel per object){file_hint(source)}."
        )
    if require_objects and hi == 0:
        raise ValueError(f"{what} contain no objects (all background){file_hint(source)}.")
    if is_float:
        target = torch.uint8 if oh else (torch.int32 if hi < 2**31 else torch.int64)
        return convert_to_dst_type(t.to(target), label, dtype=target)[0]
    return label


def one_hot_to_label_map(stack: NdarrayOrTensor, dtype: torch.dtype | np.dtype | type | None = None) -> NdarrayOrTensor:
    """Collapse a one-hot stack ``(N, *spatial)`` into a label map ``(1, *spatial)``: channel ``c`` -> id ``c + 1``.

    Where channels overlap the **later channel wins** (the largest id). Empty channels leave unused ids.

    Args:
        stack: binary ``(N, *spatial)``, numpy or torch (``N = 0`` gives an all-background map).
        dtype: output dtype (default ``int64``).

    Returns:
        ``(1, *spatial)`` label map, the same kind as ``stack`` (a MetaTensor keeps its metadata).
    """
    check_channel_first(stack, "one-hot stack", label_source(stack))
    t = compute_tensor(stack)
    sp = t.shape[1:]
    out = torch.zeros(int(np.prod(sp)), dtype=torch.int64, device=t.device)
    c, p = t.reshape(t.shape[0], int(np.prod(sp))).ne(0).nonzero(as_tuple=True)
    out.scatter_reduce_(0, p, c + 1, reduce="amax")
    return convert_to_dst_type(out.reshape(1, *sp), stack, dtype=dtype or torch.int64)[0]


def border_ids(labels: np.ndarray, faces: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """The ids (> 0, sorted) of the objects of a label map ``(*spatial)`` with a pixel on the image border.

    Args:
        labels: integer label map ``(*spatial)`` (no channel axis), 0 = background.
        faces: the faces to look at, as ``(axis, side)`` with ``side`` 0 (first plane) or -1 (last plane);
            default every face of every axis.
    """
    labels = np.asarray(labels)
    if faces is None:
        faces = [(d, side) for d in range(labels.ndim) for side in (0, -1)]
    planes = [np.unique(np.take(labels, side, axis=d)) for d, side in faces]
    ids = np.unique(np.concatenate(planes)) if planes else np.zeros(0, labels.dtype)
    return ids[ids > 0]
