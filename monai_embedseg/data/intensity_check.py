"""A warning for images whose 1 / 99.8 percentile normalisation fails: a mostly empty image (a small field of objects
pasted into a large slide) has background values at both percentiles, so its objects end up tens of times above the
range the network was trained on and are over-segmented."""

from __future__ import annotations

import numpy as np

__all__ = ["SPARSE_RATIO", "sparse_intensity_warning"]

#: a normalised image whose maximum exceeds this is flagged; on the four 2D and one 3D real sets at hand the
#: maximum of every image lies between 1.0 and 3.6 (objects fill more than 0.2 % of the image)
SPARSE_RATIO = 6.0


def sparse_intensity_warning(normalised, source: str) -> str | None:
    """A one-line warning if ``normalised`` (an image after the 1 / 99.8 percentile scaling, any shape, numpy or
    torch) reaches more than :data:`SPARSE_RATIO` times its percentile range, else ``None``.

    Args:
        normalised: the scaled image (0 at the 1st percentile, 1 at the 99.8th).
        source: the file or layer named in the message.
    """
    peak = float(np.max(np.asarray(normalised, dtype=np.float32)))
    if not np.isfinite(peak) or peak <= SPARSE_RATIO:
        return None
    return (
        f"warning: {source}: its brightest pixels are {peak:.0f}x the range between its 1st and 99.8th intensity "
        "percentiles, so the percentiles are background values (a mostly empty image?). Objects will be "
        "over-segmented: crop the image to the region holding objects, or segment it in tiles."
    )
