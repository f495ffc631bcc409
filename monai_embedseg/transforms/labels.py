"""Instance-label hygiene: validation, consecutive relabelling, label map <-> one-hot, holes and small objects.

Two label formats are used throughout the package:

* **label map** ``(1, *spatial)``, integer, 0 = background, ids >= 1 (ids need not be consecutive);
* **one-hot stack** ``(N, *spatial)``, binary, one channel per object, channels may overlap (empty channels allowed).

With ``one_hot=None`` the transforms decide from the channel count (1 channel = label map, otherwise one-hot).

Why not MONAI's ``FillHoles`` / ``RemoveSmallObjects`` (checked against MONAI 1.6.1, scikit-image 0.26):

* ``monai.transforms.FillHoles`` does fill per label value, but (a) everything enclosed by an object is set to that
  object, so another instance lying inside it (nested objects) is erased, (b) for a one-hot input it treats channel 0
  as background and never fills it (our stacks have no background channel), (c) it floods the whole image once per
  label, which is slow for hundreds of instances. :class:`FillHolesPerObject` fills only background pixels, handles
  one-hot stacks channel-wise and works inside each object's bounding box.
* ``monai.transforms.RemoveSmallObjects`` calls ``skimage.morphology.remove_small_objects`` on the whole
  ``(C, *spatial)`` array: a label map whose only id is 1 is treated as a binary mask (sizes per connected component),
  one with more ids per id value, and the channels of a one-hot stack touch along the channel axis (an object
  overlapping another is measured together with it). It also emits a scikit-image deprecation warning.
  :class:`RemoveSmallInstances` measures every instance (id or channel) on its own, optionally in physical units, and can
  relabel consecutively afterwards.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type, convert_to_tensor
from scipy import ndimage

from monai_embedseg.embedding import resolve_spacing

__all__ = [
    "check_instance_labels",
    "instance_bboxes",
    "label_source",
    "RelabelConsecutive",
    "RelabelConsecutived",
    "RelabelConsecutiveD",
    "RelabelConsecutiveDict",
    "FillHolesPerObject",
    "FillHolesPerObjectd",
    "FillHolesPerObjectD",
    "FillHolesPerObjectDict",
    "RemoveSmallInstances",
    "RemoveSmallInstancesd",
    "RemoveSmallInstancesD",
    "RemoveSmallInstancesDict",
    "ValidateInstanceLabels",
    "ValidateInstanceLabelsd",
    "ValidateInstanceLabelsD",
    "ValidateInstanceLabelsDict",
    "OneHotToLabel",
    "OneHotToLabeld",
    "OneHotToLabelD",
    "OneHotToLabelDict",
    "LabelToOneHot",
    "LabelToOneHotd",
    "LabelToOneHotD",
    "LabelToOneHotDict",
]

_BACKEND = [TransformBackends.TORCH, TransformBackends.NUMPY]
# unsigned types that torch can hold but not reduce/compare in all ops: widen them for computation
_TORCH_WIDEN = {getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n)}


# ----------------------------------------------------------------------------------------------------- helpers
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


def _where(source: str | None) -> str:
    return f" [file: {source}]" if source else " [file: unknown, no MetaTensor 'filename_or_obj']"


def _is_one_hot(x: NdarrayOrTensor, one_hot: bool | None) -> bool:
    return x.shape[0] != 1 if one_hot is None else bool(one_hot)


def _check_ndim(x: Any, what: str, source: str | None = None) -> None:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}{_where(source)}.")
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{what} must be channel-first (C, *spatial) with 2 or 3 spatial dims (3 or 4 dims in all), "
            f"got shape {tuple(x.shape)}{_where(source)}."
        )


def _compute_tensor(x: NdarrayOrTensor) -> torch.Tensor:
    """Plain torch tensor for computation (unsigned types torch cannot reduce are widened to int64)."""
    t = convert_to_tensor(x, track_meta=False)
    if t.dtype in _TORCH_WIDEN:
        t = t.to(torch.int64)
    return t


def _unique_ids(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted unique values, inverse indices and counts of ``t`` (as ``torch.unique``).

    Non-negative integer labels with moderate ids go through a bincount lookup table, several times faster than
    ``torch.unique`` on CPU.
    """
    if t.numel() and not t.is_floating_point() and t.dtype != torch.bool:
        lo, hi = int(t.min()), int(t.max())
        if lo >= 0 and hi <= max(4 * t.numel(), 2**16):
            flat = t.reshape(-1).to(torch.int64)
            present = torch.bincount(flat, minlength=hi + 1)
            uniq = present.nonzero(as_tuple=True)[0]
            lut = torch.zeros(hi + 1, dtype=torch.int64, device=t.device)
            lut[uniq] = torch.arange(uniq.numel(), device=t.device)
            return uniq.to(t.dtype), lut[flat].reshape(t.shape), present[uniq]
    return torch.unique(t, sorted=True, return_inverse=True, return_counts=True)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``(C, *spatial)`` -> ``(C, prod(spatial))`` (also for ``C = 0``)."""
    return t.reshape(t.shape[0], int(np.prod(t.shape[1:])))


def _expand(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(-1, *([1] * (ndim - 1)))


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
    if _is_one_hot(arr, one_hot):
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
    if lab.dtype == bool:
        lab = lab.astype(np.uint8)
    if lab.size == 0 or lab.max() == 0:
        empty = np.zeros((0, sd), np.int64)
        return np.zeros(0, np.int64), empty, empty.copy(), np.zeros(0, np.int64)
    counts = np.bincount(lab.ravel())
    boxes = ndimage.find_objects(lab)
    keys = np.array([i + 1 for i, b in enumerate(boxes) if b is not None], np.int64)
    starts = np.array([[s.start for s in boxes[k - 1]] for k in keys], np.int64)
    stops = np.array([[s.stop for s in boxes[k - 1]] for k in keys], np.int64)
    return keys, starts, stops, counts[keys].astype(np.int64)


def check_instance_labels(
    label: NdarrayOrTensor,
    one_hot: bool | None = None,
    require_objects: bool = False,
    source: str | None = None,
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

    Returns:
        ``label``, cast to an integer type if it was an integer-valued float array; same kind as the input.

    Raises:
        TypeError: not an array/tensor, or complex/object dtype.
        ValueError: wrong number of dims, one-channel requirement violated, NaN/inf, non-integer or negative values,
            non-binary one-hot values, or no objects while ``require_objects``. Every message names the file.
    """
    source = source or label_source(label)
    _check_ndim(label, "instance labels", source)
    oh = _is_one_hot(label, one_hot)
    if one_hot is False and label.shape[0] != 1:
        raise ValueError(
            f"a label map must have exactly one channel, got shape {tuple(label.shape)}; pass one_hot=True for a "
            f"one-hot stack{_where(source)}."
        )
    is_np = isinstance(label, np.ndarray)
    dtype = label.dtype
    if (dtype.kind not in "biuf") if is_np else dtype.is_complex:
        raise TypeError(f"instance labels must be integer (or integer-valued float), dtype {dtype}{_where(source)}.")
    if (label.size if is_np else label.numel()) == 0:
        if require_objects:
            raise ValueError(f"instance labels contain no objects (empty array {tuple(label.shape)}){_where(source)}.")
        return label
    if (dtype == np.bool_) if is_np else (dtype == torch.bool):
        if require_objects and not bool(label.any()):
            raise ValueError(f"instance labels contain no objects (all background){_where(source)}.")
        return label
    t = _compute_tensor(label)
    is_float = t.is_floating_point()
    if is_float:
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_bad = int((~finite).sum())
            raise ValueError(f"instance labels contain {n_bad} NaN or infinite values{_where(source)}.")
        frac = t != torch.round(t)
        if bool(frac.any()):
            example = float(t[frac].reshape(-1)[0])
            raise ValueError(
                f"instance labels must be integer-valued, found non-integer value {example} (dtype {dtype}); "
                f"labels should not be interpolated{_where(source)}."
            )
    lo, hi = float(t.min()), float(t.max())
    if lo < 0:
        raise ValueError(f"instance labels must be non-negative (0 = background), found min {lo:g}{_where(source)}.")
    if oh and hi > 1:
        raise ValueError(
            f"one-hot instance stack {tuple(label.shape)} must be binary, found value {hi:g}; a multi-channel "
            f"label map is not supported (one channel per object){_where(source)}."
        )
    if require_objects and hi == 0:
        raise ValueError(f"instance labels contain no objects (all background){_where(source)}.")
    if is_float:
        target = torch.uint8 if oh else (torch.int32 if hi < 2**31 else torch.int64)
        return convert_to_dst_type(t.to(target), label, dtype=target)[0]
    return label


