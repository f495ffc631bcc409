"""Bad inputs, as a new user makes them: every command run on a mistake, counting tracebacks and lost data.

    python benchmarks/bad_inputs.py [--only PATTERN ...] [--workdir DIR] [--jobs 2]

Each case runs the installed command line in a fresh process (``python -m monai_embedseg ...`` or ``python -m
monai.bundle run training ...``) on generated inputs: images and masks made with
:mod:`monai_embedseg.data.synthetic`, the shipped ``nuclei-2d`` model, files broken on purpose. A case passes when
the command

* exits with its error code (2) where the input is wrong, or 0 where it is only unusual (a warning then),
* prints no Python traceback (for ``monai.bundle run``, which prints MONAI's own, the traceback's last line must be
  our message),
* says what is wrong in one ``error:`` line that names the file or option at fault,
* leaves every input byte for byte as it was, and every output that existed before unchanged unless the case asks
  for ``--overwrite`` of a file that is not an input.

Prints a Markdown table (one row per case) and a summary line; exits 1 if any case fails.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

PY = sys.executable


@dataclass
class Case:
    """One command on one bad input."""

    name: str
    argv: list[str]
    expect: int = 2  # exit code
    names: list[str] = field(default_factory=list)  # strings the error line must hold (file or option)
    guarded: list[str] = field(default_factory=list)  # paths that must not change
    bundle_run: bool = False  # python -m monai.bundle: MONAI's traceback allowed, its last line must be ours
    warn: str | None = None  # a warning the output must hold (expect 0)


def _digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (or of the file itself); symlinks recorded by their target."""
    out = {}
    if path.is_symlink():
        out[str(path)] = "link:" + os.readlink(path)
    if path.is_file():
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    elif not path.exists() and not path.is_symlink():
        out[str(path)] = "absent"
    return out


