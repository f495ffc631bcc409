"""Networks and blocks for EmbedSeg."""
