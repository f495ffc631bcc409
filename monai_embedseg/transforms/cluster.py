"""EmbedSeg inference: greedy clustering of pixel embeddings into instances.

The greedy definition (the contract; the slow reference in ``tests/test_cluster.py`` implements it literally):

1. Decode the raw prediction with :func:`~monai_embedseg.embedding.decode_prediction` into embeddings
   ``e``, bandwidths ``sigma`` and seed probabilities. Foreground ``F = seed > fg_thresh``; unclaimed ``U = F``;
   candidate seeds ``S = F & (seed > seed_thresh)``.
2. Visit the candidate seeds in the order: highest seed first, ties broken by the lowest raster (C-order) index.
   Skip a seed that is already *visited*. For a seed pixel ``s`` the proposal is
   ``P = {p in F : q_s(p) < 2 ln 2}`` with ``q_s(p) = sum_d ((e_d(p) - e_d(s)) / sigma_d(s)) ** 2``, i.e.
   ``phi_s(p) = exp(-q_s(p) / 2) > 0.5`` (computed elementwise in the decoded dtype, float32 or float64, as
   ``t = (e_d(p) - e_d(s)) / sigma_d(s)``, ``q += t * t`` over the axes in order, compared with ``2 ln 2`` cast
   to that dtype; with ``split_components`` also restricted to the face-connected component of ``F`` that
   contains ``s``).
3. The proposal is accepted iff ``|P| >= min_object_size`` and ``|P & U| > min_unclaimed * |P|``; then
   ``P & U`` becomes the next object (confidence = seed of ``s``) and ``U -= P``. Accepted or not, every pixel of
   ``P`` (and ``s``) is marked visited, so it cannot become a seed any more.
4. Accepted objects with fewer than ``min_object_size`` pixels (``|P & U|``) are dropped (their pixels stay
   background), and with ``exclude_border`` so are those with a pixel on the image border; the rest are numbered
   ``1..K`` in acceptance order.

The fast implementation gives exactly this result: it works on foreground pixels only, orders the seeds once
(one integer sort of packed ``(seed bits, index)`` keys), buckets the foreground pixels in a uniform grid over
embedding space (cell edge ~ the typical claim radius ``sigma * sqrt(2 ln 2)``; embeddings far outside the image
are clamped into the edge cells) so that a proposal only tests the pixels in the cells within its claim radius,
skips visited seeds in vectorised chunks, and loops in Python over proposals, never over pixels. Decoding runs
on the prediction's device and touches only what it needs: the seed map is decoded at full size (as
``decode_prediction`` does), the embeddings and bandwidths only for the foreground pixels
(:func:`~monai_embedseg.embedding.decode_pixels`, the same values), so besides the prediction the memory is
one full-size seed map, the int32 label map and ``O(#foreground)`` arrays (a 515 x 648 x 648 volume clusters in a
few GB). The proposal loop is latency bound and runs on the host in numpy (for a CUDA prediction only the
foreground pixels' embeddings, bandwidths and seeds are copied to the host).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, ensure_tuple
from scipy import ndimage

from monai_embedseg.cluster_settings import ClusteringSettings
from monai_embedseg.constants import FG_THRESH, SEED_THRESH
from monai_embedseg.embedding import OFFSET_SCALE, SIGMA_SCALE, decode_pixels, n_sigma_of, resolve_spacing
from monai_embedseg.labels import border_ids

__all__ = [
    "CLAIM_Q",
    "cluster_embeddings",
    "EmbedSegCluster",
    "EmbedSegClusterd",
    "EmbedSegClusterD",
    "EmbedSegClusterDict",
]

#: a pixel joins a proposal when its squared normalised distance q to the seed is below this (phi > 0.5)
CLAIM_Q = 2.0 * math.log(2.0)

_RADIUS_MARGIN = 1.0 + 1e-5  # safety factor on the per-axis claim radius used to select grid cells


def _check_prediction(pred: torch.Tensor, validate: bool = True) -> int:
    """Check a raw prediction ``(C, *spatial)`` (its values only if ``validate``); return its spatial dims."""
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"pred must be a torch.Tensor, got {type(pred).__name__}.")
    if pred.ndim not in (3, 4):
        raise ValueError(
            f"expected a raw prediction (C, *spatial) with 2 or 3 spatial dims, got shape {tuple(pred.shape)}."
        )
    if not torch.is_floating_point(pred):
        raise TypeError(f"pred must be a floating point tensor, got {pred.dtype}.")
    spatial_dims = pred.ndim - 1
    n_sigma_of(pred.shape[0], spatial_dims)
    if validate and not math.isfinite(float(pred.sum())) and not bool(torch.isfinite(pred).all()):  # cheap first
        raise ValueError("pred contains NaN or Inf values.")
    return spatial_dims


def _seed_order(seed_vals: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``positions`` sorted by descending ``seed_vals`` (>= 0), ties by ascending position."""
    n = seed_vals.size
    if seed_vals.dtype == np.float32 and n and int(positions.max()) < 2**32:
        # non-negative float32 bit patterns are monotone: pack (descending value, position) into one int64 key
        key = (seed_vals + np.float32(0.0)).view(np.int32).astype(np.int64)  # + 0 turns -0.0 into +0.0
        np.subtract(0x7FFFFFFF, key, out=key)
        key <<= 32
        key |= positions
        key.sort()
        key &= 0xFFFFFFFF
        return key
    return positions[np.lexsort((positions, -seed_vals.astype(np.float64)))]


