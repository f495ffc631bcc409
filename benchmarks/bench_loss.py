"""Forward + backward time of ``SpatialEmbeddingLoss`` (vectorised) against the per-object loop reference.

Usage::

    python benchmarks/bench_loss.py [--repeats 3] [--device cpu|cuda|all] [--skip-loop]

Cases: 2D batch of 4 x 256^2 crops with 48 random blobs each, 3D batch of 2 x 32x64x64 with 24 blobs each. Each is
timed with an untrained-like prediction (raw ~ 0.1 N(0, 1): sigma ~ 4 px, so the Gaussian scores of an object are
non-zero over a large part of the crop) and a later-training-like one (sigma ~ 1 px). The loop reference is
``tests/test_losses.py::reference_loss`` (one Lovasz hinge with a full sort per object).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_losses import make_blobs, reference_loss  # noqa: E402

from monai_embedseg.losses import SpatialEmbeddingLoss  # noqa: E402

CASES = [
    ("2D 4x256^2, 48 obj", 4, (256, 256), 48, (4.0, 14.0)),
    ("3D 2x32x64x64, 24 obj", 2, (32, 64, 64), 24, (3.0, 8.0)),
]


def _time_pair(fns, repeats: int, device: torch.device) -> list[float]:
    """Best wall time of each function; runs are interleaved so that both see the same machine load."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--skip-loop", action="store_true", help="time only the vectorised loss")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: torch's default; 1 is steadier on a busy machine)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"best of {args.repeats} interleaved runs (+1 warm-up)"
    )
    header = f"{'case':24s} {'prediction':12s} {'device':6s} {'loop ms':>10s} {'vector ms':>10s} {'speed-up':>9s}"
    print(header)
    print("-" * len(header))
    for name, batch, shape, n_obj, radius in CASES:
        instance, center = make_blobs(batch, shape, n_obj, seed=0, radius=radius)
        d = len(shape)
        g = torch.Generator().manual_seed(0)
        for state, sigma_raw in (("untrained", 0.0), ("sigma~1px", math.log(0.25))):
            raw = 0.1 * torch.randn(batch, 2 * d + 1, *shape, generator=g)
            raw[:, d : 2 * d] += sigma_raw
            for device in devices:
                pred = raw.to(device).requires_grad_(True)
                inst, cen = instance.to(device), center.to(device)
                loss_fn = SpatialEmbeddingLoss(foreground_weight=10.0)

                def vectorised(pred=pred, loss_fn=loss_fn, inst=inst, cen=cen):
                    pred.grad = None
                    loss_fn(pred, {"instance": inst, "center": cen}).backward()

                def loop(pred=pred, inst=inst, cen=cen):
                    pred.grad = None
                    reference_loss(pred, inst, cen, foreground_weight=10.0)[0].backward()

                if args.skip_loop:
                    t_vec, t_loop = _time_pair([vectorised], args.repeats, device)[0], float("nan")
                else:
                    t_vec, t_loop = _time_pair([vectorised, loop], args.repeats, device)
                print(
                    f"{name:24s} {state:12s} {device.type:6s} {1e3 * t_loop:10.1f} {1e3 * t_vec:10.1f} "
                    f"{t_loop / t_vec:8.1f}x"
                )


if __name__ == "__main__":
    main()
