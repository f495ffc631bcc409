"""Time ``monai-embedseg segment`` on one 60 x 256 x 256 volume with 16-fold TTA, as a user runs it.

The volume is generated (touching near-isotropic nuclei, ``synthetic_cells_3d`` with ``z_anisotropy=1``, spacing
0.29 x 0.26 x 0.26 recorded in the TIFF) unless ``--image`` names one. It is segmented through the real command path
(:func:`monai_embedseg.cli.segment`: the bundle's ``inference.json``, the trained model, its tuned thresholds and
dataset properties) with each ``--precision``, with and without TTA, interleaved (median of ``--repeats``). The
time is the whole call (read, normalise, network, TTA, clustering, write) after one warm-up; the start-up of the
command itself (``import monai`` etc., once per process) is not included. The labels of the precisions are compared
(objects found and the fraction of voxels whose foreground/background agrees).

Usage::

    python benchmarks/bench_segment_3d.py --bundle bundles/synthetic_3d --checkpoint OUT/model.pt
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from monai_embedseg.cli import segment
from monai_embedseg.data.io import read_tiff, write_tiff
from monai_embedseg.data.synthetic import synthetic_cells_3d


def make_volume(path: Path, shape: tuple[int, ...]) -> Path:
    """Write a generated ``shape`` uint16 volume of nuclei to ``path``."""
    img, _ = synthetic_cells_3d(shape, z_anisotropy=1, n_objects=(40, 60), radius=(16, 22), seed=7)
    write_tiff(path, (img * 2000 + 300).clip(0, 65535).astype(np.uint16), spacing=(0.29, 0.26, 0.26))
    return path


def main() -> None:
    """Parse arguments, time each variant, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", default=None)
    p.add_argument("--shape", type=int, nargs=3, default=[60, 256, 256])
    p.add_argument("--precision", nargs="+", default=["float32", "auto"])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(args.image) if args.image else make_volume(Path(tmp) / "volume.tif", tuple(args.shape))
        variants = [(prec, tta) for tta in (True, False) for prec in args.precision]
        times: dict = {v: [] for v in variants}
        labels: dict = {}
        for r in range(args.repeats + 1):  # the first round warms up
            for prec, tta in variants:
                out = Path(tmp) / f"{prec}_{tta}"
                t0 = time.perf_counter()
                (written,) = segment(
                    [str(image)], args.bundle, str(out), args.checkpoint, tta=tta, precision=prec, overwrite=True
                )
                if r:
                    times[(prec, tta)].append(time.perf_counter() - t0)
                labels[(prec, tta)] = read_tiff(written)
    shape = " x ".join(str(s) for s in labels[variants[0]].shape)
    print(f"\n{shape} voxels, CPU, {torch.get_num_threads()} thread(s), median of {args.repeats}\n")
    print("| TTA | precision | seconds | objects | foreground agreement with the first row |")
    print("|---|---|---|---|---|")
    for prec, tta in variants:
        lab = labels[(prec, tta)]
        ref = labels[variants[0] if tta else variants[len(args.precision)]]
        agree = float(((lab > 0) == (ref > 0)).mean())
        print(
            f"| {'16-fold' if tta else 'off'} | {prec} | {statistics.median(times[(prec, tta)]):.1f} | "
            f"{len(np.unique(lab)) - 1} | {100 * agree:.2f} % |"
        )


if __name__ == "__main__":
    main()
