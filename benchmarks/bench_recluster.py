"""Interactive latency: re-clustering a cached network output when a threshold moves (what the napari sliders do),
and segmenting one image in-process (the napari widget, :class:`~monai_embedseg.segmenter.Segmenter`) against the
``monai-embedseg segment`` command on the same image.

    python benchmarks/bench_recluster.py [--repeats 5]

2D: a generated 1024 x 1024 nuclei image through the shipped ``nuclei-2d`` model (its real output is re-clustered).
3D: a generated 60 x 256 x 256 stack of nuclei (z sampled 3x coarser) with the oracle output of its true labels
(every object a clean cluster: no trained 3D model ships with the package). Goals: <= 0.2 s (2D), <= 1 s (3D).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from monai_embedseg.data.synthetic import synthetic_cells_3d, synthetic_nuclei_2d
    from monai_embedseg.segmenter import Segmenter
    from monai_embedseg.testing import oracle_prediction
    from monai_embedseg.transforms import EmbedSegCluster
    from monai_embedseg.utils import configure_threads

    threads = configure_threads()
    rows = []
    image2d, _ = synthetic_nuclei_2d((1024, 1024), n_objects=(350, 450), seed=11)
    image2d = (np.clip(image2d, 0, 1) * 255).astype(np.uint8)

    start = time.perf_counter()
    segmenter = Segmenter(model="nuclei-2d", tta=False)
    load = time.perf_counter() - start
    start = time.perf_counter()
    segmenter.predict(image2d)
    predict = time.perf_counter() - start
    n2d = int(segmenter.cluster().max())
    settings = (("seed 0.9", {"seed_thresh": 0.9}), ("seed 0.6", {"seed_thresh": 0.6}), ("fg 0.3", {"fg_thresh": 0.3}))
    for name, kwargs in settings:
        seconds = _median_seconds(lambda kw=kwargs: segmenter.cluster(**kw), args.repeats)
        rows.append(("re-cluster 2D 1024 x 1024 (nuclei-2d output)", name, f"{seconds:.3f} s", "<= 0.2 s"))

    labels3d = synthetic_cells_3d((60, 256, 256), n_objects=(60, 80), seed=11)[1]
    spacing = (3.0, 1.0, 1.0)
    pred3d = torch.as_tensor(oracle_prediction(labels3d[None], spacing=spacing))
    n3d = int(EmbedSegCluster(spacing=spacing)(pred3d).max())
    for name, seed in (("seed 0.9", 0.9), ("seed 0.6", 0.6)):
        cluster = EmbedSegCluster(spacing=spacing, seed_thresh=seed)
        seconds = _median_seconds(lambda c=cluster: c(pred3d), args.repeats)
        rows.append(("re-cluster 3D 60 x 256 x 256 (oracle output)", name, f"{seconds:.3f} s", "<= 1 s"))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nuclei.tif"
        tifffile.imwrite(path, image2d)
        warm = _median_seconds(lambda: segmenter(image2d), args.repeats)
        command = [sys.executable, "-m", "monai_embedseg", "segment", str(path), "--model", "nuclei-2d", "--no-tta"]

        def cli() -> None:
            out = Path(tmp) / f"out{time.perf_counter_ns()}"
            subprocess.run([*command, "--output", str(out)], check=True, capture_output=True)

        cli_seconds = _median_seconds(cli, max(1, args.repeats // 2))
    rows += [
        ("widget / Segmenter, 2D 1024 x 1024, no TTA", "model load (once)", f"{load:.2f} s", ""),
        ("widget / Segmenter, 2D 1024 x 1024, no TTA", "first predict", f"{predict:.2f} s", ""),
        ("widget / Segmenter, 2D 1024 x 1024, no TTA", "predict + cluster, model loaded", f"{warm:.2f} s", ""),
        (
            "monai-embedseg segment, same image",
            "whole command (start-up, load, predict, write)",
            f"{cli_seconds:.2f} s",
            "",
        ),
    ]
    print(f"torch threads: {threads}; 2D objects: {n2d}; 3D objects: {n3d}; median of {args.repeats} runs\n")
    print("| what | setting | time | goal |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
