"""The one place that says how a raw network output becomes embeddings, bandwidths and seeds.

Every component (loss, clustering, oracle, test-time augmentation) goes through these functions, so the
channel layout and the units are defined once.

Layout of a raw prediction (channel-first, with or without a batch dimension)::

    channels [0, D)            raw offsets, one per spatial axis (D = spatial_dims)
    channels [D, D + n_sigma)  raw log-bandwidths (n_sigma = D, or 1 for an isotropic bandwidth)
    channel  D + n_sigma       seed logit

Units: embeddings live in **physical units relative to the pixel**. With ``spacing = (s_0, ..., s_{D-1})``
(1 per axis when ``None``) and ``unit = min(spacing)``::

    embedding_d = s_d * x_d + offset_scale * unit * raw_offset_d
    sigma_d     = sigma_scale * unit * exp(raw_sigma_d)
    seed        = sigmoid(raw_seed)

so a network output means the same thing on a 256^2 crop and on a 2048^2 image (no image-size grid), and
translating the image translates the embeddings (sliding windows stitch without seams).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "OFFSET_SCALE",
    "SIGMA_SCALE",
    "resolve_spacing",
    "pixel_coordinates",
    "n_sigma_of",
    "decode_prediction",
    "decode_pixels",
    "encode_prediction",
]

#: default offset scale (in units of the smallest voxel edge) applied to raw offsets
OFFSET_SCALE = 16.0
#: default bandwidth scale (in units of the smallest voxel edge) applied to exp(raw sigma)
SIGMA_SCALE = 4.0


def resolve_spacing(spacing: Sequence[float] | float | None, spatial_dims: int) -> tuple[float, ...]:
    """Return ``spacing`` as a tuple of ``spatial_dims`` positive floats (``None`` means 1 per axis).

    Raises:
        ValueError: wrong length, or a non-positive or non-finite value.
    """
    if spacing is None:
        return (1.0,) * spatial_dims
    if isinstance(spacing, (int, float)):
        spacing = (float(spacing),) * spatial_dims
    out = tuple(float(s) for s in spacing)
    if len(out) != spatial_dims:
        raise ValueError(
            f"spacing {tuple(spacing)} has {len(out)} values, expected {spatial_dims} (one per spatial axis)."
        )
    if not all(s > 0 and s < float("inf") for s in out):
        raise ValueError(f"spacing must be positive and finite, got {out}.")
    return out


def pixel_coordinates(
    spatial_shape: Sequence[int],
    spacing: Sequence[float] | float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Physical coordinates of every pixel.

    Args:
        spatial_shape: ``(*spatial)``, 2 or 3 values.
        spacing: physical size of a pixel per axis (``None``: 1).

    Returns:
        tensor ``(D, *spatial)`` with ``out[d, ...] = s_d * index_d``.
    """
    sp = resolve_spacing(spacing, len(spatial_shape))
    return torch.stack(torch.meshgrid(*_axis_coordinates(spatial_shape, sp, device, dtype), indexing="ij"), dim=0)


