"""Inferers: sliding window + test-time augmentation with vector-channel correction."""

from .blockwise import (
    BlockLayout,
    BlockPredictor,
    choose_block_size,
    estimate_block_memory,
    halo_from_properties,
    segment_blockwise,
)
from .embedseg import EmbedSegInferer, tta_transforms
