"""Time to segment one 2D image (network + TTA + clustering), before and after the fast inference path.

Variants, timed interleaved on the same image (median of ``--repeats``):

- ``sliding fp32``: the earlier default, a 512 x 512 sliding window (overlap 0.25, Gaussian blending), float32;
- ``whole fp32``: the image through the network whole (it fits a 1024 window), float32, channels-last;
- ``whole auto``: as above with bf16 autocast where the CPU/GPU has native bf16 (``FastForward(precision="auto")``).

Each with and without 8-fold TTA. The image defaults to the first Usiigaci test image of the shared data
(1022 x 1024) when present, else a synthetic 1022 x 1024 nuclei image; the weights to ``--checkpoint`` (e.g. a
trained Usiigaci ``model.pt``; clustering time depends on how trained the network is) or a fresh network.

Usage::

    python benchmarks/bench_segment_2d.py [--checkpoint OUT/model.pt] [--image IMG.tif] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_embedseg.data.synthetic import synthetic_nuclei_2d
from monai_embedseg.inferers import EmbedSegInferer
from monai_embedseg.networks.nets import BranchedERFNet, FastForward
from monai_embedseg.transforms.cluster import EmbedSegCluster
from monai_embedseg.utils.checkpoint import load_weights

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "usiigaci" / "test" / "images"


def load_image(path: str | None) -> torch.Tensor:
    """``(1, 1, H, W)`` float32, normalised as the bundles do."""
    if path is None and DEFAULT_IMAGE.is_dir():
        path = str(sorted(DEFAULT_IMAGE.glob("*.tif"))[0])
    if path is None:
        img, _ = synthetic_nuclei_2d(shape=(1022, 1024), n_objects=(150, 200), seed=0)
        return torch.from_numpy(img)[None, None].float()
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "usiigaci" / "configs" / "inference.json"))
    preprocessing = parser.get_parsed_content("preprocessing")  # loading and normalisation as the bundle does
    return torch.as_tensor(preprocessing({"image": path})["image"])[None].float()


def main() -> None:
    """Parse arguments, time each variant, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--image", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed-thresh", type=float, default=0.9)
    p.add_argument("--fg-thresh", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    net = BranchedERFNet(2, 1)
    if args.checkpoint:
        load_weights(net, args.checkpoint)
    net.eval()
    image = load_image(args.image)
    cluster = EmbedSegCluster(seed_thresh=args.seed_thresh, fg_thresh=args.fg_thresh)
    variants = {
        "sliding fp32": (EmbedSegInferer, {"roi_size": (512, 512), "sw_batch_size": 4, "whole_if_fits": False}, net),
        "whole fp32": (EmbedSegInferer, {"roi_size": (1024, 1024)}, FastForward(net, precision="float32").eval()),
        "whole auto": (EmbedSegInferer, {"roi_size": (1024, 1024)}, FastForward(net, precision="auto").eval()),
    }
    runs = {}
    for name, (cls, kw, runner) in variants.items():
        for tta in (False, True):
            inferer = cls(tta=tta, tta_batch_size=1, **kw)
            runs[(name, tta)] = (inferer, runner)
    times = {k: [] for k in runs}
    objects = {}
    for _ in range(args.repeats):
        for key, (inferer, runner) in runs.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                pred = inferer(image, runner)[0]
            t1 = time.perf_counter()
            labels = cluster(pred)
            t2 = time.perf_counter()
            times[key].append((t1 - t0, t2 - t1))
            objects[key] = int(np.unique(labels.numpy()).size - 1)
    print(
        f"image {tuple(image.shape[2:])}, {args.threads} thread(s), "
        f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'untrained network'}, median of {args.repeats}\n"
    )
    print("| variant | TTA | network s | clustering s | total s | objects | vs sliding fp32 |")
    print("|---|---|---|---|---|---|---|")
    for key in runs:
        net_s = statistics.median(t[0] for t in times[key])
        cl_s = statistics.median(t[1] for t in times[key])
        base = statistics.median(sum(t) for t in times[("sliding fp32", key[1])])
        total = statistics.median(sum(t) for t in times[key])
        print(
            f"| {key[0]} | {'8-fold' if key[1] else 'off'} | {net_s:.2f} | {cl_s:.2f} | {total:.2f} | "
            f"{objects[key]} | {base / total:.2f}x |"
        )


if __name__ == "__main__":
    main()
