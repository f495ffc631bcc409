"""Block-wise segmentation of large volumes (Zarr in, Zarr out): time, voxels/s, peak RSS, agreement with whole-volume.

Cases (each runs in a fresh subprocess, so its peak RSS is its own; the RSS is that of the whole process tree,
sampled every 0.2 s with psutil, and at least the process's own ``ru_maxrss``):

* ``equality``: a generated anisotropic volume (``synthetic_cells_3d``, spacing 3 x 1 x 1, objects crossing block
  borders) segmented by the trained ``synthetic_3d`` network (``--weights``; see the report for how it was trained),
  whole (the ``segment`` pipeline: percentile normalisation, the network over the whole volume in one pass, clustering
  with the tuned thresholds; and, for comparison, with the bundle's 32 x 128 x 128 sliding window) and block-wise with
  3 block layouts (+ one with 16-fold TTA, + one on a 2-process ``LocalCluster``); AP@0.9 of every result against
  the one-pass whole-volume labels.
* ``memory``: the Platynereis-ISH size 515 x 648 x 648 (uint8, tiled from ``synthetic_cells_3d`` blocks as in
  ``bench_inference_3d.py``) with an untrained 3D ``BranchedERFNet`` (fixed seed), block-wise with
  ``--memory-limit``; the whole-volume baseline (sliding window 112 x 200 x 200, as in the README) is run on the first
  ``--baseline-z`` slices only when the full one would not fit this machine (it peaked at 20.1 GiB on 24 GiB), and the
  block-wise run is repeated on that same sub-volume for a like-for-like time ratio.
* ``scale``: a generated 512 x 1024 x 1024 volume (0.5 G voxels, written to Zarr tile by tile, never whole in memory),
  block-wise with ``--memory-limit``.

Usage::

    nice -n 10 python benchmarks/bench_blockwise.py --weights MODEL_DIR/model.pt --work /tmp/bench_blockwise
    python benchmarks/bench_blockwise.py --quick      # tiny sizes: checks the script in a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

PLATY_SHAPE = (515, 648, 648)
PLATY_SPACING = (0.4501, 0.4499, 0.4499)
SCALE_SHAPE = (512, 1024, 1024)
_TILE = (64, 128, 128)
_N_TILES = 4


# --------------------------------------------------------------------------------------------------------- volumes
def _tiles(seed: int = 0):
    """``_N_TILES`` different ``synthetic_cells_3d`` blocks (uint8 image, int32 labels) to tile large volumes with."""
    from monai_embedseg.data.synthetic import synthetic_cells_3d

    out = []
    for k in range(_N_TILES):
        img, lab = synthetic_cells_3d(
            _TILE, z_anisotropy=1, n_objects=400, radius=(5, 9), seed=seed + k, blur=(1.5, 1.0, 1.0)
        )
        out.append((np.clip(img * 180.0, 0, 255).astype(np.uint8), lab.astype(np.int32)))
    return out


def write_tiled_volume(path: str, shape, spacing) -> None:
    """A uint8 OME-Zarr volume of ``shape`` tiled with :func:`_tiles`, written tile by tile (bounded memory)."""
    from monai_embedseg.data.zarr_io import create_ome_zarr

    if os.path.exists(os.path.join(path, "zarr.json")):
        return
    tiles = _tiles()
    arr = create_ome_zarr(path + ".tmp", shape, np.uint8, spacing, chunks=_TILE, overwrite=True)
    grid = [range(0, s, t) for s, t in zip(shape, _TILE)]
    for n, (z, y, x) in enumerate((z, y, x) for z in grid[0] for y in grid[1] for x in grid[2]):
        img = tiles[n % _N_TILES][0]
        size = tuple(min(t, s - o) for t, s, o in zip(_TILE, shape, (z, y, x)))
        arr[z : z + size[0], y : y + size[1], x : x + size[2]] = img[: size[0], : size[1], : size[2]]
    os.replace(path + ".tmp", path)


def tiled_properties() -> dict:
    from monai_embedseg.data.properties import compute_dataset_properties

    return compute_dataset_properties([lab for _, lab in _tiles()])


def write_cells_volume(path: str, shape, seed: int = 5) -> None:
    """The equality volume: ``synthetic_cells_3d`` (spacing 3 x 1 x 1) as float32 OME-Zarr."""
    from monai_embedseg.data.synthetic import synthetic_cells_3d
    from monai_embedseg.data.zarr_io import write_ome_zarr

    if os.path.exists(os.path.join(path, "zarr.json")):
        return
    n = int(shape[0] * shape[1] * shape[2] / (32 * 128 * 128) * 24)
    img, _ = synthetic_cells_3d(shape, z_anisotropy=3, n_objects=(n, n + 10), seed=seed)
    write_ome_zarr(path + ".tmp", img, spacing=(3.0, 1.0, 1.0), chunks=(16, 128, 128), overwrite=True)
    os.replace(path + ".tmp", path)


# ------------------------------------------------------------------------------------------------------------ cases
class _PeakRSS:
    """Peak RSS of this process and all its children, sampled in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.proc, self.peak, self.interval = psutil.Process(), 0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = max(self.peak, own)


