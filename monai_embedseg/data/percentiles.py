"""Exact intensity percentiles of a volume larger than memory (the paper's per-image normalisation, block-wise).

The bundles normalise every image with ``ScaleIntensityRangePercentiles(1, 99.8)`` computed over the whole image
(numpy's / torch's ``linear`` percentile, per channel, on the float32 image). A volume processed block by block must
use the same two values for every block, so they are computed here once, over the whole volume, in passes over slabs
that are Dask tasks (bounded memory, any Dask scheduler):

* integer images of up to 16 bits (and bool): one pass of per-slab histograms (``bincount``) gives every order
  statistic exactly;
* other dtypes (float, 32-bit integers): one min / max pass, then histogram refinement passes (65,536 bins per
  pass around each needed order statistic) until the bin holds one distinct value or few enough values to gather
  and sort; exact as well, typically 3-4 passes.

The order statistics are interpolated with numpy's ``linear`` rule (virtual index ``n q + 1 - q - 1``); the result,
in float32 like MONAI's, equals ``numpy.percentile`` of the float32 image up to the rounding of that interpolation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from monai_embedseg.intensity import CONTENT_TILE, SPARSE_RATIO, content_level, is_mostly_empty, tile_mask

__all__ = ["content_percentiles", "slab_slices", "volume_percentiles", "volume_tile_maxima"]

_BINS = 1 << 16
_GATHER_MAX = 1 << 22
_SLAB_VOXELS = 1 << 24


def slab_slices(shape: Sequence[int], max_voxels: int = _SLAB_VOXELS) -> list[tuple[slice, ...]]:
    """Split a spatial ``shape`` into slabs of at most ``max_voxels`` voxels (along the first axes).

    Returns:
        a list of tuples of slices, one slice per axis, covering ``shape`` exactly once.
    """
    shape = [int(s) for s in shape]
    steps = list(shape)
    for d in range(len(shape)):  # shrink the leading axes first until a slab fits
        inner = math.prod(steps[d + 1 :])
        steps[d] = max(1, min(shape[d], max_voxels // max(1, inner)))
        if math.prod(steps) <= max_voxels:
            break
    ranges = [range(0, s, st) for s, st in zip(shape, steps)]
    out: list[tuple[slice, ...]] = [()]
    for r, st, s in zip(ranges, steps, shape):
        out = [o + (slice(a, min(a + st, s)),) for o in out for a in r]
    return out


def _as_values(block: np.ndarray) -> np.ndarray:
    """One channel's voxels as they enter the percentile: float32 (LoadImage's dtype), flattened."""
    return np.asarray(block, dtype=np.float32).reshape(-1)


def _selected(block: np.ndarray, c: int, slices: tuple[slice, ...], tiles: tuple | None) -> np.ndarray:
    """Channel ``c`` of a slab's ``block``, flattened: every voxel, or with ``tiles = (tile, content (C, *grid))`` only
    those in the content tiles of that channel."""
    if tiles is None or tiles[1][c].all():
        return block[c].reshape(-1)
    tile, content = tiles
    return block[c][tile_mask(content[c], block.shape[1:], tile, [s.start for s in slices])]


def _small_int(dtype: np.dtype) -> bool:
    return dtype == np.bool_ or (dtype.kind in "ui" and dtype.itemsize <= 2)


def _slab_bincount(volume: Any, slices: tuple[slice, ...], tiles: tuple | None = None) -> np.ndarray:
    """``(C, 2**bits)`` int64 histogram of one slab of a <= 16-bit integer volume (offset for signed types)."""
    block = volume.read(slices)
    dt = np.dtype(volume.dtype)
    bits = 8 * dt.itemsize if dt != np.bool_ else 1
    offset = -(1 << (bits - 1)) if dt.kind == "i" else 0
    out = np.empty((block.shape[0], 1 << bits), dtype=np.int64)
    for c in range(block.shape[0]):
        v = _selected(block, c, slices, tiles).astype(np.int64) - offset
        out[c] = np.bincount(v, minlength=1 << bits)
    return out


def _slab_minmax(volume: Any, slices: tuple[slice, ...], tiles: tuple | None = None) -> np.ndarray:
    """``(C, 3)`` min, max and NaN count of one slab."""
    block = volume.read(slices)
    out = np.empty((block.shape[0], 3))
    for c in range(block.shape[0]):
        v = _as_values(_selected(block, c, slices, tiles))
        nan = np.isnan(v)
        n_nan = int(nan.sum())
        w = v[~nan] if n_nan else v
        out[c] = (w.min() if w.size else np.inf, w.max() if w.size else -np.inf, n_nan)
    return out


def _slab_refine(
    volume: Any, slices: tuple[slice, ...], queries: list[tuple[int, float, float, bool]], tiles: tuple | None = None
) -> list:
    """For each query ``(channel, lo, hi, gather)`` over one slab: the voxels in ``[lo, hi]`` and below ``lo``.

    Returns, per query, ``(n_below, vmin, vmax, hist (BINS,))`` or ``(n_below, vmin, vmax, values)`` when ``gather``.
    """
    block = volume.read(slices)
    out = []
    for c, lo, hi, gather in queries:
        v = _as_values(_selected(block, c, slices, tiles)).astype(np.float64)
        n_below = int(np.count_nonzero(v < lo))
        w = v[(v >= lo) & (v <= hi)]
        vmin, vmax = (float(w.min()), float(w.max())) if w.size else (np.inf, -np.inf)
        if gather:
            out.append((n_below, vmin, vmax, w.astype(np.float32)))
        else:
            out.append((n_below, vmin, vmax, np.bincount(_bin_index(w, lo, hi), minlength=_BINS)))
    return out


def _bin_index(w: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Bin of each value of ``w`` (all in ``[lo, hi]``) among the :data:`_BINS` bins of ``np.linspace(lo, hi, _BINS +
    1)``: the largest ``i <= _BINS - 1`` with ``edges[i] <= w``, as ``searchsorted(edges, w, "right") - 1`` gives it,
    computed arithmetically (one multiply per value) and then corrected against the edges where rounding put a value
    in a neighbouring bin (a binary search per value took 80 % of the float path's time)."""
    edges = np.linspace(lo, hi, _BINS + 1)
    if not hi > lo:
        return np.zeros(w.shape, dtype=np.int64)
    idx = ((w - lo) * (_BINS / (hi - lo))).astype(np.int64)
    np.clip(idx, 0, _BINS - 1, out=idx)
    for _ in range(3):  # rounding puts a value near an edge one bin off at most, unless bins are sub-ULP wide
        down = (idx > 0) & (edges[idx] > w)
        up = (idx < _BINS - 1) & (edges[idx + 1] <= w)
        if not (down.any() or up.any()):
            return idx
        idx -= down
        idx += up
    return np.clip(np.searchsorted(edges, w, side="right") - 1, 0, _BINS - 1)  # degenerate range: the exact search


