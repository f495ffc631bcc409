"""Benchmark of EmbedSeg greedy clustering (:func:`monai_embedseg.transforms.cluster.cluster_embeddings`).

Inputs are oracle-like predictions with realistic noise: synthetic touching objects (Voronoi cells of random
points cut to discs/balls), embeddings at the object center plus Gaussian noise (``--noise`` pixels), bandwidth
``--sigma`` pixels with 10 % log-normal jitter, seed probabilities that fall below 0.9 within ~3 pixels of an
object border, and low seeds in the background.

Usage::

    python benchmarks/bench_cluster.py                 # default table (CPU, and CUDA if available)
    python benchmarks/bench_cluster.py --quick         # small sizes only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from monai_embedseg.embedding import decode_prediction, encode_prediction
from monai_embedseg.testing.oracle import oracle_prediction
from monai_embedseg.transforms.cluster import cluster_embeddings


def synthetic_labels(
    shape: tuple[int, ...], n_objects: int, rng: np.random.Generator, spacing: tuple[float, ...] | None = None
) -> np.ndarray:
    """Touching objects: Voronoi cells of ``n_objects`` random points, cut to (physical) balls.

    Returns:
        ``(1, *shape)`` int32 label map.
    """
    shape_arr = np.asarray(shape)
    sp = np.asarray(spacing if spacing is not None else (1.0,) * len(shape))
    points = (rng.random((n_objects, len(shape))) * shape_arr).astype(np.int64)
    markers = np.zeros(shape, dtype=np.int32)
    markers[tuple(points.T)] = np.arange(1, n_objects + 1)
    dist, idx = ndimage.distance_transform_edt(markers == 0, sampling=sp, return_indices=True)
    labels = markers[tuple(idx)]
    radius = 0.6 * (np.prod(shape_arr * sp) / n_objects) ** (1.0 / len(shape))
    labels[dist > radius] = 0
    # relabel consecutively (points may collide)
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(shape).astype(np.int32)[None]


def noisy_prediction(
    labels: np.ndarray,
    spacing: tuple[float, ...] | None,
    rng: np.random.Generator,
    noise: float = 0.3,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Oracle prediction with noisy embeddings, jittered bandwidths and soft seeds. Returns raw ``(2D+1, *sp)``."""
    d = labels.ndim - 1
    sp = tuple(spacing) if spacing is not None else (1.0,) * d
    unit = min(sp)
    raw = torch.as_tensor(oracle_prediction(labels, spacing=sp, mode="centroid"))
    emb, _, _ = decode_prediction(raw.double(), sp, batched=False)
    emb = emb + torch.as_tensor(rng.normal(0.0, noise * unit, emb.shape))
    sig = torch.as_tensor(sigma * unit * np.exp(rng.normal(0.0, 0.1, emb.shape)))
    inside = labels[0] > 0
    border = ndimage.distance_transform_edt(inside, sampling=np.asarray(sp) / unit)
    seed = np.where(inside, 0.6 + 0.39 * np.minimum(border / 4.0, 1.0), 0.05)
    seed = np.clip(seed + rng.normal(0.0, 0.02, seed.shape), 0.0, 1.0)
    return encode_prediction(emb, sig, torch.as_tensor(seed)[None], sp).float()


def matched_objects(truth: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> int:
    """Number of true objects matched by a predicted object with IoU above ``iou`` (matches are unique for 0.5)."""
    t, p = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    fg = (t > 0) & (p > 0)
    pairs, inter = np.unique(t[fg] * (p.max() + 1) + p[fg], return_counts=True)
    ti, pi = pairs // (p.max() + 1), pairs % (p.max() + 1)
    area_t, area_p = np.bincount(t), np.bincount(p)
    ious = inter / (area_t[ti] + area_p[pi] - inter)
    return int(np.unique(ti[ious > iou]).size)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.3, help="embedding noise in pixels")
    parser.add_argument("--sigma", type=float, default=1.0, help="bandwidth in pixels")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cases = [
        ((256, 256), 12, None),
        ((512, 512), 50, None),
        ((1024, 1024), 200, None),
        ((2048, 2048), 800, None),
        ((32, 256, 256), 100, (2.0, 0.4, 0.4)),
        ((64, 512, 512), 400, (2.0, 0.4, 0.4)),
    ]
    if args.quick:
        cases = cases[:2] + cases[4:5]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, devices {devices}")
    header = (
        f"| {'shape':>15} | {'spacing':>13} | {'objects':>7} | {'found':>5} | {'IoU>0.5':>7} | {'device':>6} "
        f"| {'split':>5} | {'time [s]':>8} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for shape, n_obj, spacing in cases:
        labels = synthetic_labels(shape, n_obj, rng, spacing)
        pred = noisy_prediction(labels, spacing, rng, noise=args.noise, sigma=args.sigma)
        n_true = int(labels.max())
        for device in devices:
            p = pred.to(device)
            for split in (False, True):
                out = {}

                def run(p=p, split=split, out=out, spacing=spacing):
                    out["labels"], _ = cluster_embeddings(p, spacing=spacing, split_components=split)

                t = _time(run, args.repeats)
                found = int(out["labels"].max())
                matched = matched_objects(labels, out["labels"].cpu().numpy())
                shape_s = "x".join(map(str, shape))
                sp_s = "x".join(f"{v:g}" for v in spacing) if spacing is not None else "1"
                print(
                    f"| {shape_s:>15} | {sp_s:>13} | {n_true:>7} | {found:>5} | {matched:>7} | {device:>6} "
                    f"| {str(split):>5} | {t:>8.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
