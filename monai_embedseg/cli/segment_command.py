"""``monai-embedseg segment``: images through a trained bundle's ``configs/inference.json``."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from monai_embedseg.cli._common import STARTED, _check_device, _check_readable, _collect_images
from monai_embedseg.data.datalist import file_stem

__all__ = ["segment"]


def segment(
    inputs: Sequence[str],
    bundle: str | None,
    output_dir: str,
    checkpoint: str | None = None,
    properties: str | None = None,
    tta: bool = True,
    roi_size: Sequence[int] | None = None,
    overwrite: bool = False,
    device: str | None = None,
    image_channel_dim: int | None = None,
    precision: str | None = None,
    paper_thresholds: bool = False,
    model: str | None = None,
    spacing: Sequence[float] | None = None,
    normalize_content: bool | None = None,
    exclude_border: bool | None = None,
) -> list[Path]:
    """Segment images by running the bundle's ``configs/inference.json``; write ``<name>_labels.tif`` files.

    The bundle's inference workflow runs as ``python -m monai.bundle run inference`` would run it (MONAI
    ``ConfigWorkflow``), with the images, weights and options below as overrides: both give identical labels.

    Args:
        inputs: image files (``.tif``, ``.nii.gz``) or folders of them, each ``(*spatial)`` or ``(C, *spatial)``.
        bundle: bundle folder (``configs/inference.json``); ``None`` with a pretrained ``model`` name or package.
        output_dir: folder for the label images (label maps ``(*spatial)``, uint16, or uint32 past 65,535 objects).
        checkpoint: weights (default ``<bundle>/models/model.pt``); ``dataset_properties.json`` and
            ``thresholds.json`` are read from its folder.
        properties: ``dataset_properties.json`` written by training, if not beside the checkpoint.
        tta: test-time augmentation (8 transforms in 2D, 16 in 3D).
        roi_size: sliding-window size (default: the bundle's ``roi_size``).
        overwrite: replace existing label images.
        device: e.g. ``"cpu"``, ``"cuda:0"`` (default: the bundle's).
        image_channel_dim: channel axis of multi-channel images on disk (default: the bundle's).
        precision: ``"auto"`` (bf16 where the device has it natively), ``"float32"`` or ``"bfloat16"`` (default:
            the bundle's).
        paper_thresholds: the paper's seed / foreground thresholds (0.9 / 0.5) instead of those tuned on the
            validation split after training.
        model: a pretrained model name (``"nuclei-2d"``, see :mod:`monai_embedseg.pretrained`), a bioimage.io
            package exported by ``monai-embedseg export`` (``.zip``), or an exported TorchScript (``python -m
            monai.bundle ckpt_export``) or ONNX (``.onnx``, :func:`~monai_embedseg.networks.nets.export_onnx`) network
            to run instead of the bundle's network with ``checkpoint``; properties and thresholds are then read from
            the model's folder.
        spacing: physical pixel size per spatial axis (z, y, x) of the images, when it differs from the training
            data's (the embeddings are in physical units, so the inferer and the clustering need it).
        normalize_content: take a mostly empty image's intensity percentiles over its tiles holding objects
            (:class:`~monai_embedseg.transforms.ScaleIntensityContentPercentiles`) or not; ``None`` (default): when
            the model records its training images' peak (:func:`monai_embedseg.intensity.content_default`).
        exclude_border: drop (``True``) or keep (``False``) the objects touching the image border; ``None``
            (default): as the model's ``thresholds.json`` says (chosen on its validation split).

    Returns:
        the written label files, in input order.
    """
    from monai_embedseg.bundle.paths import trained_model_files
    from monai_embedseg.utils.files import check_output_apart, check_writable_folder

    files = _collect_images(inputs)  # the cheap checks first: a typo answers before torch and MONAI load
    check_output_apart([*inputs, *files], output_dir)
    targets = [Path(output_dir) / f"{file_stem(f)}_labels.tif" for f in files]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; pass --overwrite to replace.")
    bundle_dir, weights, props_file, exported = trained_model_files(bundle, checkpoint, properties, model)

    from monai_embedseg.data.properties import load_properties

    for f in files:
        _check_readable(f)
    check_writable_folder(output_dir)  # now, not after the model has loaded
    overrides: dict = {
        "bundle_root": str(bundle_dir),
        "output_dir": str(weights.parent),
        "ckpt_path": str(weights),
        "properties": load_properties(str(props_file)),
        "handlers": [],  # the bundle's log lines; the command shows a progress bar instead
        "datalist": [{"image": str(f)} for f in files],
        "prediction_dir": str(output_dir),
        "overwrite": bool(overwrite),
        "tta": bool(tta),
        "use_tuned_thresholds": not paper_thresholds,
        "normalize_content": None if normalize_content is None else bool(normalize_content),
    }
    if exclude_border is not None:
        overrides["exclude_border"] = bool(exclude_border)
    if device:
        _check_device(device)
        overrides["device"] = f"$torch.device({device!r})"
    optional = dict(roi_size=roi_size, precision=precision, spacing=spacing, image_channel_dim=image_channel_dim)
    overrides.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in optional.items() if v is not None})
    if exported:
        from monai_embedseg.segmenter import exported_network_overrides

        overrides.update(exported_network_overrides(weights, device))
    _run_inference_workflow(bundle_dir, overrides, files)
    return targets


def _run_inference_workflow(bundle_dir: Path, overrides: dict, files: Sequence[Path]) -> None:
    """Run ``inference.json`` of ``bundle_dir`` with ``overrides``: a progress bar over ``files`` and errors that
    name the image being processed."""
    from ignite.engine import Events
    from tqdm import tqdm

    from monai_embedseg.bundle.checks import root_cause
    from monai_embedseg.bundle.paths import bundle_workflow
    from monai_embedseg.transforms.intensity import SparseImageWarning

    workflow = bundle_workflow(bundle_dir, "infer", ["inference.json"], **overrides)
    workflow.initialize()
    parser = workflow.parser
    spatial_dims, in_channels = int(parser.get_parsed_content("spatial_dims")), int(parser["in_channels"])
    for option, key in (("--spacing", "spacing"), ("--tile", "roi_size")):
        value = overrides.get(key)
        if value is not None and len(value) != spatial_dims:
            raise ValueError(f"{option} needs {spatial_dims} values (one per spatial axis), got {list(value)}.")
    try:
        parser.get_parsed_content("load_weights")  # the workflow's first step, taken here to time it and name errors
        evaluator = parser.get_parsed_content("evaluator")
    except Exception as e:  # MONAI wraps a failing config expression; the cause says what is wrong
        root = root_cause(e)
        if isinstance(root, (ValueError, FileNotFoundError, FileExistsError)):
            raise root from None
        raise
    print(f"segment: ready after {time.perf_counter() - STARTED:.1f} s (imports, model loading)", file=sys.stderr)
    bar = tqdm(total=len(files), desc="segment", unit="image")

    def current_file() -> str:
        batch = evaluator.state.batch
        meta = getattr(batch.get("image"), "meta", {}) if isinstance(batch, dict) else {}
        name = meta.get("filename_or_obj")
        return str(name[0] if isinstance(name, (list, tuple)) else name or "an image")

    def check_shape(engine) -> None:
        for w in caught:  # the normaliser's note on a mostly empty image, in one line
            if issubclass(w.category, SparseImageWarning):
                bar.write(f"warning: {w.message}", file=sys.stderr)
        caught[:] = [w for w in caught if not issubclass(w.category, SparseImageWarning)]
        shape = tuple(engine.state.batch["image"].shape[1:])  # (C, *spatial)
        if len(shape) - 1 != spatial_dims or shape[0] != in_channels:
            raise ValueError(
                f"{current_file()}: image of shape {shape[1:] if shape[0] == 1 else shape} does not fit bundle "
                f"'{bundle_dir.name}', which takes {spatial_dims}D images with {in_channels} channel(s)"
                + (
                    " (pass --channel-dim for a multi-channel image)"
                    if (in_channels > 1 or shape[0] > 1) and overrides.get("image_channel_dim") is None
                    else ""
                )
                + "."
            )

    evaluator.logger.setLevel(logging.CRITICAL)  # the command reports a failure itself, in one line
    evaluator.add_event_handler(Events.ITERATION_STARTED, check_shape)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda _: bar.update())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SparseImageWarning)
            workflow.run()
    except Exception as e:
        root = root_cause(e)
        named = (current_file(), *map(str, files))  # the message already names the image
        if isinstance(root, (ValueError, FileExistsError)) and str(root).startswith(named):
            raise root from None
        raise ValueError(f"{current_file()}: {type(root).__name__}: {root}") from e
    finally:
        bar.close()
        for w in caught:  # other warnings, shown as usual
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    workflow.finalize()
