"""Batch preparation for EmbedSeg training: the loss receives both the instance labels and the center images."""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["PrepareBatchEmbedSeg"]


class PrepareBatchEmbedSeg(PrepareBatch):
    """Return ``(image, {"instance": label, "center": center})`` from a dictionary batch.

    Like MONAI's ``PrepareBatchHoVerNet``: a ``SupervisedTrainer`` with this ``prepare_batch`` hands the dict to
    :class:`monai_embedseg.losses.SpatialEmbeddingLoss` as its target.

    Args:
        image_key: key of the image ``(B, C_in, *spatial)``.
        label_key: key of the instance labels ``(B, 1, *spatial)`` (label map) or ``(B, N, *spatial)`` (one-hot).
        center_key: key of the center images ``(B, 1, *spatial)`` bool.
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", center_key: str = "center") -> None:
        self.image_key = image_key
        self.label_key = label_key
        self.center_key = center_key

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Move the three tensors to ``device``; raises ``KeyError`` naming a missing key."""
        for key in (self.image_key, self.label_key, self.center_key):
            if key not in batchdata:
                raise KeyError(
                    f"batch has no '{key}' (keys: {sorted(batchdata)}); add GenerateCenterImaged to the transforms."
                )

        def move(x: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(x).to(device=device, non_blocking=non_blocking, **kwargs)

        image = move(batchdata[self.image_key])
        target = {"instance": move(batchdata[self.label_key]), "center": move(batchdata[self.center_key])}
        return image, target
