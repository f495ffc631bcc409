"""AP_dsb: one-to-one IoU matching of predicted and true instances (the Data Science Bowl 2018 score).

For every image one sparse overlap table (pairs of objects that share pixels, with their intersection) is built;
all thresholds are evaluated from that single table. For each threshold, true and predicted objects are matched
one-to-one so that the number of pairs with ``IoU >= thresh`` is maximal, ties broken by the largest sum of matched
IoUs (the matching StarDist's ``matching``/``matching_dataset`` computes, solved with
:func:`scipy.optimize.linear_sum_assignment`). Then::

    AP_dsb = TP / (TP + FP + FN)      (a.k.a. "accuracy" in StarDist)

Over a data set the counts are pooled (summed over images) by default; ``by_image=True`` averages the per-image
values instead (EmbedSeg's convention).

Empty images: StarDist scores an image with no true and no predicted object as 0 (every ratio is 0 when
``tp == 0``). Here such an image scores ``empty_value`` (default 1.0: nothing to find and nothing found is a perfect
result); pass ``empty_value=0.0`` to reproduce StarDist. The convention only matters when *both* counts are zero:
for pooled scores when the whole data set holds no object, for ``by_image`` per empty image. Any other ratio with
``tp == 0`` is 0, as in StarDist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from monai_embedseg.labels import check_instance_labels

__all__ = ["ap_dsb", "matching_report", "image_match_counts", "ap_from_counts", "check_thresholds"]

#: ratio statistics reported per threshold (averaged per image when ``by_image``)
_RATIO_KEYS = (
    "precision",
    "recall",
    "accuracy",
    "f1",
    "mean_true_score",
    "mean_matched_score",
    "panoptic_quality",
)


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x  # MetaTensor -> plain tensor
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}.")


def _check_integer_labels(x: np.ndarray, name: str, one_hot: bool = False) -> np.ndarray:
    """Return ``x`` (a label map ``(*spatial)`` or a one-hot stack ``(N, *spatial)``) as int64 after
    :func:`~monai_embedseg.labels.check_instance_labels`."""
    checked = check_instance_labels(x if one_hot else x[None], one_hot=one_hot, what=name)
    return np.asarray(checked if one_hot else checked[0]).astype(np.int64, copy=False)


def _prepare_pair(y_true: Any, y_pred: Any, one_hot: bool | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate one (true, pred) pair.

    Returns:
        ``(true, pred, is_one_hot)``: ``pred`` has the spatial shape; ``true`` too (label map) or is ``(N, *spatial)``.
    """
    t = _as_numpy(y_true, "y_true")
    p = _as_numpy(y_pred, "y_pred")
    p_shape = p.shape
    if p.ndim not in (2, 3, 4) or (p.ndim == 4 and p.shape[0] != 1):
        raise ValueError(
            f"y_pred must be a label map (H, W), (1, H, W), (D, H, W) or (1, D, H, W), got shape {p.shape}."
        )
    p_sp = p.shape[1:] if (p.ndim == 4 or (p.ndim == 3 and p.shape[0] == 1)) else p.shape
    p = _check_integer_labels(p.reshape(p_sp), "y_pred")
    if one_hot is None:
        one_hot = t.ndim == len(p_sp) + 1 and t.shape[1:] == p_sp and t.shape[0] > 1
    if one_hot:
        if t.shape[1:] != p_sp or t.ndim != len(p_sp) + 1:
            raise ValueError(
                f"one-hot y_true must have shape (N, *spatial) with spatial = {p_sp} (from y_pred {p_shape}), "
                f"got {t.shape}."
            )
        return _check_integer_labels(t, "y_true", one_hot=True), p, True
    if t.shape != p_sp and not (t.ndim == len(p_sp) + 1 and t.shape[0] == 1 and t.shape[1:] == p_sp):
        raise ValueError(f"y_true shape {t.shape} does not match y_pred shape {p_shape}.")
    return _check_integer_labels(t.reshape(p_sp), "y_true"), p, False


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map ids to ``0..n`` (0 stays background). Returns ``(index per pixel, n objects)``."""
    ids = np.unique(labels)
    idx = np.searchsorted(ids, labels)
    if ids.size and ids[0] == 0:
        return idx, ids.size - 1
    return idx + 1, ids.size


def _overlap_table(t: np.ndarray, p: np.ndarray, one_hot: bool) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse IoU table of one image.

    Returns:
        ``(n_true, n_pred, rows, cols, iou)``: 0-based object indices of every overlapping pair and its IoU.
    """
    p_idx, n_pred = _compact(p.ravel())
    size_p = np.bincount(p_idx, minlength=n_pred + 1)[1:]
    if one_hot:
        flat = t.reshape(t.shape[0], -1)
        size_t = flat.sum(axis=1)
        flat = flat[size_t > 0]  # empty channels are padding, not objects
        size_t = size_t[size_t > 0]
        n_true = flat.shape[0]
        ch, pix = np.nonzero(flat)
        t_mem, p_mem = ch, p_idx[pix]
    else:
        t_idx, n_true = _compact(t.ravel())
        size_t = np.bincount(t_idx, minlength=n_true + 1)[1:]
        t_mem, p_mem = t_idx - 1, p_idx
    both = (p_mem > 0) & (t_mem >= 0)
    keys = t_mem[both].astype(np.int64) * (n_pred + 1) + p_mem[both]
    if (n_true + 1) * (n_pred + 1) <= 1 << 22:
        counts = np.bincount(keys, minlength=(n_true + 1) * (n_pred + 1))
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    rows, cols = keys // (n_pred + 1), keys % (n_pred + 1) - 1
    iou = counts / (size_t[rows] + size_p[cols] - counts)
    return n_true, n_pred, rows, cols, iou


