"""On-the-fly object-centered random crops: each patch is centered on one (jittered) instance of the label."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import Crop, MapTransform, Pad, RandomizableTransform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import (
    ImageMetaKey,
    TransformBackends,
    convert_to_dst_type,
    convert_to_tensor,
    ensure_tuple_rep,
    fall_back_tuple,
)

from monai_embedseg.labels import check_instance_labels, file_hint, instance_bboxes, is_one_hot, label_source

__all__ = ["RandObjectCrop", "RandObjectCropd", "RandObjectCropD", "RandObjectCropDict"]

_WEIGHTINGS = ("uniform", "size")


class RandObjectCrop(RandomizableTransform, MultiSampleTrait):
    """Crop ``num_samples`` windows of ``crop_size``, each centered on a randomly chosen instance of a label.

    For every sample one instance of ``label`` (label map ``(1, *spatial)`` or one-hot stack ``(N, *spatial)``) is
    drawn uniformly (``weighting="uniform"``) or with probability proportional to its voxel count
    (``weighting="size"``). The window center is the instance's bounding-box center plus a uniform jitter in
    ``[-jitter * crop_size, +jitter * crop_size]`` per axis (with ``jitter <= 0.5`` the bounding-box center always lies
    inside the window; with ``jitter = 0`` it is the window center, to half a pixel for even sizes). Parts of the window
    outside the image are padded (``mode``, default constant 0).

    A label without any instance falls back to a uniformly random window: a uniformly drawn position where the window
    fits in the image, centered (and padded) on axes where it does not.

    Bounding boxes come from one ``scipy.ndimage.find_objects`` pass per call (shared by all samples).

    Args:
        crop_size: window size per spatial axis (an int is repeated); entries ``<= 0`` or ``None`` mean the whole axis.
        num_samples: number of windows returned per call.
        jitter: maximal center jitter as a fraction of ``crop_size`` (``0 <= jitter <= 0.5``).
        weighting: ``"uniform"`` (every instance equally likely) or ``"size"`` (proportional to voxel count).
        mode: padding mode of MONAI's ``Pad`` (``"constant"``, ``"reflect"``, ...). Use constant for labels.
        one_hot: label format; ``None`` = decide from the channel count.
        keep_inside: shift each window into the image on every axis where it fits (the chosen object's center stays
            inside it) and center it on the image where it does not, so no crop is mostly padding: padding is then
            only the excess of the window over the image, split evenly.
        pad_kwargs: further arguments of the padding function (e.g. ``value`` for torch constant padding).

    Raises:
        ValueError: bad arguments, invalid labels, or image/label spatial shapes that differ.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        crop_size: Sequence[int | None] | int | None,
        num_samples: int = 1,
        jitter: float = 0.25,
        weighting: str = "uniform",
        mode: str = "constant",
        one_hot: bool | None = None,
        keep_inside: bool = False,
        **pad_kwargs: Any,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if not 0.0 <= float(jitter) <= 0.5:
            raise ValueError(f"jitter must be in [0, 0.5] (a fraction of crop_size), got {jitter}.")
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}.")
        self.crop_size = crop_size
        self.num_samples = int(num_samples)
        self.jitter = float(jitter)
        self.weighting = weighting
        self.mode = mode
        self.one_hot = one_hot
        self.keep_inside = bool(keep_inside)
        self.pad_kwargs = pad_kwargs
        #: window start (may be negative) per sample, set by ``randomize``
        self.starts: list[tuple[int, ...]] | None = None
        #: effective window size of the last ``randomize``
        self.roi: tuple[int, ...] | None = None
        #: chosen instance per sample: label id (label map) or channel index (one-hot); -1 = random fallback
        self.objects: list[int] | None = None
        self._spatial: tuple[int, ...] | None = None
        self._source: str | None = None

    def effective_roi(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Window size for an image of ``spatial_shape`` (``<= 0``/``None`` entries -> the whole axis)."""
        sd = len(spatial_shape)
        roi = self.crop_size if self.crop_size is not None else (None,) * sd
        return tuple(int(r) for r in fall_back_tuple(ensure_tuple_rep(roi, sd), spatial_shape))

    def randomize(self, label: NdarrayOrTensor) -> None:  # type: ignore[override]
        """Choose the instances and window starts of all samples from ``label`` ``(C, *spatial)``."""
        self._source = label_source(label)
        label = check_instance_labels(label, self.one_hot, source=self._source)
        spatial = tuple(int(s) for s in label.shape[1:])
        roi = np.asarray(self.effective_roi(spatial), np.int64)
        keys, starts, stops, sizes = instance_bboxes(label, is_one_hot(label, self.one_hot))
        n, sd = self.num_samples, len(spatial)
        if len(keys) == 0:
            shape = np.asarray(spatial, np.int64)
            free = shape - roi  # >= 0: the window fits and may start anywhere in [0, free]
            u = self.R.random_sample((n, sd))
            win = np.where(free >= 0, np.floor(u * (np.maximum(free, 0) + 1)), np.floor(free / 2)).astype(np.int64)
            self.objects = [-1] * n
        else:
            p = sizes / sizes.sum() if self.weighting == "size" else None
            picks = self.R.choice(len(keys), size=n, p=p)
            jit = self.R.uniform(-1.0, 1.0, size=(n, sd)) * self.jitter * roi
            center = (starts[picks] + stops[picks] - 1) / 2.0 + jit
            win = np.floor(center - (roi - 1) / 2.0 + 0.5).astype(np.int64)
            if self.keep_inside:
                free = np.asarray(spatial, np.int64) - roi
                win = np.where(free >= 0, np.clip(win, 0, np.maximum(free, 0)), np.floor(free / 2)).astype(np.int64)
            self.objects = [int(k) for k in keys[picks]]
        self.starts = [tuple(int(v) for v in w) for w in win]
        self.roi = tuple(int(r) for r in roi)
        self._spatial = spatial

    def crop(self, img: NdarrayOrTensor, index: int, mode: str | None = None) -> NdarrayOrTensor:
        """Cut window ``index`` of the last ``randomize`` out of ``img`` ``(C, *spatial)`` -> ``(C, *roi)``."""
        if self.starts is None or self.roi is None:
            raise RuntimeError("call randomize(label) (or __call__ with a label) before crop().")
        spatial = tuple(int(s) for s in img.shape[1:])
        if spatial != self._spatial:
            raise ValueError(
                f"image spatial shape {spatial} (full {tuple(img.shape)}) != label spatial shape {self._spatial}"
                f"{file_hint(label_source(img) or self._source)}."
            )
        start = self.starts[index]
        lo = [min(max(s, 0), n) for s, n in zip(start, spatial)]
        hi = [min(max(s + r, 0), n) for s, r, n in zip(start, self.roi, spatial)]
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        out = Crop()(img_t, tuple(slice(a, b) for a, b in zip(lo, hi)))
        to_pad = [(0, 0)] + [(a - s, s + r - b) for s, r, a, b in zip(start, self.roi, lo, hi)]
        if any(p != (0, 0) for p in to_pad):
            out = Pad(mode=mode or self.mode, **self.pad_kwargs)(out, to_pad=to_pad)  # type: ignore[arg-type]
        if isinstance(out, MetaTensor):
            out.meta[ImageMetaKey.PATCH_INDEX] = index
            out.meta["crop_center"] = tuple(s + (r - 1) / 2.0 for s, r in zip(start, self.roi))
        return convert_to_dst_type(out, img)[0]

    def __call__(  # type: ignore[override]
        self,
        img: NdarrayOrTensor,
        label: NdarrayOrTensor | None = None,
        randomize: bool = True,
        mode: str | None = None,
    ) -> list[NdarrayOrTensor]:
        """Return ``num_samples`` crops ``(C, *crop_size)`` of ``img`` ``(C, *spatial)``, same kind as ``img``.

        Args:
            img: image to crop.
            label: instance labels with the same spatial shape (required when ``randomize``).
            randomize: draw new windows; ``False`` reuses those of the last call.
            mode: padding mode override for this call.
        """
        if randomize:
            if label is None:
                raise ValueError("RandObjectCrop needs the instance label to choose windows (label=None given).")
            self.randomize(label)
        return [self.crop(img, i, mode) for i in range(self.num_samples)]


class RandObjectCropd(RandomizableTransform, MapTransform, MultiSampleTrait):
    """Dictionary twin of :class:`RandObjectCrop`: crops every key with the same object-centered windows.

    Returns a list of ``num_samples`` dictionaries (MONAI's ``Compose`` maps later transforms over them). Keys not in
    ``keys`` are deep-copied into every sample. All cropped keys must share the label's spatial shape.

    Args:
        keys: keys to crop (usually image, label and any other dense target).
        label_key: key of the instance labels that choose the windows (label map or one-hot stack).
        crop_size: window size, see :class:`RandObjectCrop`.
        num_samples: number of dictionaries returned.
        jitter: center jitter as a fraction of ``crop_size`` (``[0, 0.5]``).
        weighting: ``"uniform"`` or ``"size"``.
        mode: padding mode, one per key or one for all (default constant 0; keep labels constant).
        one_hot: label format; ``None`` = decide from the channel count.
        keep_inside: shift windows into the image where they fit, see :class:`RandObjectCrop`.
        allow_missing_keys: do not raise for missing keys.
        pad_kwargs: further arguments of the padding function, used for every key (e.g. ``value``: labels too).
    """

    backend = RandObjectCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        crop_size: Sequence[int | None] | int | None,
        num_samples: int = 1,
        jitter: float = 0.25,
        weighting: str = "uniform",
        mode: str | Sequence[str] = "constant",
        one_hot: bool | None = None,
        keep_inside: bool = False,
        allow_missing_keys: bool = False,
        **pad_kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.label_key = label_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.cropper = RandObjectCrop(
            crop_size,
            num_samples=num_samples,
            jitter=jitter,
            weighting=weighting,
            one_hot=one_hot,
            keep_inside=keep_inside,
            **pad_kwargs,
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandObjectCropd:
        """Seed this transform and the wrapped :class:`RandObjectCrop`."""
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, label: NdarrayOrTensor) -> None:  # type: ignore[override]
        """Choose the windows from ``label`` ``(C, *spatial)``."""
        self.cropper.randomize(label)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:  # type: ignore[override]
        """Crop ``data`` into ``num_samples`` dictionaries of ``crop_size`` patches."""
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"label key {self.label_key!r} not found in data (keys: {list(d)}).")
        self.randomize(d[self.label_key])
        n = self.cropper.num_samples
        ret: list[dict[Hashable, Any]] = [dict(d) for _ in range(n)]
        for key in set(d).difference(self.keys):
            for i in range(n):
                ret[i][key] = deepcopy(d[key])
        for key, mode in self.key_iterator(d, self.mode):
            for i in range(n):
                ret[i][key] = self.cropper.crop(d[key], i, mode)
        return ret


RandObjectCropD = RandObjectCropDict = RandObjectCropd
