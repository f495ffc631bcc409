"""Cross-validate a bundle on a small labelled set: k folds, every item tested once, the spread over the folds.

One fixed test split of a few images cannot tell a better training setting from luck. Here the items of ``--data``
(every split present, or the tiles of its volumes with ``--tiles GY GX``) are cut into k groups; fold i tests group
i, validates on group i+1 (the threshold search and the best-model choice) and trains on the rest, so each item is
tested once. Each fold is written as a release-layout folder (symbolic links, or TIFF tiles keeping the voxel
spacing) under ``--output/folds``, and the bundle's training and test evaluation run on it exactly as in
``real_sets.py`` (MONAI ``ConfigWorkflow``, ``--profile fast`` by default), with ``--max-minutes`` and
``--override KEY=JSON`` passed as config overrides.

``--variants NAME:KEY=JSON,KEY=JSON ...`` runs several settings per fold, interleaved (fold 0 A, fold 0 B, fold 1
A, ...), so that a before / after comparison shares the machine's state. Per fold and variant it prints the test
items, AP_dsb@0.5 and @0.75 by image, the training minutes (threshold search included) and the clustering settings
the validation group chose (``thresholds.json``: a setting that fits one validation tile shows up as a fold whose
choice differs from the others); then per variant the mean +- sd over folds, the worst fold, and the paired
difference to the first variant. ``results.json`` in ``--output`` is rewritten (atomically) after every run.

Usage::

    python benchmarks/bench_cv.py --data ../shared/data/hela2d --bundle dsb2018 --folds 5 --max-minutes 5
    python benchmarks/bench_cv.py --data ../shared/data/cho3d --items t014 --tiles 2 2 --folds 4 \\
        --bundle synthetic_3d --max-minutes 10 --variants base: lr1e-3:learning_rate=0.001
    python benchmarks/bench_cv.py --data ../shared/data/cho3d --items t014 --tiles 2 2 --folds 4 \\
        --bundle synthetic_3d --dry-run --output /tmp/cv_dry              # write the folds, print the plan only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

from monai_embedseg.constants import THRESHOLDS_FILE
from monai_embedseg.data.datalist import file_stem
from monai_embedseg.data.folds import GROUPINGS, collect_items, make_folds, tile_dataset, write_fold
from monai_embedseg.data.io import TIFF_SUFFIXES, read_tiff_spacing

REPO = Path(__file__).resolve().parents[1]
KEY = r"[A-Za-z_][\w#]*"


# --------------------------------------------------------------------------------------------------------- arguments
def _override(text: str) -> tuple[str, object]:
    """``KEY=JSON`` -> ``(key, value)``."""
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(KEY, key):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KEY=JSON, e.g. learning_rate=0.001 or 'validate#tta=false'"
        )
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the value is not JSON (strings need double quotes: {key}='\"text\"')."
        ) from None


def _variant(text: str) -> tuple[str, dict]:
    """``NAME:KEY=JSON,KEY=JSON`` (or ``NAME`` / ``NAME:``, no overrides) -> ``(name, overrides)``."""
    name, _, rest = text.partition(":")
    if not re.fullmatch(r"[\w.+-]+", name):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME:KEY=JSON,KEY=JSON with a plain NAME (letters, digits, ._+-)"
        )
    parts = re.split(rf",(?={KEY}=)", rest) if rest else []  # commas inside JSON values ([8,64,64]) stay
    return name, dict(_override(p) for p in parts)


def _select(items: list[dict], names: list[str] | None, volumes: int | None) -> list[dict]:
    """The items named (by name, file stem, file name or ``split/stem``), then the first ``volumes`` of them."""
    if names:

        def aliases(it: dict) -> set[str]:
            base = os.path.basename(it["image"])
            return {it["name"], base, file_stem(base) or base, f"{it['split']}/{file_stem(base)}"}

        unknown = [n for n in names if not any(n in aliases(it) for it in items)]
        if unknown:
            sys.exit(f"--items {' '.join(unknown)}: not in the data (items: {', '.join(it['name'] for it in items)})")
        items = [it for it in items if aliases(it) & set(names)]
    if volumes is not None:
        if volumes < 1:
            sys.exit(f"--volumes {volumes}: need at least 1")
        items = items[:volumes]
    return items


# --------------------------------------------------------------------------------------------------------- results
def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = f" +- {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{sd}"


def _settings(thresholds: dict | None) -> str:
    """The search's choice in a few characters: seed / fg threshold, minimum size, border rule."""
    if not thresholds:
        return "-"
    border = "drop border" if thresholds.get("exclude_border") else "keep border"
    t = thresholds
    return f"seed {t.get('seed_thresh')} fg {t.get('fg_thresh')} min {t.get('min_object_size')} {border}"


