"""Networks and blocks for EmbedSeg."""

from . import blocks, nets
