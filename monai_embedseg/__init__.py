"""monai_embedseg: EmbedSeg instance segmentation as MONAI components."""

__version__ = "0.1.0"
