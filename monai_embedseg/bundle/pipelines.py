"""Small helpers the bundles' transform pipelines call.

The bundles' training, validation and inference pipelines and their postprocessing are written in the bundle
configs themselves (``train#preprocessing``, ``validate#preprocessing``, ``validate#postprocessing``,
``preprocessing``, ``postprocessing``: MONAI ``Compose`` lists, generated from
``monai_embedseg/bundle/template/``), so one transform can be swapped or tuned by an override. Loading and
normalisation are deterministic (cached once by a ``CacheDataset``); cropping and augmentation are random and run on
the fly, so no crop files are ever written.

``monai-embedseg segment`` runs the bundle's ``inference.json`` itself, so a bundle and the command share one
pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["square_in_plane", "as_slices", "blur_sigmas", "switch"]


def square_in_plane(crop_size: Sequence[int]) -> list[int]:
    """Make the last two (y, x) crop sizes equal (their maximum), so 90-degree rotations keep the crop shape."""
    roi = [int(r) for r in crop_size]
    roi[-2:] = [max(roi[-2:])] * 2
    return roi


def as_slices(crop_slices: Sequence[Sequence[int | None] | None] | None) -> list[slice] | None:
    """``[[start, stop], ...]`` per spatial axis (``None`` or ``[null, null]``: the whole axis) as slices.

    For ``SpatialCropd(roi_slices=...)``, e.g. the paper's Mouse-Skull test sub-volume
    ``[[null, null], [null, null], [256, 512]]``; ``None`` stays ``None`` (no crop).
    """
    if crop_slices is None:
        return None
    return [slice(*(ax if ax is not None else (None, None))) for ax in crop_slices]


def blur_sigmas(
    sigma: Sequence[float], spacing: Sequence[float] | float | None, spatial_dims: int
) -> list[tuple[float, float]]:
    """Gaussian blur ranges per axis, in voxels, for ``RandGaussianSmoothd(sigma_x=, sigma_y=, sigma_z=)``.

    ``sigma = (low, high)`` is given in pixels of the finest axis; an axis whose voxels are coarser gets a
    proportionally smaller sigma, so the blur is the same physical width along every axis and an anisotropic volume
    stays as anisotropic as it was (e.g. spacing ``(1.0, 0.2, 0.2)`` and ``(0.25, 1.0)``: z gets ``(0.05, 0.2)``).

    Returns three ``(low, high)`` ranges in MONAI's order (first, second, third spatial axis: z, y, x in 3D; y, x and
    an unused third in 2D). ``spacing`` ``None``: isotropic.
    """
    low, high = (float(v) for v in sigma)
    if not 0.0 <= low <= high:
        raise ValueError(f"blur sigma must be a range (low, high) with 0 <= low <= high, got {sigma}")
    if spacing is None:
        steps = [1.0] * spatial_dims
    elif isinstance(spacing, (int, float)):
        steps = [float(spacing)] * spatial_dims
    else:
        steps = [float(s) for s in spacing][-spatial_dims:]
    finest = min(steps)
    ranges = [(low * finest / s, high * finest / s) for s in steps]
    return ranges + [ranges[-1]] * (3 - len(ranges))


def switch(value: bool | str, name: str = "setting") -> bool:
    """A config switch as a bool: ``True`` / ``False``, or the strings ``"true"`` / ``"false"`` (any case) that a
    command-line override such as ``--augmentation#zoom false`` passes; anything else is refused, naming ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    name = name.replace("::", "#")  # MONAI writes an id's "#" as "::" inside a "$" expression, string literals too
    raise ValueError(f"{name} must be true or false, got {value!r}")
