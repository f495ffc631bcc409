"""Seconds per training step and crops/s on a fixed batch, for the paper network in each numeric format.

One step = data, forward, ``SpatialEmbeddingLoss``, backward and an Adam step, split into data / forward / loss /
backward+step. Cases: 2D batch 16 x 80 x 80 (DSB-like crops); 3D batch 2 x 32 x 128 x 128 (the paper schedule's
crops, ``train.json``); the 3D fast profile's crops (``train_fast.json``: a crop within 2^18 voxels, crops per step
for about 2^19 voxels) on thin anisotropic volumes (3 x 5 x 144 x 144, cho3d-like) and on small near-isotropic tiles
(2 x 60 x 64 x 64). Batches are cut from the synthetic generators with their exact medoid centers, so the loss sees
real objects. Variants are timed interleaved (each repeat runs every variant once) so that all see the same machine
load; the figure is the median over repeats.

``data`` is what one batch costs the data side, timed on the same crops: ``fresh`` cuts every crop from its volume
and computes its medoid center image (``train.json``: ``RandObjectCropd`` + ``GenerateCenterImaged`` per sample, in
the training process when there is no worker), ``pool`` serves it from a ``CropPoolDataset`` (``train_fast.json``: a
tenth re-cut per crop served, flips and rotations on the fly).

Variants: ``fp32`` (the network as is), ``channels_last``, ``channels_last+bf16`` (``FastForward``; bf16 only where
the device has it natively, otherwise the row says ``n/a``), each at every ``--threads`` count (CPU).

Usage::

    python benchmarks/bench_train_step.py [--repeats 10] [--threads 1 2] [--device cpu|cuda|all] \
        [--cases 2d 3d 3d-thin 3d-tiles]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandFlipd, RandRotate90d

from monai_embedseg.data import CropPoolDataset
from monai_embedseg.data.synthetic import synthetic_cells_3d, synthetic_nuclei_2d
from monai_embedseg.losses import SpatialEmbeddingLoss
from monai_embedseg.networks.nets import BranchedERFNet, FastForward, bf16_supported
from monai_embedseg.transforms import GenerateCenterImaged, RandObjectCropd

#: case -> (spatial dims, batch, crop, volume the crops are cut from, generator arguments)
CASES = {
    "2d": (2, 16, (80, 80), (256, 256), {}),
    "3d": (3, 2, (32, 128, 128), (32, 256, 256), {}),
    "3d-thin": (3, 3, (5, 144, 144), (5, 443, 512), {"z_anisotropy": 5, "radius": (30, 40), "n_objects": (8, 11)}),
    "3d-tiles": (3, 2, (60, 64, 64), (60, 128, 128), {"z_anisotropy": 1, "radius": (16, 22), "n_objects": (5, 7)}),
}
VARIANTS = {"fp32": ("float32", False), "channels_last": ("float32", True), "channels_last+bf16": ("bfloat16", True)}


def volumes(spatial_dims: int, shape: tuple[int, ...], kwargs: dict, n: int = 2) -> list[dict]:
    """``n`` generated volumes ``{"image": (1, *shape) float32, "label": (1, *shape) int64}``."""
    out = []
    for i in range(n):
        if spatial_dims == 2:
            img, lab = synthetic_nuclei_2d(shape=shape, n_objects=(12, 30), radius=(6, 14), seed=i)
        else:  # the generator needs 8 slices: thinner volumes are cut from 8-slice ones
            img, lab = synthetic_cells_3d(shape=(max(shape[0], 8), *shape[1:]), seed=i, **kwargs)
            img, lab = img[: shape[0]], lab[: shape[0]]
        out.append({"image": img[None].astype(np.float32), "label": lab[None].astype(np.int64)})
    return out


def pipelines(crop: tuple[int, ...]) -> tuple[Compose, Compose]:
    """The training pipeline after loading, as the bundles split it: ``(cut, augment)``."""
    keys = ["image", "label", "center"]
    cut = Compose(
        [
            RandObjectCropd(["image", "label"], "label", crop_size=list(crop), keep_inside=True),
            GenerateCenterImaged("label", center_key="center"),
        ]
    )
    axes = (len(crop) - 2, len(crop) - 1)
    augment = Compose([RandFlipd(keys, 0.5, a) for a in range(len(crop))] + [RandRotate90d(keys, 0.75, 3, axes)])
    return cut, augment


def fixed_batch(spatial_dims: int, batch: int, crop: tuple[int, ...], vols: list[dict]) -> tuple[torch.Tensor, dict]:
    """``image (B, 1, *crop)``, ``{"instance": (B, 1, *crop), "center": (B, 1, *crop)}`` cut from ``vols``."""
    cut, _ = pipelines(crop)
    cut.set_random_state(0)
    items = [cut(vols[i % len(vols)])[0] for i in range(batch)]
    return _collate(items)


def _collate(items: list[dict]) -> tuple[torch.Tensor, dict]:
    def stack(key: str) -> torch.Tensor:
        return torch.stack([torch.as_tensor(np.asarray(d[key])) for d in items])

    return stack("image").float(), {"instance": stack("label").long(), "center": stack("center")}


def data_times(batch: int, crop: tuple[int, ...], vols: list[dict], repeats: int) -> dict[str, float]:
    """Median seconds to make one batch: every crop cut fresh, or served from a crop pool (refresh rate 0.1)."""
    cut, augment = pipelines(crop)
    cut.set_random_state(1)
    source = Dataset(vols, transform=cut)
    pool = CropPoolDataset(source, pool_size=max(4 * len(vols), 4 * batch), refresh_rate=0.1, transform=augment)
    pool.fill()
    out = {}
    for name, get in (("fresh", lambda i: source[i % len(vols)][0]), ("pool", pool.__getitem__)):
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            _collate([get(r * batch + i) for i in range(batch)])
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(spatial_dims: int, precision: str, channels_last: bool, device: torch.device, batch):
    """A closure running one timed training step; returns ``(forward, loss, backward+step)`` seconds."""
    torch.manual_seed(0)
    net = BranchedERFNet(spatial_dims, 1).to(device)
    runner = FastForward(net, precision=precision, channels_last=channels_last) if channels_last else net
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    loss_fn = SpatialEmbeddingLoss(foreground_weight=10.0)
    image = batch[0].to(device)
    target = {k: v.to(device) for k, v in batch[1].items()}
    net.train()

    def step() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        pred = runner(image)
        _sync(device)
        t1 = time.perf_counter()
        loss = loss_fn(pred, target)
        _sync(device)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    return step


def main() -> None:
    """Parse arguments, time each case and variant, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="CPU thread counts, each timed as a variant (1 2: one thread beside a DataLoader worker vs every core)",
    )
    p.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, CPU threads {args.threads}, median of {args.repeats} steps after 2 warm-ups\n")
    print(
        "| device | case | variant | threads | s/step (pool) | data: fresh / pool | forward | loss | backward+step "
        "| crops/s (pool) | vs first row |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        d, b, shape, volume, kwargs = CASES[case]
        vols = volumes(d, volume, kwargs)
        batch = fixed_batch(d, b, shape, vols)
        data = data_times(b, shape, vols, args.repeats)
        for device in devices:
            thread_counts = args.threads if device.type == "cpu" else [torch.get_num_threads()]
            variants = [(name, n) for n in thread_counts for name in VARIANTS]
            steps = {}
            for name, n in variants:
                precision, cl = VARIANTS[name]
                if precision == "bfloat16" and not bf16_supported(device.type):
                    continue
                steps[(name, n)] = make_step(d, precision, cl, device, batch)

            diverged: dict = {}  # variant -> the step at which its prediction became NaN / inf

            def timed(key, k, steps=steps, diverged=diverged):
                torch.set_num_threads(key[1])
                try:
                    return steps[key]()
                except ValueError:  # the loss refuses a non-finite prediction: training diverged
                    diverged[key] = k
                    return None

            times = {key: [] for key in steps}
            for k in range(2 + args.repeats):  # 2 warm-ups, then timed; interleaved: every variant sees the same load
                for key in steps:
                    if key not in diverged and (t := timed(key, k + 1)) is not None and k >= 2:
                        times[key].append(t)
            base = None
            for key in variants:
                label = f"{b} x {' x '.join(map(str, shape))}"
                if key not in times:
                    print(f"| {device.type} | {label} | {key[0]} | {key[1]} | n/a (no native bf16) | | | | | | |")
                    continue
                if key in diverged:
                    print(
                        f"| {device.type} | {label} | {key[0]} | {key[1]} | diverged: NaN / inf prediction at step "
                        f"{diverged[key]} of the same batch | | | | | | |"
                    )
                    continue
                parts = [statistics.median(t[i] for t in times[key]) for i in range(3)]
                total = statistics.median(sum(t) for t in times[key]) + data["pool"]
                base = base or total
                print(
                    f"| {device.type} | {label} | {key[0]} | {key[1]} | {total:.3f} | "
                    f"{data['fresh']:.3f} / {data['pool']:.3f} | {parts[0]:.3f} | "
                    f"{parts[1]:.3f} | {parts[2]:.3f} | {b / total:.1f} | {base / total:.2f}x |"
                )


if __name__ == "__main__":
    main()
