"""Effective receptive field of a network, measured by back-propagation (how far input pixels move an output pixel)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["effective_receptive_field"]


def effective_receptive_field(
    network: nn.Module,
    image: torch.Tensor,
    fraction: float = 0.99,
) -> tuple[int, ...]:
    """Radius per spatial axis within which ``fraction`` of the input gradient of the central output pixel lies.

    The gradient of the sum of all output channels at the central pixel with respect to the input is taken in
    eval mode; its absolute value is summed over channels and over all other axes, and the radius along each axis
    is the smallest ``r`` such that the window ``[c - r, c + r]`` holds ``fraction`` of that total. This is the
    margin beyond which the image barely changes the output (Luo et al., 2016): the halo a tiled prediction needs.
    A theoretical receptive field (ERF-Net's dilated convolutions reach hundreds of pixels) is far larger.

    Args:
        network: maps ``(1, C, *spatial)`` to ``(1, C_out, *spatial)``.
        image: ``(1, C, *spatial)``, a representative (normalised) input; larger than the receptive field to
            measure it fully.
        fraction: share of the gradient mass inside the radius, in ``(0, 1]``.

    Returns:
        ``(r_0, ..., r_{D-1})`` in pixels; half the image size along an axis where the gradient vanishes.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    if image.ndim < 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, *spatial), got shape {tuple(image.shape)}.")
    x = image.detach().float().clone()
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    x = x.to(device).requires_grad_(True)
    was_training = network.training
    network.eval()
    try:
        out = network(x)
        spatial = out.shape[2:]
        center: Sequence[int] = [s // 2 for s in spatial]
        out[(0, slice(None), *center)].sum().backward()
    finally:
        network.train(was_training)
    grad = x.grad.detach().abs().sum(dim=(0, 1)).cpu()  # (*spatial)
    radii = []
    for axis, c in enumerate(center):
        profile = grad.sum(dim=[a for a in range(grad.ndim) if a != axis]).double()
        total = float(profile.sum())
        if total <= 0.0:
            radii.append(int(spatial[axis]) // 2)
            continue
        cum = torch.cat([torch.zeros(1, dtype=profile.dtype), profile.cumsum(0)])  # cum[i] = sum(profile[:i])
        r = torch.arange(int(spatial[axis]))
        inside = cum[(c + r + 1).clamp(max=len(profile))] - cum[(c - r).clamp(min=0)]
        radii.append(int(torch.nonzero(inside >= fraction * total * (1 - 1e-9))[0]))
    return tuple(radii)
