"""AP_dsb as a MONAI cumulative metric (plugs into ``monai.handlers.IgniteMetricHandler``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

from monai_embedseg.constants import IOU_THRESHOLDS
from monai_embedseg.metrics.matching import ap_from_counts, check_thresholds, image_match_counts

__all__ = ["APDSBMetric"]


class APDSBMetric(CumulativeIterationMetric):
    """Average precision of the Data Science Bowl 2018, ``TP / (TP + FP + FN)``, per IoU threshold.

    Every iteration stores per-image ``tp, fp, fn`` for every threshold (a ``(B, T, 3)`` tensor, so MONAI's buffers
    and distributed sync work); :meth:`aggregate` pools them (or averages per-image AP with ``by_image``).
    Matching as in :func:`monai_embedseg.metrics.matching.ap_dsb`.

    Args:
        thresholds: IoU thresholds in (0, 1].
        by_image: mean of per-image AP (EmbedSeg's convention) instead of pooled counts.
        empty_value: AP of an image (pooled: of everything seen) with neither true nor predicted objects.
        reduction: ``"none"``: :meth:`aggregate` returns one AP per threshold ``(T,)``; ``"mean"``: their mean over
            the thresholds (a 0-d tensor, e.g. mean AP over 0.5:0.9 for a key metric).

    Example::

        metric = APDSBMetric(thresholds=(0.5, 0.75))
        metric(y_pred=labels_pred, y=labels_true)  # (B, 1, *spatial) each, or lists of (1, *spatial)
        ap = metric.aggregate()                    # tensor (2,)
    """

    def __init__(
        self,
        thresholds: Sequence[float] | float = IOU_THRESHOLDS,
        by_image: bool = False,
        empty_value: float = 1.0,
        reduction: str = "none",
    ) -> None:
        super().__init__()
        if reduction not in ("none", "mean"):
            raise ValueError(f"reduction must be 'none' or 'mean' (over thresholds), got {reduction!r}.")
        self.reduction = reduction
        self.thresholds = check_thresholds(thresholds)
        self.by_image = bool(by_image)
        self.empty_value = float(empty_value)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Count matches per image.

        Args:
            y_pred: predicted label maps ``(B, 1, *spatial)``.
            y: true label maps ``(B, 1, *spatial)`` or one-hot stacks ``(B, N, *spatial)`` (N > 1).

        Returns:
            float tensor ``(B, T, 3)``: ``tp, fp, fn`` per image and threshold (on ``y_pred``'s device).
        """
        if y is None:
            raise ValueError("APDSBMetric needs the ground truth y.")
        if y_pred.ndim not in (4, 5) or y_pred.shape[1] != 1:
            raise ValueError(
                f"y_pred must be batch-first label maps (B, 1, *spatial), got shape {tuple(y_pred.shape)}."
            )
        if y.ndim != y_pred.ndim or y.shape[0] != y_pred.shape[0]:
            raise ValueError(
                f"y must be (B, 1, *spatial) or one-hot (B, N, *spatial) matching y_pred {tuple(y_pred.shape)}, "
                f"got {tuple(y.shape)}."
            )
        counts = [image_match_counts(t, p, self.thresholds)[:, :3] for t, p in zip(y, y_pred)]
        return torch.as_tensor(np.stack(counts), dtype=torch.float32, device=y_pred.device)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """AP per threshold over everything accumulated since the last :meth:`reset`.

        Returns:
            float tensor ``(T,)``, or a 0-d tensor with ``reduction="mean"``.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ValueError("APDSBMetric.aggregate: no images were seen (call the metric on a batch first).")
        ap = ap_from_counts(data, by_image=self.by_image, empty_value=self.empty_value)
        if self.reduction == "mean":
            ap = ap.mean()
        return torch.as_tensor(ap, dtype=torch.float32, device=data.device)
