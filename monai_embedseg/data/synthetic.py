"""Seeded synthetic microscopy-like datasets with instance labels, small enough for CPU tests.

* :func:`synthetic_nuclei_2d`: touching ellipses of varied size and orientation (star-convex objects).
* :func:`synthetic_worms_2d`: long curved tubes that overlap (not star-convex), with one-hot masks.
* :func:`synthetic_cells_3d`: ellipsoids sampled on an isotropic grid, then sub-sampled along z (anisotropic).

All arrays are plain, without a channel axis (``(Y, X)`` / ``(Z, Y, X)``; one-hot stacks ``(N, Y, X)``), as the
release layout stores them on disk; add a channel with ``EnsureChannelFirst`` / ``arr[None]``. Images are float32,
roughly in [0, 1]: smooth per-object intensity, Gaussian blur (``scipy.ndimage.gaussian_filter``) and Poisson noise.
Label maps are uint16 with ids ``1..N`` (0 = background).

Touching objects are made by painting ellipses / ellipsoids and giving each pixel to the object whose normalised
distance ``|A^-1 R^T (p - c)|`` is smallest, so neighbours share straight-ish boundaries; the intensity falls off
towards each object's border, which makes those boundaries visible in the image.

Every generator takes ``seed`` (anything ``numpy.random.default_rng`` accepts, or a ``Generator``) and is
deterministic given it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from scipy import ndimage

from monai_embedseg.labels import one_hot_to_label_map

__all__ = [
    "synthetic_nuclei_2d",
    "synthetic_worms_2d",
    "synthetic_cells_3d",
    "write_synthetic_dataset",
    "SYNTHETIC_KINDS",
]

SeedLike = Any


# --------------------------------------------------------------------------------------------------------- helpers
def _range(value: int | float | Sequence[float], name: str, integer: bool = False) -> tuple[float, float]:
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)  # type: ignore[misc]
    if not (0 < lo <= hi) or (integer and (int(lo) != lo or int(hi) != hi)):
        raise ValueError(f"{name} must be a positive {'integer ' if integer else ''}value or (min, max), got {value}.")
    return (int(lo), int(hi)) if integer else (float(lo), float(hi))


def _check_shape(shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 8:
        raise ValueError(f"shape must have {ndim} values, each >= 8, got {shape}.")
    return shape


def _random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random orthogonal ``(d, d)`` matrix (columns = principal axes)."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _place_centers(
    rng: np.random.Generator, shape: Sequence[int], radii: np.ndarray, gap: float, tries: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Centers ``(K, D)`` inside ``shape`` with ``|c_i - c_j| >= gap * (r_i + r_j)`` and their radii ``(K,)``.

    Objects that find no free place in ``tries`` random draws are dropped (K <= len(radii)).
    """
    shape_a = np.asarray(shape, dtype=np.float64)
    centers: list[np.ndarray] = []
    kept: list[float] = []
    for r in radii:
        cand = rng.uniform(0, 1, size=(tries, len(shape))) * shape_a
        if centers:
            c = np.asarray(centers)
            dist = np.linalg.norm(cand[:, None, :] - c[None], axis=-1)  # (tries, K)
            ok = np.all(dist >= gap * (r + np.asarray(kept))[None], axis=1)
            if not ok.any():
                continue
            cand = cand[ok]
        centers.append(cand[0])
        kept.append(float(r))
    return np.asarray(centers).reshape(-1, len(shape)), np.asarray(kept)


