"""Binary Lovasz hinge loss (Berman, Rannen Triki and Blaschko, CVPR 2018), batched over rows.

The Lovasz hinge is the Lovasz extension of the Jaccard loss evaluated at the hinge errors
``max(0, 1 - logit * sign)`` with ``sign = 2 * label - 1``: sort the errors in decreasing order and take their dot
product with the discrete gradient of the Jaccard loss along that order. Written from the paper's description.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["lovasz_hinge_flat", "lovasz_hinge", "lovasz_order", "lovasz_sorted"]


def _check_pair(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"logits and labels must be tensors, got {type(logits).__name__} and {type(labels).__name__}.")
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must have the same shape.")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating point tensor, got {logits.dtype}.")


def lovasz_hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary Lovasz hinge of every row of ``logits`` against ``labels``.

    Each row (last axis) is an independent problem, so one call handles many objects at once. Only errors > 0
    contribute (the hinge is ``relu``), and the Jaccard gradient at a sorted position depends only on the positions
    before it, so rows are ordered with ``topk`` over the largest count of positive errors instead of a full sort:
    the result is exact, and cheaper when most pixels are correct with margin.

    Args:
        logits: ``(*, P)`` real-valued scores (> 0 means foreground).
        labels: ``(*, P)`` binary ground truth (bool or 0/1 numbers).

    Returns:
        ``(*)`` loss per row (a 0-dim tensor for 1-D inputs); a row with ``P = 0`` gives 0.

    Raises:
        TypeError: non-tensor inputs or integer logits.
        ValueError: shape mismatch.
    """
    _check_pair(logits, labels)
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension (the pixels).")
    if logits.shape[-1] == 0 or logits.numel() == 0:
        return logits.sum(-1) * 0.0
    errors = 1.0 - logits * (2.0 * labels.to(logits.dtype) - 1.0)
    return _lovasz_from_errors(errors, labels)


def lovasz_order(errors: torch.Tensor, nonnegative: bool = False) -> torch.Tensor:
    """Indices ``(*, L)`` of the ``L`` largest errors of every row, in decreasing order.

    ``L`` is the largest number of positive errors in a row (at least 1): the positions after them hold errors
    ``<= 0``, which add nothing to the hinge, and the Jaccard gradient at a position depends only on the positions
    before it, so the truncation is exact. ``topk`` replaces the full sort when ``L < P / 2``.

    Args:
        errors: ``(*, P)`` hinge errors, ``P >= 1``.
        nonnegative: promise that ``errors >= 0`` (saves a pass over the data).
    """
    n_pix = errors.shape[-1]
    if nonnegative and n_pix < 2**24:  # sign is 0 or 1: a float sum counts exactly, faster than a bool count on CPU
        counts = torch.sign(errors).sum(-1)
    else:
        counts = (errors > 0).view(torch.uint8).sum(-1, dtype=torch.int64)
    n_pos = max(int(counts.max().item()), 1)
    if n_pos < n_pix // 2:
        return torch.topk(errors, n_pos, dim=-1, largest=True, sorted=True).indices
    return torch.sort(errors, dim=-1, descending=True).indices


def lovasz_sorted(errors_sorted: torch.Tensor, gt_sorted: torch.Tensor, n_fg: torch.Tensor) -> torch.Tensor:
    """Lovasz hinge ``(*)`` from errors already in decreasing order (a prefix of each row is enough).

    Args:
        errors_sorted: ``(*, L)`` hinge errors, decreasing along the last axis.
        gt_sorted: ``(*, L)`` binary labels in the same order.
        n_fg: ``(*)`` foreground count of each whole row (not only of the prefix).
    """
    gt_sorted = gt_sorted.to(errors_sorted.dtype)
    n_fg = n_fg.to(errors_sorted.dtype)[..., None]
    intersection = n_fg - gt_sorted.cumsum(-1)
    union = n_fg + (1.0 - gt_sorted).cumsum(-1)  # >= 1 everywhere
    jaccard = 1.0 - intersection / union
    grad = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
    return (F.relu(errors_sorted) * grad).sum(-1)


def _lovasz_from_errors(errors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz extension of the Jaccard loss at the hinge ``errors`` ``(*, P)``, row-wise; returns ``(*)``."""
    perm = lovasz_order(errors.detach())
    n_fg = labels.to(errors.dtype).sum(-1)
    return lovasz_sorted(errors.gather(-1, perm), labels.gather(-1, perm), n_fg)


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Binary Lovasz hinge of a batch of images.

    Args:
        logits: ``(B, *spatial)`` real-valued scores.
        labels: ``(B, *spatial)`` binary ground truth.
        per_image: average the per-image losses (True) or compute one loss over all pixels of the batch (False).

    Returns:
        0-dim tensor.
    """
    _check_pair(logits, labels)
    if logits.ndim < 1:
        raise ValueError("logits must have a batch dimension.")
    if per_image:
        return lovasz_hinge_flat(logits.reshape(logits.shape[0], -1), labels.reshape(labels.shape[0], -1)).mean()
    return lovasz_hinge_flat(logits.reshape(-1), labels.reshape(-1))
