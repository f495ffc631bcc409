"""Benchmark of the exact medoid (:func:`monai_embedseg.medoid.exact_medoid`) against brute force.

Objects are voxelised 3D ellipsoids (semi-axes in the physical ratio 1 : 1.3 : 0.8, off-grid center) with
isotropic spacing and with anisotropic spacing ``(2.0, 0.4, 0.4)``, and a hollow ellipsoidal shell (a hard case:
its medoid lies on the inner surface, where many voxels have nearly equal energies). Everything runs on ONE
core (thread counts are pinned before numpy is imported). Brute force evaluates every energy with
``scipy.spatial.distance.cdist`` in 8 MiB row chunks (a full matrix would need ``8 n^2`` bytes); it is run up to
10k voxels and must give the same index. Peak extra memory is measured with ``tracemalloc`` in a separate run.

Usage::

    python benchmarks/bench_medoid.py            # 1k, 5k, 10k, 50k, 200k voxels
    python benchmarks/bench_medoid.py --quick    # up to 10k voxels
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402

from monai_embedseg.medoid import exact_medoid  # noqa: E402


def ellipsoid_points(n_voxels: int, spacing: tuple[float, float, float], shell: bool = False) -> np.ndarray:
    """Physical coordinates ``(n, 3)`` (raster order) of a voxelised ellipsoid (or shell) of about ``n_voxels``."""
    ratio = np.array([1.0, 1.3, 0.8])
    sp = np.asarray(spacing)
    fill = 1.0 - 0.6**3 if shell else 1.0  # the shell keeps the outer 40 % of the radius
    scale = (n_voxels * np.prod(sp) / (fill * 4.0 / 3.0 * np.pi * np.prod(ratio))) ** (1.0 / 3.0)
    radii = scale * ratio / sp  # semi-axes in voxels
    shape = tuple(int(np.ceil(2 * r)) + 3 for r in radii)
    grids = np.meshgrid(*[np.arange(s) - s / 2 + 0.31 for s in shape], indexing="ij")
    rho = sum((g / r) ** 2 for g, r in zip(grids, radii))
    mask = (rho <= 1) & (rho >= 0.36) if shell else rho <= 1
    return np.argwhere(mask) * sp


def brute_force_medoid(points: np.ndarray, rtol: float = 1e-9) -> int:
    """All energies with cdist in 8 MiB row chunks; lowest index among the ties."""
    n = len(points)
    rows = max(1, 2**20 // n)
    energy = np.concatenate([cdist(points[i : i + rows], points).sum(axis=1) for i in range(0, n, rows)])
    return int(np.flatnonzero(energy <= energy.min() * (1 + rtol))[0])


def measure(fn, points: np.ndarray, repeats: int) -> tuple[int, float, float]:
    """Result, best wall time (s) over ``repeats`` and peak extra traced memory (MiB) of ``fn(points)``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(points)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn(points)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, min(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes up to 10k voxels only")
    parser.add_argument("--brute-max", type=int, default=10_000, help="largest object solved by brute force")
    args = parser.parse_args()
    sizes = [1_000, 5_000, 10_000] if args.quick else [1_000, 5_000, 10_000, 50_000, 200_000]
    cases = [
        ("ellipsoid", (1.0, 1.0, 1.0), False),
        ("ellipsoid", (2.0, 0.4, 0.4), False),
        ("shell", (1.0, 1.0, 1.0), True),
    ]
    header = (
        f"{'shape':<10} {'spacing':<15} {'voxels':>7} | {'ours s':>8} {'ours MiB':>8} | "
        f"{'brute s':>8} {'brute MiB':>9} {'speed-up':>8} | same"
    )
    print("exact medoid, 1 CPU thread (times: best of 3; memory: tracemalloc peak)")
    print(header)
    print("-" * len(header))
    for name, spacing, shell in cases:
        for size in sizes:
            pts = ellipsoid_points(size, spacing, shell)
            ours, t_ours, m_ours = measure(exact_medoid, pts, repeats=3)
            row = f"{name:<10} {str(spacing):<15} {len(pts):>7} | {t_ours:>8.4f} {m_ours:>8.1f} | "
            if len(pts) <= args.brute_max * 1.05:
                ref, t_ref, m_ref = measure(brute_force_medoid, pts, repeats=1)
                row += f"{t_ref:>8.3f} {m_ref:>9.1f} {t_ref / t_ours:>7.0f}x | {'yes' if ref == ours else 'NO'}"
            else:
                row += f"{'-':>8} {'-':>9} {'-':>8} | -"
            print(row, flush=True)


if __name__ == "__main__":
    main()
