"""Per-image and summary AP_dsb tables (CSV) for an evaluator run."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_embedseg.constants import IOU_THRESHOLDS_FINE, PRED_LABELS_KEY
from monai_embedseg.utils.files import atomic_output

__all__ = ["APReportHandler", "write_ap_tables", "format_ap_table"]


def _atomic_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence], overwrite: bool = True) -> None:
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def format_ap_table(summary: dict[str, np.ndarray], thresholds: Sequence[float] = IOU_THRESHOLDS_FINE) -> str:
    """Plain-text table: one row per IoU threshold, columns pooled / by-image AP_dsb."""
    lines = [f"{'IoU':>5} {'AP_dsb pooled':>14} {'AP_dsb by-image':>16}"]
    for i, t in enumerate(thresholds):
        lines.append(f"{t:>5.2f} {summary['pooled'][i]:>14.4f} {summary['by_image'][i]:>16.4f}")
    return "\n".join(lines)


def write_ap_tables(
    names: Sequence[str],
    y_true: Sequence,
    y_pred: Sequence,
    output_dir: str,
    thresholds: Sequence[float] = IOU_THRESHOLDS_FINE,
    prefix: str = "ap",
    overwrite: bool = True,
) -> dict[str, np.ndarray]:
    """Match predictions to ground truth and write ``<prefix>_per_image.csv`` and ``<prefix>_summary.csv``.

    Args:
        names: one name per image.
        y_true, y_pred: label maps ``(1, *sp)`` / ``(*sp)`` (ground truth may be one-hot ``(N, *sp)``).
        overwrite: replace existing tables (a bundle's evaluation rewrites its own on each run); ``False`` raises
            ``FileExistsError`` before anything is written.

    Raises:
        FileExistsError: a table exists and ``overwrite`` is False.

    Returns:
        ``{"pooled": (T,), "by_image": (T,)}`` AP_dsb per threshold.
    """
    from monai_embedseg.metrics.matching import ap_dsb

    tables = [Path(output_dir) / f"{prefix}_per_image.csv", Path(output_dir) / f"{prefix}_summary.csv"]
    existing = [str(t) for t in tables if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace the AP tables.")
    per_image = [ap_dsb([t], [p], thresholds=thresholds) for t, p in zip(y_true, y_pred)]
    summary = {
        "pooled": ap_dsb(list(y_true), list(y_pred), thresholds=thresholds),
        "by_image": np.mean(per_image, axis=0) if per_image else np.zeros(len(thresholds)),
    }
    header = ["name", *[f"AP@{t:.2f}" for t in thresholds]]
    _atomic_csv(tables[0], header, [[n, *[f"{v:.6f}" for v in ap]] for n, ap in zip(names, per_image)], overwrite)
    _atomic_csv(
        tables[1],
        ["threshold", "AP_dsb_pooled", "AP_dsb_by_image"],
        [[f"{t:.2f}", f"{a:.6f}", f"{b:.6f}"] for t, a, b in zip(thresholds, *summary.values())],
        overwrite,
    )
    return summary


class APReportHandler:
    """Collect each image's predicted and true labels during an evaluator run; write AP tables when it completes.

    Args:
        output_dir: where ``ap_per_image.csv`` and ``ap_summary.csv`` go.
        pred_key, label_key: keys in the decollated evaluator output (``(1, *sp)`` label maps).
        thresholds: IoU thresholds (default 0.5..0.9 in steps of 0.05).
    """

    def __init__(
        self,
        output_dir: str,
        pred_key: str = PRED_LABELS_KEY,
        label_key: str = "label",
        thresholds: Sequence[float] = IOU_THRESHOLDS_FINE,
        prefix: str = "ap",
    ) -> None:
        self.output_dir = output_dir
        self.pred_key, self.label_key = pred_key, label_key
        self.thresholds = tuple(thresholds)
        self.prefix = prefix
        self.logger = logging.getLogger(__name__)
        self._items: list[tuple[str, np.ndarray, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        """Collect on every iteration; write on ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, lambda _: self._items.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred, label = (
                np.asarray(item[k].detach().cpu() if isinstance(item[k], torch.Tensor) else item[k])
                for k in (self.pred_key, self.label_key)
            )
            meta = getattr(item[self.label_key], "meta", {}) or {}
            name = Path(str(meta.get("filename_or_obj", f"image_{len(self._items)}"))).name
            self._items.append((name, label, pred))

    def _write(self, engine: Engine) -> None:
        if not self._items:
            return
        names, truth, preds = zip(*self._items)
        summary = write_ap_tables(names, truth, preds, self.output_dir, self.thresholds, self.prefix)
        self.logger.info(f"AP_dsb on {len(names)} images:\n{format_ap_table(summary, self.thresholds)}")
