"""``monai-embedseg properties``: the dataset properties (object sizes and extents, crop size, foreground weight) of
a release-layout dataset, as JSON (:func:`monai_embedseg.data.properties.compute_release_properties`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str = "monai-embedseg properties") -> int:
    """``monai-embedseg properties DATASET_DIR [--splits ...] [--spacing ...] [--output FILE]``; returns the exit code
    (2 on an error)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compute dataset properties (object sizes and extents, crop size, foreground weight) from the "
        "masks of a release-layout dataset.",
    )
    parser.add_argument("dataset_dir", help="dataset folder holding <split>/images and <split>/masks")
    parser.add_argument("--splits", nargs="+", default=["train"], help="splits to include (default: train)")
    parser.add_argument(
        "--spacing",
        nargs="+",
        type=float,
        default=None,
        help="pixel size per spatial axis, z y x order (default: from the files, else 1)",
    )
    parser.add_argument(
        "--one-hot",
        choices=["auto", "yes", "no"],
        default="auto",
        help="use masks_onehot (default auto: when every split has it)",
    )
    parser.add_argument("--output", default=None, help="write the JSON to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    args = parser.parse_args(argv)
    from monai_embedseg.data.properties import compute_release_properties, save_properties

    one_hot = {"auto": "auto", "yes": True, "no": False}[args.one_hot]
    try:
        if args.output:  # never into the dataset: it could replace an image or a mask
            from monai_embedseg.utils.files import check_output_apart

            check_output_apart([args.dataset_dir], args.output)
        props = compute_release_properties(args.dataset_dir, args.splits, spacing=args.spacing, one_hot=one_hot)
        text = json.dumps(props, indent=2, sort_keys=True)
        if args.output:
            save_properties(props, args.output, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0
