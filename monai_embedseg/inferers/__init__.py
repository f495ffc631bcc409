"""Inferers: sliding window + test-time augmentation with vector-channel correction."""

from .embedseg import EmbedSegInferer, tta_transforms
