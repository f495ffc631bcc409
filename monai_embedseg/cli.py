"""Command line: ``monai-embedseg {demo,segment,evaluate,train,export,properties}`` (``python -m monai_embedseg``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from monai_embedseg.data.datalist import IMAGE_SUFFIXES, file_stem

__all__ = ["main", "segment", "evaluate", "demo", "train", "export"]

_STARTED = time.perf_counter()  # the segment log states the start-up time (imports, model loading) once


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
            floating = np.issubdtype(img.get_data_dtype(), np.floating)
            data = np.asanyarray(img.dataobj) if floating else None
        else:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                floating = np.issubdtype(tif.series[0].dtype, np.floating)
                data = tif.series[0].asarray() if floating else None
    except Exception as e:  # each library raises its own error types for corrupt files
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
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
    bundle_dir, _, weights, props_file, exported = trained_model_files(bundle, checkpoint, properties, model)

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
    }
    if device:
        _check_device(device)
        overrides["device"] = f"$torch.device({device!r})"
    optional = dict(roi_size=roi_size, precision=precision, spacing=spacing, image_channel_dim=image_channel_dim)
    overrides.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in optional.items() if v is not None})
    if exported:
        overrides.update(_exported_network(weights, device))
    _run_inference_workflow(bundle_dir, overrides, files)
    return targets


def _exported_network(path: Path, device: str | None) -> dict:
    """Overrides that run an exported TorchScript / ONNX network instead of the bundle's ``network_def`` + weights."""
    from monai_embedseg.segmenter import load_exported_network

    network = load_exported_network(path, device)
    # ONNX Runtime runs the network as exported
    return {"network": network, **({"precision": "float32"} if path.suffix == ".onnx" else {})}


