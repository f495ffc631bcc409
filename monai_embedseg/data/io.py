"""TIFF reading and writing with tifffile, as MONAI ``ImageReader`` / ``ImageWriter`` components.

Arrays are kept in **numpy axis order** (``(Y, X)``, ``(Z, Y, X)``, channel-first ``(C, *spatial)`` for multi-channel
files): nothing is transposed, unlike MONAI's PIL-based path for ``.tif`` files. Physical pixel sizes (``spacing``,
one value per spatial axis in numpy order) are read from and written to the file metadata.

Spacing is looked up, in this order:

1. a ``"spacing"`` entry in tifffile's shaped (JSON) description, which :class:`TiffWriter` / :func:`write_tiff`
   write for every spatial axis;
2. ImageJ metadata: ``spacing`` (z) plus the X/Y resolution tags (pixels per unit);
3. the X/Y resolution tags alone when their unit is "none", centimetre, millimetre or micrometre (converted to
   micrometres). Resolutions in inches are ignored: they are display DPI values in most files.

Without any of these the spacing is 1 per axis.

Writes are atomic: the data go to a temporary file in the destination folder, which is then moved into place, so an
interrupted write never leaves a truncated file under the final name. Existing files are not overwritten unless
``overwrite=True`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
from monai.config import DtypeLike, NdarrayOrTensor, PathLike
from monai.data import ImageReader, ImageWriter
from monai.data.utils import affine_to_spacing, is_no_channel
from monai.utils import MetaKeys, convert_data_type, convert_to_dst_type, ensure_tuple, get_equivalent_dtype

from monai_embedseg.utils.files import atomic_output

__all__ = [
    "TiffReader",
    "TiffWriter",
    "read_tiff",
    "read_tiff_with_spacing",
    "read_tiff_spacing",
    "write_tiff",
    "register_tiff_io",
    "as_label_dtype",
]

TIFF_SUFFIXES = (".tif", ".tiff")

# TIFF ResolutionUnit values -> factor that turns "units per pixel" into micrometres (None: keep as is)
_RESUNIT_TO_UM = {1: None, 3: 1e4, 4: 1e3, 5: 1.0}


def _is_tiff_name(name: PathLike) -> bool:
    return str(name).lower().endswith(TIFF_SUFFIXES)


# ----------------------------------------------------------------------------------------------------------- reading
@dataclass
class _TiffImage:
    """A TIFF file read into memory: the array (numpy order), its axes string and the spacing of spatial axes."""

    filename: str
    array: np.ndarray
    axes: str
    spacing: tuple[float, ...] | None = None


def _spacing_from_tags(tif: tifffile.TiffFile, axes: str) -> tuple[float, ...] | None:
    """Spacing per spatial (non-channel) axis of ``axes`` from shaped / ImageJ metadata or resolution tags, or None."""
    spatial = [a for a in axes if a not in "CS"]
    shaped = tif.shaped_metadata[0] if tif.shaped_metadata else None
    if shaped and "spacing" in shaped:
        sp = shaped["spacing"]
        if isinstance(sp, (list, tuple)) and len(sp) == len(spatial):
            return tuple(float(s) for s in sp)
    page = tif.pages[0]
    res = None
    try:
        xres, yres = page.resolution
        unit = int(page.resolutionunit)
        if xres > 0 and yres > 0:
            res = (1.0 / yres, 1.0 / xres)  # (y, x) units per pixel
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        unit = 1
    out: dict[str, float] = {}
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        if res is not None:
            out["Y"], out["X"] = res
        if "spacing" in ij:
            out["Z"] = float(ij["spacing"])
    elif res is not None and unit in _RESUNIT_TO_UM:
        factor = _RESUNIT_TO_UM[unit]
        y, x = res if factor is None else (res[0] * factor, res[1] * factor)
        if not (unit == 1 and x == 1.0 and y == 1.0):
            out["Y"], out["X"] = y, x
    if not out:
        return None
    return tuple(out.get(a, 1.0) for a in spatial)


def _read_tiff_file(filename: PathLike, read_array: bool = True) -> _TiffImage:
    """Read one TIFF file (first series) with its axes and spacing (only the metadata if not ``read_array``).

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        ValueError: the file is not a readable TIFF.
    """
    name = str(filename)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"TIFF file not found: {name}")
    try:
        with tifffile.TiffFile(name) as tif:
            if not tif.series:
                raise ValueError("no image series in file")
            series = tif.series[0]
            array = np.asarray(series.asarray()) if read_array else np.empty((0,) * len(series.shape))
            axes = str(series.axes)
            if len(axes) != array.ndim:  # should not happen; fall back to anonymous axes
                axes = "Q" * (array.ndim - 2) + "YX"
            spacing = _spacing_from_tags(tif, axes)
    except FileNotFoundError:
        raise
    except Exception as e:  # tifffile raises TiffFileError(ValueError), struct/OSError/... on corrupt files
        raise ValueError(f"cannot read TIFF file {name}: {type(e).__name__}: {e}") from e
    return _TiffImage(filename=name, array=array, axes=axes, spacing=spacing)


def _channel_axis(axes: str, ndim: int, channel_dim: int | str | None) -> int | None:
    """Resolve the channel axis: explicit ``channel_dim`` wins, else a 'C' or 'S' axis in the file, else None."""
    if channel_dim is not None:
        if is_no_channel(channel_dim):
            return None
        c = int(channel_dim)
        if not -ndim <= c < ndim:
            raise ValueError(f"channel_dim={channel_dim} is out of range for an array with {ndim} dimensions.")
        return c % ndim
    for key in "CS":
        if key in axes:
            return axes.index(key)
    return None


class TiffReader(ImageReader):
    """Load TIFF files with tifffile, in numpy axis order (no transpose).

    ``get_data`` returns ``(array, meta)`` with the array as stored (``(Y, X)``, ``(Z, Y, X)`` or with a channel axis)
    and meta keys ``spatial_shape``, ``original_channel_dim`` (``"no_channel"`` when there is none),
    ``filename_or_obj``, ``spacing`` (per spatial axis, numpy order), ``affine`` / ``original_affine`` (4x4 diagonal
    scaling by ``spacing``) and ``axes`` (tifffile's axes string). Several files are stacked as channels
    (a new first axis when the files have no channel axis).

    Args:
        channel_dim: which array axis is the channel axis. ``None`` (default): a ``C`` (or RGB ``S``) axis
            recorded in the file, else no channel; ``"no_channel"``: never; an int: that axis (e.g. ``0`` for a
            ``(C, Y, X)`` stack saved without axes metadata, such as a one-hot file).
        kwargs: unused, accepted for compatibility with ``LoadImage(reader=..., **kwargs)``.
    """

    def __init__(self, channel_dim: int | str | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True if every file name ends with ``.tif`` or ``.tiff`` (case-insensitive)."""
        names = ensure_tuple(filename)
        return len(names) > 0 and all(_is_tiff_name(n) for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> _TiffImage | list[_TiffImage]:
        """Read one file or a list of files into memory.

        Raises:
            FileNotFoundError: a file does not exist (the message names it).
            ValueError: a file is not a readable TIFF (the message names it).
        """
        images = [_read_tiff_file(name) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: _TiffImage | Sequence[_TiffImage]) -> tuple[np.ndarray, dict]:
        """Return ``(array, meta)``; see the class docstring for the layout and the meta keys."""
        images = [img] if isinstance(img, _TiffImage) else list(img)
        arrays, metas = [], []
        for im in images:
            try:
                c = _channel_axis(im.axes, im.array.ndim, self.channel_dim)
            except ValueError as e:
                raise ValueError(f"{im.filename}: {e}") from None
            spatial_shape = tuple(s for i, s in enumerate(im.array.shape) if i != c)
            n_spatial = len(spatial_shape)
            spacing = im.spacing if im.spacing is not None and len(im.spacing) == n_spatial else (1.0,) * n_spatial
            affine = np.eye(max(n_spatial, 3) + 1, dtype=np.float64)
            affine[np.arange(n_spatial), np.arange(n_spatial)] = spacing
            metas.append(
                {
                    MetaKeys.SPATIAL_SHAPE: np.asarray(spatial_shape, dtype=np.int64),
                    MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel" if c is None else int(c),
                    MetaKeys.AFFINE: affine,
                    MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                    "spacing": np.asarray(spacing, dtype=np.float64),
                    "axes": im.axes,
                    "filename_or_obj": im.filename,
                }
            )
            arrays.append(im.array)
        meta = metas[0]
        if len(arrays) == 1:
            return arrays[0], meta
        for other, m in zip(images[1:], metas[1:]):
            if not np.array_equal(m[MetaKeys.SPATIAL_SHAPE], meta[MetaKeys.SPATIAL_SHAPE]):
                raise ValueError(
                    f"cannot stack TIFF files with different spatial shapes: {images[0].filename} has "
                    f"{tuple(meta[MetaKeys.SPATIAL_SHAPE])}, {other.filename} has {tuple(m[MetaKeys.SPATIAL_SHAPE])}."
                )
        c = meta[MetaKeys.ORIGINAL_CHANNEL_DIM]
        if is_no_channel(c):
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return np.stack(arrays, axis=0), meta
        return np.concatenate(arrays, axis=int(c)), meta


def read_tiff(path: PathLike) -> np.ndarray:
    """Read a TIFF file into a numpy array in numpy axis order, as stored (``(Y, X)``, ``(Z, Y, X)``, ``(C, ...)``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable TIFF.
    """
    return _read_tiff_file(path).array


def read_tiff_with_spacing(path: PathLike) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Read a TIFF file as :func:`read_tiff` does, with the spacing it records (see :func:`read_tiff_spacing`)."""
    im = _read_tiff_file(path)
    return im.array, im.spacing


def read_tiff_spacing(path: PathLike) -> tuple[float, ...] | None:
    """Spacing per spatial axis (numpy order) recorded in a TIFF file, or None when the file records none."""
    return _read_tiff_file(path, read_array=False).spacing


# ----------------------------------------------------------------------------------------------------------- writing
def _atomic_tiff_write(
    path: PathLike,
    array: np.ndarray,
    overwrite: bool,
    axes: str | None,
    spacing: Sequence[float] | None,
    compression: str | None = None,
) -> str:
    """Write ``array`` to ``path`` through a temporary file in the same folder, then move it into place."""
    path = os.fspath(path)
    if not _is_tiff_name(path):
        raise ValueError(f"TIFF file name must end with .tif or .tiff: {path}")
    array = np.asarray(array)
    if array.ndim < 2:
        raise ValueError(f"cannot write a {array.ndim}D array as TIFF ({path}); need at least 2 dimensions.")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    if axes is None:
        axes = ("ZYX" if array.ndim == 3 else "YX") if array.ndim <= 3 else "Q" * (array.ndim - 3) + "ZYX"
    if len(axes) != array.ndim:
        raise ValueError(f"axes {axes!r} do not match the array shape {array.shape} for {path}.")
    n_spatial = sum(a not in "CSQT" for a in axes)
    metadata: dict[str, Any] = {"axes": axes}
    kwargs: dict[str, Any] = {}
    if spacing is not None:
        spacing = [float(s) for s in spacing]
        if len(spacing) != n_spatial or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing {spacing} must have {n_spatial} positive values (axes {axes!r}) for {path}.")
        metadata["spacing"] = spacing
        kwargs.update(resolution=(1.0 / spacing[-1], 1.0 / spacing[-2]), resolutionunit=1)
    with atomic_output(path, overwrite) as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack", metadata=metadata, compression=compression, **kwargs)
    return path


def as_label_dtype(labels: NdarrayOrTensor) -> NdarrayOrTensor:
    """A label map in the smallest unsigned dtype that holds its ids: uint16 up to 65,535 objects, uint32 above.

    Never wraps: ids past 65,535 (a whole-slide image, a large volume) keep their values.

    Args:
        labels: integer label map of any shape (numpy or torch; MetaTensor metadata kept), ids >= 0.

    Returns:
        the same kind of array, uint16 or uint32 (torch has no uint16/uint32 arithmetic everywhere, so torch input
        comes back as a numpy-backed conversion of the same kind via ``convert_to_dst_type``).

    Raises:
        ValueError: negative ids, or ids past uint32.
    """
    arr = convert_data_type(labels, np.ndarray)[0]
    top = int(arr.max()) if arr.size else 0
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"label ids must be >= 0, got {int(arr.min())}.")
    if top > np.iinfo(np.uint32).max:
        raise ValueError(f"label ids up to {top} do not fit uint32.")
    dtype = np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32
    if isinstance(labels, np.ndarray):
        return arr.astype(dtype, copy=False)
    out_dtype = get_equivalent_dtype(dtype, type(labels))
    return convert_to_dst_type(arr.astype(dtype, copy=False), labels, dtype=out_dtype)[0]


def write_tiff(
    path: PathLike,
    array: NdarrayOrTensor,
    overwrite: bool = False,
    *,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
    compression: str | None = None,
) -> str:
    """Atomically write an array to a TIFF file, in numpy order (no transpose), creating parent folders.

    Args:
        path: destination ``.tif`` / ``.tiff`` file.
        array: ``(Y, X)``, ``(Z, Y, X)`` or with a channel axis (then pass ``axes``, e.g. ``"CYX"``); numpy or torch.
        overwrite: replace an existing file; otherwise raise ``FileExistsError``.
        spacing: physical pixel size per spatial axis (numpy order), stored in the file (see module docstring).
        axes: tifffile axes string, one letter per array axis (default ``"YX"`` / ``"ZYX"``); a ``C`` axis is read
            back as the channel axis by :class:`TiffReader`.
        compression: optional tifffile compression, e.g. ``"zlib"``.

    Returns:
        the path written, as a string.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: bad file name, array dimensions, axes or spacing.
    """
    arr = convert_data_type(array, np.ndarray)[0]
    return _atomic_tiff_write(path, arr, overwrite=overwrite, axes=axes, spacing=spacing, compression=compression)


class TiffWriter(ImageWriter):
    """Write arrays to TIFF with tifffile, in numpy order (no transpose), atomically and without overwriting.

    Used by ``SaveImage(writer=TiffWriter, output_ext=".tif")`` (or by extension after :func:`register_tiff_io`).
    ``set_data_array`` takes a channel-first array ``(C, *spatial)`` (``channel_dim=0``, MONAI's default) or a
    channel-less one (``channel_dim=None``); a channel of size 1 is squeezed, so a ``(1, Y, X)`` label map is saved
    as a plain ``(Y, X)`` image; several channels are saved as ``(C, *spatial)`` with axes ``"C..."``.
    Spacing is taken from the metadata's ``affine`` and stored in the file.

    Args:
        output_dtype: dtype written (``None``: the input dtype). ``SaveImage`` passes its own (float32 by default;
            use ``SaveImage(output_dtype=np.uint16)`` or ``None`` for label maps).
        scale: ``255`` or ``65535``: clip to [0, 1] and scale to uint8 / uint16 (as MONAI's PILWriter); None: off.
        overwrite: replace existing files. With ``SaveImage`` set it by
            ``SaveImage(...).set_options(init_kwargs={"overwrite": True})``.
        compression: optional tifffile compression, e.g. ``"zlib"``.
    """

    output_dtype: DtypeLike
    scale: int | None
    overwrite: bool
    compression: str | None

    def __init__(
        self,
        output_dtype: DtypeLike = None,
        scale: int | None = None,
        overwrite: bool = False,
        compression: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(output_dtype=output_dtype, scale=scale, overwrite=overwrite, compression=compression, **kwargs)
        self.has_channel = False
        self.spacing: tuple[float, ...] | None = None

    def set_data_array(
        self, data_array: NdarrayOrTensor, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs: Any
    ) -> None:
        """Store ``data_array`` channel-first (or without channel), squeezing a channel of size 1.

        Args:
            data_array: ``(C, *spatial)`` with the channel at ``channel_dim``, or ``(*spatial)`` when
                ``channel_dim`` is None.
            channel_dim: the channel axis, or None.
            squeeze_end_dims: squeeze a channel of size 1 (default True).
        """
        data = convert_data_type(data_array, np.ndarray)[0]
        if channel_dim is not None and not is_no_channel(channel_dim):
            data = np.moveaxis(data, int(channel_dim), 0)
            self.has_channel = True
            if data.shape[0] == 1 and squeeze_end_dims:
                data = data[0]
                self.has_channel = False
        else:
            self.has_channel = False
        self.data_obj = data

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = False, **options: Any) -> None:
        """Take the spacing from ``meta_dict["affine"]``; optionally resize to ``meta_dict["spatial_shape"]``.

        Args:
            meta_dict: metadata (``affine``, ``spatial_shape``), may be None.
            resample: resize the data to ``spatial_shape`` when it differs (TIFF has no world coordinates, so
                this is a plain resize, as in MONAI's PILWriter). Default False.
            options: ``mode`` (default ``"nearest"``) for the resize; other keys are ignored.
        """
        data = self.data_obj
        n_spatial = data.ndim - (1 if self.has_channel else 0)
        self.spacing = None
        if meta_dict:
            affine = meta_dict.get(MetaKeys.AFFINE)
            if affine is not None:
                affine = convert_data_type(affine, np.ndarray)[0]
                if affine.ndim == 2 and affine.shape[0] == affine.shape[1] and affine.shape[0] > n_spatial:
                    self.spacing = tuple(float(s) for s in affine_to_spacing(affine, r=n_spatial))
            target = meta_dict.get(MetaKeys.SPATIAL_SHAPE)
            if resample and target is not None:
                target = tuple(int(s) for s in convert_data_type(target, np.ndarray)[0].ravel())
                current = data.shape[1:] if self.has_channel else data.shape
                if len(target) == len(current) and target != tuple(current):
                    from monai.transforms import Resize

                    mode = options.get("mode", "nearest")
                    align = None if mode in ("nearest", "nearest-exact", "area") else False
                    cf = data if self.has_channel else data[None]
                    out = Resize(spatial_size=target, mode=mode, align_corners=align)(cf.astype(np.float32))
                    out = convert_data_type(out, np.ndarray)[0]
                    if mode in ("nearest", "nearest-exact"):
                        out = out.astype(data.dtype)
                    self.data_obj = out if self.has_channel else out[0]
                    if self.spacing is not None:  # same field of view on a different grid
                        self.spacing = tuple(s * c / t for s, c, t in zip(self.spacing, current, target))

    def write(self, filename: PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Atomically write the stored array to ``filename``.

        Raises:
            FileExistsError: the file exists and ``overwrite`` is False.
        """
        super().write(filename, verbose=verbose)
        data = np.asarray(self.data_obj)
        if self.scale:
            if self.scale not in (255, 65535):
                raise ValueError(f"Unsupported scale: {self.scale}, available options are [255, 65535].")
            data = (np.clip(data, 0.0, 1.0) * self.scale).astype(np.uint8 if self.scale == 255 else np.uint16)
        if self.output_dtype is not None:
            data = data.astype(get_equivalent_dtype(self.output_dtype, np.ndarray), copy=False)
        n_spatial = data.ndim - (1 if self.has_channel else 0)
        spatial_axes = "ZYX"[-n_spatial:] if n_spatial <= 3 else "Q" * (n_spatial - 3) + "ZYX"
        axes = ("C" if self.has_channel else "") + spatial_axes
        spacing = self.spacing if self.spacing is not None and len(self.spacing) == n_spatial else None
        _atomic_tiff_write(
            filename,
            data,
            overwrite=kwargs.get("overwrite", self.overwrite),
            axes=axes,
            spacing=spacing,
            compression=self.compression,
        )

    @classmethod
    def create_backend_obj(cls, data_array: NdarrayOrTensor, **kwargs: Any) -> np.ndarray:
        """The backend object is the numpy array itself."""
        return convert_data_type(data_array, np.ndarray)[0]


def register_tiff_io() -> None:
    """Register :class:`TiffReader` and :class:`TiffWriter` with MONAI (idempotent).

    Afterwards ``LoadImage(reader="TiffReader")`` works, ``LoadImage()`` without a reader picks :class:`TiffReader`
    for ``.tif``/``.tiff`` files (instead of PIL, which transposes), and ``SaveImage(output_ext=".tif")`` uses
    :class:`TiffWriter` only (MONAI would otherwise fall back to PIL when the TIFF writer refuses to overwrite).
    Without registering, pass the classes themselves (``reader=TiffReader``,
    ``writer=TiffWriter``) or their dotted paths (``"monai_embedseg.data.TiffReader"``).
    """
    from monai.data import image_writer
    from monai.transforms.io import array as io_array

    io_array.SUPPORTED_READERS["tiffreader"] = TiffReader
    if not image_writer.SUPPORTED_WRITERS:  # MONAI fills the defaults lazily, only while the table is empty
        image_writer.init()
    for ext in ("tif", "tiff"):  # TiffWriter only: no silent fallback to PIL (transposed, and it overwrites)
        image_writer.SUPPORTED_WRITERS[ext] = (TiffWriter,)