class _EmbeddingGrid:
    """Foreground pixels bucketed by their embedding in a uniform grid over embedding space.

    Args:
        emb: ``D`` arrays ``(n,)`` of embeddings; cell: ``D`` positive cell edges (grown if the grid would be
            too large);
        bounds: ``D`` ranges ``(lo, hi)`` the grid covers at most.

    Attributes:
        perm: ``(n,)`` grid order -> input position (pixels sorted cell by cell); cells: ``(n,)`` sorted cell ids.
    """

    def __init__(self, emb: np.ndarray, cell: Sequence[float], bounds: Sequence[tuple[float, float]]):
        d, n = len(emb), emb[0].size
        lo, hi = [float(a.min()) for a in emb], [float(a.max()) for a in emb]
        # the grid spans the embeddings clipped to ``bounds``; embeddings outside fall into the edge cells
        # (clamping keeps the cell index monotone in the embedding, so the cell-range search stays exact)
        self.origin = [max(float(a), b[0]) for a, b in zip(lo, bounds)]
        extent = [max(min(float(a), b[1]) - o, 0.0) for a, b, o in zip(hi, bounds, self.origin)]
        pos_bits = max(int(n - 1).bit_length(), 1)
        cell = [float(c) for c in cell]
        while True:  # cell ids (and their float64 sums below) must stay exact and leave room for the position bits
            shape = [int(math.floor(x / c)) + 1 for x, c in zip(extent, cell)]
            if math.prod(shape) <= 2 ** min(52, 62 - pos_bits):
                break
            cell = [2.0 * c for c in cell]
        self.cell, self.shape = cell, shape
        self.strides = [math.prod(shape[i + 1 :]) for i in range(d)]
        lin = np.zeros(n, dtype=np.float64)
        kf = np.empty(n, dtype=np.float64)
        for i in range(d):
            np.subtract(emb[i], self.origin[i], out=kf, dtype=np.float64)
            kf /= cell[i]
            np.floor(kf, out=kf)
            np.maximum(kf, 0.0, out=kf)
            np.minimum(kf, shape[i] - 1, out=kf)
            if self.strides[i] != 1:
                kf *= self.strides[i]
            lin += kf
        del kf
        key = lin.astype(np.int64)
        del lin
        key <<= pos_bits
        key |= np.arange(n, dtype=np.int64)
        key.sort()
        self.perm = key & ((1 << pos_bits) - 1)
        key >>= pos_bits
        self.cells = key

    def ranges(self, center: list[float], radius: list[float], max_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(starts, ends)`` in grid order of the pixels in all cells that overlap ``center +- radius``.

        Returns ``None`` when that box spans more than ``max_rows`` rows of cells (test every pixel instead).
        """
        lo, hi = [], []
        for c, r, o, h, g in zip(center, radius, self.origin, self.cell, self.shape):
            lo.append(min(max(int(math.floor((c - r - o) / h)), 0), g - 1))
            hi.append(min(max(int(math.floor((c + r - o) / h)), 0), g - 1))
        if len(lo) == 2:
            n_rows = hi[0] - lo[0] + 1
            if n_rows > max_rows:
                return None
            base = [k * self.strides[0] for k in range(lo[0], hi[0] + 1)]
        else:
            n_rows = (hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1)
            if n_rows > max_rows:
                return None
            s0, s1 = self.strides[0], self.strides[1]
            base = [a * s0 + b * s1 for a in range(lo[0], hi[0] + 1) for b in range(lo[1], hi[1] + 1)]
        base_arr = np.array(base, dtype=np.int64)
        starts = self.cells.searchsorted(base_arr + lo[-1], side="left")
        ends = self.cells.searchsorted(base_arr + hi[-1], side="right")
        return starts, ends


def _gather_ranges(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``values[starts[i]:ends[i]]`` over ``i``."""
    if starts.size == 1:
        return values[int(starts[0]) : int(ends[0])]
    return np.concatenate([values[a:b] for a, b in zip(starts.tolist(), ends.tolist())])


class _SeedQueue:
    """Seed pixels in the order they are tried (:func:`_seed_order`), skipping those already visited.

    Args:
        order: ``(m,)`` foreground indices of the seed candidates, in the order to try them.
        visited: ``(n,)`` bool, shared with the caller, who marks visited pixels and reports how many of them are
            seed candidates (:meth:`add_visited`), so the queue can drop them in amortised ``O(n)``.
    """

    def __init__(self, order: np.ndarray, visited: np.ndarray) -> None:
        self.order, self.visited = order, visited
        self.ptr, self.pending = 0, 0  # pending: visited entries in order[ptr:]

    def add_visited(self, count: int) -> None:
        """Record that ``count`` more seed candidates were visited."""
        self.pending += count

    def pop(self) -> int | None:
        """The next unvisited seed, or ``None`` when all are visited."""
        if 2 * self.pending > self.order.size - self.ptr > 4096:  # drop visited seeds from the queue
            rest = self.order[self.ptr :]
            self.order, self.ptr, self.pending = rest[~self.visited[rest]], 0, 0
        step = 32
        while self.ptr < self.order.size:  # scan in growing vectorised chunks
            chunk = self.visited[self.order[self.ptr : self.ptr + step]]
            j = int(chunk.argmin())
            if not chunk[j]:
                self.ptr += j + 1
                self.pending -= j
                return int(self.order[self.ptr - 1])
            self.ptr += chunk.size
            self.pending -= chunk.size
            step *= 2
        return None


def _proposal(
    emb: list[np.ndarray], sig: list[np.ndarray], s: int, grid: _EmbeddingGrid, claim_radius: float, max_rows: int
) -> np.ndarray:
    """Foreground pixels (indices) whose embedding has ``phi > 0.5`` under the Gaussian of seed ``s``.

    Args:
        emb, sig: per axis ``(n,)`` contiguous embeddings and bandwidths (all arithmetic in their dtype).
        s: the seed's foreground index; grid: the embedding grid used to test only nearby pixels.
    """
    n = emb[0].size
    c = [a[s] for a in emb]  # numpy scalars of the working dtype
    sg = [a[s] for a in sig]
    radius = [float(r) * claim_radius + 1e-9 * (abs(float(x)) + 1.0) for x, r in zip(c, sg)]
    rng = grid.ranges([float(x) for x in c], radius, max_rows)
    idx = np.arange(n, dtype=np.int64) if rng is None else _gather_ranges(grid.perm, *rng)
    # q = sum_d ((e_d - c_d) / sigma_d) ** 2, summed over the axes in order (as in the definition)
    t = emb[0][idx]
    t -= c[0]
    t /= sg[0]
    q = t * t
    for i in range(1, len(emb)):
        t = emb[i][idx]
        t -= c[i]
        t /= sg[i]
        t *= t
        q += t
    return idx[q < emb[0].dtype.type(CLAIM_Q)]


def _greedy(
    emb: np.ndarray,
    sig: np.ndarray,
    seed: np.ndarray,
    comp: np.ndarray | None,
    bounds: Sequence[tuple[float, float]],
    seed_thresh: float,
    min_object_size: int,
    min_unclaimed: float,
) -> tuple[np.ndarray, list[float], list[int]]:
    """Greedy clustering of the foreground pixels (arrays in foreground raster order).

    Args:
        emb, sig: ``(D, n)`` embeddings and bandwidths (float32 or float64: all arithmetic is done in this dtype);
            seed: ``(n,)``; comp: ``(n,)`` component ids or None.
        bounds: per axis, the range of embeddings worth resolving finely (the image extent plus a margin).

    Returns:
        ``claim (n,)`` int32 object ids (0 = none, in acceptance order), confidence and size of every object.
    """
    n = emb.shape[1]
    claim_radius = math.sqrt(CLAIM_Q) * _RADIUS_MARGIN
    is_seed = seed > seed_thresh
    cand = np.flatnonzero(is_seed)
    claim = np.zeros(n, dtype=np.int32)
    confs: list[float] = []
    sizes: list[int] = []
    if cand.size == 0:
        return claim, confs, sizes
    sample = cand[:: max(1, cand.size // 4096)]
    cell = np.median(sig[:, sample], axis=1).astype(np.float64) * claim_radius
    cell = np.maximum(cell, [1e-15 * (hi - lo + 1.0) for lo, hi in bounds])  # keep extent / cell finite
    axes = [np.ascontiguousarray(a) for a in emb]  # one contiguous array per axis: column-wise arithmetic is fastest
    grid = _EmbeddingGrid(axes, cell, bounds)
    sig_axes = [np.ascontiguousarray(a) for a in sig]
    visited = np.zeros(n, dtype=bool)
    queue = _SeedQueue(_seed_order(seed[cand], cand), visited)
    max_rows = max(64, n // 256)
    while (s := queue.pop()) is not None:
        prop = _proposal(axes, sig_axes, s, grid, claim_radius, max_rows)
        if comp is not None:
            prop = prop[comp[prop] == comp[s]]
        visited[s] = True
        new = prop[~visited[prop]]
        visited[new] = True
        queue.add_visited(int(np.count_nonzero(is_seed[new])))
        if prop.size < min_object_size:
            continue
        free = prop[claim[prop] == 0]
        if free.size > min_unclaimed * prop.size:
            claim[free] = len(confs) + 1
            confs.append(float(seed[s]))
            sizes.append(int(free.size))
    return claim, confs, sizes


def _decode_foreground(
    pred: torch.Tensor,
    spacing: Sequence[float] | float | None,
    fg_thresh: float,
    offset_scale: float,
    sigma_scale: float,
    dtype: torch.dtype,
    use_numpy: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Select the foreground of a raw prediction ``(C, *spatial)`` and decode only its pixels, as host arrays.

    The seed map is computed at full size exactly as :func:`~monai_embedseg.embedding.decode_prediction` does
    (``sigmoid`` of the seed channel converted to ``dtype``), thresholded, and only the foreground pixels' raw
    channels are gathered and decoded (:func:`~monai_embedseg.embedding.decode_pixels`): the values equal
    those of a full decoding, without its ``2 * D + 1`` full-size maps (plus the coordinate grid) in memory.

    Returns:
        ``mask (N,)`` bool, ``index (n,)`` raster indices, ``emb (D, n)``, ``sig (D, n)``, ``seed (n,)`` in ``dtype``.
        ``use_numpy`` (CPU tensors only) selects with numpy, faster on CPU; otherwise torch selects the pixels on
        the device and only those (and the mask) are copied to the host.
    """
    seed = torch.sigmoid(pred[-1:].to(dtype)).reshape(-1)
    if use_numpy:
        seed_np = seed.numpy()
        mask = seed_np > fg_thresh
        index = np.flatnonzero(mask)
        seed_fg = seed_np[index]
        index_t = torch.from_numpy(index)
        del seed_np
    else:
        fg = seed > fg_thresh
        index_t = torch.nonzero(fg).squeeze(1)
        mask, index, seed_fg = fg.cpu().numpy(), index_t.cpu().numpy(), seed[index_t].cpu().numpy()
        del fg
    del seed
    emb, sig, _ = decode_pixels(pred, index_t, spacing, offset_scale, sigma_scale, dtype=dtype)
    return mask, index, emb.cpu().numpy(), sig.cpu().numpy(), seed_fg


def cluster_embeddings(
    pred: torch.Tensor,
    spacing: Sequence[float] | float | None = None,
    seed_thresh: float = SEED_THRESH,
    fg_thresh: float = FG_THRESH,
    min_object_size: int = 0,
    min_unclaimed: float = 0.5,
    split_components: bool = False,
    offset_scale: float = OFFSET_SCALE,
    sigma_scale: float = SIGMA_SCALE,
    validate: bool = True,
    exclude_border: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy EmbedSeg clustering of one raw prediction into an instance label map (see the module docstring).

    Args:
        pred: raw network output ``(C, *spatial)``, C = ``2D+1`` or ``D+2`` (float32/float64; other floating
            dtypes are upcast to float32), on any device.
        spacing: physical pixel size per axis (``None``: 1).
        seed_thresh: a foreground pixel with seed probability above this can start an object.
        fg_thresh: pixels with seed probability above this are foreground.
        min_object_size: minimum proposal and object size in pixels; smaller ones are rejected / dropped.
        min_unclaimed: a proposal becomes an object only if more than this fraction of it is unclaimed.
        split_components: restrict every proposal to the face-connected component of the foreground that holds
            its seed, so claims never cross components (a semantic option: it costs one ``scipy.ndimage.label``
            and one extra comparison per tested pixel, it does not make the clustering faster).
        offset_scale, sigma_scale: decoding scales, see :func:`~monai_embedseg.embedding.decode_prediction`.
        validate: check ``pred`` for NaN/Inf first (one host synchronisation; ``False`` skips it when the caller
            knows the prediction is finite).
        exclude_border: also drop the objects with a pixel on the image border (objects the border cuts), for
            data annotated without them.

    Returns:
        ``labels`` int32 ``(1, *spatial)`` (0 = background, objects ``1..K`` in seed order) and ``confidence``
        float32 ``(K,)`` (seed probability of each object's seed pixel), both on ``pred``'s device.

    Raises:
        ValueError: wrong shape or channel count, NaN/Inf values, or a prediction whose foreground decodes to a
            non-finite or zero bandwidth.
        TypeError: ``pred`` is not a floating point torch tensor.
    """
    spatial_dims = _check_prediction(pred, validate)
    if isinstance(pred, torch.Tensor) and hasattr(pred, "as_tensor"):
        pred = pred.as_tensor()  # drop MetaTensor bookkeeping for speed
    dtype = pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32
    ClusteringSettings(seed_thresh, fg_thresh, min_object_size, min_unclaimed, exclude_border=exclude_border)  # checks
    spatial = tuple(pred.shape[1:])
    device = pred.device
    n_pix = math.prod(spatial)
    with torch.no_grad():
        fg_np, fg_idx, emb_fg, sig_fg, seed_fg = _decode_foreground(
            pred, spacing, fg_thresh, offset_scale, sigma_scale, dtype, device.type == "cpu"
        )
    if fg_idx.size == 0:
        labels = torch.zeros((1, *spatial), dtype=torch.int32, device=device)
        return labels, torch.zeros(0, dtype=torch.float32, device=device)
    if not (np.isfinite(emb_fg.min()) and np.isfinite(emb_fg.max()) and np.isfinite(sig_fg.max()) and sig_fg.min() > 0):
        raise ValueError("pred decodes to a non-finite embedding or a non-finite/zero bandwidth in the foreground.")
    comp = None
    if split_components:
        comp = ndimage.label(fg_np.reshape(spatial))[0].reshape(-1)[fg_idx]
    sp = resolve_spacing(spacing, spatial_dims)
    margin = 4.0 * float(np.median(sig_fg[:, :: max(1, fg_idx.size // 4096)])) + 1.0
    bounds = [(-margin, (n - 1) * s + margin) for n, s in zip(spatial, sp)]
    claim, confs, sizes = _greedy(
        emb_fg, sig_fg, seed_fg, comp, bounds, seed_thresh, int(min_object_size), min_unclaimed
    )
    keep = np.asarray(sizes, dtype=np.int64) >= min_object_size
    if exclude_border and len(sizes):
        claimed = np.zeros(n_pix, dtype=np.int32)
        claimed[fg_idx] = claim
        keep[border_ids(claimed.reshape(spatial)) - 1] = False
    lut = np.zeros(len(sizes) + 1, dtype=np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels = np.zeros(n_pix, dtype=np.int32)
    labels[fg_idx] = lut[claim]
    labels = torch.from_numpy(labels.reshape(1, *spatial)).to(device)
    confidence = torch.as_tensor(np.asarray(confs, dtype=np.float32)[keep], device=device)
    return labels, confidence


class EmbedSegCluster(Transform):
    """Turn a raw EmbedSeg prediction into an instance label map (greedy clustering, :func:`cluster_embeddings`).

    Args:
        spacing, seed_thresh, fg_thresh, min_object_size, min_unclaimed, split_components, offset_scale,
            sigma_scale, validate, exclude_border: see :func:`cluster_embeddings`.
        return_confidence: also return the per-object confidence ``(K,)``.

    Input ``(C, *spatial)`` numpy array or tensor; output int32 label map ``(1, *spatial)`` of the same kind
    (MetaTensor metadata kept), or ``(labels, confidence)`` when ``return_confidence``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        spacing: Sequence[float] | float | None = None,
        seed_thresh: float = SEED_THRESH,
        fg_thresh: float = FG_THRESH,
        min_object_size: int = 0,
        min_unclaimed: float = 0.5,
        split_components: bool = False,
        return_confidence: bool = False,
        offset_scale: float = OFFSET_SCALE,
        sigma_scale: float = SIGMA_SCALE,
        validate: bool = True,
        exclude_border: bool = False,
    ) -> None:
        self.spacing = spacing
        self.seed_thresh = seed_thresh
        self.fg_thresh = fg_thresh
        self.min_object_size = min_object_size
        self.min_unclaimed = min_unclaimed
        self.split_components = split_components
        self.return_confidence = return_confidence
        self.offset_scale = offset_scale
        self.sigma_scale = sigma_scale
        self.validate = validate
        self.exclude_border = exclude_border

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor | tuple[NdarrayOrTensor, NdarrayOrTensor]:
        """Cluster ``img`` ``(C, *spatial)``; see the class docstring for the output."""
        if not isinstance(img, (np.ndarray, torch.Tensor)):
            raise TypeError(f"expected a numpy array or torch tensor, got {type(img).__name__}.")
        pred = convert_to_tensor(img, track_meta=False)
        if not torch.is_floating_point(pred):
            pred = pred.float()
        labels, conf = cluster_embeddings(
            pred,
            spacing=self.spacing,
            seed_thresh=self.seed_thresh,
            fg_thresh=self.fg_thresh,
            min_object_size=self.min_object_size,
            min_unclaimed=self.min_unclaimed,
            split_components=self.split_components,
            offset_scale=self.offset_scale,
            sigma_scale=self.sigma_scale,
            validate=self.validate,
            exclude_border=self.exclude_border,
        )
        out = convert_to_dst_type(labels, img, dtype=torch.int32)[0]
        if not self.return_confidence:
            return out
        conf_out = conf.cpu().numpy() if isinstance(img, np.ndarray) else conf
        return out, conf_out


class EmbedSegClusterd(MapTransform):
    """Dictionary twin of :class:`EmbedSegCluster`.

    Args:
        keys: keys of the raw predictions ``(C, *spatial)``.
        output_keys: where to write the label maps ``(1, *spatial)``, one per key (``None``: overwrite ``keys``).
        confidence_keys: where to write the confidences ``(K,)``, one per key (``None``: not stored).
        spacing, seed_thresh, fg_thresh, min_object_size, min_unclaimed, split_components, offset_scale,
            sigma_scale, validate, exclude_border: see :func:`cluster_embeddings`.
        allow_missing_keys: skip missing keys instead of raising.
    """

    backend = EmbedSegCluster.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        confidence_keys: KeysCollection | None = None,
        spacing: Sequence[float] | float | None = None,
        seed_thresh: float = SEED_THRESH,
        fg_thresh: float = FG_THRESH,
        min_object_size: int = 0,
        min_unclaimed: float = 0.5,
        split_components: bool = False,
        offset_scale: float = OFFSET_SCALE,
        sigma_scale: float = SIGMA_SCALE,
        validate: bool = True,
        exclude_border: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = self._expand(output_keys, "output_keys") if output_keys is not None else self.keys
        self.confidence_keys = self._expand(confidence_keys, "confidence_keys") if confidence_keys is not None else None
        self.cluster = EmbedSegCluster(
            spacing=spacing,
            seed_thresh=seed_thresh,
            fg_thresh=fg_thresh,
            min_object_size=min_object_size,
            min_unclaimed=min_unclaimed,
            split_components=split_components,
            return_confidence=True,
            offset_scale=offset_scale,
            sigma_scale=sigma_scale,
            validate=validate,
            exclude_border=exclude_border,
        )

    def _expand(self, names: KeysCollection, what: str) -> tuple[Hashable, ...]:
        names = ensure_tuple(names)
        if len(names) != len(self.keys):
            raise ValueError(f"{what} must have one entry per key ({len(self.keys)}), got {len(names)}.")
        return names

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Cluster every prediction in ``data[key]``; see the class docstring."""
        d = dict(data)
        confs = self.confidence_keys if self.confidence_keys is not None else (None,) * len(self.keys)
        for key, out_key, conf_key in self.key_iterator(d, self.output_keys, confs):
            labels, conf = self.cluster(d[key])
            d[out_key] = labels
            if conf_key is not None:
                d[conf_key] = conf
        return d


EmbedSegClusterD = EmbedSegClusterDict = EmbedSegClusterd
