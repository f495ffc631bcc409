"""The raw prediction of a perfect network, for tests, benchmarks and upper-bound evaluations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config.type_definitions import NdarrayOrTensor
from monai.utils import convert_to_dst_type, convert_to_numpy

from monai_embedseg.embedding import (
    OFFSET_SCALE,
    SIGMA_SCALE,
    encode_prediction,
    pixel_coordinates,
    resolve_spacing,
)
from monai_embedseg.labels import check_instance_labels, one_hot_to_label_map

__all__ = ["oracle_prediction"]


def _as_label_map(label: NdarrayOrTensor) -> np.ndarray:
    """``(1, *spatial)`` label map or ``(N, *spatial)`` one-hot stack -> ``(*spatial)`` int64 label map."""
    label = check_instance_labels(label)
    label_map = label if label.shape[0] == 1 else one_hot_to_label_map(label)
    return convert_to_numpy(label_map)[0].astype(np.int64, copy=False)


def oracle_prediction(
    label: NdarrayOrTensor,
    spacing: Sequence[float] | float | None = None,
    mode: str = "medoid",
    sigma: float | None = None,
    eps: float = 1e-6,
    offset_scale: float = OFFSET_SCALE,
    sigma_scale: float = SIGMA_SCALE,
) -> NdarrayOrTensor:
    """Raw network output that a perfect EmbedSeg network would give for ``label``.

    Every object pixel embeds exactly at its object's center pixel (physical coordinates; centers from
    :func:`~monai_embedseg.medoid.object_centers`), background pixels keep zero offsets, the bandwidth
    is one small constant everywhere and the seed probability is ``1 - eps`` inside objects and ``eps`` outside.
    With the default ``sigma = 0.5 * min(spacing)`` a pixel joins a seed's proposal (phi > 0.5) only if its
    embedding lies within ``0.59 * min(spacing)`` of the seed's, so distinct centers (at least one pixel apart)
    never merge, and :class:`~monai_embedseg.transforms.cluster.EmbedSegCluster` recovers ``label`` exactly.

    Args:
        label: integer instance label map ``(1, *spatial)`` (0 = background), or binary one-hot stack
            ``(N, *spatial)`` with ``N > 1`` (the later channel wins where objects overlap); 2 or 3 spatial dims.
        spacing: physical pixel size per axis (``None``: 1).
        mode: center definition, passed to ``object_centers`` (``"medoid"``, ``"centroid"``, ...).
        sigma: bandwidth in physical units (``None``: ``0.5 * min(spacing)``).
        eps: seed probability outside objects (and ``1 - eps`` inside).
        offset_scale, sigma_scale: encoding scales, see :func:`~monai_embedseg.embedding.encode_prediction`.

    Returns:
        float32 raw prediction ``(2 * D + 1, *spatial)``, numpy or torch like ``label`` (MetaTensor meta kept).

    Raises:
        ValueError: wrong ndim, negative or fractional labels, a non-binary one-hot stack, bad spacing/sigma.
    """
    from monai_embedseg.medoid import object_centers

    lab = _as_label_map(label)
    spatial_dims = lab.ndim
    sp = resolve_spacing(spacing, spatial_dims)
    sigma = 0.5 * min(sp) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}.")
    spatial = lab.shape
    coords = pixel_coordinates(spatial, sp, dtype=torch.float64)  # (D, *spatial)
    embedding = coords.clone()
    ids, centers = object_centers(lab[None], sp, mode=mode)
    if ids.size:
        center_phys = torch.as_tensor(centers, dtype=torch.float64) * torch.as_tensor(sp, dtype=torch.float64)
        lut = torch.zeros(int(lab.max()) + 1, dtype=torch.int64)  # label id -> row of centers (+1), 0: background
        lut[torch.as_tensor(ids)] = torch.arange(1, ids.size + 1)
        lab_t = torch.as_tensor(lab)
        row = lut[lab_t]
        inside = row > 0
        table = torch.cat([torch.zeros(1, spatial_dims, dtype=torch.float64), center_phys], dim=0)  # (K + 1, D)
        embedding = torch.where(inside[None], table[row].movedim(-1, 0), coords)
        seed = inside[None].to(torch.float64)
    else:
        seed = torch.zeros((1, *spatial), dtype=torch.float64)
    sig = torch.full((spatial_dims, *spatial), sigma, dtype=torch.float64)
    raw = encode_prediction(embedding, sig, seed, sp, offset_scale, sigma_scale, eps=eps).float()
    return convert_to_dst_type(raw, label, dtype=torch.float32)[0]
