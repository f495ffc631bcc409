"""``monai-embedseg download``: one of the EmbedSeg paper's datasets into a folder in the release layout
(:func:`monai_embedseg.data.download.prepare_dataset`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str = "monai-embedseg download") -> int:
    """``monai-embedseg download NAME DATASET_DIR [--sha256 HEX] [--url URL]`` (``--list`` names the datasets).

    Returns:
        exit status: 0 on success, 1 when the data could not be prepared (the reason is printed to stderr).
    """
    from monai_embedseg.data.download import DATASETS, prepare_dataset

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download one of the EmbedSeg paper's datasets into DATASET_DIR in the release layout.",
    )
    parser.add_argument("name", nargs="?", help=f"dataset: {', '.join(DATASETS)}")
    parser.add_argument("dataset_dir", nargs="?", help="target folder (receives train/, test/, SHA256)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    parser.add_argument("--url", default=None, help="download from this URL instead (e.g. a mirror)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list the datasets and their URLs, then exit")
    args = parser.parse_args(argv)
    if args.list:
        for key, info in DATASETS.items():
            print(f"{key:28s} {info.url or '(manual download, see prepare_dataset error)'}")
        return 0
    if not args.name or not args.dataset_dir:
        parser.error("NAME and DATASET_DIR are required (or --list).")
    try:
        out = prepare_dataset(
            args.name, args.dataset_dir, sha256=args.sha256, url=args.url, progress=not args.no_progress
        )
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, RuntimeError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
