"""Command line: ``monai-embedseg {demo,segment,evaluate,properties}`` (also ``python -m monai_embedseg``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from monai_embedseg.data.datalist import IMAGE_SUFFIXES, file_stem

__all__ = ["main", "segment", "evaluate", "demo"]


def _is_image(path: Path) -> bool:
    return path.is_file() and file_stem(path) is not None


def _check_device(device: str):
    """``torch.device(device)``, or a ``ValueError`` saying so when it is CUDA and this PyTorch has none."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this PyTorch build has no usable CUDA device; use --device cpu.")
    return dev


def _check_readable(path: Path) -> None:
    """Open ``path`` with its own reader (tifffile / nibabel) so that a corrupt file gives one clear line."""
    try:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            import nibabel

            nibabel.load(str(path)).header  # noqa: B018 (reads the header)
        else:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                tif.series[0].shape  # noqa: B018 (reads the first page)
    except Exception as e:  # each library raises its own error types for corrupt files
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


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
    bundle: str,
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
    """Segment images with a bundle's network and a checkpoint; write ``<name>_labels.tif`` into ``output_dir``.

    Args:
        inputs: image files (``.tif``, ``.nii.gz``) or folders of them, each ``(*spatial)`` or ``(C, *spatial)``.
        bundle: bundle folder; its ``configs/inference.json`` gives the network, spacing and thresholds.
        checkpoint: weights (default ``<bundle>/models/model.pt``).
        properties: ``dataset_properties.json`` written by training (default: beside the checkpoint); gives the
            minimum object size.
        tta: test-time augmentation (8 transforms in 2D, 16 in 3D).
        roi_size: sliding-window tile size (default: the bundle's ``roi_size``).
        precision: ``"auto"`` (bf16 where the device has it natively), ``"float32"`` or ``"bfloat16"`` (default:
            the bundle's ``precision``).
        model: an exported TorchScript (``python -m monai.bundle ckpt_export``) or ONNX (``.onnx``,
            :func:`~monai_embedseg.networks.nets.export_onnx`, run with ONNX Runtime) network to run instead of the
            bundle's network with ``checkpoint``; ``dataset_properties.json`` and ``thresholds.json`` are then read
            from the model's folder (or ``properties``).
        spacing: physical pixel size per spatial axis (z, y, x) of the images, when it differs from the bundle's
            (the embeddings and bandwidths are in physical units, so the clustering needs it).
        paper_thresholds: use the paper's seed / foreground thresholds (0.9 / 0.5) and the dataset's minimum
            object size instead of those tuned on the validation split after training (``thresholds.json`` beside
            the checkpoint, used when present).

    Returns:
        the written label files (label maps ``(*spatial)``, uint16, or uint32 past 65,535 objects).
    """
    import torch
    from monai.bundle import ConfigParser
    from tqdm import tqdm

    from monai_embedseg.bundle.datasets import PROPERTIES_FILE
    from monai_embedseg.bundle.pipelines import infer_transforms
    from monai_embedseg.data.io import as_label_dtype, write_tiff
    from monai_embedseg.data.properties import load_properties
    from monai_embedseg.engines import read_thresholds
    from monai_embedseg.inferers import EmbedSegInferer
    from monai_embedseg.networks.nets import FastForward
    from monai_embedseg.transforms.cluster import EmbedSegCluster
    from monai_embedseg.utils.checkpoint import load_weights
    from monai_embedseg.utils.threads import configure_threads

    configure_threads()
    config_file = Path(bundle) / "configs" / "inference.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle folder: {config_file} does not exist.")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle)
    checkpoint = Path(model or checkpoint or Path(bundle) / "models" / "model.pt")
    if not checkpoint.is_file():
        name = Path(bundle).name
        raise FileNotFoundError(
            f"no trained model at {checkpoint}: bundle '{name}' ships untrained. Train it first "
            f"(python -m monai.bundle run training --config_file {Path(bundle) / 'configs' / 'train.json'} "
            "--dataset_dir DATA --output_dir OUT), then pass --checkpoint OUT/model.pt."
        )
    properties = Path(properties) if properties else checkpoint.parent / PROPERTIES_FILE
    if not properties.is_file():
        raise FileNotFoundError(
            f"{properties} not found: training writes it beside model.pt; pass --properties FILE if you moved it."
        )
    props = load_properties(str(properties))
    files = _collect_images(inputs)
    out_dir = Path(output_dir)
    targets = [out_dir / f"{file_stem(f)}_labels.tif" for f in files]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; pass --overwrite to replace.")

    dev = _check_device(device) if device else parser.get_parsed_content("device")
    spatial_dims = int(parser.get_parsed_content("spatial_dims"))
    in_channels = int(parser.get_parsed_content("in_channels"))
    if model and checkpoint.suffix == ".onnx":
        from monai_embedseg.networks.nets import OnnxNetwork

        network = OnnxNetwork(str(checkpoint)).eval()
        precision = "float32"  # ONNX Runtime runs the exported graph as it is
    elif model:
        try:
            network = torch.jit.load(str(checkpoint), map_location=dev).eval()
        except Exception as e:  # torch raises RuntimeError/ValueError variants for non-TorchScript files
            raise ValueError(f"{checkpoint} is not a TorchScript model ({type(e).__name__}: {e}).") from None
    else:
        network = load_weights(parser.get_parsed_content("network_def"), checkpoint, map_location="cpu").to(dev)
        network.eval()
    runner = FastForward(network, precision=precision or parser.get_parsed_content("precision")).eval()
    tuned = read_thresholds(str(checkpoint.parent), int(props["min_object_size"]), use_tuned=not paper_thresholds)
    spacing = spacing if spacing else parser.get_parsed_content("spacing")
    if spacing is not None and len(spacing) != spatial_dims:
        raise ValueError(f"--spacing needs {spatial_dims} values (one per spatial axis), got {list(spacing)}.")
    inferer = EmbedSegInferer(roi_size=roi_size or parser.get_parsed_content("roi_size"), sw_batch_size=4, tta=tta,
                              spacing=spacing, tta_batch_size=1)
    cluster = EmbedSegCluster(
        spacing=spacing,
        seed_thresh=tuned["seed_thresh"],
        fg_thresh=tuned["fg_thresh"],
        min_object_size=tuned["min_object_size"],
    )
    if image_channel_dim is None and "image_channel_dim" in parser:
        image_channel_dim = parser.get_parsed_content("image_channel_dim")
    preprocess = infer_transforms(image_channel_dim=image_channel_dim)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src, dst in tqdm(list(zip(files, targets)), desc="segment", unit="image"):
        _check_readable(src)
        try:
            image = preprocess({"image": str(src)})["image"]
        except RuntimeError as e:  # MONAI wraps reader errors; report the root cause with the file name
            root = e
            while root.__cause__ is not None:
                root = root.__cause__
            raise ValueError(f"cannot read image {src}: {root}") from e
        shape = tuple(image.shape)  # (C, *spatial)
        if len(shape) - 1 != spatial_dims or shape[0] != in_channels:
            raise ValueError(
                f"{src}: image of shape {shape[1:] if shape[0] == 1 else shape} does not fit bundle "
                f"'{Path(bundle).name}', which takes {spatial_dims}D images with {in_channels} channel(s)"
                + (" (pass --channel-dim for a multi-channel image)" if in_channels > 1 or shape[0] > 1 else "")
                + "."
            )
        with torch.inference_mode():
            pred = inferer(torch.as_tensor(image)[None].to(dev), runner)[0]
        labels = cluster(pred)
        write_tiff(str(dst), as_label_dtype(labels[0].cpu().numpy()), overwrite=overwrite)
        written.append(dst)
    return written


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
    with tempfile.TemporaryDirectory() as tmp:
        summary = write_ap_tables(names, truth, pred, output_dir or tmp, overwrite=overwrite or not output_dir)
    print(f"scored {len(names)} image(s) with a prediction and a mask; {len(missing)} mask(s) without a prediction"
          + (f" (not scored: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})" if missing else ""))
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
    train_overrides = dict(overrides, resume=resume, overwrite=not resume,
                           **({"epochs": epochs} if epochs is not None else {}))
    run("training", config_file=str(configs / "train.json"), logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"), **train_overrides)
    run("evaluating", config_file=[str(configs / "train.json"), str(configs / "evaluate.json")],
        logging_file=str(configs / "logging.conf"), meta_file=str(configs / "metadata.json"), **overrides)
    run("inference", config_file=str(configs / "inference.json"), logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"), **dict(overrides, overwrite=True))


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
    p.add_argument("--bundle", required=True, help="bundle folder (configs/inference.json)")
    p.add_argument("--output", required=True, help="output folder for <name>_labels.tif")
    p.add_argument("--checkpoint", default=None, help="weights (default <bundle>/models/model.pt)")
    p.add_argument("--spacing", type=float, nargs="+", default=None,
                   help="pixel size per spatial axis, z y x (default: the bundle's)")
    p.add_argument("--model", default=None, help="an exported TorchScript (.ts) or ONNX (.onnx) model to run instead of --checkpoint")
    p.add_argument("--properties", default=None, help="dataset_properties.json (default beside the checkpoint)")
    p.add_argument("--no-tta", dest="tta", action="store_false", help="disable test-time augmentation")
    p.add_argument("--tile", type=int, nargs="+", default=None, help="sliding-window tile size per axis")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default=None)
    p.add_argument("--channel-dim", type=int, default=None, help="channel axis of multi-channel images on disk")
    p.add_argument("--precision", default=None, choices=["auto", "float32", "bfloat16"],
                   help="numeric format of the network (default: the bundle's; auto = bf16 where native)")
    p.add_argument("--paper-thresholds", action="store_true",
                   help="seed 0.9 / foreground 0.5 instead of the thresholds tuned on the validation split")
    p.add_argument("--block-size", type=int, nargs="+", default=None, help="block-wise (output *.zarr): core size")
    p.add_argument("--memory-limit", default=None, help="block-wise: memory for the blocks, e.g. 4GB")
    p.add_argument("--scheduler", default=None, help="block-wise: dask.distributed scheduler address")

    p = sub.add_parser("evaluate", help="AP_dsb of predicted label TIFFs against masks")
    p.add_argument("pred_dir")
    p.add_argument("mask_dir")
    p.add_argument("--output", default=None, help="folder for ap_per_image.csv and ap_summary.csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing AP tables in --output")

    sub.add_parser("properties", add_help=False,
                   help="dataset properties (crop size, min object size, ...) as JSON; see properties --help")

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["properties"]:  # its own parser, so that `properties --help` lists its options
        from monai_embedseg.data.properties import main as properties_main

        return properties_main(argv[1:], prog="monai-embedseg properties")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            demo(args.bundle, args.epochs, args.output_dir, args.dataset_dir, args.device, args.resume)
        elif args.command == "segment":
            from monai_embedseg import blockwise_cli  # a .zarr input or output, or the block options

            if blockwise_cli.wants_blockwise(args):
                blockwise_cli.run_from_args(args)
                return 0
            files = segment(args.inputs, args.bundle, args.output, args.checkpoint, args.properties, args.tta,
                            args.tile, args.overwrite, args.device, args.channel_dim, args.precision,
                            args.paper_thresholds, args.model, args.spacing)
            print(f"wrote {len(files)} label image(s) to {args.output}")
        elif args.command == "evaluate":
            evaluate(args.pred_dir, args.mask_dir, args.output, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        if args.debug:
            raise
        print(f"monai-embedseg {args.command}: error: {e} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0