def _axis_coordinates(
    spatial_shape: Sequence[int], sp: Sequence[float], device: torch.device | str | None, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Per axis ``d`` the ``(spatial_shape[d],)`` coordinates ``s_d * index``: the one definition of pixel positions."""
    return [torch.arange(n, device=device, dtype=dtype) * s for n, s in zip(spatial_shape, sp)]


def _embedding(
    coords: torch.Tensor, raw_offsets: torch.Tensor, unit: float, offset_scale: float, inplace: bool = False
) -> torch.Tensor:
    """``coords + offset_scale * unit * raw_offsets`` (shapes broadcast); ``inplace`` overwrites ``raw_offsets``.

    Both forms round the same products and sums (IEEE ``*`` and ``+`` commute), so they are bitwise equal.
    """
    if inplace:
        return raw_offsets.mul_(offset_scale * unit).add_(coords)
    return coords + offset_scale * unit * raw_offsets


def _bandwidth(raw_sigma: torch.Tensor, unit: float, sigma_scale: float, inplace: bool = False) -> torch.Tensor:
    """``sigma_scale * unit * exp(raw_sigma)``; ``inplace`` overwrites ``raw_sigma`` (bitwise the same values)."""
    if inplace:
        return raw_sigma.exp_().mul_(sigma_scale * unit)
    return sigma_scale * unit * torch.exp(raw_sigma)


def n_sigma_of(num_channels: int, spatial_dims: int) -> int:
    """Number of bandwidth channels in a raw prediction with ``num_channels`` channels.

    Raises:
        ValueError: the count is neither ``2 * D + 1`` nor ``D + 2``.
    """
    n_sigma = num_channels - spatial_dims - 1
    if n_sigma not in (1, spatial_dims):
        raise ValueError(
            f"a {spatial_dims}D EmbedSeg prediction has {2 * spatial_dims + 1} channels (offsets, sigmas, seed) "
            f"or {spatial_dims + 2} (isotropic sigma); got {num_channels}."
        )
    return n_sigma


def decode_prediction(
    pred: torch.Tensor,
    spacing: Sequence[float] | float | None = None,
    offset_scale: float = OFFSET_SCALE,
    sigma_scale: float = SIGMA_SCALE,
    batched: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn a raw prediction into embeddings, bandwidths and seed probabilities.

    Args:
        pred: ``(B, C, *spatial)`` if ``batched`` else ``(C, *spatial)``, C = ``2D+1`` or ``D+2``.
        spacing: physical pixel size per axis.

    Returns:
        ``embedding (B, D, *spatial)``, ``sigma (B, D, *spatial)`` (broadcast when n_sigma = 1) and
        ``seed (B, 1, *spatial)`` in [0, 1]; without the batch dimension when ``batched`` is False.
    """
    if not batched:
        emb, sig, seed = decode_prediction(pred[None], spacing, offset_scale, sigma_scale, batched=True)
        return emb[0], sig[0], seed[0]
    spatial_dims = pred.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(
            f"expected a prediction (B, C, *spatial) with 2 or 3 spatial dims, got shape {tuple(pred.shape)}."
        )
    n_sigma = n_sigma_of(pred.shape[1], spatial_dims)
    sp = resolve_spacing(spacing, spatial_dims)
    unit = min(sp)
    coords = pixel_coordinates(pred.shape[2:], sp, device=pred.device, dtype=pred.dtype)
    embedding = _embedding(coords[None], pred[:, :spatial_dims], unit, offset_scale)
    sigma = _bandwidth(pred[:, spatial_dims : spatial_dims + n_sigma], unit, sigma_scale)
    if n_sigma == 1:
        sigma = sigma.expand(-1, spatial_dims, *pred.shape[2:])
    seed = torch.sigmoid(pred[:, -1:])
    return embedding, sigma, seed


def decode_pixels(
    pred: torch.Tensor,
    index: torch.Tensor,
    spacing: Sequence[float] | float | None = None,
    offset_scale: float = OFFSET_SCALE,
    sigma_scale: float = SIGMA_SCALE,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode only some pixels of one raw prediction, without materialising full-size decoded maps.

    Gathers the raw channels of the pixels at the flat (C-order) ``index``, converts them to ``dtype`` and applies
    the formulas of :func:`decode_prediction` to them, with the pixel coordinates gathered from the same per-axis
    coordinate vectors. The embeddings and bandwidths are therefore bitwise equal to
    ``decode_prediction(pred.to(dtype), batched=False)`` flattened and indexed at ``index`` (elementwise torch ops
    give the same result whatever the tensor size); the seeds are equal up to torch's CPU ``sigmoid``, whose
    vectorised and scalar (loop tail) kernels may differ in the last bit. Memory: ``O(C * n)`` besides ``pred``.

    Args:
        pred: raw prediction ``(C, *spatial)`` (no batch dimension), C = ``2D+1`` or ``D+2``.
        index: ``(n,)`` integer flat indices into ``spatial`` (torch tensor on ``pred``'s device, or numpy array).
        spacing: physical pixel size per axis.
        offset_scale, sigma_scale: decoding scales, see :func:`decode_prediction`.
        dtype: floating dtype of the decoding (``None``: ``pred.dtype``).

    Returns:
        ``embedding (D, n)``, ``sigma (D, n)`` (broadcast when n_sigma = 1) and ``seed (n,)`` in [0, 1].

    Raises:
        ValueError: wrong ndim or channel count, ``index`` not 1D.
    """
    spatial_dims = pred.ndim - 1
    if spatial_dims not in (2, 3):
        raise ValueError(
            f"expected a prediction (C, *spatial) with 2 or 3 spatial dims, got shape {tuple(pred.shape)}."
        )
    n_sigma = n_sigma_of(pred.shape[0], spatial_dims)
    index = torch.as_tensor(index, device=pred.device)
    if index.ndim != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(
            f"index must be a 1D integer tensor of flat pixel indices, got {index.dtype} {tuple(index.shape)}."
        )
    index = index.long()
    dtype = pred.dtype if dtype is None else dtype
    sp = resolve_spacing(spacing, spatial_dims)
    unit = min(sp)
    spatial = pred.shape[1:]
    flat = pred.reshape(pred.shape[0], -1)
    n = index.numel()
    coords = torch.empty((spatial_dims, n), dtype=dtype, device=pred.device)
    axes = _axis_coordinates(spatial, sp, pred.device, dtype)
    for start in range(0, n, _UNRAVEL_CHUNK):  # unravel (C order) in chunks: bounded integer temporaries
        rest = index[start : start + _UNRAVEL_CHUNK]
        stop = start + rest.numel()
        for d in range(spatial_dims - 1, -1, -1):
            torch.index_select(axes[d], 0, rest % spatial[d] if d else rest, out=coords[d, start:stop])
            rest = rest // spatial[d]
    # one channel group at a time, decoded in place in the gathered copy (the same values as decode_prediction)
    embedding = _embedding(coords, _gather(flat[:spatial_dims], index, dtype), unit, offset_scale, inplace=True)
    del coords
    sigma = _gather(flat[spatial_dims : spatial_dims + n_sigma], index, dtype)
    sigma = _bandwidth(sigma, unit, sigma_scale, inplace=True)
    if n_sigma == 1:
        sigma = sigma.expand(spatial_dims, -1)
    return embedding, sigma, torch.sigmoid(flat[-1].index_select(0, index).to(dtype))


_UNRAVEL_CHUNK = 1 << 22


def _gather(rows: torch.Tensor, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``rows[:, index]`` as a new ``dtype`` tensor (safe to modify in place)."""
    out = rows.index_select(1, index)
    return out.to(dtype) if out.dtype != dtype else out


def encode_prediction(
    embedding: torch.Tensor,
    sigma: torch.Tensor,
    seed: torch.Tensor,
    spacing: Sequence[float] | float | None = None,
    offset_scale: float = OFFSET_SCALE,
    sigma_scale: float = SIGMA_SCALE,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Inverse of :func:`decode_prediction` for one image (no batch dimension).

    Args:
        embedding: ``(D, *spatial)`` physical embedding positions.
        sigma: ``(D, *spatial)`` or ``(1, *spatial)`` positive bandwidths.
        seed: ``(1, *spatial)`` probabilities in [0, 1] (clamped to ``[eps, 1 - eps]``).

    Returns:
        raw prediction ``(D + n_sigma + 1, *spatial)``.
    """
    spatial_dims = embedding.shape[0]
    sp = resolve_spacing(spacing, spatial_dims)
    unit = min(sp)
    coords = pixel_coordinates(embedding.shape[1:], sp, device=embedding.device, dtype=embedding.dtype)
    raw_off = (embedding - coords) / (offset_scale * unit)
    raw_sig = torch.log(sigma / (sigma_scale * unit))
    seed = seed.clamp(eps, 1 - eps)
    raw_seed = torch.log(seed) - torch.log1p(-seed)
    return torch.cat([raw_off, raw_sig, raw_seed], dim=0)