def _summary(rows: list[dict], variants: list[str]) -> dict:
    """Per variant: mean and sd of AP by image over folds, the worst fold, the paired difference to the first."""
    out = {}
    first = {r["fold"]: r for r in rows if r["variant"] == variants[0]}
    for v in variants:
        vr = [r for r in rows if r["variant"] == v]
        if not vr:
            continue
        worst = min(vr, key=lambda r: r["ap50_by_image"])
        paired = [r["ap50_by_image"] - first[r["fold"]]["ap50_by_image"] for r in vr if r["fold"] in first]
        out[v] = {
            "folds": len(vr),
            "ap50_by_image": [r["ap50_by_image"] for r in vr],
            "ap75_by_image": [r["ap75_by_image"] for r in vr],
            "ap50_by_image_mean": statistics.mean(r["ap50_by_image"] for r in vr),
            "ap50_by_image_sd": statistics.stdev(r["ap50_by_image"] for r in vr) if len(vr) > 1 else None,
            "ap75_by_image_mean": statistics.mean(r["ap75_by_image"] for r in vr),
            "ap75_by_image_sd": statistics.stdev(r["ap75_by_image"] for r in vr) if len(vr) > 1 else None,
            "worst_fold": {"fold": worst["fold"], "ap50_by_image": worst["ap50_by_image"], "test": worst["test"]},
            "ap50_by_image_minus_first": paired if v != variants[0] else None,
            "train_min_mean": statistics.mean(r["train_s"] / 60 for r in vr),
        }
    return out


