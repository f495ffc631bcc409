"""How consistently each normalisation rule scales the objects of different images or tiles (no training needed).

A network trained on some images meets the next one through its normalisation: if one bright structure (or a
brighter field) moves the upper percentile, that image's objects arrive dimmer than anything seen in training. For
every item of a labelled set (images, or ``--tiles GY GX`` tiles of its volumes) this scales the image by each rule
and takes the median intensity of its object voxels (from the masks); the spread of that median over the items says
how much the network's input varies for the same kind of object. Rules:

- ``p1-p99.8``: the 1st / 99.8th percentiles of the image (the package's rule, ``constants.NORMALIZE_PERCENTILES``);
- ``p1-p99``: a lower upper percentile (a bright structure must cover 1 % of the image to move it);
- ``p1-otsu-median``: 1st percentile -> 0, median of the voxels above Otsu's threshold -> 1 (the foreground's centre,
  which a small bright structure hardly moves; no masks needed, so usable at inference).

Printed per set and rule: the coefficient of variation (sd / mean) of the per-item object median, its max / min
ratio and the lowest item. Lower is more consistent.

Usage::

    python benchmarks/bench_normalisation.py --data ../shared/data/cho3d --tiles 2 2
    python benchmarks/bench_normalisation.py --data ../shared/data/hela2d ../shared/data/dsb2018
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from skimage.filters import threshold_otsu

from monai_embedseg.constants import NORMALIZE_PERCENTILES
from monai_embedseg.data.folds import collect_items, tile_volume
from monai_embedseg.data.io import read_tiff


def _scale(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return (image - low) / max(high - low, 1e-12)


def rules(image: np.ndarray) -> dict[str, np.ndarray]:
    """The image ``(*spatial)`` scaled by each rule, as float64 arrays of the same shape."""
    x = image.astype(np.float64)
    p1, p99, p998 = np.percentile(x, [NORMALIZE_PERCENTILES[0], 99.0, NORMALIZE_PERCENTILES[1]])
    above = x[x > threshold_otsu(x)] if x.max() > x.min() else x.ravel()
    return {
        "p1-p99.8": _scale(x, p1, p998),
        "p1-p99": _scale(x, p1, p99),
        "p1-otsu-median": _scale(x, p1, float(np.median(above))),
    }


def items_of(data: str, tiles: list[int] | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image, labels)`` for every item of ``data`` (every split), cut into tiles when asked."""
    out = []
    for item in collect_items(data):
        image, labels = read_tiff(item["image"]), read_tiff(item["masks"])
        if image.ndim != labels.ndim:
            continue  # multi-channel images: the rule applies per channel, not measured here
        parts = tile_volume(image, labels, tiles) if tiles else [(image, labels)]
        out += [(f"{item['name']}#{i}" if tiles else item["name"], im, lab) for i, (im, lab) in enumerate(parts)]
    return out


def main() -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="labelled sets in the release layout")
    p.add_argument("--tiles", type=int, nargs=2, metavar=("GY", "GX"), help="cut each image into tiles first")
    args = p.parse_args()
    print("| set | items | rule | CV of object median | max / min | lowest item (median) |")
    print("|---|---|---|---|---|---|")
    for data in args.data:
        medians: dict[str, list[tuple[float, str]]] = {}
        items = [it for it in items_of(data, args.tiles) if (it[2] > 0).any()]
        for name, image, labels in items:
            for rule, scaled in rules(image).items():
                medians.setdefault(rule, []).append((float(np.median(scaled[labels > 0])), name))
        for rule, values in medians.items():
            v = [m for m, _ in values]
            low = min(values)
            cv = statistics.pstdev(v) / statistics.fmean(v)
            print(
                f"| {data.rstrip('/').split('/')[-1]} | {len(v)} | {rule} | {cv:.3f} | {max(v) / low[0]:.2f} | "
                f"{low[1]} ({low[0]:.2f}) |"
            )


if __name__ == "__main__":
    main()
