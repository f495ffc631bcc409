"""Engine utilities for EmbedSeg training and evaluation."""

from .prepare_batch import PrepareBatchEmbedSeg
from .threshold_search import PAPER_THRESHOLDS, THRESHOLDS_FILE, ThresholdSearch, read_thresholds, tuned_thresholds