def _write_json(path: Path, content: dict) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder (never half-written)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=2, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _print_tables(rows: list[dict], summary: dict, variants: list[str]) -> None:
    print(
        "\n| fold | variant | test items | AP@0.5 by image | AP@0.75 by image | train min | val AP@0.5 | search chose |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        val = (r["thresholds"] or {}).get("val_ap50_by_image")
        print(
            f"| {r['fold']} | {r['variant']} | {', '.join(r['test'])} | {r['ap50_by_image']:.3f} | "
            f"{r['ap75_by_image']:.3f} | {r['train_s'] / 60:.1f} | {'-' if val is None else f'{val:.3f}'} | "
            f"{_settings(r['thresholds'])} |"
        )
    print(
        "\n| variant | folds | AP@0.5 by image | AP@0.75 by image | worst fold (AP@0.5) | "
        f"minus {variants[0]} (AP@0.5) |"
    )
    print("|---|---|---|---|---|---|")
    for v, s in summary.items():
        w = s["worst_fold"]
        diff = s["ap50_by_image_minus_first"]
        paired = "-" if diff is None else f"{_mean_sd(diff)} ({sum(d > 0 for d in diff)} of {len(diff)} folds up)"
        print(
            f"| {v} | {s['folds']} | {_mean_sd(s['ap50_by_image'])} | {_mean_sd(s['ap75_by_image'])} | "
            f"fold {w['fold']} ({', '.join(w['test'])}): {w['ap50_by_image']:.3f} | {paired} |"
        )


# --------------------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="labelled set: <split>/{images,masks}/ or images/, masks/")
    p.add_argument("--bundle", required=True, help="bundle folder or shipped bundle name (synthetic_3d, dsb2018, ...)")
    p.add_argument("--output", type=Path, default=REPO / "outputs" / "bench_cv")
    p.add_argument("--items", nargs="+", metavar="NAME", help="use only these items (name, file name or split/name)")
    p.add_argument("--volumes", type=int, metavar="N", help="use only the first N items (after --items)")
    p.add_argument("--tiles", type=int, nargs=2, metavar=("GY", "GX"), help="cut each item into GY x GX tiles")
    p.add_argument("--folds", type=int, default=4, help="k >= 3")
    p.add_argument("--groups", choices=GROUPINGS, default="consecutive")
    p.add_argument("--profile", default="fast", choices=["paper", "fast"])
    p.add_argument("--max-minutes", dest="max_minutes", type=float, help="the max_minutes override (training budget)")
    p.add_argument("--override", type=_override, action="append", default=[], metavar="KEY=JSON")
    p.add_argument("--variants", type=_variant, nargs="+", metavar="NAME:KEY=JSON,...", default=[("base", {})])
    p.add_argument("--no-tta", dest="tta", action="store_false")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--dry-run", action="store_true", help="write the folds and print the plan; no training")
    p.add_argument("--only-folds", dest="only_folds", type=int, nargs="+", metavar="I", help="train these folds only")
    args = p.parse_args()

    from monai_embedseg.bundle.paths import resolve_bundle
    from monai_embedseg.utils.files import check_output_apart

    try:
        check_output_apart([args.data], args.output)  # the folds and runs never land inside the labelled set
        resolve_bundle(args.bundle, "train_fast.json" if args.profile == "fast" else "train.json")
        items = _select(collect_items(args.data), args.items, args.volumes)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(str(e))
    names = [v for v, _ in args.variants]
    if len(set(names)) != len(names):
        sys.exit(f"--variants: names must differ, got {names}")
    base = dict(args.override) | ({} if args.max_minutes is None else {"max_minutes": args.max_minutes})
    variants = [(v, {**base, **ov}) for v, ov in args.variants]
    chosen = range(args.folds) if not args.only_folds else sorted(set(args.only_folds))
    if any(not 0 <= i < args.folds for i in chosen):
        sys.exit(f"--only-folds: fold numbers run from 0 to {args.folds - 1}, got {args.only_folds}")
    for i in chosen:
        for v, ov in variants:
            run = args.output / "runs" / f"fold{i}" / v
            if not args.dry_run and run.is_dir() and any(run.iterdir()) and not ov.get("overwrite"):
                sys.exit(f"{run} holds an earlier run: choose another --output, or --override overwrite=true")
    source = ", ".join(it["name"] for it in items)
    try:
        folds = make_folds(len(items) * (args.tiles[0] * args.tiles[1] if args.tiles else 1), args.folds, args.groups)
        if args.tiles:
            items = tile_dataset(items, args.tiles, args.output / "tiles")
        plan = []
        for i, fold in enumerate(folds):
            data_dir = args.output / "folds" / f"fold{i}"
            plan.append({"fold": i, "data": str(data_dir), **write_fold(items, fold, data_dir)})
    except (FileExistsError, ValueError) as e:
        sys.exit(str(e))

    print(
        f"{len(items)} items from {args.data}"
        + (f" ({args.tiles[0]} x {args.tiles[1]} tiles of {source})" if args.tiles else "")
        + f"; {args.folds} folds ({args.groups}); bundle {args.bundle}, profile {args.profile}"
    )
    for v, ov in variants:
        print(f"variant {v}: {json.dumps(ov) if ov else 'the profile as shipped'}")
    for fold, entry in zip(folds, plan):
        data_dir = Path(entry["data"])
        mask = next((data_dir / "test" / "masks").iterdir())
        entry["spacing"] = read_tiff_spacing(mask) if mask.name.lower().endswith(TIFF_SUFFIXES) else None
        entry["objects"] = {s: [items[j].get("n_objects") for j in fold[s]] for s in ("train", "val", "test")}
        count = "/".join(str(len(entry[s])) for s in ("train", "val", "test"))
        print(
            f"fold {entry['fold']}: test {', '.join(entry['test'])} | val {', '.join(entry['val'])} | train "
            f"{', '.join(entry['train'])}  ({count} train/val/test; spacing {entry['spacing'] or 'not recorded'}"
            + (f"; objects test {entry['objects']['test']}, val {entry['objects']['val']}" if args.tiles else "")
            + f") -> {data_dir}"
        )
    if args.dry_run:
        print("dry run: folds written, nothing trained")
        return

    import torch
    from real_sets import _train_and_evaluate

    args.output.mkdir(parents=True, exist_ok=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    rows: list[dict] = []
    for i, fold_plan in enumerate(plan):
        if i not in chosen:
            continue
        for v, ov in variants:
            name = f"fold{i}/{v}"
            real_args = argparse.Namespace(
                output=str(args.output / "runs"),
                profile=args.profile,
                epochs=None,
                samples_per_epoch=None,
                accumulation_steps=None,
                learning_rate=None,
                val_interval=None,
                minutes=None,
                tta=args.tta,
                sets_table={name: (args.bundle, None)},
                overrides=ov,
            )
            row = _train_and_evaluate(name, args.bundle, Path(fold_plan["data"]), real_args)
            thresholds_file = args.output / "runs" / name / THRESHOLDS_FILE
            thresholds = json.loads(thresholds_file.read_text()) if thresholds_file.is_file() else None
            row.update(fold=i, variant=v, overrides=ov, test=fold_plan["test"], val=fold_plan["val"])
            row.update(train=fold_plan["train"], thresholds=thresholds)
            rows.append(row)
            print(
                f"fold {i} {v}: test {', '.join(fold_plan['test'])}: AP@0.5 by image {row['ap50_by_image']:.3f}, "
                f"AP@0.75 by image {row['ap75_by_image']:.3f}, {row['train_s'] / 60:.1f} min training; search on "
                f"{', '.join(fold_plan['val'])} chose {_settings(thresholds)}",
                flush=True,
            )
            summary = _summary(rows, names)
            content = {"device": device, "args": settings, "plan": plan, "rows": rows, "summary": summary}
            _write_json(args.output / "results.json", content)
    print(f"\ndevice: {device}; {len(items)} items, {args.folds} folds, profile {args.profile}, TTA {args.tta}")
    _print_tables(rows, _summary(rows, names), names)


if __name__ == "__main__":
    main()
