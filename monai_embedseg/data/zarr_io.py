"""Volumes larger than memory: lazy block reads from Zarr / OME-Zarr / TIFF, chunked OME-Zarr writing.

Reading (:func:`open_volume`) never loads a whole volume: it returns a :class:`LazyVolume` whose
:meth:`~LazyVolume.read` returns one block ``(C, *block)``. Supported inputs:

* an OME-Zarr image group (NGFF 0.4 with Zarr v2 or 0.5 with Zarr v3): level 0 of the first ``multiscales`` entry,
  its axes (``t`` of size 1 is dropped, ``c`` is the channel axis) and its spacing, the product of the ``scale``
  transforms of the dataset and of the multiscale (``coordinateTransformations``), for the ``space`` axes;
* a plain Zarr array (at the store's root or at ``store.zarr/path``): spatial axes last, an optional leading
  channel axis, the spacing from a ``"spacing"`` attribute when present;
* a TIFF file: memory-mapped when its data are uncompressed and contiguous, else read through tifffile's Zarr view
  (page by page); spacing as :func:`monai_embedseg.data.io.read_tiff_spacing` reads it.

Writing (:func:`create_ome_zarr`) creates an OME-Zarr image group with one level ``"0"`` (chunked, optionally sharded
so that a block is one file) and the spacing in the OME metadata (a ``scale`` transform, written with ``ome-zarr``);
the caller fills it block by block. An existing store is never replaced unless ``overwrite=True``, and then only if it
is a Zarr store (:func:`remove_zarr_store` refuses anything else).

Arrays are in numpy axis order (``(Z, Y, X)`` / ``(Y, X)``, channels first), as everywhere in this package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "ArrayVolume",
    "LazyVolume",
    "create_ome_zarr",
    "is_zarr_store",
    "open_volume",
    "remove_zarr_store",
    "write_ome_zarr",
]

PathLike = str | os.PathLike
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
_TIFF_SUFFIXES = (".tif", ".tiff")


def is_zarr_store(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding Zarr (v2 or v3) metadata at its top."""
    path = os.fspath(path)
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, m)) for m in _ZARR_MARKERS)


def remove_zarr_store(path: PathLike) -> None:
    """Delete the Zarr store at ``path`` (a folder with Zarr metadata); refuse to delete anything else.

    Raises:
        FileExistsError: ``path`` exists but is not a Zarr store (a file, or a folder without Zarr metadata), or is
            a symbolic link (replacing a link's target is not what ``--overwrite`` on the link's name says).
    """
    path = os.fspath(path)
    if os.path.islink(path.rstrip("/")):
        raise FileExistsError(
            f"{path} is a symbolic link (to {os.path.realpath(path)}); refusing to replace what it points to: give "
            "the store's real path, or another output."
        )
    if not os.path.exists(path):
        return
    if not is_zarr_store(path):
        raise FileExistsError(f"{path} exists and is not a Zarr store; refusing to delete it.")
    shutil.rmtree(path)


def _ome_metadata(group: Any) -> dict:
    """OME attributes of a Zarr group (under ``"ome"`` for NGFF 0.5 / Zarr v3, at the top for 0.4), via ome-zarr."""
    from ome_zarr.writer import get_metadata

    meta = get_metadata(group)
    if not meta.get("multiscales") and "multiscales" in group.attrs:  # v2-style attributes in a v3 store
        meta = dict(group.attrs)
    return meta


def _scale_of(transforms: Any, ndim: int) -> np.ndarray:
    """Product of the ``scale`` transforms in an NGFF ``coordinateTransformations`` list (1 where none)."""
    scale = np.ones(ndim)
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and "scale" in t and len(t["scale"]) == ndim:
            scale = scale * np.asarray(t["scale"], dtype=np.float64)
    return scale


