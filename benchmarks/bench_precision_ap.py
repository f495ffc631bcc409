"""Does bf16 inference cost accuracy? Validation AP of one trained model predicted in float32 and in bf16.

Loads a bundle's trained ``model.pt`` (and its ``thresholds.json`` when present, else the paper's thresholds),
predicts every image of the bundle's validation split (the same held-out images training validated on) with
``FastForward(precision="float32")`` and ``FastForward(precision="bfloat16")``, with and without TTA, clusters
with the same thresholds and prints AP_dsb at IoU 0.5 / 0.75 (pooled and by image), the largest absolute
difference of the raw predictions, and the time.

Usage::

    python benchmarks/bench_precision_ap.py --bundle dsb2018 --dataset_dir DATA/dsb2018 --output_dir OUT
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from monai_embedseg.bundle.datasets import read_properties, training_datalists
from monai_embedseg.bundle.paths import bundle_workflow
from monai_embedseg.engines import read_thresholds
from monai_embedseg.inferers import EmbedSegInferer
from monai_embedseg.metrics import ap_dsb
from monai_embedseg.networks.nets import FastForward, bf16_supported
from monai_embedseg.transforms.cluster import cluster_embeddings
from monai_embedseg.utils.checkpoint import load_weights


def main() -> None:
    """Parse arguments, predict, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--output_dir", required=True, help="the training output folder (model.pt, thresholds.json)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not bf16_supported("cpu"):
        raise SystemExit("this CPU has no native bf16: nothing to compare (FastForward runs float32 here).")
    wf = bundle_workflow(args.bundle, "train", ["train.json"], dataset_dir=args.dataset_dir, output_dir=args.output_dir)
    parser = wf.parser
    net = load_weights(parser.get_parsed_content("network_def"), f"{args.output_dir}/model.pt").eval()
    props = read_properties(args.output_dir)
    th = read_thresholds(args.output_dir, props["min_object_size"])
    val = parser.get_parsed_content("validate#dataset")
    spacing = props["spacing"]  # what training used
    n = len(training_datalists(args.dataset_dir)["val"])
    rows, preds = [], {}
    for tta in (False, True):
        inferer = EmbedSegInferer(
            roi_size=parser.get_parsed_content("roi_size"), sw_batch_size=4, tta=tta, tta_batch_size=1
        )
        for precision in ("float32", "bfloat16"):
            runner = FastForward(net, precision=precision).eval()
            labels, truth, raw = [], [], []
            t0 = time.perf_counter()
            with torch.inference_mode():
                for item in val:
                    pred = inferer(torch.as_tensor(item["image"])[None].float(), runner)[0]
                    raw.append(pred)
                    lab, _ = cluster_embeddings(
                        pred.as_tensor() if hasattr(pred, "as_tensor") else pred,
                        spacing,
                        th["seed_thresh"],
                        th["fg_thresh"],
                        th["min_object_size"],
                    )
                    labels.append(lab.numpy())
                    truth.append(np.asarray(item["label"]))
            seconds = time.perf_counter() - t0
            preds[(tta, precision)] = raw
            pooled = ap_dsb(truth, labels, (0.5, 0.75))
            by_image = ap_dsb(truth, labels, (0.5, 0.75), by_image=True)
            rows.append((tta, precision, pooled, by_image, seconds))
    print(
        f"{args.bundle}: {n} validation images, thresholds {th['source']} (seed {th['seed_thresh']}, "
        f"foreground {th['fg_thresh']}, min size {th['min_object_size']}), {args.threads} thread(s)\n"
    )
    print(
        "| TTA | precision | AP@0.5 pooled | AP@0.5 by image | AP@0.75 pooled | AP@0.75 by image | max abs diff of "
        "raw output vs float32 | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for tta, precision, pooled, by_image, seconds in rows:
        diff = max(float((a - b).abs().max()) for a, b in zip(preds[(tta, precision)], preds[(tta, "float32")]))
        print(
            f"| {'8-fold' if tta else 'off'} | {precision} | {pooled[0]:.3f} | {by_image[0]:.3f} | {pooled[1]:.3f} | "
            f"{by_image[1]:.3f} | {diff:.3f} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