def _network(cfg: dict):
    import torch

    from monai_embedseg.networks.nets import BranchedERFNet

    torch.manual_seed(cfg["seed"])
    net = BranchedERFNet(3, 1)
    if cfg["weights"]:
        from monai_embedseg.utils import load_weights

        load_weights(net, cfg["weights"], map_location="cpu")
    return net.eval()


def _thresholds(cfg: dict) -> dict:
    if cfg["weights"]:
        from monai_embedseg.engines import read_thresholds

        return read_thresholds(os.path.dirname(cfg["weights"]), 0)
    return {"seed_thresh": 0.9, "fg_thresh": 0.5, "min_object_size": 0}


def run_whole(cfg: dict) -> dict:
    """The whole-volume ``segment`` pipeline on the store; labels written to ``cfg['save']``."""
    import torch
    from monai.transforms import ScaleIntensityRangePercentiles

    from monai_embedseg.data.zarr_io import open_volume, write_ome_zarr
    from monai_embedseg.inferers import EmbedSegInferer
    from monai_embedseg.networks.nets import FastForward
    from monai_embedseg.transforms import cluster_embeddings

    torch.set_num_threads(cfg["threads"])
    vol = open_volume(cfg["input"])
    spacing = list(vol.spacing)
    th = _thresholds(cfg)
    with _PeakRSS() as rss:
        t0 = time.perf_counter()
        image = vol.read((slice(None),) * 3).astype(np.float32)
        norm = ScaleIntensityRangePercentiles(1.0, 99.8, 0.0, 1.0, clip=False, channel_wise=True, dtype=np.float32)
        x = torch.as_tensor(np.asarray(norm(torch.from_numpy(image))))[None]
        del image
        inferer = EmbedSegInferer(
            roi_size=cfg["roi"],
            sw_batch_size=cfg["sw_batch_size"],
            overlap=0.25,
            tta=cfg["tta"],
            spacing=spacing,
            tta_batch_size=1,
        )
        runner = FastForward(_network(cfg), precision="float32").eval()
        with torch.inference_mode():
            pred = inferer(x, runner)[0]
        del x
        labels, _ = cluster_embeddings(
            pred,
            spacing,
            seed_thresh=th["seed_thresh"],
            fg_thresh=th["fg_thresh"],
            min_object_size=th["min_object_size"],
        )
        del pred
        lab = labels[0].numpy().astype(np.uint32)
        seconds = time.perf_counter() - t0
        if cfg.get("save"):
            write_ome_zarr(cfg["save"], lab, spacing=spacing, overwrite=True)
    out = {
        "seconds": seconds,
        "peak_rss": rss.peak,
        "objects": int(lab.max()),
        "shape": list(lab.shape),
        "block": "whole" if cfg["roi"] is None else "sw " + "x".join(map(str, cfg["roi"])),
        "blocks": 1,
        "halo": "-",
        "workers": 1,
    }
    if cfg.get("ref"):
        import zarr

        from monai_embedseg.metrics import ap_dsb

        out["ap90"] = float(ap_dsb([zarr.open_group(cfg["ref"], mode="r")["0"][...]], [lab], 0.9)[0])
    return out