def _match(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray, thresh: float) -> tuple[int, float]:
    """Maximum one-to-one matching among pairs with ``iou >= thresh``; ties broken by the largest IoU sum.

    Returns:
        ``(tp, sum of matched IoUs)``.
    """
    keep = iou >= thresh
    r, c, s = rows[keep], cols[keep], iou[keep]
    if r.size == 0:
        return 0, 0.0
    # an edge whose true and predicted objects have no other candidate is matched in every optimal solution
    _, r_inv, r_cnt = np.unique(r, return_inverse=True, return_counts=True)
    _, c_inv, c_cnt = np.unique(c, return_inverse=True, return_counts=True)
    alone = (r_cnt[r_inv] == 1) & (c_cnt[c_inv] == 1)
    tp, score = int(alone.sum()), float(s[alone].sum())
    if alone.all():
        return tp, score
    r, c, s = r[~alone], c[~alone], s[~alone]
    ur, ri = np.unique(r, return_inverse=True)
    uc, ci = np.unique(c, return_inverse=True)
    k = min(ur.size, uc.size)
    # weight 1 per candidate pair plus an IoU tie-breaker whose total over <= k pairs stays below 1
    weight = np.zeros((ur.size, uc.size))
    weight[ri, ci] = 1.0 + s / (2.0 * k)
    iou_tab = np.zeros_like(weight)
    iou_tab[ri, ci] = s
    a, b = linear_sum_assignment(weight, maximize=True)
    ok = weight[a, b] > 0
    return tp + int(ok.sum()), score + float(iou_tab[a, b][ok].sum())


def check_thresholds(thresholds: Sequence[float] | float) -> tuple[float, ...]:
    """IoU thresholds as a tuple of floats in ``(0, 1]``; raises ``ValueError`` for an empty or out-of-range one."""
    th = (float(thresholds),) if np.isscalar(thresholds) else tuple(float(t) for t in thresholds)  # type: ignore
    if len(th) == 0 or not all(0.0 < t <= 1.0 for t in th):
        raise ValueError(f"thresholds must be a non-empty sequence of values in (0, 1], got {thresholds}.")
    return th


def image_match_counts(
    y_true: Any, y_pred: Any, thresholds: Sequence[float] | float = (0.5,), one_hot: bool | None = None
) -> np.ndarray:
    """Matching counts of one image for every threshold, from one overlap table.

    Args:
        y_true: label map ``(*spatial)`` / ``(1, *spatial)``, or one-hot stack ``(N, *spatial)`` (numpy or torch).
        y_pred: label map ``(*spatial)`` / ``(1, *spatial)``; ids need not be consecutive.
        thresholds: IoU thresholds in (0, 1].
        one_hot: whether ``y_true`` is a one-hot stack; ``None`` detects it (``N > 1`` channels over y_pred's shape).

    Returns:
        float64 array ``(T, 6)``: columns ``tp, fp, fn, sum of matched IoUs, n_true, n_pred``.

    Raises:
        ValueError: shape mismatch, float (non-integer), NaN or negative labels, non-binary one-hot, bad thresholds.
    """
    th = check_thresholds(thresholds)
    t, p, is_oh = _prepare_pair(y_true, y_pred, one_hot)
    n_true, n_pred, rows, cols, iou = _overlap_table(t, p, is_oh)
    out = np.zeros((len(th), 6))
    for i, thr in enumerate(th):
        tp, score = _match(rows, cols, iou, thr)
        out[i] = (tp, n_pred - tp, n_true - tp, score, n_true, n_pred)
    return out


def _ratios(tp: float, fp: float, fn: float, score: float, n_true: float, empty_value: float) -> dict[str, float]:
    """StarDist's ratio statistics (0 when ``tp == 0``), ``empty_value`` when nothing is true nor predicted."""
    if tp + fp + fn == 0:
        return dict.fromkeys(_RATIO_KEYS, float(empty_value))
    if tp == 0:
        return dict.fromkeys(_RATIO_KEYS, 0.0)
    vals = (
        tp / (tp + fp),
        tp / (tp + fn),
        tp / (tp + fp + fn),
        2 * tp / (2 * tp + fp + fn),
        score / n_true,
        score / tp,
        score / (tp + fp / 2 + fn / 2),
    )
    return {k: float(v) for k, v in zip(_RATIO_KEYS, vals)}


