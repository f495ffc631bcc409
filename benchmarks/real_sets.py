"""Train and evaluate bundles on real labelled sets as shipped, and print a results table (shared by
``bench_real_2d.py`` and ``bench_real_3d.py``, which name the sets and the bundle each one trains with).

Each bundle runs through MONAI's ``ConfigWorkflow`` exactly as ``python -m monai.bundle run training`` and
``run evaluating`` would, with only the schedule overridden from the command line (epochs, crops per epoch,
gradient accumulation, learning rate). Data: any folder holding ``<set>/train`` and ``<set>/test`` in the EmbedSeg
release layout (``--data-root``; default ``../shared/data`` beside the repository).

Per set it reports the wall time of training and of evaluation (test split, 8-fold TTA unless ``--no-tta``), the
peak GPU memory (``torch.cuda.max_memory_allocated``, training and evaluation; ``-`` on CPU), and AP_dsb at IoU
0.5 and 0.75 pooled over the split and as the mean over images, beside the paper's AP@0.5. Outputs (checkpoints,
TensorBoard events, ``ap_summary.csv``) stay in ``--output/<set>``; the table is also written as ``results.json``.

With ``--profile fast`` the bundle's ``configs/train_fast.json`` is merged over ``train.json`` (the CPU
time-to-accuracy schedule, as ``--config_file "['configs/train.json','configs/train_fast.json']"`` does). With
``--minutes 5 10 20 40`` the best-so-far model is kept when training passes each mark; after training each of
those models gets its own threshold search on the validation split and its own test evaluation, so the table says
what a user stopping at that time would get. The mean seconds per step are split into data / forward / loss /
backward+step (``StepTimeHandler``).

Usage: see ``bench_real_2d.py`` and ``bench_real_3d.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigWorkflow

from monai_embedseg.bundle.paths import bundle_workflow
from monai_embedseg.handlers import StepTimeHandler

REPO = Path(__file__).resolve().parents[1]


def _workflow(bundle: str, kind: str, files: list[str], overrides: dict) -> ConfigWorkflow:
    wf = bundle_workflow(bundle, kind, files, **overrides)
    wf.initialize()
    return wf


def _peak_gpu_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _reset_gpu_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _limited_dataset(data_dir: Path, n_test: int | None) -> Path:
    """``data_dir``, or a temporary copy of it with only the first ``n_test`` test images (for smoke checks)."""
    if not n_test:
        return data_dir
    tmp = Path(tempfile.mkdtemp(prefix=f"{data_dir.name}_"))
    shutil.copytree(data_dir / "train", tmp / "train")
    for sub in sorted((data_dir / "test").iterdir()):
        if sub.is_dir():
            (tmp / "test" / sub.name).mkdir(parents=True)
            for f in sorted(sub.iterdir())[:n_test]:
                shutil.copy2(f, tmp / "test" / sub.name / f.name)
    return tmp


def run_set(name: str, args: argparse.Namespace) -> dict:
    """Train then evaluate the bundle of set ``name``; returns one table row (times in s, memory in GiB, AP)."""
    data_dir = Path(args.data_root) / name
    if not (data_dir / "train").is_dir() or not (data_dir / "test").is_dir():
        raise FileNotFoundError(f"{data_dir}: expected train/ and test/ folders in the EmbedSeg release layout.")
    limited = _limited_dataset(data_dir, args.max_test_images)
    try:
        return _train_and_evaluate(name, args.sets_table[name][0], limited, args)
    finally:
        if limited != data_dir:
            shutil.rmtree(limited, ignore_errors=True)


def _train_files(args: argparse.Namespace) -> list[str]:
    return ["train.json"] if args.profile == "paper" else ["train.json", "train_fast.json"]


def _evaluate(bundle: str, out: Path, ckpt: Path, common: dict, args: argparse.Namespace) -> dict:
    """Test-split AP of ``ckpt`` (thresholds from ``out/thresholds.json`` when present), as the evaluate run does."""
    evaluate = _workflow(
        bundle,
        "eval",
        [*_train_files(args), "evaluate.json"],
        {**common, "output_dir": str(out), "validate#tta": args.tta, "ckpt_path": str(ckpt)},
    )
    evaluate.run()
    evaluate.finalize()
    with open(out / "ap_summary.csv") as f:
        ap = {float(r["threshold"]): r for r in csv.DictReader(f)}
    return {
        "ap50_pooled": float(ap[0.5]["AP_dsb_pooled"]),
        "ap50_by_image": float(ap[0.5]["AP_dsb_by_image"]),
        "ap75_pooled": float(ap[0.75]["AP_dsb_pooled"]),
        "ap75_by_image": float(ap[0.75]["AP_dsb_by_image"]),
    }


def _at_minutes(bundle: str, out: Path, common: dict, args: argparse.Namespace) -> dict:
    """For each ``model_<m>min.pt`` snapshot: its own threshold search on val, then test AP."""
    rows = {}
    for mark in args.minutes or []:
        snap = out / f"model_{mark:g}min.pt"
        if not snap.is_file():
            continue
        sub = out / f"at_{mark:g}min"
        sub.mkdir(exist_ok=True)
        shutil.copyfile(snap, sub / "model.pt")
        search = _workflow(
            bundle,
            "train",
            _train_files(args),
            {**common, "output_dir": str(sub), "threshold_search#compare_final": False},
        )
        search.parser.get_parsed_content("threshold_search").run()
        rows[mark] = _evaluate(bundle, sub, sub / "model.pt", common, args)
    return rows


def _train_and_evaluate(name: str, bundle: str, data_dir: Path, args: argparse.Namespace) -> dict:
    out = Path(args.output) / name
    # config overrides for every workflow of the run (``args.overrides``, set by bench_cv.py; none from main below)
    common = {**getattr(args, "overrides", {}), "dataset_dir": str(data_dir), "output_dir": str(out)}
    schedule = {} if args.epochs is None else {"epochs": args.epochs}
    for key in ("samples_per_epoch", "accumulation_steps", "learning_rate", "val_interval"):
        if getattr(args, key) is not None:
            schedule[key] = getattr(args, key)
    if args.minutes:
        schedule["snapshot_minutes"] = list(args.minutes)

    _reset_gpu_peak()
    t0 = time.perf_counter()
    train = _workflow(bundle, "train", _train_files(args), {**common, **schedule})
    train.run()
    step = next(h for h in train.parser.get_parsed_content("train#handlers") if isinstance(h, StepTimeHandler))
    train.finalize()
    train_s, train_mem = time.perf_counter() - t0, _peak_gpu_gib()

    _reset_gpu_peak()
    t0 = time.perf_counter()
    ckpt = out / "model.pt"
    if not ckpt.exists():  # no validation ran (val_interval > epochs): evaluate the last checkpoint
        ckpt = max(out.glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    final = _evaluate(bundle, out, ckpt, common, args)
    eval_s, eval_mem = time.perf_counter() - t0, _peak_gpu_gib()
    return {
        "set": name,
        "bundle": bundle,
        "train_s": train_s,
        "eval_s": eval_s,
        "peak_gpu_gib": None if train_mem is None else max(train_mem, eval_mem),
        **final,
        "paper_ap50": args.sets_table[name][1],
        "step_s": step.mean_step(),
        "at_minutes": _at_minutes(bundle, out, common, args),
    }


def main(description: str, sets: dict[str, tuple[str, float | None]], output: str, tta_folds: int) -> None:
    """Parse arguments, run each set, print the table.

    Args:
        description: the calling script's summary line.
        sets: set name -> (bundle trained on it, the paper's test AP@0.5 or ``None``).
        output: default output folder name under ``outputs/``.
        tta_folds: 8 (2D) or 16 (3D), for the table's caption.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--sets", nargs="+", default=list(sets), choices=list(sets))
    p.add_argument("--output", default=str(REPO / "outputs" / output))
    p.add_argument(
        "--profile",
        default="paper",
        choices=["paper", "fast"],
        help="paper: train.json as shipped; fast: train.json + train_fast.json",
    )
    p.add_argument("--minutes", type=float, nargs="+", help="also report test AP of the model at these minutes")
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--samples-per-epoch", dest="samples_per_epoch", type=int)
    p.add_argument("--accumulation-steps", dest="accumulation_steps", type=int)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--val-interval", dest="val_interval", type=int)
    p.add_argument("--no-tta", dest="tta", action="store_false")
    p.add_argument("--max-test-images", dest="max_test_images", type=int, help="evaluate on the first N only")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a loaded 2-core machine)")
    args = p.parse_args()
    args.sets_table = sets
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    rows = [run_set(name, args) for name in args.sets]
    os.makedirs(args.output, exist_ok=True)
    with open(Path(args.output) / "results.json", "w") as f:
        settings = {k: v for k, v in vars(args).items() if k != "sets_table"}
        json.dump({"device": device, "args": settings, "rows": rows}, f, indent=2)

    print(
        f"\ndevice: {device}; profile {args.profile}, epochs {args.epochs or 'profile'}, "
        f"crops/epoch {args.samples_per_epoch or 'profile'}, TTA {f'{tta_folds}-fold' if args.tta else 'off'}"
    )
    print(
        "| set | bundle | train | eval | peak GPU | AP@0.5 pooled | AP@0.5 by image | AP@0.75 pooled "
        "| AP@0.75 by image | paper AP@0.5 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mem = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f} GiB"
        paper = "-" if r["paper_ap50"] is None else f"{r['paper_ap50']:.3f}"
        print(
            f"| {r['set']} | {r['bundle']} | {r['train_s'] / 60:.1f} min | {r['eval_s'] / 60:.1f} min | {mem} | "
            f"{r['ap50_pooled']:.3f} | {r['ap50_by_image']:.3f} | {r['ap75_pooled']:.3f} | "
            f"{r['ap75_by_image']:.3f} | {paper} |"
        )
    print("\ns/step (mean over training): | set | total | data | forward | loss | backward+step | data share |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["step_s"]
        print(
            f"| {r['set']} | {t['total']:.3f} | {t['data']:.3f} | {t['forward']:.3f} | {t['loss']:.3f} | "
            f"{t['backward_step']:.3f} | {100 * t['data'] / max(t['total'], 1e-12):.1f} % |"
        )
    if args.minutes:
        print(
            "\ntest AP@0.5 (pooled / by image) of the best-by-val model after m minutes of training, thresholds "
            "tuned on val for that model:"
        )
        print("| set | " + " | ".join(f"{m:g} min" for m in args.minutes) + " |")
        print("|---|" + "---|" * len(args.minutes))
        for r in rows:
            cells = [r["at_minutes"].get(m) for m in args.minutes]
            print(
                f"| {r['set']} | "
                + " | ".join("-" if c is None else f"{c['ap50_pooled']:.3f} / {c['ap50_by_image']:.3f}" for c in cells)
                + " |"
            )