# ----------------------------------------------------------------------------------------------------- transforms
class ValidateInstanceLabels(Transform):
    """Raise a clear error for invalid instance labels; see :func:`check_instance_labels` for the rules.

    Args:
        require_objects: raise when the labels contain no object.
        one_hot: ``True`` one-hot stack ``(N, *spatial)``, ``False`` label map ``(1, *spatial)``, ``None`` by
            channel count.
    """

    backend = _BACKEND

    def __init__(self, require_objects: bool = False, one_hot: bool | None = None) -> None:
        self.require_objects = require_objects
        self.one_hot = one_hot

    def __call__(self, label: NdarrayOrTensor, source: str | None = None) -> NdarrayOrTensor:
        """Check ``label`` ``(C, *spatial)``; returns it (integer-valued floats cast to int), same kind."""
        return check_instance_labels(label, self.one_hot, self.require_objects, source)


class ValidateInstanceLabelsd(MapTransform):
    """Dictionary twin of :class:`ValidateInstanceLabels`; also checks the image's spatial shape against the labels.

    Args:
        keys: label keys to check.
        image_key: optional image key; its spatial shape (``shape[1:]``) must equal each label's.
        require_objects: raise when a label contains no object.
        one_hot: label format, see :class:`ValidateInstanceLabels`.
        allow_missing_keys: do not raise for missing keys (including ``image_key``).
    """

    backend = _BACKEND

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str | None = None,
        require_objects: bool = False,
        one_hot: bool | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.validator = ValidateInstanceLabels(require_objects=require_objects, one_hot=one_hot)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        image = None
        if self.image_key is not None:
            if self.image_key in d:
                image = d[self.image_key]
            elif not self.allow_missing_keys:
                raise KeyError(f"image key {self.image_key!r} not found in data (keys: {list(d)}).")
        for key in self.key_iterator(d):
            label = d[key]
            source = label_source(label, image)
            d[key] = self.validator(label, source=source)
            if image is not None:
                _check_ndim(image, f"image '{self.image_key}'", source)
                if tuple(image.shape[1:]) != tuple(label.shape[1:]):
                    raise ValueError(
                        f"image '{self.image_key}' spatial shape {tuple(image.shape[1:])} (full {tuple(image.shape)}) "
                        f"!= label '{key}' spatial shape {tuple(label.shape[1:])} (full {tuple(label.shape)})"
                        f"{_where(source)}."
                    )
        return d