def _virtual_index(n: int, q: Sequence[float]) -> np.ndarray:
    """numpy's ``linear`` virtual index ``n q + (1 - q) - 1`` of each percentile (q in percent)."""
    qf = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    return n * qf + (1 + qf * (1 - 1 - 1)) - 1


def _interpolate(n: int, q: Sequence[float], stat: dict[int, float]) -> np.ndarray:
    """Percentiles from the order statistics ``stat[rank]`` (float32 values), numpy's ``linear`` interpolation."""
    out = []
    for v in _virtual_index(n, q):
        prev = int(min(max(math.floor(v), 0), n - 1))
        nxt = min(prev + 1, n - 1)
        a, b = np.float32(stat[prev]), np.float32(stat[nxt])
        g = float(v - math.floor(v)) if 0 <= v < n - 1 else 0.0
        diff = np.float64(b - a)  # numpy subtracts in the array's dtype (float32), then interpolates in float64
        val = np.float64(b) - diff * (1 - g) if g >= 0.5 else np.float64(a) + diff * g
        out.append(np.float32(val))
    return np.asarray(out, dtype=np.float32)


def _needed_ranks(n: int, q: Sequence[float]) -> list[int]:
    ranks = set()
    for v in _virtual_index(n, q):
        prev = int(min(max(math.floor(v), 0), n - 1))
        ranks.update({prev, min(prev + 1, n - 1)})
    return sorted(ranks)


def _default_compute(tasks: list) -> list:
    import dask

    return list(dask.compute(*tasks, scheduler="threads"))


