"""Plot validation AP against training wall-clock time from the ``time_to_accuracy.csv`` of training runs.

Each run's ``TimeToAccuracyHandler`` writes ``<output_dir>/time_to_accuracy.csv`` (seconds, epoch, iteration and
the validation metrics). This draws one line per run (``--runs LABEL=DIR ...``) and writes a small PNG.

Usage::

    python benchmarks/plot_time_to_accuracy.py --runs "fast profile=OUT" --metric val_ap50 \\
        --title "DSB 2018, 2-core CPU" --output bundles/dsb2018/docs/time_to_accuracy.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(folder: str, metric: str) -> tuple[list[float], list[float]]:
    """Minutes and metric values from ``folder/time_to_accuracy.csv``."""
    with open(Path(folder) / "time_to_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    if rows and metric not in rows[0]:
        raise KeyError(f"{folder}/time_to_accuracy.csv has no column {metric!r} (columns: {list(rows[0])}).")
    return [float(r["seconds"]) / 60 for r in rows], [float(r[metric]) for r in rows]


def main() -> None:
    """Parse arguments, draw, save."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="LABEL=DIR pairs")
    p.add_argument("--metric", default="val_ap50")
    p.add_argument("--title", default="")
    p.add_argument("--hline", type=float, action="append", default=[], help="reference AP levels to draw")
    p.add_argument("--output", required=True)
    args = p.parse_args()
    fig, ax = plt.subplots(figsize=(4.5, 3.0), dpi=100)
    for spec in args.runs:
        label, _, folder = spec.partition("=")
        minutes, values = read_curve(folder, args.metric)
        ax.plot(minutes, values, marker="o", markersize=3, label=label)
    for level in args.hline:
        ax.axhline(level, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training wall-clock time (min)")
    ax.set_ylabel(f"{args.metric} (validation split)")
    ax.set_ylim(0, 1)
    ax.set_title(args.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