class RelabelConsecutive(Transform):
    """Make instance ids consecutive.

    A label map ``(1, *spatial)`` gets ids ``1..K`` in the order of the original ids (0 stays background; the dtype
    is kept). A one-hot stack ``(N, *spatial)`` loses its empty channels and becomes ``(K, *spatial)``
    (``K`` may be 0).

    Args:
        one_hot: ``True`` one-hot, ``False`` label map, ``None`` decide from the channel count.
    """

    backend = _BACKEND

    def __init__(self, one_hot: bool | None = None) -> None:
        self.one_hot = one_hot

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Relabel ``img`` (label map ``(1, *sp)`` or one-hot ``(N, *sp)``); returns the same kind and dtype."""
        _check_ndim(img, "instance labels", label_source(img))
        t = _compute_tensor(img)
        if _is_one_hot(img, self.one_hot):
            out = t[_flat(t).ne(0).any(1)]
        else:
            if img.shape[0] != 1:
                raise ValueError(f"a label map must have one channel, got shape {tuple(img.shape)}.")
            uniq, inv, _ = _unique_ids(t)
            if uniq.numel() and uniq[0] < 0:
                raise ValueError(f"negative instance label {uniq[0].item()}{_where(label_source(img))}.")
            out = inv if (uniq.numel() and uniq[0] == 0) else inv + 1
        return convert_to_dst_type(out, img, dtype=img.dtype)[0]


class OneHotToLabel(Transform):
    """Collapse a one-hot stack ``(N, *spatial)`` into a label map ``(1, *spatial)`` with channel ``c`` -> id ``c+1``.

    Where channels overlap the **later channel wins** (largest id). Empty channels leave unused ids, so follow with
    :class:`RelabelConsecutive` if consecutive ids are needed.

    Args:
        dtype: output dtype (default ``int32``; numpy input gives the numpy equivalent).
    """

    backend = _BACKEND

    def __init__(self, dtype: torch.dtype | np.dtype | type = torch.int32) -> None:
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Convert ``img`` ``(N, *sp)`` -> ``(1, *sp)``; returns the same kind."""
        _check_ndim(img, "one-hot stack", label_source(img))
        t = _compute_tensor(img)
        sp = t.shape[1:]
        out = torch.zeros(int(np.prod(sp)), dtype=torch.int64, device=t.device)
        c, p = _flat(t).ne(0).nonzero(as_tuple=True)
        out.scatter_reduce_(0, p, c + 1, reduce="amax")
        return convert_to_dst_type(out.reshape(1, *sp), img, dtype=self.dtype)[0]


