"""Time the block-wise normalisation percentiles (``data.volume_percentiles`` / ``data.content_percentiles``) of a
generated volume, integer and floating point.

    python benchmarks/bench_percentiles.py [--shape 96 512 512] [--repeats 3]

Integer volumes of up to 16 bits take one histogram pass; float volumes a min / max pass and histogram refinement
passes (exact either way). ``content_percentiles`` adds the tile-maxima pass that recognises a mostly empty volume.
Prints a Markdown table (median of ``--repeats`` runs, Dask's synchronous scheduler, slabs of 2^24 voxels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    """Run the timings and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs="+", default=[96, 512, 512])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from monai_embedseg.data.percentiles import content_percentiles, volume_percentiles
    from monai_embedseg.data.zarr_io import ArrayVolume

    def sync(tasks):
        return [t.compute(scheduler="synchronous") for t in tasks]

    rng = np.random.default_rng(0)
    print("| volume | volume_percentiles | content_percentiles | (1, 99.8) percentiles |")
    print("|---|---|---|---|")
    for dtype in (np.uint16, np.float32):
        image = rng.gamma(2.0, 300.0, (1, *args.shape)).astype(dtype)
        volume = ArrayVolume(image, len(args.shape))
        times = {"volume": [], "content": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            found = volume_percentiles(volume, compute=sync)
            times["volume"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            content_percentiles(volume, compute=sync)
            times["content"].append(time.perf_counter() - t0)
        shape = " x ".join(map(str, args.shape))
        print(
            f"| {shape} {np.dtype(dtype).name} | {statistics.median(times['volume']):.2f} s "
            f"| {statistics.median(times['content']):.2f} s | {found[0][0]:.4f} / {found[0][1]:.4f} |"
        )


if __name__ == "__main__":
    main()