def run_block(cfg: dict) -> dict:
    """``segment_blockwise`` on the store; AP@0.9 against the whole-volume labels ``cfg['ref']``."""
    import torch
    import zarr

    from monai_embedseg.cluster_settings import ClusteringSettings
    from monai_embedseg.data.zarr_io import open_volume
    from monai_embedseg.inferers import (
        BlockPredictor,
        halo_from_properties,
        segment_blockwise,
    )

    torch.set_num_threads(cfg["threads"])
    src = vol = open_volume(cfg["input"])
    th = _thresholds(cfg)
    props = cfg["properties"]
    halo = halo_from_properties(props)
    net = _network(cfg)
    predictor = BlockPredictor(
        net, tta=cfg["tta"], spacing=list(vol.spacing), precision="float32", roi_size=cfg.get("block_roi")
    )
    client = cluster = None
    if cfg["workers"] > 1 and cfg.get("distributed"):
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=cfg["workers"], processes=True, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
    with _PeakRSS() as rss:
        t0 = time.perf_counter()
        summary = segment_blockwise(
            src,
            cfg["save"],
            predictor,
            halo,
            clustering=ClusteringSettings.from_mapping(th, spacing=list(vol.spacing)),
            block_size=cfg.get("block"),
            memory_limit=cfg.get("memory_limit"),
            scheduler=client,
            workers=None if client else cfg["workers"],
            overwrite=True,
            progress=False,
        )
        seconds = time.perf_counter() - t0
    if client is not None:
        client.close()
        cluster.close()
    out = {
        "seconds": seconds,
        "peak_rss": rss.peak,
        "objects": summary["objects"],
        "shape": summary["shape"],
        "block": "x".join(map(str, summary["block_size"])),
        "blocks": summary["blocks"],
        "halo": "x".join(map(str, summary["halo"])),
        "workers": cfg["workers"],
        "conflicts": summary["conflict_voxels"],
        "touching": summary["touching_border"],
    }
    if cfg.get("ref"):
        from monai_embedseg.metrics import ap_dsb

        ref = zarr.open_group(cfg["ref"], mode="r")["0"][...]
        res = zarr.open_group(cfg["save"], mode="r")["0"][...]
        out["ap90"] = float(ap_dsb([ref], [res], 0.9)[0])
    return out


# ------------------------------------------------------------------------------------------------------------ table
_COLS = [
    ("case", "case", "{}", 24),
    ("network", "network", "{}", 10),
    ("voxels", "voxels", "{}", 11),
    ("shape", "shape_s", "{}", 13),
    ("block size", "block", "{}", 12),
    ("halo", "halo", "{}", 9),
    ("blocks", "blocks", "{}", 6),
    ("workers", "workers", "{}", 7),
    ("TTA", "tta", "{}", 5),
    ("wall [s]", "seconds", "{:.0f}", 8),
    ("voxels/s", "vps", "{:.3g}", 9),
    ("peak RSS [GiB]", "rss", "{:.2f}", 14),
    ("objects", "objects", "{}", 7),
    ("AP@0.9 vs whole", "ap90", "{:.4f}", 15),
]


def _row(case: str, cfg: dict, res: dict) -> dict:
    vox = math.prod(res["shape"])
    return {
        **res,
        "case": case,
        "network": "trained" if cfg["weights"] else "untrained",
        "voxels": vox,
        "shape_s": "x".join(map(str, res["shape"])),
        "tta": cfg["tta"],
        "vps": vox / res["seconds"],
        "rss": res["peak_rss"] / 2**30,
        "ap90": res.get("ap90"),
    }


def _print_header() -> None:
    print("| " + " | ".join(h.rjust(w) for h, _, _, w in _COLS) + " |")
    print("|" + "|".join("-" * (w + 2) for *_, w in _COLS) + "|", flush=True)


def _print_row(row: dict) -> None:
    cells = [("-" if row.get(k) is None else f.format(row[k])).rjust(w) for _, k, f, w in _COLS]
    print("| " + " | ".join(cells) + " |", flush=True)


