"""``monai-embedseg segment volume.zarr --bundle B --output labels.zarr``: block-wise segmentation, command line.

The ``segment`` command of :mod:`monai_embedseg.cli` hands over to :func:`segment_large` when its input or its
``--output`` is a ``*.zarr`` store, or when ``--block-size``, ``--memory-limit`` or ``--scheduler`` is given (a large
TIFF input works too); the output must then be one ``*.zarr`` store. The bundle, checkpoint, thresholds and dataset
properties are found exactly as for whole images; the halo comes from the properties' object extents
(:func:`~monai_embedseg.inferers.blockwise.halo_from_properties`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_embedseg.cli._common import _check_device, segment_options

__all__ = ["run_from_args", "segment_large", "wants_blockwise"]

_BLOCK_OPTIONS = ("block_size", "memory_limit", "scheduler")


def wants_blockwise(args: argparse.Namespace) -> bool:
    """Whether a parsed ``segment`` command line asks for block-wise segmentation.

    Raises:
        ValueError: it does, but the output is not a ``*.zarr`` store or there is more than one input.
    """
    zarr_in = any(str(i).rstrip("/").lower().endswith(".zarr") for i in args.inputs)
    zarr_out = str(args.output).rstrip("/").lower().endswith(".zarr")
    options = [f"--{o.replace('_', '-')}" for o in _BLOCK_OPTIONS if getattr(args, o, None)]
    if not (zarr_in or zarr_out or options):
        return False
    why = "a .zarr input" if zarr_in else (" / ".join(options) if options else "a .zarr output")
    if not str(args.output).rstrip("/").lower().endswith(".zarr"):
        raise ValueError(
            f"block-wise segmentation ({why}) writes a Zarr store: --output must end with .zarr, got {args.output}."
        )
    if len(args.inputs) != 1:
        raise ValueError(f"block-wise segmentation ({why}) takes one input volume, got {len(args.inputs)}.")
    from monai_embedseg.pretrained.registry import MODELS

    model = getattr(args, "model", None)
    if model is not None and model not in MODELS and not str(model).lower().endswith(".zip"):
        raise ValueError(
            f"--model {model}: an exported TorchScript / ONNX network is not supported by block-wise segmentation "
            f"({why}); pass its --checkpoint, a pretrained model name or a bioimage.io package."
        )
    if getattr(args, "channel_dim", None) is not None:
        raise ValueError(f"--channel-dim is not supported by block-wise segmentation ({why}).")
    return True


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever ``sys.stderr`` is when they are written (not the stream of the first call)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def run_from_args(args: argparse.Namespace) -> dict:
    """Run :func:`segment_large` for a parsed ``segment`` command line and print one summary line.

    The per-block log lines (time, object count) go to stderr.
    """
    from monai_embedseg.inferers.blockwise import logger as block_logger

    if not block_logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        block_logger.addHandler(handler)
        block_logger.setLevel(logging.INFO)
        block_logger.propagate = False
    summary = segment_large(
        args.inputs[0],
        args.bundle,
        args.output,
        block_size=args.block_size,
        memory_limit=args.memory_limit,
        scheduler=args.scheduler,
        **segment_options(args),
    )
    print(
        f"wrote {summary['objects']} objects to {summary['output']} ({summary['blocks']} blocks of "
        f"{'x'.join(map(str, summary['block_size']))}, halo {'x'.join(map(str, summary['halo']))}, "
        f"{summary['seconds']:.0f} s)"
    )
    return summary


def segment_large(
    image: str | os.PathLike | Any,
    bundle: str | None,
    output: str,
    checkpoint: str | None = None,
    model: str | None = None,
    properties: str | None = None,
    tta: bool = True,
    roi_size: Sequence[int] | None = None,
    block_size: Sequence[int] | None = None,
    memory_limit: str | int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    precision: str | None = None,
    paper_thresholds: bool = False,
    spacing: Sequence[float] | None = None,
    workers: int | None = None,
    halo_margin: int | Sequence[int] | None = None,
    progress: bool = True,
    normalize_content: bool | None = None,
    exclude_border: bool | None = None,
) -> dict:
    """Segment one large image (Zarr / OME-Zarr / TIFF) with a bundle, block by block, into an OME-Zarr label store.

    Args:
        image: ``*.zarr`` (OME-Zarr multiscale level 0, or a plain array) or ``*.tif``, or an opened volume
            (:class:`~monai_embedseg.data.zarr_io.ArrayVolume` over an in-memory or Dask array): ``(*spatial)`` or
            ``(C, *spatial)``.
        bundle: bundle folder (``configs/inference.json``: network, spacing, precision).
        output: ``*.zarr`` store to write (labels uint32 at ``"0"``, spacing in the OME metadata).
        checkpoint, model, properties, tta, device, precision, paper_thresholds, spacing, normalize_content,
            exclude_border: as for
            :func:`monai_embedseg.cli.segment` (``model``: a pretrained model name or a bioimage.io package).
        roi_size: sliding-window size inside a block (default: each block in one network call).
        block_size: core size per axis (default: the largest that fits ``memory_limit``).
        memory_limit: e.g. ``"4GB"`` (default: half of the available memory here / 60 % of a worker's limit).
        scheduler: a ``dask.distributed`` scheduler address (default: Dask's local threaded scheduler).
        workers: blocks at a time on the local scheduler (default 1).
        halo_margin: receptive-field margin in voxels added to the object extent (default: measured on the network
            and the middle of the image, :func:`~monai_embedseg.inferers.block_margin.measure_margin`).

    Returns:
        the summary of :func:`~monai_embedseg.inferers.blockwise.segment_blockwise`.

    Raises:
        FileNotFoundError, FileExistsError, ValueError: one line naming the problem and the file.
    """
    from monai_embedseg.bundle.paths import inference_parser, trained_model_files
    from monai_embedseg.cluster_settings import ClusteringSettings
    from monai_embedseg.data.properties import load_properties
    from monai_embedseg.engines import read_thresholds
    from monai_embedseg.inferers.blockwise import (
        BlockPredictor,
        halo_from_properties,
        segment_blockwise,
    )
    from monai_embedseg.inferers.blockwise import (
        logger as block_logger,
    )
    from monai_embedseg.intensity import content_default, model_sparse_ratio

    bundle, ckpt, props_file, _ = trained_model_files(bundle, checkpoint, properties, model)
    if not str(output).rstrip("/").lower().endswith(".zarr"):
        raise ValueError(f"the output of block-wise segmentation is a Zarr store: {output} must end with .zarr.")
    parser = inference_parser(bundle)
    props = load_properties(str(props_file))
    tuned = read_thresholds(str(ckpt.parent), int(props["min_object_size"]), not paper_thresholds, tta)
    spatial_dims = int(parser.get_parsed_content("spatial_dims"))
    in_channels = int(parser.get_parsed_content("in_channels"))
    if not spacing:  # the bundle's, else the training data's (dataset_properties.json), else the image's
        spacing = parser.get_parsed_content("spacing") if "spacing" in parser else None
        spacing = spacing if spacing is not None else props.get("spacing")
    spacing = None if spacing is None else [float(s) for s in spacing]
    if spacing is not None and len(spacing) != spatial_dims:
        raise ValueError(f"--spacing needs {spatial_dims} values (one per spatial axis), got {list(spacing)}.")
    if block_size is not None and len(block_size) != spatial_dims:
        raise ValueError(f"--block-size needs {spatial_dims} values (one per spatial axis), got {list(block_size)}.")

    from monai_embedseg.data.zarr_io import open_volume

    volume = open_volume(image, spatial_dims) if isinstance(image, (str, os.PathLike)) else image
    if len(volume.spatial_shape) != spatial_dims or volume.n_channels != in_channels:
        raise ValueError(
            f"{image}: image of shape {volume.shape} (axes {volume.axes}) does not fit bundle "
            f"'{Path(bundle).name}', which takes {spatial_dims}D images with {in_channels} channel(s)."
        )
    if spacing is None and volume.spacing is not None:
        spacing = list(volume.spacing)
    if (
        volume.spacing is not None
        and spacing is not None
        and any(abs(a - b) > 1e-6 * max(a, b) for a, b in zip(volume.spacing, spacing))
    ):
        logging.getLogger(__name__).warning(
            f"{image} records spacing {list(volume.spacing)}; clustering in the bundle's units {list(spacing)} "
            "(pass --spacing to change)"
        )
    if device is not None:
        _check_device(device)
    predictor = BlockPredictor.from_bundle(
        str(bundle),
        str(ckpt),
        roi_size=roi_size,
        tta=tta,
        spacing=spacing,
        device=device,
        precision=precision or parser.get_parsed_content("precision"),
    )
    if halo_margin is None:
        from monai_embedseg.utils.files import check_output_apart

        if isinstance(image, (str, os.PathLike)):  # refused before the measurement, as segment_blockwise will
            check_output_apart([image], output)
        halo_margin = _measured_margin(predictor, volume, spacing)
        block_logger.info(f"receptive-field margin measured on the network: {list(halo_margin)} voxels")
    halo = halo_from_properties(props, halo_margin)
    return segment_blockwise(
        volume,
        os.fspath(output),
        predictor,
        halo,
        clustering=ClusteringSettings.from_mapping(tuned, spacing=spacing, exclude_border=exclude_border),
        block_size=block_size,
        memory_limit=memory_limit,
        scheduler=scheduler,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
        normalize_content=content_default(normalize_content, props.get("intensity_peak")),
        sparse_ratio=model_sparse_ratio(props.get("intensity_peak")),
    )


#: largest margin searched per axis (voxels), 2D / 3D; the sample read from the middle of the image is twice this
#: plus a core of 16 (a 3D sample of 96^3 voxels keeps the measurement to seconds)
MAX_MEASURED_MARGIN = {2: 128, 3: 40}


def _measured_margin(predictor, volume, spacing) -> tuple[int, ...]:
    """The receptive-field margin of ``predictor`` measured on a sample from the middle of ``volume``."""
    from monai_embedseg.inferers.block_margin import measure_margin

    shape = volume.spatial_shape
    size = [min(s, 2 * MAX_MEASURED_MARGIN[len(shape)] + 16) for s in shape]
    starts = [((s - c) // 2) // 8 * 8 for s, c in zip(shape, size)]  # a multiple of 8 from the start: block phase
    sample = volume.read([slice(st, st + c) for st, c in zip(starts, size)])
    return measure_margin(predictor, sample, spacing=spacing)
