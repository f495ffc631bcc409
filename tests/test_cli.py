"""The ``monai-embedseg`` command line: segment, evaluate, properties, and its errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import monai_embedseg
from monai_embedseg.bundle.paths import bundle_path
from monai_embedseg.cli import main
from monai_embedseg.data.io import read_tiff
from monai_embedseg.data.synthetic import write_synthetic_dataset
from monai_embedseg.networks.nets import BranchedERFNet


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(
        str(root), "nuclei_2d", n_train=2, n_test=2, seed=5, shape=(40, 48), n_objects=(3, 4), radius=(4, 6)
    )
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    torch.save(BranchedERFNet(2, 1).state_dict(), folder / "model.pt")
    (folder / "dataset_properties.json").write_text(json.dumps({"min_object_size": 5, "crop_size": [32, 32]}))
    return folder


def test_segment_writes_labels_and_refuses_to_overwrite(dataset, model, tmp_path, capsys):
    out = tmp_path / "pred"
    args = [
        "segment",
        str(dataset / "test" / "images"),
        "--bundle",
        bundle_path("synthetic_2d"),
        "--output",
        str(out),
        "--checkpoint",
        str(model / "model.pt"),
        "--no-tta",
        "--tile",
        "32",
        "32",
    ]
    assert main(args) == 0
    written = sorted(out.glob("*_labels.tif"))
    assert [p.name for p in written] == ["nuclei_2d_000_labels.tif", "nuclei_2d_001_labels.tif"]
    for path in written:
        labels = read_tiff(str(path))
        assert labels.shape == (40, 48) and labels.dtype == np.uint16
    before = written[0].stat().st_mtime_ns
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert written[0].stat().st_mtime_ns == before
    assert main([*args, "--overwrite"]) == 0
    # labels written into the image folder would be read as images next time: refused, whatever the flags
    images = dataset / "test" / "images"
    listing = sorted(p.name for p in images.iterdir())
    assert main([*args[:5], str(images), *args[6:], "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err and sorted(p.name for p in images.iterdir()) == listing


def test_segment_rejects_a_checkpoint_of_another_network(dataset, tmp_path, capsys):
    torch.save(BranchedERFNet(3, 1).state_dict(), tmp_path / "model3d.pt")
    (tmp_path / "dataset_properties.json").write_text(json.dumps({"min_object_size": 5}))
    code = main(
        [
            "segment",
            str(dataset / "test" / "images" / "nuclei_2d_000.tif"),
            "--bundle",
            bundle_path("synthetic_2d"),
            "--output",
            str(tmp_path / "o"),
            "--checkpoint",
            str(tmp_path / "model3d.pt"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not a checkpoint of this BranchedERFNet" in err and "model3d.pt" in err


def test_segment_errors_name_the_problem(dataset, model, tmp_path, capsys):
    base = [
        "--bundle",
        bundle_path("synthetic_2d"),
        "--output",
        str(tmp_path / "o"),
        "--checkpoint",
        str(model / "model.pt"),
    ]
    assert main(["segment", str(tmp_path / "missing.tif"), *base]) == 2
    assert "missing.tif does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert main(["segment", str(tmp_path / "notes.txt"), *base]) == 2
    assert "not a TIFF or NIfTI" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    assert main(["segment", str(corrupt), *base]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "corrupt.tif" in err


def test_evaluate_prints_the_ap_table_and_writes_csv(dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for mask in (dataset / "test" / "masks").glob("*.tif"):
        (pred / f"{mask.stem}_labels.tif").write_bytes(mask.read_bytes())  # a perfect prediction
    assert main(["evaluate", str(pred), str(dataset / "test" / "masks"), "--output", str(tmp_path / "rep")]) == 0
    table = capsys.readouterr().out
    assert " 0.50         1.0000           1.0000" in table and " 0.90         1.0000" in table
    assert (tmp_path / "rep" / "ap_summary.csv").is_file() and (tmp_path / "rep" / "ap_per_image.csv").is_file()
    n = len(list((dataset / "test" / "masks").glob("*.tif")))
    assert f"scored {n} image(s) with a prediction and a mask; 0 mask(s) without a prediction" in table
    assert main(["evaluate", str(tmp_path / "empty"), str(dataset / "test" / "masks")]) == 2
    # earlier tables are kept unless --overwrite
    before = (tmp_path / "rep" / "ap_summary.csv").read_bytes()
    sorted(pred.iterdir())[0].unlink()  # one prediction missing: scored on the others, and said so
    assert main(["evaluate", str(pred), str(dataset / "test" / "masks"), "--output", str(tmp_path / "rep")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "rep" / "ap_summary.csv").read_bytes() == before
    assert (
        main(["evaluate", str(pred), str(dataset / "test" / "masks"), "--output", str(tmp_path / "rep"), "--overwrite"])
        == 0
    )
    assert (
        f"scored {n - 1} image(s) with a prediction and a mask; 1 mask(s) without a prediction"
        in capsys.readouterr().out
    )


def test_a_bundle_not_shipped_with_the_package_gets_a_trust_notice_once(dataset, model, tmp_path, capsys):
    import shutil

    copy = tmp_path / "my_bundle"
    shutil.copytree(bundle_path("synthetic_2d"), copy, ignore=shutil.ignore_patterns("models", "data"))
    args = ["--output", str(tmp_path / "o"), "--checkpoint", str(model / "model.pt"), "--no-tta", "--overwrite"]
    images = str(dataset / "test" / "images")
    assert main(["segment", images, "--bundle", bundle_path("synthetic_2d"), *args]) == 0
    assert "run as Python code" not in capsys.readouterr().err  # a shipped bundle: ours
    assert main(["segment", images, "--bundle", str(copy), *args]) == 0
    assert main(["segment", images, "--bundle", str(copy), *args]) == 0
    err = capsys.readouterr().err
    assert err.count("run as Python code") == 1 and str(copy) in err


def test_evaluate_names_the_file_of_fractional_or_misshapen_masks(tmp_path, capsys):
    import tifffile

    lab = np.zeros((32, 32), np.uint16)
    lab[4:12, 4:12] = 1
    for name, mask in {"frac": lab.astype(np.float32) + 0.5, "shape": lab[:16]}.items():
        (tmp_path / name / "pred").mkdir(parents=True)
        (tmp_path / name / "masks").mkdir()
        tifffile.imwrite(tmp_path / name / "pred" / "a_labels.tif", lab)
        tifffile.imwrite(tmp_path / name / "masks" / "a.tif", mask)
    assert main(["evaluate", str(tmp_path / "frac" / "pred"), str(tmp_path / "frac" / "masks")]) == 2
    err = capsys.readouterr().err
    assert "integer-valued" in err and str(tmp_path / "frac" / "masks" / "a.tif") in err and "unknown" not in err
    assert main(["evaluate", str(tmp_path / "shape" / "pred"), str(tmp_path / "shape" / "masks")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "shape" / "masks" / "a.tif") in err and "(16, 32)" in err and err.count("\n") == 1


def test_properties_command_and_module_entry_point(dataset):
    result = subprocess.run(
        [sys.executable, "-m", "monai_embedseg", "properties", str(dataset)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    props = json.loads(result.stdout[result.stdout.index("{") :])
    assert props["spatial_dims"] == 2 and props["min_object_size"] > 0 and len(props["crop_size"]) == 2


def test_segment_one_line_errors_for_a_newcomers_mistakes(dataset, model, tmp_path, capsys):
    import tifffile

    base = [
        "--bundle",
        bundle_path("synthetic_2d"),
        "--output",
        str(tmp_path / "o"),
        "--checkpoint",
        str(model / "model.pt"),
    ]
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not an image at all")
    assert main(["segment", str(garbage), *base]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("monai-embedseg segment: error: cannot read image")
    assert "not a TIFF file" in err and "Traceback" not in err and "allow_pickle" not in err
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, np.zeros((5, 40, 48), dtype=np.float32))
    assert main(["segment", str(volume), *base]) == 2
    err = capsys.readouterr().err
    assert "volume.tif" in err and "(5, 40, 48)" in err and "2D images with 1 channel" in err
    untrained = [
        "--bundle",
        bundle_path("synthetic_2d"),
        "--output",
        str(tmp_path / "o"),
        "--checkpoint",
        str(tmp_path / "none" / "model.pt"),
    ]
    assert main(["segment", str(dataset / "test" / "images"), *untrained]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "does not exist" in err and "ships untrained" not in err  # a mistyped path
    assert main(["segment", str(dataset / "test" / "images"), *untrained[:4]]) == 2  # no --checkpoint at all
    err = capsys.readouterr().err
    assert "no trained model" in err and "run training" in err
    with pytest.raises(ValueError, match="does not fit bundle"):  # --debug: the traceback instead of the line
        main(["--debug", "segment", str(volume), *base])
    assert main(["segment", str(dataset / "test" / "images"), *base, "--spacing", "1", "2", "3"]) == 2
    assert "--spacing needs 2 values" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["segment", str(dataset / "test" / "images"), *base, "--device", "cuda"]) == 2
        assert "no usable CUDA device" in capsys.readouterr().err
    nan = tmp_path / "nan_in" / "b.tif"  # one bad image among good ones: named, and nothing written at all
    nan.parent.mkdir()
    for f in (dataset / "test" / "images").glob("*.tif"):
        (nan.parent / f.name).write_bytes(f.read_bytes())
    tifffile.imwrite(nan, np.full((40, 48), np.nan, np.float32))
    assert main(["segment", str(nan.parent), *base[:2], "--output", str(tmp_path / "nan_out"), *base[4:]]) == 2
    err = capsys.readouterr().err
    assert str(nan) in err and "NaN" in err and not (tmp_path / "nan_out").exists()
    with pytest.raises(SystemExit) as info:  # argparse: usage line and exit 2
        main(["segment", str(dataset / "test" / "images"), *base, "--tile", "0", "0"])
    assert info.value.code == 2 and "must be at least 1, got 0" in capsys.readouterr().err
    assert main(["segment", str(dataset / "test" / "images"), *base, "--device", "gpu0"]) == 2
    err = capsys.readouterr().err
    assert "--device gpu0: not a device name" in err and err.count("\n") == 1
    # a file that is not a model beside a real properties file: load_weights' line, not the unpickling traceback
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "model.pt").write_text("hello")
    (bogus / "dataset_properties.json").write_bytes((model / "dataset_properties.json").read_bytes())
    assert main(["segment", str(dataset / "test" / "images"), *base[:4], "--checkpoint", str(bogus / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a PyTorch checkpoint" in err and "model.pt" in err and err.count("\n") == 1


def test_demo_checks_its_arguments_and_a_one_epoch_demo_leaves_a_model(tmp_path, capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["demo", "--device", "cuda"]) == 2
        assert "no usable CUDA device" in capsys.readouterr().err
    args = ["demo", "--epochs", "1", "--output_dir", str(tmp_path / "out"), "--dataset_dir", str(tmp_path / "data")]
    assert main(args) == 0  # validation every 10 epochs, yet the 1-epoch run is validated at its end
    assert (tmp_path / "out" / "model.pt").is_file() and (tmp_path / "out" / "ap_summary.csv").is_file()
    assert main(args) == 0  # the README command run twice: the demo replaces its own earlier run


def test_segment_and_the_bundle_inference_give_identical_labels(dataset, model, tmp_path):
    """One inference path: `segment` runs the bundle's inference.json, so both write the same label images."""
    from monai.bundle import run

    bundle = bundle_path("synthetic_2d")
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1)
    with torch.no_grad():
        net.decoders[1][-1].bias.fill_(4.0)  # seed logits high: an untrained network that does claim objects
    torch.save(net.state_dict(), tmp_path / "model.pt")
    (tmp_path / "dataset_properties.json").write_text((model / "dataset_properties.json").read_text())
    cli_out, bundle_out = tmp_path / "cli", tmp_path / "bundle"
    assert (
        main(
            [
                "segment",
                str(dataset / "test" / "images"),
                "--bundle",
                bundle,
                "--output",
                str(cli_out),
                "--checkpoint",
                str(tmp_path / "model.pt"),
                "--tile",
                "32",
                "32",
            ]
        )
        == 0
    )
    configs = f"{bundle}/configs"
    run(
        "inference",
        config_file=f"{configs}/inference.json",
        meta_file=f"{configs}/metadata.json",
        logging_file=f"{configs}/logging.conf",
        bundle_root=bundle,
        output_dir=str(tmp_path),
        dataset_dir=str(dataset),
        prediction_dir=str(bundle_out),
        roi_size=[32, 32],
    )
    cli_files = sorted(p.name for p in cli_out.glob("*_labels.tif"))
    assert cli_files == sorted(p.name for p in bundle_out.glob("*_labels.tif")) and len(cli_files) == 2
    labels = [(read_tiff(str(cli_out / n)), read_tiff(str(bundle_out / n))) for n in cli_files]
    assert any(a.max() > 0 for a, _ in labels)  # the random network finds objects: the comparison means something
    for a, b in labels:
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_help_and_argument_errors_answer_before_torch_and_monai_load(tmp_path):
    code = (
        "import sys, contextlib, io\n"
        "from monai_embedseg.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"codes = [main(['segment', {str(tmp_path / 'none')!r}, '--model', 'nuclei-2d', '--output', 'o']),\n"
        "         main(['segment', '.', '--model', 'no-such-model', '--output', 'o']),\n"
        "         main(['export', '--output', 'm.zip', '--model', 'no-such-model'])]\n"
        "print(codes, 'torch' in sys.modules, 'monai' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(monai_embedseg.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-5:] == ["[2,", "2,", "2]", "False", "False"], result.stdout + result.stderr


def test_train_command_runs_the_bundle_and_bad_settings_or_data_give_one_line(tmp_path, capsys):
    bundle = bundle_path("synthetic_2d")
    out = tmp_path / "out"
    base = ["train", bundle, "--dataset_dir", str(tmp_path / "data"), "--output_dir", str(out)]
    assert main([*base, "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--epochs must be a whole number of at least 1" in err and err.count("\n") == 1
    assert not (tmp_path / "data").exists() and not out.exists()  # refused before anything is written
    masks_missing = tmp_path / "nomasks"
    (masks_missing / "train" / "images").mkdir(parents=True)
    tifffile.imwrite(masks_missing / "train" / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    assert main(["train", bundle_path("dsb2018"), "--dataset_dir", str(masks_missing), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "masks" in err and err.count("\n") == 1 and not out.exists()
    with pytest.raises(SystemExit):
        main([*base, "--epochs"])  # an override without its value
    tiny = '{"n_train": 3, "n_test": 1, "shape": [64, 64], "seed": 0}'
    args = [*base, "--epochs", "1", "--synthetic_kwargs", tiny, "--roi_size", "[64, 64]", "--num_samples", "2"]
    assert main(args) == 0
    assert (out / "model.pt").is_file() and (out / "dataset_properties.json").is_file()
    assert f"trained: {out}/model.pt" in capsys.readouterr().out


def test_bundle_run_training_ends_its_traceback_with_the_cause(tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file"]
    cmd += [f"{bundle_path('synthetic_2d')}/configs/train.json", "--dataset_dir", str(tmp_path / "d")]
    result = subprocess.run(
        [*cmd, "--output_dir", str(tmp_path / "o"), "--epochs", "0"], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: ValueError: --epochs must be a whole number of at least 1, got 0."
    )
    assert not (tmp_path / "d").exists() and not (tmp_path / "o").exists()


def test_a_read_only_output_folder_is_refused_before_the_model_loads(tmp_path, capsys):
    image = tmp_path / "in" / "a.tif"
    image.parent.mkdir()
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    (tmp_path / "blocked").write_text("a file where the output folder should be")
    assert main(["segment", str(image), "--model", "nuclei-2d", "--output", str(tmp_path / "blocked" / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the output folder" in err and "blocked" in err and err.count("\n") == 1


def test_outputs_never_land_among_the_inputs_and_odd_pixels_or_options_get_one_line(dataset, model, tmp_path, capsys):
    import tifffile

    base = ["--bundle", bundle_path("synthetic_2d"), "--checkpoint", str(model / "model.pt")]
    masks = dataset / "test" / "masks"
    mask = sorted(masks.glob("*.tif"))[0]
    before = mask.read_bytes()
    # properties --output onto one of the dataset's masks, with --overwrite: refused, the mask unchanged
    assert main(["properties", str(dataset), "--output", str(mask), "--overwrite"]) == 2
    assert "lies inside the input" in capsys.readouterr().err and mask.read_bytes() == before
    # evaluate --output into the mask folder: refused before any table is written
    pred = tmp_path / "pred"
    pred.mkdir()
    for m in masks.glob("*.tif"):
        (pred / f"{m.stem}_labels.tif").write_bytes(m.read_bytes())
    assert main(["evaluate", str(pred), str(masks), "--output", str(masks), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err and not list(masks.glob("*.csv"))
    # complex pixels: one line naming the file (they used to be cast to real, dropping the imaginary part)
    odd = tmp_path / "complex.tif"
    tifffile.imwrite(odd, np.ones((40, 48), np.complex64))
    assert main(["segment", str(odd), *base, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "complex.tif" in err and "complex64" in err and err.count("\n") == 1
    # --tile with a value per axis of another dimensionality, and a channel axis the file does not have
    images = str(dataset / "test" / "images")
    assert main(["segment", images, *base, "--tile", "32", "32", "32", "--output", str(tmp_path / "o")]) == 2
    assert "--tile needs 2 values" in capsys.readouterr().err
    assert main(["segment", images, *base, "--channel-dim", "5", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "channel_dim=5 is out of range" in err and str(dataset / "test" / "images") in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_the_channel_hint_is_given_once(dataset, model, tmp_path, capsys):
    import tifffile

    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((40, 48, 3), np.uint8), photometric="rgb")
    base = ["segment", str(rgb), "--bundle", bundle_path("synthetic_2d"), "--checkpoint", str(model / "model.pt")]
    assert main([*base, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "rgb.tif" in err and "1 channel(s) (pass --channel-dim" in err
    assert main([*base, "--channel-dim", "2", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err  # the channel axis was given: the image simply has 3 channels
    assert "rgb.tif" in err and "1 channel(s)." in err and "pass --channel-dim" not in err


def test_training_shows_a_progress_bar_and_one_log_line_per_epoch_and_takes_a_shipped_bundle_name(tmp_path):
    from monai_embedseg.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(str(tmp_path / "data"), "nuclei_2d", n_train=4, n_test=1, seed=1, shape=(64, 64))
    cmd = [sys.executable, "-m", "monai_embedseg", "train", "synthetic_2d", "--epochs", "3", "--roi_size", "[64, 64]"]
    cmd += ["--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (result.stdout + result.stderr).replace("\r", "\n").splitlines()
    assert any(line.startswith("train [3/3]") and "100%" in line for line in lines)  # ignite's ProgressBar
    logged = [line for line in lines if " - INFO - " in line or " - WARNING - " in line]
    per_epoch = [sum(f"Epoch[{e}]" in line for line in logged) for e in (1, 2, 3)]
    assert per_epoch[:2] == [1, 1] and per_epoch[2] <= 3  # the training line; the last epoch adds its validation
    assert (tmp_path / "out" / "model.pt").is_file()