def _run(case: str, cfg: dict, rows: list) -> dict | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--single", json.dumps(cfg)], stdout=subprocess.PIPE, text=True, check=False
    )
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not result:
        print(f"case {case} failed (rc {proc.returncode}), see stderr", flush=True)
        return None
    row = _row(case, cfg, json.loads(result[-1][7:]))
    if not rows:
        _print_header()
    rows.append(row)
    _print_row(row)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/bench_blockwise", help="folder for the generated volumes and outputs")
    parser.add_argument("--weights", default=None, help="trained synthetic_3d model.pt (equality cases)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="6GB")
    parser.add_argument("--cases", nargs="+", default=["equality", "memory", "scale"])
    parser.add_argument(
        "--baseline-z",
        type=int,
        default=258,
        help="slices of the 515-slice volume for the whole-volume baseline (0: all)",
    )
    parser.add_argument("--equality-shape", type=int, nargs=3, default=[48, 256, 256])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single is not None:
        cfg = json.loads(args.single)
        res = run_whole(cfg) if cfg["kind"] == "whole" else run_block(cfg)
        print("RESULT " + json.dumps(res), flush=True)
        return
    os.makedirs(args.work, exist_ok=True)
    w = args.work
    platy, scale = PLATY_SHAPE, SCALE_SHAPE
    eq_shape = args.equality_shape
    baseline_z = args.baseline_z
    if args.quick:
        platy, scale, eq_shape, baseline_z = (70, 160, 160), (96, 256, 256), [32, 128, 128], 40
    base = {"threads": args.threads, "seed": 0, "tta": False, "weights": None, "workers": 1}
    print(f"{args.threads} torch threads; {os.cpu_count()} CPUs; memory limit {args.memory_limit}", flush=True)
    rows: list = []
    if "equality" in args.cases:
        if not args.weights:
            print("equality cases need --weights (a trained synthetic_3d model.pt); skipped", flush=True)
        else:
            src = os.path.join(w, f"cells_{'x'.join(map(str, eq_shape))}.zarr")
            write_cells_volume(src, eq_shape)
            from monai_embedseg.data.properties import load_properties

            props = load_properties(os.path.join(os.path.dirname(args.weights), "dataset_properties.json"))
            eq = {**base, "weights": os.path.abspath(args.weights), "input": src, "properties": props}
            layouts = [[48, 128, 128], [24, 96, 96], [48, 64, 200]] if not args.quick else [[32, 64, 64]]
            for tta in (False, True):
                ref = os.path.join(w, f"eq_whole_tta{int(tta)}.zarr")
                _run(
                    "equality: whole",
                    {**eq, "kind": "whole", "roi": None, "sw_batch_size": 1, "tta": tta, "save": ref},
                    rows,
                )
                _run(
                    "equality: whole",
                    {**eq, "kind": "whole", "roi": [32, 128, 128], "sw_batch_size": 4, "tta": tta, "ref": ref},
                    rows,
                )
                for blk in layouts if not tta else layouts[:1]:
                    _run(
                        "equality: blocks",
                        {
                            **eq,
                            "kind": "block",
                            "block": blk,
                            "tta": tta,
                            "ref": ref,
                            "save": os.path.join(w, "eq_blocks.zarr"),
                        },
                        rows,
                    )
            _run(
                "equality: LocalCluster",
                {
                    **eq,
                    "kind": "block",
                    "block": layouts[-1],
                    "workers": 2,
                    "distributed": True,
                    "threads": 1,
                    "save": os.path.join(w, "eq_blocks.zarr"),
                    "ref": os.path.join(w, "eq_whole_tta0.zarr"),
                },
                rows,
            )
    if "memory" in args.cases or "scale" in args.cases:
        props = tiled_properties()
    if "memory" in args.cases:
        src = os.path.join(w, f"platy_{'x'.join(map(str, platy))}.zarr")
        write_tiled_volume(src, platy, PLATY_SPACING)
        mem = {**base, "input": src, "properties": props, "memory_limit": args.memory_limit}
        z = baseline_z if baseline_z and baseline_z < platy[0] else None
        sub = src
        if z:  # the same tiling, first z slices: the baseline's volume
            sub = os.path.join(w, f"platy_{z}x{platy[1]}x{platy[2]}.zarr")
            write_tiled_volume(sub, (z, *platy[1:]), PLATY_SPACING)
        _run("memory: whole", {**mem, "input": sub, "kind": "whole", "roi": [112, 200, 200], "sw_batch_size": 1}, rows)
        if z:  # like for like with the baseline (AP not scored: untrained network, different windowing)
            _run(
                "memory: blocks",
                {**mem, "input": sub, "kind": "block", "save": os.path.join(w, "platy_blocks_sub.zarr")},
                rows,
            )
        _run("memory: blocks", {**mem, "kind": "block", "save": os.path.join(w, "platy_blocks.zarr")}, rows)
    if "scale" in args.cases:
        src = os.path.join(w, f"scale_{'x'.join(map(str, scale))}.zarr")
        t0 = time.perf_counter()
        write_tiled_volume(src, scale, PLATY_SPACING)
        print(f"(scale volume {src} ready after {time.perf_counter() - t0:.0f} s)", flush=True)
        _run(
            "scale: blocks",
            {
                **base,
                "kind": "block",
                "input": src,
                "properties": props,
                "memory_limit": args.memory_limit,
                "save": os.path.join(w, "scale_blocks.zarr"),
            },
            rows,
        )
    print(
        "AP@0.9 vs whole: labels scored against the whole-volume labels of the same network in one pass "
        "(block 'whole' row above it; 1.0 = the same objects); 'sw R' = whole volume with MONAI's sliding window "
        "of size R.",
        flush=True,
    )


if __name__ == "__main__":
    main()