def volume_percentiles(
    volume: Any,
    q: Sequence[float] = (1.0, 99.8),
    compute: Callable[[list], list] | None = None,
    max_voxels: int = _SLAB_VOXELS,
    tiles: tuple[Sequence[int], np.ndarray] | None = None,
) -> np.ndarray:
    """Exact per-channel percentiles of a volume read slab by slab (see the module docstring).

    Args:
        volume: a :class:`~monai_embedseg.data.zarr_io.LazyVolume` / :class:`~monai_embedseg.data.zarr_io.ArrayVolume`
            (``read(slices) -> (C, *block)``, ``dtype``, ``spatial_shape``).
        q: percentiles in [0, 100].
        compute: runs a list of ``dask.delayed`` tasks and returns their results in order (default: Dask's threaded
            scheduler); pass one bound to a ``dask.distributed.Client`` to use a cluster.
        max_voxels: voxels per slab task (memory per task ~ 12 bytes per voxel).
        tiles: ``(tile, content)``: take each channel's percentiles over the voxels of its tiles marked in
            ``content`` ``(C, *grid)`` bool (the grid of ``tile`` voxels per axis, see :func:`volume_tile_maxima`).

    Returns:
        float32 array ``(C, len(q))``: per channel, the values that ``np.percentile(image[c].astype(float32), q)``
        gives (see the module docstring about the last bit), over the content tiles' voxels with ``tiles``.

    Raises:
        ValueError: ``q`` outside [0, 100], a volume holding NaN values, or a channel without content tiles.
    """
    import dask

    q = [float(x) for x in q]
    if any(not 0.0 <= x <= 100.0 for x in q):
        raise ValueError(f"percentiles must be in [0, 100], got {q}.")
    compute = compute or _default_compute
    slabs = slab_slices(volume.spatial_shape, max_voxels)
    n_ch = volume.n_channels
    if tiles is None:
        counts = [math.prod(volume.spatial_shape)] * n_ch
    else:
        tile, content = list(tiles[0]), np.asarray(tiles[1], dtype=bool)
        tiles = (tile, content)
        sizes = [
            np.diff(np.minimum(np.arange(0, g + 1) * t, n))
            for g, t, n in zip(content.shape[1:], tile, volume.spatial_shape)
        ]
        voxels = functools.reduce(np.multiply.outer, sizes)
        counts = [int(voxels[content[c]].sum()) for c in range(n_ch)]
        if min(counts) == 0:
            raise ValueError("a channel has no content tiles: its percentiles are undefined.")
    ranks = [_needed_ranks(n, q) for n in counts]
    dtype = np.dtype(volume.dtype)
    stats: list[dict[int, float]] = [{} for _ in range(n_ch)]
    if _small_int(dtype):
        hists = compute([dask.delayed(_slab_bincount, pure=False)(volume, s, tiles) for s in slabs])
        total = np.sum(hists, axis=0)
        bits = 8 * dtype.itemsize if dtype != np.bool_ else 1
        offset = -(1 << (bits - 1)) if dtype.kind == "i" else 0
        for c in range(n_ch):
            cum = np.cumsum(total[c])
            for r in ranks[c]:
                stats[c][r] = float(np.float32(int(np.searchsorted(cum, r, side="right")) + offset))
        return np.stack([_interpolate(counts[c], q, stats[c]) for c in range(n_ch)])
    mm = np.stack(compute([dask.delayed(_slab_minmax, pure=False)(volume, s, tiles) for s in slabs]))
    if mm[:, :, 2].sum() > 0:
        raise ValueError(f"{getattr(volume, 'path', 'volume')} holds NaN values; percentiles are undefined.")
    # per (channel, rank): [lo, hi], voxels below lo, whether to gather next
    state = {
        (c, r): [float(mm[:, c, 0].min()), float(mm[:, c, 1].max()), 0, False] for c in range(n_ch) for r in ranks[c]
    }
    while state:
        keys = list(state)
        queries = [(c, state[k][0], state[k][1], state[k][3]) for k in keys for c in [k[0]]]
        parts = compute([dask.delayed(_slab_refine, pure=False)(volume, s, queries, tiles) for s in slabs])
        for i, (c, r) in enumerate(keys):
            lo, hi, _, gather = state[(c, r)]
            below = sum(p[i][0] for p in parts)
            vmin = min(p[i][1] for p in parts)
            vmax = max(p[i][2] for p in parts)
            if vmin == vmax:  # one distinct value left in the interval
                stats[c][r] = vmin
                del state[(c, r)]
                continue
            if gather:
                vals = np.sort(np.concatenate([p[i][3] for p in parts]))
                stats[c][r] = float(vals[r - below])
                del state[(c, r)]
                continue
            hist = np.sum([p[i][3] for p in parts], axis=0)
            cum = below + np.cumsum(hist)
            b = int(np.searchsorted(cum, r, side="right"))
            edges = np.linspace(lo, hi, _BINS + 1)
            new_lo = float(edges[b])
            new_hi = float(hi if b == _BINS - 1 else np.nextafter(edges[b + 1], -np.inf))
            state[(c, r)] = [new_lo, new_hi, 0, int(hist[b]) <= _GATHER_MAX]
    return np.stack([_interpolate(counts[c], q, stats[c]) for c in range(n_ch)])