def _make_inputs(w: Path) -> None:
    """Generate the inputs every case draws on under ``w``."""
    from monai_embedseg.data.synthetic import synthetic_nuclei_2d, write_synthetic_dataset

    image, label = synthetic_nuclei_2d((128, 128), seed=1)
    imgs = w / "imgs"
    imgs.mkdir()
    tifffile.imwrite(imgs / "a.tif", image)
    tifffile.imwrite(imgs / "b.tif", synthetic_nuclei_2d((128, 128), seed=2)[0])
    masks = w / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "a.tif", label.astype(np.uint16))
    tifffile.imwrite(masks / "b.tif", synthetic_nuclei_2d((128, 128), seed=2)[1].astype(np.uint16))
    bad = w / "bad"
    bad.mkdir()
    (bad / "garbage.tif").write_bytes(b"not an image at all")
    good = (imgs / "a.tif").read_bytes()
    (bad / "truncated.tif").write_bytes(good[: len(good) // 3])
    tifffile.imwrite(bad / "volume.tif", np.zeros((5, 40, 48), np.float32))
    tifffile.imwrite(bad / "rgb.tif", np.stack([image] * 3, -1).astype(np.float32), photometric="rgb")
    nan = image.astype(np.float32)
    nan[10:20, 10:20] = np.nan
    tifffile.imwrite(bad / "nan.tif", nan)
    inf = image.astype(np.float32)
    inf[5, 5] = np.inf
    tifffile.imwrite(bad / "inf.tif", inf)
    tifffile.imwrite(bad / "tiny.tif", image[:3, :3])
    tifffile.imwrite(bad / "complex.tif", image.astype(np.complex64))
    tifffile.imwrite(bad / "zeros.tif", np.zeros((64, 64), np.float32))
    sparse = np.full((2000, 2000), 3, np.uint8)
    sparse[:128, :128] = (image / image.max() * 255).astype(np.uint8)
    tifffile.imwrite(bad / "slide.tif", sparse)
    (bad / "notes.txt").write_text("not an image")
    (w / "empty").mkdir()
    (w / "textonly").mkdir()
    (w / "textonly" / "readme.txt").write_text("no images here")
    (w / "image_file.tif").write_bytes((imgs / "a.tif").read_bytes())
    # masks that are wrong in one way each (same names as imgs/)
    for kind, arr in {
        "float": label.astype(np.float32) + 0.5,
        "negative": label.astype(np.int32) - 1,
        "shape": label[:64, :64].astype(np.uint16),
        "nanmask": np.where(label > 0, np.nan, 0).astype(np.float32),
    }.items():
        d = w / f"masks_{kind}"
        d.mkdir()
        for name in ("a.tif", "b.tif"):
            tifffile.imwrite(d / name, arr)
    d = w / "masks_corrupt"
    d.mkdir()
    (d / "a.tif").write_bytes(b"broken")
    (d / "b.tif").write_bytes((masks / "b.tif").read_bytes())
    # predictions as segment names them
    preds = w / "preds"
    preds.mkdir()
    for name in ("a", "b"):
        shutil.copy(masks / f"{name}.tif", preds / f"{name}_labels.tif")
    # an earlier result that must survive
    earlier = w / "earlier"
    earlier.mkdir()
    (earlier / "a_labels.tif").write_bytes(b"an earlier result")
    # checkpoints that are not the model
    ckpts = w / "ckpts"
    ckpts.mkdir()
    (ckpts / "text.pt").write_text("hello")
    import torch

    from monai_embedseg.networks.nets import BranchedERFNet

    torch.save(BranchedERFNet(3, 1).state_dict(), ckpts / "net3d.pt")
    torch.save({"epoch": 3}, ckpts / "nodict.pt")
    from monai_embedseg.pretrained import model_folder

    shutil.copy(Path(model_folder("nuclei-2d")) / "dataset_properties.json", ckpts)  # only the weights are wrong
    (w / "broken.zip").write_bytes(b"PK not really")
    # training data: a small set in the release layout, and broken variants of it
    write_synthetic_dataset(w / "data", "nuclei_2d", n_train=3, n_test=1, seed=0, shape=(96, 96))
    for variant in ("nomasks", "mismatch", "oneimage", "shape", "floatmask", "negmask", "emptymask"):
        d = w / f"data_{variant}"
        shutil.copytree(w / "data", d)
        tm = d / "train" / "masks"
        files = sorted(tm.glob("*.tif"))
        if variant == "nomasks":
            shutil.rmtree(tm)
        elif variant == "mismatch":
            for f in files:
                f.rename(f.with_name("other_" + f.name))
        elif variant == "oneimage":
            for f in sorted((d / "train" / "images").glob("*.tif"))[1:]:
                f.unlink()
            for f in files[1:]:
                f.unlink()
        else:
            for f in files:
                lab = tifffile.imread(f)
                lab = {
                    "shape": lambda x: x[:48],
                    "floatmask": lambda x: x.astype(np.float32) * 0.5,
                    "negmask": lambda x: x.astype(np.int32) - 3,
                    "emptymask": np.zeros_like,
                }[variant](lab)
                tifffile.imwrite(f, lab)
    # a trained run folder (the shipped model's files and an epoch checkpoint of an earlier run)
    run = w / "trained_run"
    run.mkdir()
    for f in ("model.pt", "dataset_properties.json"):
        shutil.copy(Path(model_folder("nuclei-2d")) / f, run / f)
    shutil.copy(run / "model.pt", run / "checkpoint_epoch=5.pt")
    # a run folder whose thresholds.json holds a setting of the wrong type
    badthr = w / "bad_thresholds"
    badthr.mkdir()
    for f in ("model.pt", "dataset_properties.json"):
        shutil.copy(Path(model_folder("nuclei-2d")) / f, badthr / f)
    (badthr / "thresholds.json").write_text(
        json.dumps({"seed_thresh": 0.5, "fg_thresh": 0.3, "min_object_size": 21, "exclude_border": "yes"})
    )
    # Zarr inputs for the block-wise path
    from monai_embedseg.data import write_ome_zarr

    write_ome_zarr(w / "c.zarr", image[None].astype(np.float32), spacing=(1.0, 1.0), channel_axis=True)
    import zarr

    group = zarr.open_group(w / "container.zarr", mode="w")
    group.create_array("raw", data=image.astype(np.float32))
    (w / "fake.zarr").mkdir()
    (w / "fake.zarr" / "junk").write_text("x")
    (w / "link.zarr").symlink_to(w / "c.zarr")


def _cases(w: Path) -> list[Case]:
    seg = ["-m", "monai_embedseg", "segment"]
    model = ["--model", "nuclei-2d", "--no-tta"]
    bundle = ["--bundle", "dsb2018", "--no-tta"]
    out = str(w / "out")
    imgs, bad = str(w / "imgs"), w / "bad"
    ev = ["-m", "monai_embedseg", "evaluate"]
    tr = ["-m", "monai_embedseg", "train", "synthetic_2d", "--epochs", "1"]
    guard = [str(w / "imgs"), str(w / "bad"), str(w / "masks")]
    c = [
        # --- segment: inputs
        Case("segment: missing input", [*seg, str(w / "nowhere"), *model, "--output", out], names=["nowhere"]),
        Case("segment: empty folder", [*seg, str(w / "empty"), *model, "--output", out], names=["empty"]),
        Case("segment: folder of text files", [*seg, str(w / "textonly"), *model, "--output", out], names=["textonly"]),
        Case("segment: a text file", [*seg, str(bad / "notes.txt"), *model, "--output", out], names=["notes.txt"]),
        Case("segment: garbage .tif", [*seg, str(bad / "garbage.tif"), *model, "--output", out], names=["garbage.tif"]),
        Case(
            "segment: truncated .tif", [*seg, str(bad / "truncated.tif"), *model, "--output", out], names=["truncated"]
        ),
        Case(
            "segment: 3D volume, 2D model", [*seg, str(bad / "volume.tif"), *model, "--output", out], names=["volume"]
        ),
        Case(
            "segment: RGB without --channel-dim", [*seg, str(bad / "rgb.tif"), *model, "--output", out], names=["rgb"]
        ),
        Case(
            "segment: --channel-dim out of range",
            [*seg, str(bad / "rgb.tif"), *model, "--channel-dim", "5", "--output", out],
            names=["rgb"],
        ),
        Case("segment: NaN pixels", [*seg, str(bad / "nan.tif"), *model, "--output", out], names=["nan.tif"]),
        Case("segment: Inf pixel", [*seg, str(bad / "inf.tif"), *model, "--output", out], names=["inf.tif"]),
        Case("segment: 3 x 3 image", [*seg, str(bad / "tiny.tif"), *model, "--output", out + "_t"], expect=0),
        Case("segment: complex pixels", [*seg, str(bad / "complex.tif"), *model, "--output", out], names=["complex"]),
        Case("segment: all-zero image", [*seg, str(bad / "zeros.tif"), *model, "--output", out + "_z"], expect=0),
        Case(
            "segment: mostly empty slide",
            [*seg, str(bad / "slide.tif"), *model, "--output", out + "_s"],
            expect=0,
            warn="mostly empty image",
        ),
        # --- segment: outputs
        Case("segment: output = input folder", [*seg, imgs, *model, "--output", imgs, "--overwrite"], names=["imgs"]),
        Case(
            "segment: output inside input",
            [*seg, imgs, *model, "--output", str(w / "imgs" / "sub"), "--overwrite"],
            names=["imgs"],
        ),
        Case("segment: input inside output", [*seg, imgs, *model, "--output", str(w), "--overwrite"], names=["imgs"]),
        Case(
            "segment: output = input file",
            [*seg, str(w / "image_file.tif"), *model, "--output", str(w / "image_file.tif"), "--overwrite"],
            names=["image_file"],
            guarded=[str(w / "image_file.tif")],
        ),
        Case(
            "segment: earlier result, no --overwrite",
            [*seg, imgs, *model, "--output", str(w / "earlier")],
            names=["a_labels.tif"],
            guarded=[str(w / "earlier")],
        ),
        Case(
            "segment: output is a file",
            [*seg, imgs, *model, "--output", str(w / "masks" / "a.tif")],
            names=["a.tif"],
        ),
        Case(
            "segment: output below a file",
            [*seg, imgs, *model, "--output", str(w / "masks" / "a.tif" / "o")],
            names=["a.tif"],
        ),
        # --- segment: model
        Case(
            "segment: missing --checkpoint",
            [*seg, imgs, *bundle, "--checkpoint", str(w / "no" / "model.pt"), "--output", out],
            names=["model.pt"],
        ),
        Case(
            "segment: --checkpoint a text file",
            [*seg, imgs, *bundle, "--checkpoint", str(w / "ckpts" / "text.pt"), "--output", out],
            names=["text.pt"],
        ),
        Case(
            "segment: --checkpoint of a 3D network",
            [*seg, imgs, *bundle, "--checkpoint", str(w / "ckpts" / "net3d.pt"), "--output", out],
            names=["net3d.pt"],
        ),
        Case(
            "segment: --checkpoint without weights",
            [*seg, imgs, *bundle, "--checkpoint", str(w / "ckpts" / "nodict.pt"), "--output", out],
            names=["nodict.pt"],
        ),
        Case(
            "segment: thresholds.json with a bad value",
            [*seg, imgs, *bundle, "--checkpoint", str(w / "bad_thresholds" / "model.pt"), "--output", out],
            names=["thresholds.json", "exclude_border"],
        ),
        Case("segment: unknown --model", [*seg, imgs, "--model", "nuclei-9d", "--output", out], names=["nuclei-9d"]),
        Case(
            "segment: corrupt package",
            [*seg, imgs, "--model", str(w / "broken.zip"), "--output", out],
            names=["broken"],
        ),
        Case("segment: missing --bundle", [*seg, imgs, "--bundle", str(w / "nob"), "--output", out], names=["nob"]),
        Case(
            "segment: --bundle without configs",
            [*seg, imgs, "--bundle", str(w / "empty"), "--output", out],
            names=["empty"],
        ),
        Case("segment: untrained bundle", [*seg, imgs, "--bundle", "usiigaci", "--output", out], names=["usiigaci"]),
        # --- segment: options
        Case("segment: --device gpu0", [*seg, imgs, *model, "--device", "gpu0", "--output", out], names=["gpu0"]),
        Case("segment: --device cuda:7", [*seg, imgs, *model, "--device", "cuda:7", "--output", out], names=["cuda"]),
        Case("segment: --tile 0 0", [*seg, imgs, *model, "--tile", "0", "0", "--output", out], names=["0"]),
        Case(
            "segment: --tile of 3 values",
            [*seg, imgs, *model, "--tile", "64", "64", "64", "--output", out],
            names=["--tile"],
        ),
        Case(
            "segment: --spacing of 3 values",
            [*seg, imgs, *model, "--spacing", "1", "2", "3", "--output", out],
            names=["--spacing"],
        ),
        Case("segment: --spacing 0", [*seg, imgs, *model, "--spacing", "0", "1", "--output", out], names=["spacing"]),
        Case("segment: --spacing -1", [*seg, imgs, *model, "--spacing", "-1", "1", "--output", out], names=["spacing"]),
        Case("segment: --precision fp8", [*seg, imgs, *model, "--precision", "fp8", "--output", out], names=["fp8"]),
        Case("segment: --threads 0", [*seg, imgs, *model, "--threads", "0", "--output", out], names=["threads"]),
        Case("segment: no --output", [*seg, imgs, *model], names=["--output"]),
        # --- block-wise
        Case(
            "block-wise: output = input store, --overwrite",
            [*seg, str(w / "c.zarr"), *model, "--output", str(w / "c.zarr"), "--block-size", "64", "64", "--overwrite"],
            names=["c.zarr"],
            guarded=[str(w / "c.zarr")],
        ),
        Case(
            "block-wise: output = input's container",
            [
                *seg,
                str(w / "container.zarr" / "raw"),
                *model,
                "--output",
                str(w / "container.zarr"),
                "--block-size",
                "64",
                "64",
                "--overwrite",
            ],
            names=["container.zarr"],
            guarded=[str(w / "container.zarr")],
        ),
        Case(
            "block-wise: symlinked output, --overwrite",
            [
                *seg,
                imgs + "/a.tif",
                *model,
                "--output",
                str(w / "link.zarr"),
                "--block-size",
                "256",
                "256",
                "--overwrite",
            ],
            names=["link.zarr"],
            guarded=[str(w / "c.zarr"), str(w / "link.zarr")],
        ),
        Case(
            "block-wise: output not .zarr",
            [*seg, str(w / "c.zarr"), *model, "--output", out + ".tif", "--block-size", "64", "64"],
            names=[".zarr"],
        ),
        Case(
            "block-wise: missing store",
            [*seg, str(w / "none.zarr"), *model, "--output", str(w / "o.zarr")],
            names=["none.zarr"],
        ),
        Case(
            "block-wise: not a store",
            [*seg, str(w / "fake.zarr"), *model, "--output", str(w / "o.zarr")],
            names=["fake.zarr"],
        ),
        Case(
            "block-wise: --block-size of 3 values",
            [*seg, str(w / "c.zarr"), *model, "--output", str(w / "o.zarr"), "--block-size", "8", "8", "8"],
            names=["--block-size"],
        ),
        Case(
            "block-wise: --memory-limit lots",
            [*seg, str(w / "c.zarr"), *model, "--output", str(w / "o.zarr"), "--memory-limit", "lots"],
            names=["lots"],
        ),
        Case(
            "block-wise: --memory-limit 1KB",
            [*seg, str(w / "c.zarr"), *model, "--output", str(w / "o.zarr"), "--memory-limit", "1KB"],
            names=["memory"],
        ),
        # --- evaluate
        Case("evaluate: missing predictions", [*ev, str(w / "nop"), str(w / "masks")], names=["nop"]),
        Case("evaluate: missing masks", [*ev, str(w / "preds"), str(w / "nom")], names=["nom"]),
        Case("evaluate: fractional masks", [*ev, str(w / "preds"), str(w / "masks_float")], names=["masks_float"]),
        Case("evaluate: negative masks", [*ev, str(w / "preds"), str(w / "masks_negative")], names=["masks_negative"]),
        Case(
            "evaluate: masks of another shape", [*ev, str(w / "preds"), str(w / "masks_shape")], names=["masks_shape"]
        ),
        Case("evaluate: NaN masks", [*ev, str(w / "preds"), str(w / "masks_nanmask")], names=["masks_nanmask"]),
        Case("evaluate: corrupt mask", [*ev, str(w / "preds"), str(w / "masks_corrupt")], names=["masks_corrupt"]),
        Case("evaluate: no matching names", [*ev, str(w / "imgs"), str(w / "masks")], names=["_labels"]),
        Case(
            "evaluate: --output = masks folder",
            [*ev, str(w / "preds"), str(w / "masks"), "--output", str(w / "masks"), "--overwrite"],
            names=["masks"],
        ),
        # --- train
        Case(
            "train: --epochs 0",
            [*tr[:-1], "0", "--dataset_dir", str(w / "data"), "--output_dir", str(w / "r0")],
            names=["epochs"],
        ),
        Case(
            "train: --max_minutes 0",
            [*tr, "--max_minutes", "0", "--dataset_dir", str(w / "data"), "--output_dir", str(w / "r0")],
            names=["max_minutes"],
        ),
        Case(
            "train: missing data",
            [
                "-m",
                "monai_embedseg",
                "train",
                "dsb2018",
                "--dataset_dir",
                str(w / "no_train_data"),
                "--output_dir",
                out,
            ],  # noqa: E501
            names=["no_train_data"],
        ),
        *[
            Case(
                f"train: {what}",
                [*tr, "--dataset_dir", str(w / f"data_{v}"), "--output_dir", str(w / f"r_{v}")],
                names=[hint],
                guarded=[str(w / f"data_{v}")],
            )
            for v, what, hint in [
                ("nomasks", "images without masks", "masks"),
                ("mismatch", "names that do not match", "data_mismatch"),
                ("oneimage", "one image, no val split", "data_oneimage"),
                ("shape", "masks of another shape", "data_shape"),
                ("floatmask", "fractional masks", "data_floatmask"),
                ("negmask", "negative masks", "data_negmask"),
                ("emptymask", "masks without objects", "data_emptymask"),
            ]
        ],
        Case(
            "train: a trained run's folder",
            [*tr, "--dataset_dir", str(w / "data"), "--output_dir", str(w / "trained_run")],
            names=["trained_run"],
            guarded=[str(w / "trained_run")],
        ),
        Case(
            "train: a trained run's folder, other spacing",
            [
                *tr,
                "--dataset_dir",
                str(w / "data"),
                "--output_dir",
                str(w / "trained_run"),
                "--spacing",
                "[3.0, 1.0]",
            ],
            names=["trained_run"],
            guarded=[str(w / "trained_run")],
        ),
        Case("train: unknown bundle", ["-m", "monai_embedseg", "train", "nosuchbundle"], names=["nosuchbundle"]),
        Case(
            "train: odd override",
            [*tr, "--dataset_dir", str(w / "data"), "--output_dir", str(w / "r2"), "--epochs"],
            names=["--epochs"],
        ),
        Case(
            "bundle run: --epochs 0",
            [
                "-m",
                "monai.bundle",
                "run",
                "training",
                "--config_file",
                "BUNDLE/synthetic_2d/configs/train.json",
                "--epochs",
                "0",
                "--dataset_dir",
                str(w / "data"),
                "--output_dir",
                str(w / "rb"),
            ],
            names=["epochs"],
            bundle_run=True,
            expect=1,
        ),
        Case(
            "bundle run: trained run's folder",
            [
                "-m",
                "monai.bundle",
                "run",
                "training",
                "--config_file",
                "BUNDLE/synthetic_2d/configs/train.json",
                "--dataset_dir",
                str(w / "data"),
                "--output_dir",
                str(w / "trained_run"),
                "--spacing",
                "[3.0, 1.0]",
            ],
            names=["trained_run"],
            guarded=[str(w / "trained_run")],
            bundle_run=True,
            expect=1,
        ),
        # --- properties / download / export
        Case("properties: missing folder", ["-m", "monai_embedseg", "properties", str(w / "nodata")], names=["nodata"]),
        Case(
            "properties: fractional masks",
            ["-m", "monai_embedseg", "properties", str(w / "data_floatmask")],
            names=["floatmask"],
        ),
        Case(
            "properties: --output = one of its masks",
            [
                "-m",
                "monai_embedseg",
                "properties",
                str(w / "data"),
                "--output",
                str(w / "data" / "train" / "masks" / "nuclei_2d_0.tif"),
                "--overwrite",
            ],
            names=["nuclei_2d_0.tif"],
            guarded=[str(w / "data")],
        ),
        Case(
            "download: unknown name",
            ["-m", "monai_embedseg", "download", "nosuchset", str(w / "dl")],
            names=["nosuchset"],
        ),
        Case(
            "export: output = an image",
            [
                "-m",
                "monai_embedseg",
                "export",
                "--model",
                "nuclei-2d",
                "--output",
                str(w / "image_file.tif"),
                "--overwrite",
            ],
            names=["image_file.tif"],
            guarded=[str(w / "image_file.tif")],
        ),
        Case(
            "export: --checkpoint of a 3D network",
            [
                "-m",
                "monai_embedseg",
                "export",
                "--bundle",
                "dsb2018",
                "--checkpoint",
                str(w / "ckpts" / "net3d.pt"),
                "--output",
                str(w / "m.zip"),
            ],
            names=["net3d.pt"],
        ),
    ]
    for case in c:
        case.guarded = [*guard, *case.guarded]
    return c


def _bundle_paths(argv: list[str]) -> list[str]:
    from monai_embedseg.bundle.paths import bundle_path

    root = str(Path(bundle_path("synthetic_2d")).parent)
    out = []
    for a in argv:
        a = a.replace("BUNDLE", root)
        out.append(str(bundle_path(a)) if a in ("dsb2018", "usiigaci", "synthetic_2d") else a)
    return out


def run_case(case: Case, timeout: int) -> dict:
    """Run one case; returns its table row."""
    before = {}
    for g in case.guarded:
        before.update(_digest(Path(g)))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [PY, *_bundle_paths(case.argv)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        code, text = None, "timed out"
    seconds = time.perf_counter() - t0
    after = {}
    for g in case.guarded:
        after.update(_digest(Path(g)))
    lost = sorted(k for k in before if after.get(k) != before[k])
    lines = [ln for ln in text.splitlines() if ln.strip()]
    traceback = "Traceback (most recent call last)" in text
    errors = [ln for ln in lines if "error:" in ln.lower() or ln.startswith("ERROR")]
    last = lines[-1] if lines else ""
    if case.bundle_run:  # MONAI prints its traceback; ours must be its last line
        message = last
        clean = code == case.expect and bool(lines) and not last.startswith(("RuntimeError", "KeyError", "TypeError"))
    elif case.expect == 0:
        message = next((ln for ln in lines if case.warn and case.warn in ln), "")
        clean = code == 0 and not traceback and (case.warn is None or bool(message))
    else:
        message = errors[-1] if errors else last
        clean = code == case.expect and not traceback and len(errors) == 1
    named = all(n.lower() in message.lower() for n in case.names)
    ok = clean and named and not lost
    return {
        "case": case.name,
        "exit": code,
        "traceback": traceback and not case.bundle_run,
        "one line": clean,
        "names it": named,
        "lost": len(lost),
        "ok": ok,
        "seconds": round(seconds, 1),
        "message": message.strip()[:150],
        "lost_files": lost[:3],
    }


def main(argv: list[str] | None = None) -> int:
    """Build the inputs, run the cases, print the table; 1 if any case fails."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", default=None, help="run the cases whose name matches one of these globs")
    p.add_argument("--workdir", default=None, help="keep the inputs and outputs here (default: a temporary folder)")
    p.add_argument("--jobs", type=int, default=2, help="cases at a time")
    p.add_argument("--timeout", type=int, default=300, help="seconds per case")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bad_inputs_")
    w = Path(args.workdir or tmp.name).resolve()
    w.mkdir(parents=True, exist_ok=True)
    if not (w / "imgs").exists():
        _make_inputs(w)
    cases = [c for c in _cases(w) if args.only is None or any(fnmatch.fnmatch(c.name, g) for g in args.only)]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: run_case(c, args.timeout), cases))
    print("| case | exit | traceback | one line | names it | lost | s | message |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        flags = ["yes" if r[k] else "no" for k in ("traceback", "one line", "names it")]
        msg = re.sub(r"\s+", " ", r["message"]).replace("|", "/")
        print(f"| {r['case']} | {r['exit']} | {' | '.join(flags)} | {r['lost']} | {r['seconds']} | {msg} |")
    failed = [r for r in rows if not r["ok"]]
    tracebacks = sum(r["traceback"] for r in rows)
    lost = sum(r["lost"] > 0 for r in rows)
    print(
        f"\n{len(rows)} cases: {len(rows) - len(failed)} handled cleanly, {len(failed)} not; "
        f"{tracebacks} traceback(s), {lost} case(s) that changed an input or an earlier output."
    )
    for r in failed:
        print(f"  not clean: {r['case']}: {r['message']} {r['lost_files'] or ''}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
