"""Named constants of the method and of the package's data contracts, defined once.

The paper's values (clustering thresholds, normalisation percentiles) and the package's own conventions (output
keys, IoU thresholds for reporting, label-id limits) live here; every module imports them from this one place.
"""

from __future__ import annotations

__all__ = [
    "SEED_THRESH",
    "FG_THRESH",
    "PAPER_THRESHOLDS",
    "NORMALIZE_PERCENTILES",
    "PRED_KEY",
    "PRED_LABELS_KEY",
    "IOU_THRESHOLDS",
    "IOU_THRESHOLDS_FINE",
    "SPARSE_ID_LIMIT",
    "BINCOUNT_ID_LIMIT",
    "PROPERTIES_FILE",
    "THRESHOLDS_FILE",
]

#: the paper's clustering thresholds: a new object starts at an unclaimed seed score above ``SEED_THRESH``;
#: pixels with seed score above ``FG_THRESH`` are foreground
SEED_THRESH = 0.9
FG_THRESH = 0.5
PAPER_THRESHOLDS = {"seed_thresh": SEED_THRESH, "fg_thresh": FG_THRESH}

#: per-image intensity normalisation: these percentiles map to 0 and 1 (no clipping)
NORMALIZE_PERCENTILES = (1.0, 99.8)

#: dictionary keys of the raw network prediction and of the clustered instance label map
PRED_KEY = "pred"
PRED_LABELS_KEY = "pred_labels"

#: IoU thresholds for AP_dsb: the validation metric (0.5:0.9:0.1) and the evaluation reports (0.5:0.9:0.05)
IOU_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
IOU_THRESHOLDS_FINE = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)

#: label ids above ``max(SPARSE_ID_LIMIT, number of pixels)`` are compacted before per-id tables (bincount,
#: ``find_objects``) are built, which would otherwise grow with the largest id rather than with the object count
SPARSE_ID_LIMIT = 1 << 20
#: non-negative ids up to ``max(BINCOUNT_ID_LIMIT, 4 * number of pixels)`` are counted with a lookup table
BINCOUNT_ID_LIMIT = 1 << 16

#: files a training run writes beside ``model.pt`` and inference reads from there: the dataset properties (spacing,
#: crop size, minimum object size) and the clustering thresholds tuned on the validation split
PROPERTIES_FILE = "dataset_properties.json"
THRESHOLDS_FILE = "thresholds.json"
