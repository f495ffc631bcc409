"""Seconds per training step and crops/s on a fixed batch, for the paper network in each numeric format.

One step = forward, ``SpatialEmbeddingLoss``, backward and an Adam step, split into forward / loss / backward+step.
Cases: 2D batch 16 x 80 x 80 (DSB-like crops) and 3D batch 2 x 32 x 128 x 128, cut from the synthetic generators
with their exact medoid centers, so the loss sees real objects. Variants are timed interleaved (each repeat runs
every variant once) so that all see the same machine load; the figure is the median over repeats.

Variants: ``fp32`` (the network as is), ``channels_last``, ``channels_last+bf16`` (``FastForward``; bf16 only where
the device has it natively, otherwise the row says ``n/a``), each at every ``--threads`` count (CPU).

Usage::

    python benchmarks/bench_train_step.py [--repeats 10] [--threads 1 2] [--device cpu|cuda|all] [--cases 2d 3d]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from monai_embedseg.data.synthetic import synthetic_cells_3d, synthetic_nuclei_2d
from monai_embedseg.losses import SpatialEmbeddingLoss
from monai_embedseg.networks.nets import BranchedERFNet, FastForward, bf16_supported
from monai_embedseg.transforms import GenerateCenterImage

CASES = {"2d": (2, 16, (80, 80)), "3d": (3, 2, (32, 128, 128))}
VARIANTS = {"fp32": ("float32", False), "channels_last": ("float32", True), "channels_last+bf16": ("bfloat16", True)}


def fixed_batch(spatial_dims: int, batch: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, dict]:
    """``image (B, 1, *shape)``, ``{"instance": (B, 1, *shape), "center": (B, 1, *shape)}`` from synthetic data."""
    images, labels = [], []
    for i in range(batch):
        if spatial_dims == 2:
            img, lab = synthetic_nuclei_2d(shape=shape, n_objects=(3, 8), radius=(6, 14), seed=i)
        else:
            img, lab = synthetic_cells_3d(shape=shape, seed=i)
        images.append(img[None].astype(np.float32))
        labels.append(lab[None].astype(np.int64))
    centers = [GenerateCenterImage()(lab) for lab in labels]
    return torch.from_numpy(np.stack(images)), {
        "instance": torch.from_numpy(np.stack(labels)),
        "center": torch.from_numpy(np.stack(centers)),
    }


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
    print("| device | case | variant | threads | s/step | forward | loss | backward+step | crops/s | vs first row |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        d, b, shape = CASES[case]
        batch = fixed_batch(d, b, shape)
        for device in devices:
            thread_counts = args.threads if device.type == "cpu" else [torch.get_num_threads()]
            variants = [(name, n) for n in thread_counts for name in VARIANTS]
            steps = {}
            for name, n in variants:
                precision, cl = VARIANTS[name]
                if precision == "bfloat16" and not bf16_supported(device.type):
                    continue
                steps[(name, n)] = make_step(d, precision, cl, device, batch)

            def timed(key, steps=steps):
                torch.set_num_threads(key[1])
                return steps[key]()

            times = {key: [] for key in steps}
            for _ in range(2):
                for key in steps:
                    timed(key)
            for _ in range(args.repeats):
                for key in steps:  # interleaved: every variant sees the same machine load
                    times[key].append(timed(key))
            base = None
            for key in variants:
                label = f"{b} x {' x '.join(map(str, shape))}"
                if key not in times:
                    print(f"| {device.type} | {label} | {key[0]} | {key[1]} | n/a (no native bf16) | | | | | |")
                    continue
                parts = [statistics.median(t[i] for t in times[key]) for i in range(3)]
                total = statistics.median(sum(t) for t in times[key])
                base = base or total
                print(
                    f"| {device.type} | {label} | {key[0]} | {key[1]} | {total:.3f} | {parts[0]:.3f} | "
                    f"{parts[1]:.3f} | {parts[2]:.3f} | {b / total:.1f} | {base / total:.2f}x |"
                )


if __name__ == "__main__":
    main()