def _run_inference_workflow(bundle_dir: Path, overrides: dict, files: Sequence[Path]) -> None:
    """Run ``inference.json`` of ``bundle_dir`` with ``overrides``: a progress bar over ``files`` and errors that
    name the image being processed."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow
    from tqdm import tqdm

    from monai_embedseg.bundle.checks import root_cause

    configs = bundle_dir / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "inference.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="infer",
        **overrides,
    )
    workflow.initialize()
    parser = workflow.parser
    spatial_dims, in_channels = int(parser.get_parsed_content("spatial_dims")), int(parser["in_channels"])
    spacing = overrides.get("spacing")
    if spacing is not None and len(spacing) != spatial_dims:
        raise ValueError(f"--spacing needs {spatial_dims} values (one per spatial axis), got {list(spacing)}.")
    try:
        evaluator = parser.get_parsed_content("evaluator")
    except Exception as e:  # MONAI wraps a failing config expression; the cause says what is wrong
        root = root_cause(e)
        if isinstance(root, (ValueError, FileNotFoundError, FileExistsError)):
            raise root from None
        raise
    print(f"segment: ready after {time.perf_counter() - _STARTED:.1f} s (imports, model loading)", file=sys.stderr)
    bar = tqdm(total=len(files), desc="segment", unit="image")

    def current_file() -> str:
        batch = evaluator.state.batch
        meta = getattr(batch.get("image"), "meta", {}) if isinstance(batch, dict) else {}
        name = meta.get("filename_or_obj")
        return str(name[0] if isinstance(name, (list, tuple)) else name or "an image")

    def check_shape(engine) -> None:
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
        workflow.run()
    except Exception as e:
        root = root_cause(e)
        if isinstance(root, (ValueError, FileExistsError)) and str(root).startswith(current_file()):
            raise root from None
        raise ValueError(f"{current_file()}: {type(root).__name__}: {root}") from e
    finally:
        bar.close()
    workflow.finalize()


def evaluate(
    pred_dir: str, mask_dir: str, output_dir: str | None = None, suffix: str = "_labels", overwrite: bool = False
) -> dict:
    """AP_dsb of ``<pred_dir>/<name>_labels.tif`` against ``<mask_dir>/<name>.tif`` at IoU 0.5..0.9.

    Naming rule: the prediction of mask ``<name>.tif`` (or ``.tiff``, ``.nii.gz``) is ``<name>_labels.tif``, as
    ``segment`` writes it. Only matched pairs are scored; the counts of matched pairs and of masks without a
    prediction are printed and returned, so a partial prediction folder cannot pass unnoticed.

    Returns:
        ``{"pooled": (T,), "by_image": (T,), "matched": int, "missing_prediction": [names]}``; prints the table;
        writes CSVs to ``output_dir`` if given (``FileExistsError`` if they exist and not ``overwrite``).
    """
    import tempfile

    from monai_embedseg.data.io import read_tiff
    from monai_embedseg.handlers.ap_report import format_ap_table, write_ap_tables
    from monai_embedseg.labels import check_instance_labels

    masks = {file_stem(p): p for p in Path(mask_dir).iterdir() if _is_image(p)} if Path(mask_dir).is_dir() else None
    if masks is None:
        raise FileNotFoundError(f"mask folder {mask_dir} does not exist.")
    preds = {file_stem(p)[: -len(suffix)]: p for p in Path(pred_dir).glob(f"*{suffix}.tif*")}
    if not preds:
        raise ValueError(f"no '*{suffix}.tif' predictions in {pred_dir}.")
    unmatched = sorted(set(preds) - set(masks))
    if unmatched:
        raise ValueError(f"predictions without a mask in {mask_dir}: {', '.join(unmatched[:5])}")
    names = sorted(preds)
    missing = sorted(set(masks) - set(preds))
    truth = [read_tiff(str(masks[n])) for n in names]
    pred = [read_tiff(str(preds[n])) for n in names]
    for n, t, p in zip(names, truth, pred):  # checked here, where the files are known: the metric only sees arrays
        check_instance_labels(t[None], one_hot=False, source=str(masks[n]))
        check_instance_labels(p[None], one_hot=False, source=str(preds[n]))
        if t.shape != p.shape:
            raise ValueError(f"{masks[n]}: mask shape {t.shape} differs from its prediction {preds[n]} {p.shape}.")
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_ap_tables(names, truth, pred, output_dir or tmp, overwrite=overwrite or not output_dir)
    print(
        f"scored {len(names)} image(s) with a prediction and a mask; {len(missing)} mask(s) without a prediction"
        + (f" (not scored: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})" if missing else "")
    )
    print(format_ap_table(summary))
    return {**summary, "matched": len(names), "missing_prediction": missing}


def demo(
    bundle: str | None = None,
    epochs: int | None = None,
    output_dir: str | None = None,
    dataset_dir: str | None = None,
    device: str | None = None,
    resume: bool = False,
) -> None:
    """Train, evaluate and run inference with the offline ``synthetic_2d`` bundle (data generated on first run).

    The demo's outputs are its own: a new demo run replaces the previous one's checkpoints and predictions in
    ``output_dir`` (``resume=True`` continues a killed one instead).

    Raises:
        ValueError: ``epochs`` < 1, or a CUDA ``device`` without CUDA.
    """
    from monai.bundle import run

    from monai_embedseg.bundle.paths import bundle_path

    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}.")
    if device is not None:
        _check_device(device)
    root = Path(bundle or bundle_path("synthetic_2d"))
    configs = root / "configs"
    overrides: dict = {"bundle_root": str(root)}
    for key, value in (("output_dir", output_dir), ("dataset_dir", dataset_dir)):
        if value:
            overrides[key] = value
    if device:
        overrides["device"] = f"$torch.device('{device}')"
    train_overrides = dict(
        overrides, resume=resume, overwrite=not resume, **({"epochs": epochs} if epochs is not None else {})
    )
    run(
        "training",
        config_file=str(configs / "train.json"),
        logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"),
        **train_overrides,
    )
    run(
        "evaluating",
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")],
        logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"),
        **overrides,
    )
    run(
        "inference",
        config_file=str(configs / "inference.json"),
        logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"),
        **dict(overrides, overwrite=True),
    )


def export(
    output: str,
    bundle: str | None = None,
    checkpoint: str | None = None,
    model: str | None = None,
    properties: str | None = None,
    image: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a trained model as a bioimage.io model package (``.zip``, spec 0.5): state-dict, TorchScript and ONNX
    weights, the preprocessing, test tensors, documentation (the ``MODEL_CARD.md`` beside the weights, if any), and
    the clustering settings; see :func:`monai_embedseg.pretrained.bioimageio.export_bioimageio`.

    Args:
        output: the ``.zip`` to write.
        bundle, checkpoint, model, properties: the trained model, as for :func:`segment` (``model``: a pretrained
            model name or a package).
        image: a raw image file for the test tensors and the cover, ``(*spatial)`` or ``(C, *spatial)`` (default: a
            generated one).
        name: the package's name.
        overwrite: replace an existing ``output``.

    Returns:
        the written path.
    """
    import json

    from monai_embedseg.bundle.paths import trained_model_files
    from monai_embedseg.constants import THRESHOLDS_FILE
    from monai_embedseg.utils.files import check_output_apart

    if not str(output).lower().endswith(".zip"):
        raise ValueError(f"--output {output}: a bioimage.io model package is a .zip file.")
    resolved = trained_model_files(bundle, checkpoint, properties, model)
    if resolved.exported:
        raise ValueError(
            f"--model {model}: export takes a checkpoint, a pretrained model or a package, not a .ts/.onnx."
        )
    check_output_apart([resolved.weights, *([image] if image else [])], output)
    if Path(output).exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it.")
    from monai.bundle import ConfigParser

    from monai_embedseg.data.io import read_tiff
    from monai_embedseg.data.properties import load_properties
    from monai_embedseg.pretrained.bioimageio import export_bioimageio
    from monai_embedseg.utils import load_weights

    parser = ConfigParser()
    parser.read_config(str(resolved.config))
    parser["bundle_root"] = str(resolved.bundle)
    network = load_weights(parser.get_parsed_content("network_def"), resolved.weights)
    thresholds_file = resolved.weights.parent / THRESHOLDS_FILE
    card = resolved.weights.parent / "MODEL_CARD.md"
    if image is not None:
        _check_readable(Path(image))
    return export_bioimageio(
        network,
        output,
        bundle=resolved.bundle.resolve().name,
        properties=load_properties(str(resolved.properties)),
        thresholds=json.loads(thresholds_file.read_text()) if thresholds_file.is_file() else None,
        test_image=read_tiff(image) if image else None,
        name=name,
        model_card=card.read_text() if card.is_file() else None,
        overwrite=overwrite,
    )


