"""The receptive-field margin of block-wise segmentation, measured on the network and the image at hand.

A block's prediction differs from the one-pass whole-image prediction near the block's edge, where the network sees
padding instead of image. The margin is the distance from the edge beyond which the two agree: the smallest
extension ``m`` (a multiple of the encoder's 8) such that the prediction of a small core extended by ``m`` on every
side matches, on that core, the prediction of a larger sample around it. It depends on the network (a trained
ERF-Net's effective receptive field is far smaller than its theoretical one, an untrained one's is wide) and a little
on the image, so it is measured, not assumed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch

from monai_embedseg.embedding import decode_prediction

__all__ = ["measure_margin", "prediction_agreement"]

logger = logging.getLogger(__name__)


def prediction_agreement(
    a: torch.Tensor, b: torch.Tensor, spacing: Sequence[float] | None = None, quantile: float = 0.999
) -> tuple[float, float]:
    """How far two raw predictions ``(C, *spatial)`` of the same voxels are apart, as the clustering sees them.

    Returns:
        ``(embedding, seed)``: the ``quantile`` of the embedding distance (in units of the smallest voxel size) and
        of the absolute seed-probability difference over the voxels.
    """
    ea, _, sa = decode_prediction(a, spacing, batched=False)
    eb, _, sb = decode_prediction(b, spacing, batched=False)
    unit = min(spacing) if spacing else 1.0
    dist = torch.linalg.vector_norm(ea - eb, dim=0).flatten() / unit
    seed = (sa - sb).abs().flatten()
    return float(torch.quantile(dist.double(), quantile)), float(torch.quantile(seed.double(), quantile))


def measure_margin(
    predictor,
    image: np.ndarray,
    intensity_range: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    core: int = 16,
    step: int = 8,
    embedding_tolerance: float = 0.25,
    seed_tolerance: float = 0.02,
) -> tuple[int, ...]:
    """Smallest margin per axis at which a block's prediction agrees with the one-pass prediction (module docstring).

    Args:
        predictor: a :class:`~monai_embedseg.inferers.blockwise.BlockPredictor` (measured without its TTA: the same
            network on the same voxels).
        image: a representative raw sample ``(C, *spatial)``, e.g. the middle of the volume; its start should lie a
            multiple of ``step`` from the volume's start (block alignment). Margins are searched up to what fits in it.
        intensity_range: ``(C, 2)`` intensities mapped to 0 / 1 (default: the sample's ``predictor.percentiles``,
            none when those are ``None``).
        spacing: voxel size per axis (embedding distances are in units of the smallest).
        core: size of the compared core per axis (cut to the sample).
        step: margins are multiples of this (the encoder's down-sampling).
        embedding_tolerance: largest 99.9th-percentile embedding shift, in voxels, counted as agreement.
        seed_tolerance: largest 99.9th-percentile seed-probability difference counted as agreement.

    Returns:
        ``(m_0, ..., m_{D-1})``: the margin, capped per axis by the sample (a warning says when even the largest
        margin that fits does not agree).
    """
    image = np.asarray(image)
    spatial = image.shape[1:]
    if intensity_range is None and predictor.percentiles is not None:  # as segment_blockwise normalises
        data = image.reshape(image.shape[0], -1).astype(np.float32)
        intensity_range = np.stack([np.percentile(data, p, axis=1) for p in predictor.percentiles], axis=1)
    quiet = copy.copy(predictor)
    quiet.tta = False
    reference = quiet(image, intensity_range)
    sizes = [min(core, s) for s in spatial]
    starts = [((s - c) // 2) // step * step for s, c in zip(spatial, sizes)]
    room = [min(st, s - st - c) // step * step for st, s, c in zip(starts, spatial, sizes)]  # largest margin per axis

    def agrees(m: int) -> bool:
        margin = [min(m, r) for r in room]
        crop = tuple(slice(st - g, st + c + g) for st, c, g in zip(starts, sizes, margin))
        pred = quiet(image[(slice(None), *crop)], intensity_range)
        inner = tuple(slice(g, g + c) for g, c in zip(margin, sizes))
        ref = reference[(slice(None), *(slice(st, st + c) for st, c in zip(starts, sizes)))]
        emb, seed = prediction_agreement(pred[(slice(None), *inner)], ref, spacing)
        return emb <= embedding_tolerance and seed <= seed_tolerance

    candidates = list(range(0, max(room) + step, step))
    lo, hi = 0, len(candidates) - 1  # binary search for the first agreeing margin (agreement grows with it)
    if not agrees(candidates[hi]):
        logger.warning(
            f"block margin: even {candidates[hi]} voxels (all the sample allows) do not reproduce the one-pass "
            "prediction; using it"
        )
        return tuple(min(candidates[hi], r) for r in room)
    while lo < hi:
        mid = (lo + hi) // 2
        if agrees(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return tuple(min(candidates[lo], r) for r in room)
