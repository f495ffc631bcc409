"""Inferers: sliding window + test-time augmentation with vector-channel correction."""

from .tta import EmbedSegInferer, tta_transforms
