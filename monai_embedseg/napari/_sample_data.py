"""napari sample data: small generated nuclei images (offline), File > Open Sample > EmbedSeg."""

from __future__ import annotations

import numpy as np

__all__ = ["nuclei_2d", "nuclei_3d"]


def nuclei_2d() -> list[tuple]:
    """A 256 x 256 image of touching nuclei (``uint8``) and its true labels, as napari layer data."""
    from monai_embedseg.data.synthetic import synthetic_nuclei_2d

    image, labels = synthetic_nuclei_2d((256, 256), seed=7)
    return [
        ((np.clip(image, 0, 1) * 255).astype(np.uint8), {"name": "nuclei 2D"}, "image"),
        (labels, {"name": "nuclei 2D truth", "visible": False}, "labels"),
    ]


def nuclei_3d() -> list[tuple]:
    """A 32 x 128 x 128 stack of nuclei, z sampled 3x coarser than y/x (``scale`` 3, 1, 1), and its true labels."""
    from monai_embedseg.data.synthetic import synthetic_cells_3d

    image, labels = synthetic_cells_3d((32, 128, 128), seed=7)
    scale = (3.0, 1.0, 1.0)
    return [
        ((np.clip(image, 0, 1) * 255).astype(np.uint8), {"name": "nuclei 3D", "scale": scale}, "image"),
        (labels, {"name": "nuclei 3D truth", "scale": scale, "visible": False}, "labels"),
    ]
