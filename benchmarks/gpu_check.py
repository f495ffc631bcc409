"""One GPU check: training crops/s and peak memory (2D and 3D, paper settings and fast profile), and 16-fold TTA
block-wise on a 515 x 648 x 648 volume. Prepared to run as is on a CUDA machine in under 8 minutes.

Training cases (each: 3 warm-up steps, then ``--steps`` timed steps of forward, ``SpatialEmbeddingLoss``, backward
and an Adam step on a fixed batch cut from the synthetic generators with exact medoid centers):

* 2D paper: batch 2 x 256 x 256, float32 (the bundles' ``train.json``, Usiigaci / BBBC010-sized crops);
* 2D fast: batch 16 x 96 x 96, ``FastForward`` bf16 channels-last (``train_fast.json`` of dsb2018);
* 3D paper: batch 2 x 32 x 128 x 128, float32 (``train.json`` of the 3D bundles, with AMP where it is on: CUDA);
* 3D fast: batch 4 x 60 x 64 x 64 float32 (``train_fast.json``: a crop of at most 2^18 voxels, about 2^20 per step).

Inference: a 515 x 648 x 648 uint8 volume (the Platynereis-ISH size, ~216 M voxels, tiled synthetic nuclei) segmented
block by block (``segment_blockwise``, OME-Zarr output in a temporary folder) by an untrained 3D network (the
network's cost is that of a trained one; the clustering of an untrained one is not meaningful, so the time is
reported split into network and total), 16-fold TTA, sliding window 96 x 256 x 256 inside each block.

On a machine without CUDA it prints that there is no GPU and exits 0.

Usage::

    python benchmarks/gpu_check.py                  # everything (< 8 min on one H100)
    python benchmarks/gpu_check.py --skip-inference # training rows only (~1 min)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch

CASES = {
    "2D paper": dict(spatial_dims=2, batch=2, shape=(256, 256), precision=None, amp=False),
    "2D fast": dict(spatial_dims=2, batch=16, shape=(96, 96), precision="auto", amp=False),
    "3D paper": dict(spatial_dims=3, batch=2, shape=(32, 128, 128), precision=None, amp=True),
    "3D fast": dict(spatial_dims=3, batch=4, shape=(60, 64, 64), precision="float32", amp=False),
}


def _batch(spatial_dims: int, batch: int, shape: tuple[int, ...], device: torch.device):
    """``image (B, 1, *shape)`` and the loss target on ``device``, from the synthetic generators."""
    from monai_embedseg.data.synthetic import synthetic_cells_3d, synthetic_nuclei_2d
    from monai_embedseg.transforms import GenerateCenterImage

    images, labels = [], []
    for i in range(batch):
        if spatial_dims == 2:
            img, lab = synthetic_nuclei_2d(shape=shape, seed=i)
        else:
            img, lab = synthetic_cells_3d(shape=shape, z_anisotropy=1, radius=(10, 16), seed=i)
        images.append(img[None].astype(np.float32))
        labels.append(lab[None].astype(np.int64))
    centers = [GenerateCenterImage()(lab) for lab in labels]
    image = torch.from_numpy(np.stack(images)).to(device)
    target = {"instance": torch.from_numpy(np.stack(labels)).to(device)}
    target["center"] = torch.from_numpy(np.stack(centers)).to(device)
    return image, target


def train_rate(case: dict, steps: int, device: torch.device) -> tuple[float, float]:
    """Crops per second and peak GPU memory (GiB) of ``steps`` training steps of ``case``."""
    from monai_embedseg.losses import SpatialEmbeddingLoss
    from monai_embedseg.networks.nets import BranchedERFNet, FastForward

    torch.manual_seed(0)
    net = BranchedERFNet(case["spatial_dims"], 1).to(device).train()
    runner = net if case["precision"] is None else FastForward(net, precision=case["precision"])
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    loss_fn = SpatialEmbeddingLoss(foreground_weight=10.0)
    image, target = _batch(case["spatial_dims"], case["batch"], case["shape"], device)
    scaler = torch.amp.GradScaler("cuda", enabled=case["amp"])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=case["amp"]):
            pred = runner(image)
        loss = loss_fn(pred.float(), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return case["batch"] * steps / seconds, torch.cuda.max_memory_allocated() / 2**30


def tiled_volume(shape: tuple[int, ...], tile: tuple[int, ...] = (64, 128, 128)) -> np.ndarray:
    """A ``shape`` uint8 volume of touching synthetic nuclei (a few generated tiles repeated)."""
    from monai_embedseg.data.synthetic import synthetic_cells_3d

    tiles = [synthetic_cells_3d(tile, z_anisotropy=1, radius=(8, 14), seed=s)[0] for s in range(4)]
    out = np.empty(shape, np.uint8)
    k = 0
    for z in range(0, shape[0], tile[0]):
        for y in range(0, shape[1], tile[1]):
            for x in range(0, shape[2], tile[2]):
                t = tiles[k % len(tiles)]
                k += 1
                part = out[z : z + tile[0], y : y + tile[1], x : x + tile[2]]
                part[...] = np.clip(t[: part.shape[0], : part.shape[1], : part.shape[2]] * 200, 0, 255)
    return out


def blockwise_tta(shape: tuple[int, ...], memory_limit: str) -> dict:
    """Seconds of a 16-fold TTA block-wise segmentation of a ``shape`` volume, and the peak GPU memory."""
    from monai_embedseg.inferers.blockwise import BlockPredictor, segment_blockwise
    from monai_embedseg.networks.nets import BranchedERFNet

    torch.manual_seed(0)
    volume = tiled_volume(shape)
    net = BranchedERFNet(3, 1).eval()
    predictor = BlockPredictor(network=net, roi_size=(96, 256, 256), tta=True, device="cuda", precision="auto")
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        segment_blockwise(
            volume, f"{tmp}/labels.zarr", predictor, halo=(16, 32, 32), memory_limit=memory_limit, progress=True
        )
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> int:
    """Run the check; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed training steps per case")
    p.add_argument("--shape", type=int, nargs=3, default=[515, 648, 648], help="inference volume (z y x)")
    p.add_argument("--memory-limit", default="24GB", help="host memory per block (segment_blockwise)")
    p.add_argument("--skip-inference", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to measure.")
        return 0
    device = torch.device("cuda")
    start = time.perf_counter()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| case | batch | crop | precision | crops/s | peak GPU memory |")
    print("|---|---|---|---|---|---|")
    for name, case in CASES.items():
        rate, peak = train_rate(case, args.steps, device)
        precision = "AMP fp16" if case["amp"] else case["precision"] or "float32"
        crop = " x ".join(map(str, case["shape"]))
        print(f"| {name} | {case['batch']} | {crop} | {precision} | {rate:.1f} | {peak:.2f} GiB |", flush=True)
    if not args.skip_inference:
        shape = tuple(args.shape)
        r = blockwise_tta(shape, args.memory_limit)
        print(
            f"\n16-fold TTA, block-wise, {' x '.join(map(str, shape))} voxels: {r['seconds']:.1f} s, "
            f"peak GPU memory {r['peak_gib']:.2f} GiB"
        )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