class LazyVolume:
    """A volume on disk, read one block at a time (picklable: each process reopens it).

    Build it with :func:`open_volume`.

    Attributes:
        path: the file or store; key: the array inside a Zarr store (``""`` for the store's root array).
        kind: ``"zarr"`` or ``"tiff"``.
        shape, dtype: of the stored array (all axes).
        axes: one letter per stored axis (``"czyx"``, ``"zyx"``, ``"tzyx"``, ...).
        spacing: physical voxel size per spatial axis, or ``None`` when the file records none.
        spatial_shape: ``(*spatial)``; n_channels: ``C``.
    """

    def __init__(
        self,
        path: str,
        kind: str,
        key: str,
        shape: Sequence[int],
        dtype: Any,
        axes: str,
        spacing: Sequence[float] | None,
    ) -> None:
        self.path, self.kind, self.key = path, kind, key
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.axes = axes
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self._array: Any = None
        self._tif: Any = None

    @property
    def location(self) -> str:
        """Where the array is stored: the file or store path, with the array's key inside the store if any."""
        return os.path.join(self.path, self.key) if self.key else self.path

    @property
    def spatial_axes(self) -> list[int]:
        """Positions of the spatial axes in the stored array."""
        return [i for i, a in enumerate(self.axes) if a in "zyx"]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.spatial_axes)

    @property
    def n_channels(self) -> int:
        return self.shape[self.axes.index("c")] if "c" in self.axes else 1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = state["_tif"] = None  # open handles stay in their process
        return state

    def _open(self) -> Any:
        if self._array is None:
            if self.kind == "zarr":
                import zarr

                self._array = zarr.open_array(self.location, mode="r")
            else:
                import tifffile

                try:
                    self._array = tifffile.memmap(self.path, mode="r")
                except ValueError:  # compressed or non-contiguous: page-wise reads through tifffile's Zarr view
                    import zarr

                    self._tif = tifffile.imread(self.path, aszarr=True)
                    self._array = zarr.open(self._tif, mode="r")
        return self._array

    def read(self, spatial_slices: Sequence[slice]) -> np.ndarray:
        """Read one block.

        Args:
            spatial_slices: one slice per spatial axis (step 1).

        Returns:
            ``(C, *block)`` array of the stored dtype (``C = 1`` for single-channel volumes).
        """
        spatial_slices = list(spatial_slices)
        if len(spatial_slices) != len(self.spatial_axes):
            raise ValueError(f"need {len(self.spatial_axes)} slices for {self.path}, got {len(spatial_slices)}.")
        index: list[Any] = []
        for a in self.axes:
            index.append(spatial_slices.pop(0) if a in "zyx" else (slice(None) if a == "c" else 0))
        block = np.asarray(self._open()[tuple(index)])
        kept = [a for a in self.axes if a in "czyx"]
        if "c" in kept:
            block = np.moveaxis(block, kept.index("c"), 0)
        else:
            block = block[None]
        return block

    def __repr__(self) -> str:
        return (
            f"LazyVolume({self.location!r}, axes={self.axes!r}, shape={self.shape}, dtype={self.dtype}, "
            f"spacing={self.spacing})"
        )


class ArrayVolume:
    """An in-memory (numpy) or array-like volume (zarr / dask array) with the :class:`LazyVolume` interface.

    Args:
        array: ``(*spatial)`` or channel-first ``(C, *spatial)``.
        spatial_dims: 2 or 3 (``None``: ``array.ndim`` when it is 2 or 3, i.e. no channel axis; 3 for 4D arrays).
        spacing: physical voxel size per spatial axis (``None``: unknown).
    """

    kind = "array"

    def __init__(self, array: Any, spatial_dims: int | None = None, spacing: Sequence[float] | None = None) -> None:
        ndim = len(array.shape)
        spatial_dims = (ndim if ndim in (2, 3) else 3) if spatial_dims is None else int(spatial_dims)
        if spatial_dims not in (2, 3) or ndim - spatial_dims not in (0, 1):
            raise ValueError(
                f"expected an array (*spatial) or (C, *spatial) with 2 or 3 spatial dims, got shape "
                f"{tuple(array.shape)} for spatial_dims={spatial_dims}."
            )
        self.array = array
        self.path = f"<array {tuple(array.shape)} {np.dtype(array.dtype)}>"
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.axes = ("c" if ndim > spatial_dims else "") + "zyx"[3 - spatial_dims :]
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    spatial_axes = LazyVolume.spatial_axes
    spatial_shape = LazyVolume.spatial_shape
    n_channels = LazyVolume.n_channels

    def read(self, spatial_slices: Sequence[slice]) -> np.ndarray:
        """Read one block: ``(C, *block)`` (see :meth:`LazyVolume.read`)."""
        index = (slice(None),) * (len(self.axes) - len(spatial_slices)) + tuple(spatial_slices)
        block = np.asarray(self.array[index])
        return block if "c" in self.axes else block[None]