def train(
    bundle: str,
    dataset_dir: str | None = None,
    output_dir: str | None = None,
    fast: bool = False,
    overrides: dict | None = None,
) -> Path:
    """Train a bundle: its ``configs/train.json`` (with ``train_fast.json`` when ``fast``) run by MONAI's
    ``ConfigWorkflow`` as ``python -m monai.bundle run training`` runs it, with errors reduced to their cause.

    Args:
        bundle: bundle folder.
        dataset_dir: data in the release layout (default: the bundle's ``data/``).
        output_dir: the run's folder (default: the bundle's ``models/``).
        fast: merge the bundle's CPU profile ``configs/train_fast.json``.
        overrides: more config overrides (``{"epochs": 5, "pretrained": "nuclei-2d"}``).

    Returns:
        the output folder (``model.pt``, ``dataset_properties.json``, ``thresholds.json``, TensorBoard events).

    Raises:
        FileNotFoundError, FileExistsError, ValueError: one line naming the problem (and the file).
    """
    from monai_embedseg.bundle.checks import EXPLAINED, root_cause
    from monai_embedseg.bundle.paths import trust_notice

    configs = Path(bundle) / "configs"
    files = [configs / "train.json", *([configs / "train_fast.json"] if fast else [])]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{bundle} is not a trainable bundle folder: {missing[0]} does not exist.")
    epochs = (overrides or {}).get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise ValueError(f"--epochs must be a whole number of at least 1, got {epochs!r}.")
    trust_notice(bundle)
    from monai.bundle import ConfigWorkflow

    settings = dict(overrides or {})
    for key, value in (("dataset_dir", dataset_dir), ("output_dir", output_dir)):
        if value is not None:
            settings[key] = str(value)
    try:
        workflow = ConfigWorkflow(
            config_file=[str(f) for f in files],
            meta_file=str(configs / "metadata.json"),
            logging_file=str(configs / "logging.conf"),
            workflow_type="train",
            **settings,
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        out = Path(workflow.parser.get_parsed_content("output_dir"))
    except Exception as e:  # MONAI wraps a failing config expression; the cause says what is wrong
        cause = root_cause(e)
        if isinstance(cause, EXPLAINED):
            raise cause from None
        raise
    return out


def _override_value(text: str):
    """A command-line override value: JSON (``5``, ``true``, ``[1, 2]``, ``"x"``) or else the text itself."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-embedseg`` console script."""
    parser = argparse.ArgumentParser(prog="monai-embedseg", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train, evaluate and segment the offline synthetic 2D demo bundle")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the bundle's)")
    p.add_argument("--output_dir", default=None, help="outputs (default: <bundle>/models)")
    p.add_argument("--dataset_dir", default=None, help="data folder (generated there when empty)")
    p.add_argument("--device", default=None, help="e.g. cpu or cuda:0 (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue a killed demo run from its last epoch")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the synthetic_2d bundle)")

    p = sub.add_parser("segment", help="segment TIFF/NIfTI images with a trained bundle")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument(
        "--bundle", default=None, help="bundle folder (configs/inference.json); not needed with --model NAME or .zip"
    )
    p.add_argument("--output", required=True, help="output folder for <name>_labels.tif")
    p.add_argument("--checkpoint", default=None, help="weights (default <bundle>/models/model.pt)")
    p.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        help="pixel size per spatial axis, z y x (default: the training data's, dataset_properties.json)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a pretrained model (nuclei-2d), a bioimage.io package (.zip) made by export, or an exported "
        "TorchScript (.ts) / ONNX (.onnx) network, instead of --checkpoint",
    )
    p.add_argument("--properties", default=None, help="dataset_properties.json (default beside the checkpoint)")
    p.add_argument("--no-tta", dest="tta", action="store_false", help="disable test-time augmentation")
    p.add_argument("--tile", type=_positive, nargs="+", default=None, help="sliding-window tile size per axis")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default=None)
    p.add_argument("--channel-dim", type=int, default=None, help="channel axis of multi-channel images on disk")
    p.add_argument(
        "--precision",
        default=None,
        choices=["auto", "float32", "bfloat16"],
        help="numeric format of the network (default: the bundle's; auto = bf16 where native)",
    )
    p.add_argument(
        "--paper-thresholds",
        action="store_true",
        help="seed 0.9 / foreground 0.5 instead of the thresholds tuned on the validation split",
    )
    p.add_argument("--block-size", type=_positive, nargs="+", default=None, help="block-wise (*.zarr output): core")
    p.add_argument("--memory-limit", default=None, help="block-wise: memory for the blocks, e.g. 4GB")
    p.add_argument("--scheduler", default=None, help="block-wise: dask.distributed scheduler address")

    p = sub.add_parser("evaluate", help="AP_dsb of predicted label TIFFs against masks")
    p.add_argument("pred_dir")
    p.add_argument("mask_dir")
    p.add_argument("--output", default=None, help="folder for ap_per_image.csv and ap_summary.csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing AP tables in --output")

    p = sub.add_parser("export", help="write a trained model as a bioimage.io model package (.zip)")
    p.add_argument("--format", default="bioimageio", choices=["bioimageio"], help="package format")
    p.add_argument("--output", required=True, help="the .zip to write")
    p.add_argument("--bundle", default=None, help="bundle folder (not needed with --model)")
    p.add_argument("--checkpoint", default=None, help="weights (default <bundle>/models/model.pt)")
    p.add_argument("--model", default=None, help="a pretrained model name (nuclei-2d) or a package to re-export")
    p.add_argument("--properties", default=None, help="dataset_properties.json (default beside the checkpoint)")
    p.add_argument("--image", default=None, help="image for the test tensors and cover (default: generated)")
    p.add_argument("--name", default=None, help="the package's name")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    p = sub.add_parser(
        "train",
        help="train a bundle (its monai.bundle training workflow); more overrides as --key value",
    )
    p.add_argument("bundle", help="bundle folder (configs/train.json)")
    p.add_argument("--dataset_dir", default=None, help="data in the release layout (train/, val/, test/)")
    p.add_argument("--output_dir", default=None, help="the run's folder (default: the bundle's models/)")
    p.add_argument("--fast", action="store_true", help="the bundle's CPU profile (configs/train_fast.json)")

    sub.add_parser(
        "properties",
        add_help=False,
        help="dataset properties (crop size, min object size, ...) as JSON; see properties --help",
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["properties"]:  # its own parser, so that `properties --help` lists its options
        from monai_embedseg.data.properties import main as properties_main

        return properties_main(argv[1:], prog="monai-embedseg properties")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    overrides = {}
    while extra:  # train: the bundle's own settings, --key value (as python -m monai.bundle run takes them)
        key = extra.pop(0)
        if not key.startswith("--") or not extra:
            parser.error(f"train: overrides come as --key value pairs, got {key!r}")
        overrides[key[2:]] = _override_value(extra.pop(0))
    try:
        if args.command == "demo":
            demo(args.bundle, args.epochs, args.output_dir, args.dataset_dir, args.device, args.resume)
        elif args.command == "segment":
            from monai_embedseg import blockwise_cli  # a .zarr input or output, or the block options

            if blockwise_cli.wants_blockwise(args):
                blockwise_cli.run_from_args(args)
                return 0
            files = segment(
                args.inputs,
                args.bundle,
                args.output,
                args.checkpoint,
                args.properties,
                args.tta,
                args.tile,
                args.overwrite,
                args.device,
                args.channel_dim,
                args.precision,
                args.paper_thresholds,
                args.model,
                args.spacing,
            )
            print(f"wrote {len(files)} label image(s) to {args.output}")
        elif args.command == "evaluate":
            evaluate(args.pred_dir, args.mask_dir, args.output, overwrite=args.overwrite)
        elif args.command == "train":
            out = train(args.bundle, args.dataset_dir, args.output_dir, args.fast, overrides)
            print(f"trained: {out}/model.pt (with dataset_properties.json and thresholds.json beside it)")
        elif args.command == "export":
            path = export(
                args.output,
                bundle=args.bundle,
                checkpoint=args.checkpoint,
                model=args.model,
                properties=args.properties,
                image=args.image,
                name=args.name,
                overwrite=args.overwrite,
            )
            print(f"wrote bioimage.io model package {path}")
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        if args.debug:
            raise
        print(f"monai-embedseg {args.command}: error: {e} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0
