"""Engine utilities for EmbedSeg training and evaluation."""

from .prepare_batch import PrepareBatchEmbedSeg