def _paint_ellipsoids(
    shape: Sequence[int], centers: np.ndarray, semi_axes: np.ndarray, rotations: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise ellipses / ellipsoids; overlaps go to the object with the smallest normalised distance.

    Args:
        shape: spatial shape ``(*spatial)`` (2 or 3 values).
        centers: ``(K, D)`` centers in pixels.
        semi_axes: ``(K, D)`` semi-axis lengths in pixels.
        rotations: ``(K, D, D)`` orthogonal matrices, columns = principal axes.

    Returns:
        ``label (*spatial) int32`` with ids ``1..K`` and ``dist (*spatial) float32``: the normalised distance
        (0 at the center, 1 on the border) to the owning object, ``inf`` on background.
    """
    label = np.zeros(shape, dtype=np.int32)
    dist = np.full(shape, np.inf, dtype=np.float32)
    for k, (c, a, rot) in enumerate(zip(centers, semi_axes, rotations)):
        r = float(a.max())
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(int(l_), int(h_)) for l_, h_ in zip(lo, hi))
        grids = np.meshgrid(*[np.arange(l_, h_, dtype=np.float32) for l_, h_ in zip(lo, hi)], indexing="ij")
        p = np.stack(grids, axis=-1) - c.astype(np.float32)  # (..., D)
        q = (p @ rot.astype(np.float32)) / a.astype(np.float32)
        d = np.sqrt((q * q).sum(-1))
        upd = (d < 1.0) & (d < dist[sl])
        label[sl][upd] = k + 1
        dist[sl][upd] = d[upd]
    return label, dist


def _clean_labels(label: np.ndarray, min_size: int) -> np.ndarray:
    """Keep each object's largest connected component, drop objects under ``min_size`` pixels, relabel 1..N."""
    out = np.zeros(label.shape, dtype=np.uint16)
    new_id = 0
    for k, sl in enumerate(ndimage.find_objects(label), start=1):
        if sl is None:
            continue
        mask = label[sl] == k
        cc, n = ndimage.label(mask)
        if n > 1:
            mask = cc == (np.argmax(np.bincount(cc.ravel())[1:]) + 1)
        if mask.sum() < min_size:
            continue
        new_id += 1
        out[sl][mask] = new_id
    return out


def _blur_and_noise(
    rng: np.random.Generator, clean: np.ndarray, blur: float | Sequence[float], photons: float
) -> np.ndarray:
    """Gaussian blur then Poisson noise with ``photons`` expected counts at intensity 1; float32."""
    img = clean.astype(np.float32)
    if np.any(np.asarray(blur) > 0):
        img = ndimage.gaussian_filter(img, sigma=blur)
    img = rng.poisson(np.clip(img, 0, None) * photons).astype(np.float32) / np.float32(photons)
    return img


def _draw_count(rng: np.random.Generator, value: int | Sequence[int], name: str) -> int:
    lo, hi = _range(value, name, integer=True)
    return int(rng.integers(lo, hi + 1))


def _blob_image(rng: np.random.Generator, label: np.ndarray, dist: np.ndarray, background: float = 0.08) -> np.ndarray:
    """Clean image: per-object intensity falling off towards the border, plus a faint smooth texture."""
    n = int(label.max())
    inten = np.concatenate([[0.0], rng.uniform(0.45, 1.0, n)]).astype(np.float32)
    coarse = rng.normal(size=tuple(max(2, -(-s // 6)) for s in label.shape)).astype(np.float32)
    zoom = [s / c for s, c in zip(label.shape, coarse.shape)]
    texture = ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)
    texture = texture[tuple(slice(0, s) for s in label.shape)]  # smooth noise, ~6 px correlation length
    texture /= max(float(np.abs(texture).max()), 1e-6)
    inside = label > 0
    d = np.where(inside, dist, 1.0)
    clean = np.full(label.shape, background, dtype=np.float32)
    clean[inside] = (inten[label] * (1.0 - 0.45 * d * d) * (1.0 + 0.15 * texture))[inside]
    return clean


# ------------------------------------------------------------------------------------------------------ generators
def synthetic_nuclei_2d(
    shape: Sequence[int] = (256, 256),
    n_objects: int | Sequence[int] = (20, 40),
    radius: float | Sequence[float] = (6, 14),
    seed: SeedLike = 0,
    blur: float = 1.0,
    photons: float = 60.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Touching elliptical nuclei of varied size and orientation.

    Args:
        shape: ``(H, W)``.
        n_objects: number of nuclei, or ``(min, max)`` drawn uniformly (fewer when they do not fit).
        radius: semi-major axis in pixels, or ``(min, max)``; the minor axis is 0.6-1.0 times it.
        seed: random seed.
        blur: Gaussian blur sigma in pixels.
        photons: expected Poisson counts at intensity 1 (lower = noisier).

    Returns:
        ``image (H, W) float32`` and ``label (H, W) uint16`` with ids ``1..N``.
    """
    shape = _check_shape(shape, 2)
    rng = np.random.default_rng(seed)
    r_lo, r_hi = _range(radius, "radius")
    n = _draw_count(rng, n_objects, "n_objects")
    major = rng.uniform(r_lo, r_hi, n)
    centers, major = _place_centers(rng, shape, major, gap=0.55)
    k = len(major)
    semi = np.stack([major, major * rng.uniform(0.6, 1.0, k)], axis=1)
    rot = np.stack([_random_rotation(rng, 2) for _ in range(k)]) if k else np.zeros((0, 2, 2))
    label, dist = _paint_ellipsoids(shape, centers, semi, rot)
    label = _clean_labels(label, min_size=max(4, int(0.25 * np.pi * r_lo * r_lo * 0.6)))
    image = _blur_and_noise(rng, _blob_image(rng, label, dist), blur, photons)
    return image, label


def _worm_path(rng: np.random.Generator, length: float) -> np.ndarray:
    """A smooth curved path ``(M, 2)`` (steps of 0.5 px) starting at the origin, bending by 0.8-1.6 pi in all."""
    m = max(int(2 * length), 4)
    t = np.linspace(0.0, 1.0, m)
    bend = rng.uniform(0.8, 1.6) * np.pi * rng.choice([-1.0, 1.0])
    wiggle = rng.uniform(0.0, 0.6) * np.pi
    phase = rng.uniform(0, 2 * np.pi)
    # heading: a steady bend plus a sinusoidal wiggle (S-shapes), integrated to positions
    heading = rng.uniform(0, 2 * np.pi) + bend * t + wiggle * np.sin(2 * np.pi * t * rng.uniform(0.5, 1.5) + phase)
    steps = 0.5 * np.stack([np.sin(heading), np.cos(heading)], axis=1)
    return np.cumsum(steps, axis=0)


def synthetic_worms_2d(
    shape: Sequence[int] = (256, 256),
    n_worms: int | Sequence[int] = (6, 12),
    seed: SeedLike = 0,
    length: float | Sequence[float] = (0.35, 0.6),
    thickness: float | Sequence[float] = (2.5, 4.0),
    blur: float = 1.0,
    photons: float = 60.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long, curved, thick tubes ("worms") that overlap; not star-convex.

    Args:
        shape: ``(H, W)``.
        n_worms: number of worms, or ``(min, max)``.
        seed: random seed.
        length: worm length as a fraction of ``min(H, W)``, or ``(min, max)``.
        thickness: tube radius in pixels, or ``(min, max)``.
        blur: Gaussian blur sigma in pixels.
        photons: expected Poisson counts at intensity 1.

    Returns:
        ``image (H, W) float32``, ``one_hot (N, H, W) uint8`` (one channel per worm, all non-empty) and
        ``label (H, W) uint16``: the flattened label map, where a pixel covered by several worms gets the highest id
        (the worm drawn last, "on top").
    """
    shape = _check_shape(shape, 2)
    rng = np.random.default_rng(seed)
    n = _draw_count(rng, n_worms, "n_worms")
    l_lo, l_hi = _range(length, "length")
    t_lo, t_hi = _range(thickness, "thickness")
    size = min(shape)
    masks, profiles = [], []
    for _ in range(n):
        r = rng.uniform(t_lo, t_hi)
        margin = int(np.ceil(r)) + 2
        for _attempt in range(50):
            path = _worm_path(rng, rng.uniform(l_lo, l_hi) * size)
            extent = path.max(0) - path.min(0)
            if np.all(extent + 2 * margin < np.asarray(shape)):
                break
        else:  # could not fit: shrink the last path into the image
            path = path * (min(shape) - 2 * margin - 1) / max(float(extent.max()), 1.0)
            extent = path.max(0) - path.min(0)
        offset = rng.uniform(margin, np.asarray(shape) - margin - extent) - path.min(0)
        path = path + offset
        lo = np.maximum(np.floor(path.min(0)).astype(int) - margin, 0)
        hi = np.minimum(np.ceil(path.max(0)).astype(int) + margin + 1, shape)
        canvas = np.ones(tuple(hi - lo), dtype=bool)
        idx = np.round(path - lo).astype(int)
        canvas[idx[:, 0], idx[:, 1]] = False
        edt = ndimage.distance_transform_edt(canvas)
        local = edt <= r
        mask = np.zeros(shape, dtype=bool)
        mask[lo[0] : hi[0], lo[1] : hi[1]] = local
        prof = np.zeros(shape, dtype=np.float32)
        prof[lo[0] : hi[0], lo[1] : hi[1]] = np.where(local, 1.0 - 0.5 * (edt / r) ** 2, 0.0)
        masks.append(mask)
        profiles.append(prof)
    one_hot = np.stack(masks).astype(np.uint8)
    label = one_hot_to_label_map(one_hot, np.uint16)[0]
    inten = rng.uniform(0.35, 0.7, n).astype(np.float32)
    clean = 0.08 + np.tensordot(inten, np.stack(profiles), axes=1)  # overlaps add up (brighter)
    image = _blur_and_noise(rng, clean, blur, photons)
    return image, one_hot, label


def synthetic_cells_3d(
    shape: Sequence[int] = (32, 128, 128),
    z_anisotropy: int = 3,
    n_objects: int | Sequence[int] = (16, 32),
    radius: float | Sequence[float] = (8, 14),
    seed: SeedLike = 0,
    blur: Sequence[float] = (2.0, 1.0, 1.0),
    photons: float = 60.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Touching ellipsoidal nuclei / cells in an anisotropic 3D stack.

    Objects are painted on an isotropic grid ``(Z * z_anisotropy, Y, X)``, blurred there with a PSF elongated along
    z (``blur``, in isotropic voxels), then every ``z_anisotropy``-th slice is kept, so the result has spacing
    ``(z_anisotropy, 1, 1)``.

    Args:
        shape: output ``(Z, Y, X)``.
        z_anisotropy: integer z sub-sampling factor (1 = isotropic; typical 2-4).
        n_objects: number of objects, or ``(min, max)`` (fewer when they do not fit).
        radius: largest semi-axis in isotropic voxels, or ``(min, max)``; the others are 0.65-1.0 times it.
        seed: random seed.
        blur: Gaussian sigma per axis (z, y, x) on the isotropic grid.
        photons: expected Poisson counts at intensity 1.

    Returns:
        ``image (Z, Y, X) float32`` and ``label (Z, Y, X) uint16`` with ids ``1..N``.
    """
    shape = _check_shape(shape, 3)
    if int(z_anisotropy) != z_anisotropy or z_anisotropy < 1:
        raise ValueError(f"z_anisotropy must be a positive integer, got {z_anisotropy}.")
    a = int(z_anisotropy)
    rng = np.random.default_rng(seed)
    iso = (shape[0] * a, shape[1], shape[2])
    r_lo, r_hi = _range(radius, "radius")
    n = _draw_count(rng, n_objects, "n_objects")
    major = rng.uniform(r_lo, r_hi, n)
    centers, major = _place_centers(rng, iso, major, gap=0.55)
    k = len(major)
    semi = major[:, None] * np.concatenate([np.ones((k, 1)), rng.uniform(0.65, 1.0, (k, 2))], axis=1)
    rot = np.stack([_random_rotation(rng, 3) for _ in range(k)]) if k else np.zeros((0, 3, 3))
    label_iso, dist_iso = _paint_ellipsoids(iso, centers, semi, rot)
    clean_iso = _blob_image(rng, label_iso, dist_iso, background=0.06)
    blurred = ndimage.gaussian_filter(clean_iso, sigma=blur)
    z_idx = a // 2 + a * np.arange(shape[0])
    label = _clean_labels(label_iso[z_idx], min_size=max(4, int(r_lo)))
    image = _blur_and_noise(rng, blurred[z_idx], 0.0, photons)
    return image, label


# ---------------------------------------------------------------------------------------------------- on-disk sets
#: kinds accepted by :func:`write_synthetic_dataset` and their default spatial shapes
SYNTHETIC_KINDS = {"nuclei_2d": (256, 256), "worms_2d": (256, 256), "cells_3d": (32, 128, 128)}
_MANIFEST = "synthetic.json"


def _generate(kind: str, shape: Sequence[int], seed: Any, kwargs: dict) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """(image, label, one_hot or None, spacing or None) for one sample."""
    if kind == "nuclei_2d":
        image, label = synthetic_nuclei_2d(shape, seed=seed, **kwargs)
        return image, label, None, None
    if kind == "worms_2d":
        image, one_hot, label = synthetic_worms_2d(shape, seed=seed, **kwargs)
        return image, label, one_hot, None
    image, label = synthetic_cells_3d(shape, seed=seed, **kwargs)
    return image, label, None, (float(kwargs.get("z_anisotropy", 3)), 1.0, 1.0)


def _existing_dataset_matches(root: Path, manifest: Path, params: dict, expected: list[Path]) -> bool:
    """``True`` if ``root`` already holds the complete dataset ``params``; ``False`` if it holds none of it.

    Raises:
        ValueError: a corrupt manifest, a dataset made with other parameters, or a partial dataset.
    """
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"corrupt manifest {manifest}: {e}; delete {root} to regenerate.") from e
        if old != params:
            raise ValueError(f"{root} holds a synthetic dataset made with other parameters ({old}), not {params}.")
        missing = [str(p) for p in expected if not p.exists()]
        if missing:
            raise ValueError(f"incomplete synthetic dataset in {root}: {len(missing)} files missing, e.g. {missing[0]}")
        return True
    present = [str(p) for p in expected if p.exists()]
    if present:
        raise ValueError(
            f"partial dataset in {root} (no {_MANIFEST}; {len(present)} of {len(expected)} files exist, e.g. "
            f"{present[0]}): delete it or choose another folder."
        )
    return False


def write_synthetic_dataset(
    root: PathLike,
    kind: str = "nuclei_2d",
    n_train: int = 20,
    n_test: int = 5,
    seed: int = 0,
    shape: Sequence[int] | None = None,
    **kwargs: Any,
) -> str:
    """Write a synthetic dataset in the release layout (see :mod:`monai_embedseg.data.datalist`).

    Files: ``<root>/{train,test}/images/<kind>_<i>.tif`` (float32), ``.../masks/<kind>_<i>.tif`` (uint16 label
    maps) and, for ``"worms_2d"``, ``.../masks_onehot/<kind>_<i>.tif`` (``(N, Y, X)`` uint8, axes ``"CYX"``).
    3D files record spacing ``(z_anisotropy, 1, 1)``. A ``synthetic.json`` manifest with the parameters is written
    last; it marks the dataset complete.

    Existing files are never overwritten: a complete dataset with the same parameters is left as is (the call just
    returns), anything else already present is an error.

    Args:
        root: dataset folder (created).
        kind: ``"nuclei_2d"``, ``"worms_2d"`` or ``"cells_3d"``.
        n_train: number of training samples (>= 1).
        n_test: number of test samples (>= 0; no ``test`` folder when 0).
        seed: base seed; sample ``i`` of a split uses ``default_rng([seed, split, i])``.
        shape: spatial shape (default 256x256 in 2D, 32x128x128 in 3D).
        kwargs: passed to the generator (e.g. ``z_anisotropy=2``, ``n_objects=(5, 10)``).

    Returns:
        ``root`` as a string.

    Raises:
        ValueError: unknown kind, bad counts, or a partial / different dataset already in ``root``.
    """
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"kind must be one of {sorted(SYNTHETIC_KINDS)}, got {kind!r}.")
    if int(n_train) < 1 or int(n_test) < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train} and {n_test}.")
    shape = tuple(int(s) for s in (shape if shape is not None else SYNTHETIC_KINDS[kind]))
    root_p = Path(os.fspath(root))
    params = json.loads(
        json.dumps(
            {
                "kind": kind,
                "n_train": int(n_train),
                "n_test": int(n_test),
                "seed": seed,
                "shape": list(shape),
                "kwargs": kwargs,
            },
            default=list,
        )
    )
    splits = [("train", int(n_train)), ("test", int(n_test))]
    folders = ["images", "masks"] + (["masks_onehot"] if kind == "worms_2d" else [])
    expected = [
        root_p / split / sub / f"{kind}_{i:03d}.tif" for split, n in splits for i in range(n) for sub in folders
    ]
    manifest = root_p / _MANIFEST
    if _existing_dataset_matches(root_p, manifest, params, expected):
        return str(root_p)
    from monai_embedseg.data.io import write_tiff

    for s_idx, (split, n) in enumerate(splits):
        for i in range(n):
            image, label, one_hot, spacing = _generate(kind, shape, [int(seed), s_idx, i], kwargs)
            name = f"{kind}_{i:03d}.tif"
            write_tiff(root_p / split / "images" / name, image, spacing=spacing)
            write_tiff(root_p / split / "masks" / name, label, spacing=spacing)
            if one_hot is not None:
                write_tiff(root_p / split / "masks_onehot" / name, one_hot, axes="CYX", spacing=spacing)
    from monai_embedseg.data.properties import save_properties

    save_properties(params, manifest)  # atomic JSON, never overwrites
    return str(root_p)
