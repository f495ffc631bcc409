"""The ``monai-embedseg`` console script: one parser, each command in its own module (imported when it runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monai_embedseg.cli._common import _positive

__all__ = ["main"]


def _override_value(text: str):
    """A command-line override value: JSON (``5``, ``true``, ``[1, 2]``, ``"x"``) or else the text itself."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-embedseg`` console script."""
    parser = argparse.ArgumentParser(
        prog="monai-embedseg", description="EmbedSeg instance segmentation of 2D and 3D microscopy (MONAI)."
    )
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
    p.add_argument(
        "--normalize",
        default="auto",
        choices=["auto", "image", "content"],
        help="intensity percentiles over the whole image (as in training) or, for a mostly empty image, over the "
        "tiles holding objects; auto (default): content for an image peaking far above the model's training images",
    )
    p.add_argument(
        "--border",
        default="auto",
        choices=["auto", "keep", "drop"],
        help="objects touching the image border: keep or drop them; auto (default): as the model's threshold search "
        "chose on its validation split (dropped where its annotations leave them out)",
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
        "download",
        add_help=False,
        help="download one of the paper's datasets in the release layout; see download --help",
    )
    sub.add_parser(
        "properties",
        add_help=False,
        help="dataset properties (crop size, min object size, ...) as JSON; see properties --help",
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["properties"]:  # its own parser, so that `properties --help` lists its options
        from monai_embedseg.cli.properties_command import main as properties_main

        return properties_main(argv[1:])
    if argv[:1] == ["download"]:
        from monai_embedseg.cli.download_command import main as download_main

        return download_main(argv[1:])
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
            from monai_embedseg.cli.train_command import demo

            demo(
                bundle=args.bundle,
                epochs=args.epochs,
                output_dir=args.output_dir,
                dataset_dir=args.dataset_dir,
                device=args.device,
                resume=args.resume,
            )
        elif args.command == "segment":
            from monai_embedseg.cli import blockwise  # a .zarr input or output, or the block options

            if blockwise.wants_blockwise(args):
                blockwise.run_from_args(args)
                return 0
            from monai_embedseg.cli._common import segment_options
            from monai_embedseg.cli.segment_command import segment

            files = segment(
                inputs=args.inputs,
                bundle=args.bundle,
                output_dir=args.output,
                image_channel_dim=args.channel_dim,
                **segment_options(args),
            )
            print(f"wrote {len(files)} label image(s) to {args.output}")
        elif args.command == "evaluate":
            from monai_embedseg.cli.evaluate_command import evaluate

            evaluate(pred_dir=args.pred_dir, mask_dir=args.mask_dir, output_dir=args.output, overwrite=args.overwrite)
        elif args.command == "train":
            from monai_embedseg.cli.train_command import train

            out = train(
                bundle=args.bundle,
                dataset_dir=args.dataset_dir,
                output_dir=args.output_dir,
                fast=args.fast,
                overrides=overrides,
            )
            print(f"trained: {out}/model.pt (with dataset_properties.json and thresholds.json beside it)")
        elif args.command == "export":
            from monai_embedseg.cli.export_command import export

            path = export(
                output=args.output,
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