def _open_zarr(path: str, spatial_dims: int | None) -> LazyVolume:
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except FileNotFoundError:
        raise FileNotFoundError(f"input {path} does not exist (or holds no Zarr metadata).") from None
    except Exception as e:  # zarr raises JSON, metadata and codec errors of many types for a corrupt store
        raise ValueError(f"cannot read Zarr store {path}: {type(e).__name__}: {e}") from None
    if isinstance(node, zarr.Array):
        ndim = node.ndim
        sd = spatial_dims or (ndim if ndim in (2, 3) else 3)
        if sd not in (2, 3) or ndim - sd not in (0, 1):
            raise ValueError(f"{path}: a {ndim}D Zarr array is not a {sd}D image ((*spatial) or (C, *spatial)).")
        axes = ("c" if ndim > sd else "") + "zyx"[3 - sd :]
        sp = node.attrs.get("spacing")
        spacing = [float(s) for s in sp] if isinstance(sp, (list, tuple)) and len(sp) == sd else None
        return LazyVolume(path, "zarr", "", node.shape, node.dtype, axes, spacing)
    try:
        meta = _ome_metadata(node)
        ms = meta.get("multiscales")
        if not ms:
            arrays = sorted(node.array_keys())
            hint = f" (arrays inside: {', '.join(arrays[:5])}; pass {path}/{arrays[0]})" if arrays else ""
            raise ValueError(f"{path} is a Zarr group without OME-Zarr multiscales metadata{hint}.")
        ms0 = ms[0]
        ds0 = ms0["datasets"][0]
        key = str(ds0["path"])
        try:
            arr = zarr.open_array(os.path.join(path, key), mode="r")
        except FileNotFoundError:
            raise ValueError(f"{path}: the OME-Zarr level 0 array '{key}' is missing.") from None
        except Exception as e:  # corrupt array metadata
            raise ValueError(f"cannot read Zarr store {path}: array '{key}': {type(e).__name__}: {e}") from None
        names = [(a["name"] if isinstance(a, dict) else str(a)).lower() for a in ms0.get("axes", [])]
        types = [(a.get("type") if isinstance(a, dict) else None) for a in ms0.get("axes", [])]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{path}: malformed OME-Zarr multiscales metadata ({type(e).__name__}: {e}).") from None
    if not names:  # NGFF 0.1/0.2: no axes, (t, c, z, y, x)
        names = ["t", "c", "z", "y", "x"][5 - arr.ndim :]
    if len(names) != arr.ndim:
        raise ValueError(f"{path}: {len(names)} axes in the OME metadata for a {arr.ndim}D array.")
    if not types:
        types = [None] * len(names)
    is_space = [t == "space" or (t is None and n in ("z", "y", "x")) for n, t in zip(names, types)]
    if not 2 <= sum(is_space) <= 3:
        raise ValueError(f"{path}: {sum(is_space)} spatial axes in the OME metadata ({names}); expected 2 or 3.")
    letters = iter("zyx"[3 - sum(is_space) :])
    axes = ""
    for n, t, space in zip(names, types, is_space):
        axes += next(letters) if space else ("c" if t == "channel" or n == "c" else "t")
    for i, a in enumerate(axes):
        if a == "t" and arr.shape[i] != 1:
            raise ValueError(
                f"{path}: axis '{names[i]}' has {arr.shape[i]} entries; only single time points are "
                "supported (pass one time point as its own store)."
            )
    scale = _scale_of(ds0.get("coordinateTransformations"), arr.ndim) * _scale_of(
        ms0.get("coordinateTransformations"), arr.ndim
    )
    spacing = [float(scale[i]) for i, a in enumerate(axes) if a in "zyx"]
    if spatial_dims is not None and len(spacing) != spatial_dims:
        raise ValueError(f"{path}: {len(spacing)} spatial axes ({axes}), expected {spatial_dims}.")
    return LazyVolume(path, "zarr", key, arr.shape, arr.dtype, axes, spacing)


def _open_tiff(path: str, spatial_dims: int | None) -> LazyVolume:
    import tifffile

    from monai_embedseg.data.io import read_tiff_spacing

    if not os.path.isfile(path):
        raise FileNotFoundError(f"input {path} does not exist.")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype, tif_axes = series.shape, series.dtype, series.axes.upper()
        spacing = read_tiff_spacing(path)
    except Exception as e:  # tifffile raises many error types for corrupt files
        raise ValueError(f"cannot read TIFF {path}: {type(e).__name__}: {e}") from None
    ndim = len(shape)
    sd = spatial_dims or min(ndim, 3)
    if ndim - sd not in (0, 1):
        raise ValueError(f"{path}: a {ndim}D TIFF ({tif_axes}) is not a {sd}D image ((*spatial) or (C, *spatial)).")
    ch = next((i for i, a in enumerate(tif_axes) if a in "CS"), 0 if ndim > sd else None)
    axes = ""
    spatial_letters = iter("zyx"[3 - sd :])
    for i in range(ndim):
        axes += "c" if i == ch else next(spatial_letters)
    if spacing is not None and len(spacing) != sd:
        spacing = None
    return LazyVolume(path, "tiff", "", shape, dtype, axes, spacing)


