"""What the commands share: argument types, input collection and checks that answer before torch and MONAI load."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from monai_embedseg.data.datalist import IMAGE_SUFFIXES, file_stem

STARTED = time.perf_counter()  # the segment log states the start-up time (imports, model loading) once


def _is_image(path: Path) -> bool:
    return path.is_file() and file_stem(path) is not None


def _check_device(device: str):
    """``torch.device(device)``, or a ``ValueError`` saying so when it is CUDA and this PyTorch has none."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a device name; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this PyTorch build has no usable CUDA device; use --device cpu.")
    return dev


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (a tile or block of 0 voxels is a typing mistake, not a request)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _check_readable(path: Path) -> None:
    """Open ``path`` with its own reader (tifffile / nibabel) so that a corrupt file gives one clear line; a
    floating-point image is read whole and refused if it holds NaN or infinite values (before anything is written)."""
    import numpy as np

    try:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            import nibabel

            img = nibabel.load(str(path))
            dtype = np.dtype(img.get_data_dtype())
            floating = np.issubdtype(dtype, np.floating)
            data = np.asanyarray(img.dataobj) if floating else None
        else:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                dtype = np.dtype(tif.series[0].dtype)
                floating = np.issubdtype(dtype, np.floating)
                data = tif.series[0].asarray() if floating else None
    except Exception as e:  # each library raises its own error types for corrupt files
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_):
        raise ValueError(f"{path}: pixels of type {dtype} cannot be segmented (real numbers expected).")
    if data is not None and not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise ValueError(f"{path}: the image holds {bad} NaN or infinite value(s); fix or remove it (nothing written).")


def _collect_images(inputs: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if _is_image(p)))
        elif _is_image(path):
            files.append(path)
        elif not path.exists():
            raise FileNotFoundError(f"input {path} does not exist.")
        else:
            raise ValueError(f"input {path} is not a TIFF or NIfTI image ({', '.join(IMAGE_SUFFIXES)}).")
    if not files:
        raise ValueError(f"no TIFF or NIfTI images found in {', '.join(inputs)}.")
    return files


def segment_options(args: argparse.Namespace) -> dict:
    """The ``segment`` command line's model and inference options as keyword arguments, shared by the whole-image
    :func:`~monai_embedseg.cli.segment_command.segment` and the block-wise
    :func:`~monai_embedseg.cli.blockwise.segment_large`."""
    return {
        "checkpoint": args.checkpoint,
        "model": args.model,
        "properties": args.properties,
        "tta": args.tta,
        "roi_size": args.tile,
        "overwrite": args.overwrite,
        "device": args.device,
        "precision": args.precision,
        "paper_thresholds": args.paper_thresholds,
        "spacing": args.spacing,
        "normalize_content": {"auto": None, "image": False, "content": True}[args.normalize],
        "exclude_border": {"auto": None, "keep": False, "drop": True}[args.border],
    }