def _slab_tile_maxima(volume: Any, slices: tuple[slice, ...], tile: Sequence[int]) -> tuple[list, np.ndarray]:
    """Per channel, the maxima of the parts of the global ``tile`` grid inside one slab: ``(tile index ranges per
    axis, (C, *parts))``."""
    block = np.asarray(volume.read(slices), dtype=np.float32)
    starts, ranges = [], []
    for s, t in zip(slices, tile):
        cuts = np.unique(np.concatenate([[s.start], np.arange((s.start // t + 1) * t, s.stop, t)]))
        starts.append(cuts - s.start)
        ranges.append(cuts // t)
    out = block
    for axis, st in enumerate(starts):
        out = np.maximum.reduceat(out, st, axis=axis + 1)
    return ranges, out


def volume_tile_maxima(
    volume: Any, tile: Sequence[int], compute: Callable[[list], list] | None = None, max_voxels: int = _SLAB_VOXELS
) -> np.ndarray:
    """Maximum of every tile of ``tile`` voxels per axis of a volume read slab by slab: ``(C, *ceil(shape / tile))``
    float32 (NaN propagates)."""
    import dask

    compute = compute or _default_compute
    shape = volume.spatial_shape
    grid = np.full((volume.n_channels, *[math.ceil(n / t) for n, t in zip(shape, tile)]), -np.inf, np.float32)
    slabs = slab_slices(shape, max_voxels)
    for ranges, part in compute([dask.delayed(_slab_tile_maxima, pure=False)(volume, s, tile) for s in slabs]):
        index = (slice(None), *np.ix_(*ranges))
        grid[index] = np.maximum(grid[index], part)
    return grid


def content_percentiles(
    volume: Any,
    q: Sequence[float] = (1.0, 99.8),
    compute: Callable[[list], list] | None = None,
    max_voxels: int = _SLAB_VOXELS,
    tile: int = CONTENT_TILE,
    ratio: float = SPARSE_RATIO,
    apply: bool = True,
) -> tuple[np.ndarray, float | None]:
    """The two normalisation percentiles ``q`` of each channel, over the whole volume or, for a mostly empty channel,
    over its tiles holding content (the rule of :mod:`monai_embedseg.intensity`, as the in-memory transform applies
    it).

    Args:
        apply: ``False``: only recognise a mostly empty volume (the range stays the whole volume's).

    Returns:
        ``(range (C, 2) float32, fraction)``: ``fraction`` of the volume's tiles that hold content (the smallest over
        the mostly empty channels), ``None`` when no channel is mostly empty.
    """
    whole = volume_percentiles(volume, q, compute, max_voxels)
    tiles = [int(tile)] * len(volume.spatial_shape)
    maxima = volume_tile_maxima(volume, tiles, compute, max_voxels)
    peaks = maxima.reshape(maxima.shape[0], -1).max(axis=1)
    sparse = [is_mostly_empty(float(lo), float(hi), float(p), ratio) for (lo, hi), p in zip(whole, peaks)]
    if not any(sparse):
        return whole, None
    content = np.ones(maxima.shape, dtype=bool)
    for c, (lo, hi) in enumerate(whole):
        if sparse[c]:
            content[c] = maxima[c] > content_level(float(lo), float(hi), ratio)
    fraction = float(min(content[c].mean() for c in range(len(sparse)) if sparse[c]))
    if not apply:
        return whole, fraction
    ranged = volume_percentiles(volume, q, compute, max_voxels, tiles=(tiles, content))
    if any(hi <= lo for lo, hi in ranged):  # the content is constant: keep the whole-volume range
        return whole, None
    return ranged, fraction
