"""Exporting a trained bundle network: TorchScript through MONAI's ``ckpt_export``, used by ``segment --model``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from monai_embedseg.bundle.paths import bundle_path
from monai_embedseg.cli import main
from monai_embedseg.data.io import read_tiff
from monai_embedseg.data.synthetic import write_synthetic_dataset
from monai_embedseg.networks.nets import BranchedERFNet


def test_ckpt_export_is_exact_on_an_odd_size_and_segment_runs_it(tmp_path):
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1, init_offset_scale=None, init_sigma_bias=None).eval()
    models = tmp_path / "models"
    models.mkdir()
    torch.save(net.state_dict(), models / "model.pt")
    (models / "dataset_properties.json").write_text(json.dumps({"min_object_size": 5, "crop_size": [32, 32]}))
    configs = f"{bundle_path('dsb2018')}/configs"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(models / "m.ts"),
        "--ckpt_file",
        str(models / "model.pt"),
        "--meta_file",
        f"{configs}/metadata.json",
        "--config_file",
        f"{configs}/inference.json",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    exported = torch.jit.load(str(models / "m.ts"))
    x = torch.rand(1, 1, 97, 131)  # not a multiple of the encoder's 8: the exported module pads inside
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net(x), atol=1e-4, rtol=1e-4)

    data = tmp_path / "data"
    write_synthetic_dataset(
        str(data), "nuclei_2d", n_train=1, n_test=1, seed=2, shape=(45, 61), n_objects=(3, 4), radius=(4, 6)
    )
    base = [
        "segment",
        str(data / "test" / "images"),
        "--bundle",
        bundle_path("dsb2018"),
        "--no-tta",
        "--precision",
        "float32",
    ]
    assert main([*base, "--output", str(tmp_path / "a"), "--checkpoint", str(models / "model.pt")]) == 0
    assert main([*base, "--output", str(tmp_path / "b"), "--model", str(models / "m.ts")]) == 0
    a, b = (sorted((tmp_path / d).glob("*_labels.tif")) for d in "ab")
    assert len(a) == len(b) == 1 and np.array_equal(read_tiff(str(a[0])), read_tiff(str(b[0])))
    (tmp_path / "fake.ts").write_bytes(b"nope")
    assert (
        main(
            [
                *base,
                "--output",
                str(tmp_path / "c"),
                "--model",
                str(tmp_path / "fake.ts"),
                "--properties",
                str(models / "dataset_properties.json"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize("spatial_dims, shape", [(2, (97, 131)), (3, (11, 29, 37))])
def test_onnx_export_equals_pytorch_on_odd_sizes(spatial_dims, shape, tmp_path):
    from monai_embedseg.networks.nets import OnnxNetwork, export_onnx

    torch.manual_seed(0)
    net = BranchedERFNet(spatial_dims, 1, init_offset_scale=None, init_sigma_bias=None).eval()
    path = export_onnx(net, str(tmp_path / "m.onnx"), spatial_dims, 1)
    with pytest.raises(FileExistsError):
        export_onnx(net, path, spatial_dims, 1)
    runner = OnnxNetwork(path)
    for size in (shape, tuple(s + 3 for s in shape), tuple(8 * (s // 8) for s in shape)):  # any size, padded or not
        x = torch.rand(1, 1, *size)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), net(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        (tmp_path / "bad.onnx").write_bytes(b"nope")
        OnnxNetwork(str(tmp_path / "bad.onnx"))


def test_segmenter_runs_an_onnx_network_as_segment_does(tmp_path):
    """The interactive Segmenter and ``segment --model m.onnx`` run an exported network the same way (float32)."""
    from monai_embedseg.networks.nets import export_onnx
    from monai_embedseg.segmenter import Segmenter

    torch.manual_seed(0)
    net = BranchedERFNet(2, 1, init_offset_scale=None, init_sigma_bias=None).eval()
    with torch.no_grad():
        net.decoders[1][-1].bias.fill_(2.0)  # seeds around 0.9: objects start
    models = tmp_path / "models"
    models.mkdir()
    export_onnx(net, str(models / "m.onnx"), 2, 1)
    (models / "dataset_properties.json").write_text(json.dumps({"min_object_size": 4, "crop_size": [32, 32]}))
    (models / "thresholds.json").write_text(json.dumps({"seed_thresh": 0.85, "fg_thresh": 0.5, "min_object_size": 4}))
    data = tmp_path / "data"
    write_synthetic_dataset(
        str(data), "nuclei_2d", n_train=1, n_test=1, seed=2, shape=(48, 64), n_objects=(3, 4), radius=(4, 6)
    )
    image_file = sorted((data / "test" / "images").iterdir())[0]
    cli = ["segment", str(image_file), "--bundle", bundle_path("dsb2018"), "--model", str(models / "m.onnx")]
    assert main([*cli, "--no-tta", "--precision", "bfloat16", "--output", str(tmp_path / "o")]) == 0
    expected = read_tiff(str(next((tmp_path / "o").glob("*_labels.tif"))))
    segmenter = Segmenter(model=str(models / "m.onnx"), bundle=bundle_path("dsb2018"), tta=False, precision="bfloat16")
    labels = segmenter(read_tiff(str(image_file)))
    assert expected.max() > 0 and np.array_equal(labels, expected)
