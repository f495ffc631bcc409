"""Fine-tune the shipped ``nuclei-2d`` on a labelled set for a few minutes, over several seeds, and print a table.

Each seed runs the command the README gives (the ``dsb2018`` bundle's fast profile started from the pretrained
weights, ``--max_minutes``), so the validation split chooses the model and the clustering settings; then the test
split is segmented with and without 8-fold TTA and scored (AP_dsb@0.5, pooled / by image). The shipped model with no
training, and optionally the same minutes from scratch, are scored beside it. Figures are the mean and standard
deviation over the seeds: a single five-minute run on a CPU varies with the machine's speed and the seed.

Usage::

    python benchmarks/bench_finetune.py --data ../shared/data/hela2d --seeds 0 1 2 3 --scratch
    python benchmarks/bench_finetune.py --data DATA --minutes 1 --seeds 0       # smoke check
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundles" / "dsb2018"
CONFIGS = f"['{BUNDLE}/configs/train.json','{BUNDLE}/configs/train_fast.json']"


def _run(argv: list[str], log: Path) -> None:
    """Run a command, its output to ``log``; stop with the log's tail if it fails."""
    with open(log, "w") as f:
        done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        sys.exit(f"{' '.join(argv[:6])} ... failed ({done.returncode}); see {log}")


def _score(model_args: list[str], images: Path, masks: Path, out: Path, tta: bool) -> tuple[float, float]:
    """Segment ``images`` and return AP_dsb@0.5 (pooled, by image) against ``masks``."""
    pred, report = out / f"pred_{'tta' if tta else 'notta'}", out / f"report_{'tta' if tta else 'notta'}"
    cli = [sys.executable, "-m", "monai_embedseg"]
    seg = [*cli, "segment", str(images), *model_args, "--output", str(pred), "--overwrite"]
    _run(seg + ([] if tta else ["--no-tta"]), out / f"{pred.name}.log")
    _run([*cli, "evaluate", str(pred), str(masks), "--output", str(report), "--overwrite"], out / f"{report.name}.log")
    with open(report / "ap_summary.csv") as f:
        row = next(r for r in csv.DictReader(f) if float(r["threshold"]) == 0.5)
    return float(row["AP_dsb_pooled"]), float(row["AP_dsb_by_image"])


def _train(data: Path, out: Path, seed: int, minutes: float, lr: float, pretrained: bool) -> dict:
    """One fine-tuning (or from-scratch) run; its epochs, seconds and the validation split's choices."""
    argv = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", CONFIGS]
    argv += ["--dataset_dir", str(data), "--output_dir", str(out), "--max_minutes", str(minutes)]
    argv += ["--learning_rate", str(lr), "--seed", str(seed)] + (["--pretrained", "nuclei-2d"] if pretrained else [])
    start = time.perf_counter()
    _run(argv, out.parent / f"{out.name}.train.log")
    seconds = time.perf_counter() - start
    text = (out.parent / f"{out.name}.train.log").read_text(errors="replace")
    epochs = re.findall(r"time limit of .* reached at epoch (\d+)", text)
    tuned = json.loads((out / "thresholds.json").read_text())
    return {"seconds": seconds, "epochs": int(epochs[-1]) if epochs else None, **tuned}


def _mean_sd(values: list[float], digits: int = 3) -> str:
    """``mean +- sd`` (the mean alone for one value)."""
    sd = f" +- {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{sd}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hela2d", help="train/ val/ test/")
    p.add_argument("--output", type=Path, default=Path("bench_finetune_runs"), help="run folders and logs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--scratch", action="store_true", help="also train from scratch for the same minutes (first seed)")
    args = p.parse_args()
    images, masks = args.data / "test" / "images", args.data / "test" / "masks"
    if not images.is_dir() or not masks.is_dir():
        sys.exit(f"{args.data}: no test/images and test/masks (the release layout) there.")
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    zero = args.output / "no_training"
    zero.mkdir(exist_ok=True)
    scores = [_score(["--model", "nuclei-2d"], images, masks, zero, tta) for tta in (False, True)]
    rows.append(("nuclei-2d, no training", "-", "-", "-", [scores[0]], [scores[1]]))
    runs = [(f"fine-tuned {args.minutes:g} min", s, True) for s in args.seeds]
    runs += [(f"from scratch {args.minutes:g} min", args.seeds[0], False)] if args.scratch else []
    results: dict[str, list] = {}
    for what, seed, pretrained in runs:
        out = args.output / f"{'ft' if pretrained else 'scratch'}_seed{seed}"
        info = _train(args.data, out, seed, args.minutes, args.learning_rate, pretrained)
        model = ["--bundle", str(BUNDLE), "--checkpoint", str(out / "model.pt")]
        no_tta, tta = (_score(model, images, masks, out, t) for t in (False, True))
        print(
            f"{what}, seed {seed}: {info['epochs']} epochs ({info['seconds']:.0f} s with data and search), "
            f"val AP@0.5 {info['val_ap50_by_image']:.3f}, border "
            f"objects {'dropped' if info.get('exclude_border') else 'kept'}; test by image {no_tta[1]:.4f} / "
            f"{tta[1]:.4f} (no TTA / TTA)",
            flush=True,
        )
        results.setdefault(what, []).append((info, no_tta, tta))
    for what, res in results.items():
        epochs = _mean_sd([float(i["epochs"] or 0) for i, _, _ in res], digits=1)
        val = _mean_sd([i["val_ap50_by_image"] for i, _, _ in res])
        dropped = f"{sum(bool(i.get('exclude_border')) for i, _, _ in res)} of {len(res)}"
        rows.append((f"{what} ({len(res)} seeds)", epochs, val, dropped, [r[1] for r in res], [r[2] for r in res]))
    print(f"\n{args.data.name} test split, AP_dsb@0.5 pooled / by image (mean +- sd over seeds)\n")
    print("| model | epochs | val AP@0.5 by image | border objects dropped | no TTA | 8-fold TTA |")
    print("|---|---|---|---|---|---|")
    for what, epochs, val, dropped, no_tta, tta in rows:
        cells = [f"{_mean_sd([s[0] for s in v])} / {_mean_sd([s[1] for s in v])}" for v in (no_tta, tta)]
        print(f"| {what} | {epochs} | {val} | {dropped} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
