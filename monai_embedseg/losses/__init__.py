"""EmbedSeg losses."""

from .lovasz import lovasz_hinge, lovasz_hinge_flat
from .spatial_embedding import SpatialEmbeddingLoss