def _dataset_counts(y_true: Any, y_pred: Any, thresholds: Sequence[float] | float, one_hot: bool | None) -> np.ndarray:
    if not isinstance(y_true, (list, tuple)) or not isinstance(y_pred, (list, tuple)):
        raise TypeError(
            "y_true and y_pred must be lists (or tuples) of label maps, one per image; "
            f"got {type(y_true).__name__} and {type(y_pred).__name__}."
        )
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} images but y_pred has {len(y_pred)}.")
    if len(y_true) == 0:
        raise ValueError("y_true and y_pred are empty; need at least one image.")
    return np.stack([image_match_counts(t, p, thresholds, one_hot) for t, p in zip(y_true, y_pred)])


def matching_report(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    thresholds: Sequence[float] | float = (0.5,),
    by_image: bool = False,
    one_hot: bool | None = None,
    empty_value: float = 1.0,
) -> list[dict[str, float]]:
    """StarDist-style matching statistics of a data set, one dict per threshold.

    Args:
        y_true: list of true label maps ``(*spatial)`` / ``(1, *spatial)`` or one-hot stacks ``(N, *spatial)``.
        y_pred: list of predicted label maps ``(*spatial)`` / ``(1, *spatial)`` (numpy or torch).
        thresholds: IoU thresholds in (0, 1].
        by_image: average the ratios over images (counts are still summed) instead of pooling the counts.
        one_hot: whether ``y_true`` items are one-hot stacks (``None``: detect per image).
        empty_value: score of an image (pooled: a data set) without true and predicted objects (StarDist: 0).

    Returns:
        list (one per threshold) of dicts with keys ``thresh, by_image, tp, fp, fn, n_true, n_pred, precision,
        recall, accuracy (= AP_dsb), f1, mean_true_score, mean_matched_score, panoptic_quality``.
    """
    th = check_thresholds(thresholds)
    counts = _dataset_counts(y_true, y_pred, th, one_hot)  # (n_images, T, 6)
    reports = []
    for i, thr in enumerate(th):
        c = counts[:, i]
        tot = c.sum(axis=0)
        rep: dict[str, Any] = {"thresh": thr, "by_image": bool(by_image)}
        rep.update({k: int(v) for k, v in zip(("tp", "fp", "fn"), tot[:3])})
        rep.update(n_true=int(tot[4]), n_pred=int(tot[5]))
        if by_image:
            per = [_ratios(*row[:4], row[4], empty_value) for row in c]
            rep.update({k: float(np.mean([r[k] for r in per])) for k in _RATIO_KEYS})
        else:
            rep.update(_ratios(*tot[:4], tot[4], empty_value))
        reports.append(rep)
    return reports


def ap_dsb(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    thresholds: Sequence[float] | float = (0.5,),
    by_image: bool = False,
    one_hot: bool | None = None,
    empty_value: float = 1.0,
) -> np.ndarray:
    """AP_dsb = TP / (TP + FP + FN) per IoU threshold, with StarDist's one-to-one matching.

    Args:
        y_true: list of true label maps ``(H, W)``, ``(1, H, W)``, ``(D, H, W)``, ``(1, D, H, W)``, or one-hot stacks
            ``(N, *spatial)`` of possibly overlapping objects (numpy or torch; empty channels are ignored).
        y_pred: list of predicted label maps of the same spatial shape; ids need not be consecutive.
        thresholds: IoU thresholds in (0, 1].
        by_image: mean of per-image AP (EmbedSeg) instead of pooled counts (StarDist's default).
        one_hot: whether ``y_true`` items are one-hot stacks (``None``: detect per image).
        empty_value: AP of an image (pooled: a data set) with no true and no predicted object (StarDist: 0).

    Returns:
        float64 array ``(T,)``, one AP per threshold.

    Raises:
        TypeError: inputs are not lists of arrays/tensors.
        ValueError: different numbers of images, shape mismatch, float (non-integer), NaN or negative labels.
    """
    th = check_thresholds(thresholds)
    counts = _dataset_counts(y_true, y_pred, th, one_hot)
    return ap_from_counts(counts[..., :3], by_image=by_image, empty_value=empty_value)


def ap_from_counts(counts: np.ndarray | torch.Tensor, by_image: bool = False, empty_value: float = 1.0) -> np.ndarray:
    """AP per threshold from per-image counts.

    Args:
        counts: ``(n_images, T, 3)`` with ``tp, fp, fn`` last.

    Returns:
        float64 array ``(T,)``.
    """
    c = np.asarray(counts.detach().cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.float64)
    if c.ndim != 3 or c.shape[-1] < 3:
        raise ValueError(f"counts must have shape (n_images, T, 3), got {c.shape}.")
    if not by_image:
        c = c.sum(axis=0, keepdims=True)
    tp, den = c[..., 0], c[..., :3].sum(axis=-1)
    ap = np.where(den > 0, tp / np.maximum(den, 1), float(empty_value))
    return ap.mean(axis=0)
