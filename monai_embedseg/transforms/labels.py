"""Instance-label transforms: validation, consecutive relabelling, label map <-> one-hot, holes and small objects.

The label formats and the rules they are checked against live in :mod:`monai_embedseg.labels`; with
``one_hot=None`` the transforms decide from the channel count (1 channel = label map, otherwise one-hot).

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
  :class:`RemoveSmallInstances` measures every instance (id or channel) on its own, optionally in physical units,
  and can relabel consecutively afterwards.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type
from scipy import ndimage

from monai_embedseg.embedding import resolve_spacing
from monai_embedseg.labels import (
    check_channel_first,
    check_instance_labels,
    compute_tensor,
    file_hint,
    instance_bboxes,
    is_one_hot,
    label_source,
    one_hot_to_label_map,
    unique_ids,
)

__all__ = [
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


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``(C, *spatial)`` -> ``(C, prod(spatial))`` (also for ``C = 0``)."""
    return t.reshape(t.shape[0], int(np.prod(t.shape[1:])))


def _expand(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(-1, *([1] * (ndim - 1)))


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
                check_channel_first(image, f"image '{self.image_key}'", source)
                if tuple(image.shape[1:]) != tuple(label.shape[1:]):
                    raise ValueError(
                        f"image '{self.image_key}' spatial shape {tuple(image.shape[1:])} (full {tuple(image.shape)}) "
                        f"!= label '{key}' spatial shape {tuple(label.shape[1:])} (full {tuple(label.shape)})"
                        f"{file_hint(source)}."
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
        check_channel_first(img, "instance labels", label_source(img))
        t = compute_tensor(img)
        if is_one_hot(img, self.one_hot):
            out = t[_flat(t).ne(0).any(1)]
        else:
            if img.shape[0] != 1:
                raise ValueError(f"a label map must have one channel, got shape {tuple(img.shape)}.")
            uniq, inv, _ = unique_ids(t)
            if uniq.numel() and uniq[0] < 0:
                raise ValueError(f"negative instance label {uniq[0].item()}{file_hint(label_source(img))}.")
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
        return one_hot_to_label_map(img, self.dtype)


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
        check_channel_first(img, "label map", source)
        if img.shape[0] != 1:
            raise ValueError(f"a label map must have one channel, got shape {tuple(img.shape)}{file_hint(source)}.")
        t = compute_tensor(img)
        uniq, inv, _ = unique_ids(t)
        if uniq.numel() and uniq[0] < 0:
            raise ValueError(f"negative instance label {uniq[0].item()}{file_hint(source)}.")
        has_bg = int(uniq.numel() > 0 and uniq[0] == 0)
        k = uniq.numel() - has_bg
        n = k if self.num_channels is None else int(self.num_channels)
        if k > n:
            raise ValueError(f"label map has {k} objects, more than num_channels={n}{file_hint(source)}.")
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
        check_channel_first(img, "instance labels", source)
        arr = np.array(convert_data_type(img, np.ndarray)[0], copy=True)
        sd = arr.ndim - 1
        one_hot = is_one_hot(arr, self.one_hot)
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
        check_channel_first(img, "instance labels", source)
        voxel = float(np.prod(resolve_spacing(self.spacing, img.ndim - 1)))
        t = compute_tensor(img)
        if is_one_hot(img, self.one_hot):
            sizes = _flat(t).ne(0).sum(1)
            keep = sizes.to(torch.float64) * voxel >= self.min_size
            out = t[keep & sizes.gt(0)] if self.relabel else t * _expand(keep, t.ndim).to(t.dtype)
        else:
            if img.shape[0] != 1:
                raise ValueError(f"a label map must have one channel, got shape {tuple(img.shape)}{file_hint(source)}.")
            uniq, inv, counts = unique_ids(t)
            if uniq.numel() and uniq[0] < 0:
                raise ValueError(f"negative instance label {uniq[0].item()}{file_hint(source)}.")
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