def open_volume(path: PathLike, spatial_dims: int | None = None) -> LazyVolume:
    """Open a Zarr / OME-Zarr store or a TIFF file for block-wise reading (nothing is loaded).

    Args:
        path: ``*.zarr`` store (OME-Zarr image group or plain array), ``store.zarr/array`` path, or ``*.tif(f)``.
        spatial_dims: 2 or 3; ``None``: from the OME axes, else 3 for 3D+ arrays and 2 for 2D arrays.

    Returns:
        a :class:`LazyVolume` (``read(slices) -> (C, *block)``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable / corrupt store or file, unsupported axes, or a file type that is neither.
    """
    path = os.fspath(path).rstrip("/")
    if path.lower().endswith(_TIFF_SUFFIXES):
        return _open_tiff(path, spatial_dims)
    if path.lower().endswith(".zarr") or is_zarr_store(path) or ".zarr/" in path.lower():
        return _open_zarr(path, spatial_dims)
    if not os.path.exists(path):
        raise FileNotFoundError(f"input {path} does not exist.")
    raise ValueError(f"{path} is neither a Zarr store (.zarr) nor a TIFF file (.tif, .tiff).")


def _default_chunks(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """About 1-2 MB chunks: 64 along every axis, 256 in 2D."""
    edge = 64 if len(shape) >= 3 else 512 // max(1, itemsize // 2)
    return tuple(max(1, min(int(s), edge)) for s in shape)


def create_ome_zarr(
    path: PathLike,
    shape: Sequence[int],
    dtype: Any,
    spacing: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    channel_axis: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    attributes: dict | None = None,
) -> Any:
    """Create an empty OME-Zarr image (one resolution level ``"0"``) to be filled block by block.

    Args:
        path: the store to create (a folder, conventionally ``*.zarr``).
        shape: ``(*spatial)`` or, with ``channel_axis``, ``(C, *spatial)``; 2 or 3 spatial dims.
        dtype: e.g. ``np.uint32`` for labels.
        spacing: physical voxel size per spatial axis (written as the ``scale`` transform; ``None``: 1).
        chunks: chunk shape (default ~64^3 / 512^2); shards: optional shard shape (a multiple of ``chunks``: one file
            per shard, e.g. one per block written by one task).
        overwrite: replace an existing Zarr store at ``path`` (never anything that is not a Zarr store).
        name: the multiscale's name; attributes: extra group attributes.

    Returns:
        the level-0 ``zarr.Array`` (fill value 0); its group is the store's root.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it exists and is not a Zarr store.
    """
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    path = os.fspath(path)
    shape = tuple(int(s) for s in shape)
    sd = len(shape) - int(bool(channel_axis))
    if sd not in (2, 3):
        raise ValueError(f"shape {shape} has {sd} spatial dims; expected 2 or 3.")
    spacing = [1.0] * sd if spacing is None else [float(s) for s in spacing]
    if len(spacing) != sd:
        raise ValueError(f"spacing {spacing} needs {sd} values (one per spatial axis).")
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"output {path} exists; pass overwrite=True (--overwrite) to replace it.")
        remove_zarr_store(path)
    dtype = np.dtype(dtype)
    chunks = tuple(int(c) for c in chunks) if chunks is not None else _default_chunks(shape, dtype.itemsize)
    group = zarr.open_group(path, mode="w-")
    kwargs: dict[str, Any] = {"shards": tuple(int(s) for s in shards)} if shards is not None else {}
    arr = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0, **kwargs)
    axes = ([{"name": "c", "type": "channel"}] if channel_axis else []) + [
        {"name": a, "type": "space"} for a in "zyx"[3 - sd :]
    ]
    scale = ([1.0] if channel_axis else []) + spacing
    write_multiscales_metadata(
        group,
        [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        axes=axes,
        name=name or os.path.basename(path),
    )
    if attributes:
        group.attrs.update(attributes)
    return arr


def write_ome_zarr(
    path: PathLike,
    array: np.ndarray,
    spacing: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    channel_axis: bool = False,
    overwrite: bool = False,
) -> str:
    """Write an in-memory array as a one-level OME-Zarr image (see :func:`create_ome_zarr`); returns ``path``.

    Args:
        array: ``(*spatial)`` or, with ``channel_axis``, ``(C, *spatial)``.
    """
    arr = create_ome_zarr(
        path, array.shape, array.dtype, spacing, chunks, channel_axis=channel_axis, overwrite=overwrite
    )
    arr[...] = array
    return os.fspath(path)