class LabelToOneHot(Transform):
    """Expand a label map ``(1, *spatial)`` into a one-hot stack ``(K, *spatial)`` (``uint8`` by default).

    Channel ``k`` holds the ``k``-th smallest non-zero id, so ``K`` is the number of objects present.

    Args:
        num_channels: pad the stack with empty channels to this many (for batching); more objects -> ValueError.
        dtype: output dtype.
    """

    backend = _BACKEND

    def __init__(self, num_channels: int | None = None, dtype: torch.dtype | np.dtype | type = torch.uint8) -> None:
        self.num_channels = num_channels
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Convert ``img`` ``(1, *sp)`` -> ``(K, *sp)``; returns the same kind."""
        source = label_source(img)
        _check_ndim(img, "label map", source)
        if img.shape[0] != 1:
            raise ValueError(f"a label map must have one channel, got shape {tuple(img.shape)}{_where(source)}.")
        t = _compute_tensor(img)
        uniq, inv, _ = _unique_ids(t)
        if uniq.numel() and uniq[0] < 0:
            raise ValueError(f"negative instance label {uniq[0].item()}{_where(source)}.")
        has_bg = int(uniq.numel() > 0 and uniq[0] == 0)
        k = uniq.numel() - has_bg
        n = k if self.num_channels is None else int(self.num_channels)
        if k > n:
            raise ValueError(f"label map has {k} objects, more than num_channels={n}{_where(source)}.")
        flat = t.reshape(-1)
        p = flat.ne(0).nonzero(as_tuple=True)[0]
        out = torch.zeros((n, flat.numel()), dtype=torch.uint8, device=t.device)
        out[inv.reshape(-1)[p] - has_bg, p] = 1
        return convert_to_dst_type(out.reshape(n, *t.shape[1:]), img, dtype=self.dtype)[0]


class FillHolesPerObject(Transform):
    """Fill the holes of every instance, never touching other instances.

    A hole of an object is a connected set of **background** pixels that the object encloses (not reachable from
    outside its bounding box without crossing it). Pixels of other objects are left alone, so an instance nested
    inside another survives (MONAI's ``FillHoles`` overwrites it); background pixels enclosed by several (nested)
    objects go to the innermost one. One-hot stacks are processed channel-wise (channel 0 is an object, not
    background); "background" there means pixels where no channel is set.

    Args:
        connectivity: connectivity of the background flood (1..D orthogonal hops); ``None`` = full connectivity, as
            MONAI's ``FillHoles`` (a hole touching the outside only diagonally is not a hole).
        one_hot: ``True`` one-hot, ``False`` label map, ``None`` decide from the channel count.
    """

    backend = _BACKEND

    def __init__(self, connectivity: int | None = None, one_hot: bool | None = None) -> None:
        self.connectivity = connectivity
        self.one_hot = one_hot

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Fill holes in ``img`` (label map ``(1, *sp)`` or one-hot ``(N, *sp)``); same kind, shape and dtype."""
        source = label_source(img)
        _check_ndim(img, "instance labels", source)
        arr = np.array(convert_data_type(img, np.ndarray)[0], copy=True)
        sd = arr.ndim - 1
        one_hot = _is_one_hot(arr, self.one_hot)
        structure = ndimage.generate_binary_structure(sd, self.connectivity or sd)
        keys, starts, stops, _ = instance_bboxes(arr, one_hot)
        background = ~(arr != 0).any(0)
        fills = []
        for key, st, sp in zip(keys.tolist(), starts, stops):
            sl = tuple(slice(int(a), int(b)) for a, b in zip(st, sp))
            obj = arr[(key, *sl)] != 0 if one_hot else arr[(0, *sl)] == key
            filled = ndimage.binary_fill_holes(obj, structure=structure)
            add = filled & background[sl]
            if add.any():
                fills.append((int(filled.sum()), key, sl, add))
        if fills:
            owner = np.zeros(arr.shape[1:], np.int64)  # id (label map) or channel + 1 (one-hot); 0 = none
            for _, key, sl, add in sorted(fills, key=lambda f: -f[0]):  # outer first: inner objects win
                owner[sl][add] = key + 1 if one_hot else key
            idx = np.nonzero(owner)
            if one_hot:
                arr[(owner[idx] - 1, *idx)] = 1
            else:
                arr[(np.zeros_like(idx[0]), *idx)] = owner[idx]
        return convert_to_dst_type(arr, img, dtype=img.dtype)[0]


class RemoveSmallInstances(Transform):
    """Remove instances smaller than ``min_size``, measuring each instance (id or channel) on its own.

    An instance is all pixels of one id (label map) or one channel (one-hot), connected or not. Removed label-map
    objects become background; removed one-hot channels are zeroed (or dropped when ``relabel``).

    Args:
        min_size: instances with volume ``< min_size`` are removed; in pixels, or in physical units (area in 2D,
            volume in 3D) when ``spacing`` is given.
        spacing: physical pixel size per spatial axis (``None`` = 1, i.e. ``min_size`` in pixels).
        relabel: make the remaining ids consecutive (label map) / drop removed and empty channels (one-hot).
        one_hot: ``True`` one-hot, ``False`` label map, ``None`` decide from the channel count.
    """

    backend = _BACKEND

    def __init__(
        self,
        min_size: float = 64,
        spacing: Sequence[float] | float | None = None,
        relabel: bool = False,
        one_hot: bool | None = None,
    ) -> None:
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}.")
        self.min_size = min_size
        self.spacing = spacing
        self.relabel = relabel
        self.one_hot = one_hot

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Filter ``img`` (label map ``(1, *sp)`` or one-hot ``(N, *sp)``); same kind and dtype."""
        source = label_source(img)
        _check_ndim(img, "instance labels", source)
        voxel = float(np.prod(resolve_spacing(self.spacing, img.ndim - 1)))
        t = _compute_tensor(img)
        if _is_one_hot(img, self.one_hot):
            sizes = _flat(t).ne(0).sum(1)
            keep = sizes.to(torch.float64) * voxel >= self.min_size
            out = t[keep & sizes.gt(0)] if self.relabel else t * _expand(keep, t.ndim).to(t.dtype)
        else:
            if img.shape[0] != 1:
                raise ValueError(f"a label map must have one channel, got shape {tuple(img.shape)}{_where(source)}.")
            uniq, inv, counts = _unique_ids(t)
            if uniq.numel() and uniq[0] < 0:
                raise ValueError(f"negative instance label {uniq[0].item()}{_where(source)}.")
            keep = (counts.to(torch.float64) * voxel >= self.min_size) & uniq.ne(0)
            new_ids = torch.cumsum(keep.to(torch.int64), 0) if self.relabel else uniq.to(torch.int64)
            out = torch.where(keep, new_ids, 0)[inv]
        return convert_to_dst_type(out, img, dtype=img.dtype)[0]


# ----------------------------------------------------------------------------------------------------- dict twins
class _LabelMapd(MapTransform):
    """Apply an array transform to every key."""

    def __init__(self, keys: KeysCollection, transform: Transform, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform
        self.backend = transform.backend

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class RelabelConsecutived(_LabelMapd):
    """Dictionary twin of :class:`RelabelConsecutive` (same arguments plus ``keys``, ``allow_missing_keys``)."""

    def __init__(self, keys: KeysCollection, one_hot: bool | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, RelabelConsecutive(one_hot=one_hot), allow_missing_keys)


class OneHotToLabeld(_LabelMapd):
    """Dictionary twin of :class:`OneHotToLabel`."""

    def __init__(
        self, keys: KeysCollection, dtype: torch.dtype | np.dtype | type = torch.int32, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, OneHotToLabel(dtype=dtype), allow_missing_keys)


class LabelToOneHotd(_LabelMapd):
    """Dictionary twin of :class:`LabelToOneHot`."""

    def __init__(
        self,
        keys: KeysCollection,
        num_channels: int | None = None,
        dtype: torch.dtype | np.dtype | type = torch.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, LabelToOneHot(num_channels=num_channels, dtype=dtype), allow_missing_keys)


class FillHolesPerObjectd(_LabelMapd):
    """Dictionary twin of :class:`FillHolesPerObject`."""

    def __init__(
        self,
        keys: KeysCollection,
        connectivity: int | None = None,
        one_hot: bool | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, FillHolesPerObject(connectivity=connectivity, one_hot=one_hot), allow_missing_keys)


class RemoveSmallInstancesd(_LabelMapd):
    """Dictionary twin of :class:`RemoveSmallInstances`."""

    def __init__(
        self,
        keys: KeysCollection,
        min_size: float = 64,
        spacing: Sequence[float] | float | None = None,
        relabel: bool = False,
        one_hot: bool | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        t = RemoveSmallInstances(min_size=min_size, spacing=spacing, relabel=relabel, one_hot=one_hot)
        super().__init__(keys, t, allow_missing_keys)


RelabelConsecutiveD = RelabelConsecutiveDict = RelabelConsecutived
FillHolesPerObjectD = FillHolesPerObjectDict = FillHolesPerObjectd
RemoveSmallInstancesD = RemoveSmallInstancesDict = RemoveSmallInstancesd
ValidateInstanceLabelsD = ValidateInstanceLabelsDict = ValidateInstanceLabelsd
OneHotToLabelD = OneHotToLabelDict = OneHotToLabeld
LabelToOneHotD = LabelToOneHotDict = LabelToOneHotd
