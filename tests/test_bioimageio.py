"""bioimage.io model packages: export, offline validation (``bioimageio.core.test_model``) without this package,
and ``segment --model package.zip`` giving the labels of ``segment --checkpoint``, in 2D and 3D."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from monai_embedseg.bundle.paths import bundle_path
from monai_embedseg.cli import main
from monai_embedseg.data.io import read_tiff
from monai_embedseg.data.synthetic import synthetic_cells_3d, synthetic_nuclei_2d
from monai_embedseg.networks.nets import BranchedERFNet
from monai_embedseg.pretrained import registry
from monai_embedseg.pretrained.bioimageio import architecture_source, channel_names, unpack_package

# bioimageio.core.test_model in a Python that cannot import monai_embedseg: the package must stand on its own
_TEST_WITHOUT_US = """
import sys
sys.modules["monai_embedseg"] = None  # any import of it now fails
from bioimageio.core import test_model
for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
    summary = test_model(sys.argv[1], weight_format=fmt)
    print(fmt, summary.status)
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "CACHE_DIR", tmp_path / "cache" / "models")


def _trained_folder(tmp_path, spatial_dims: int):
    """A fixed-seed network with seeds that start objects, saved like a training run's output folder."""
    torch.manual_seed(3)
    net = BranchedERFNet(spatial_dims, 1, init_offset_scale=None, init_sigma_bias=None).eval()
    with torch.no_grad():
        net.decoders[1][-1].bias.fill_(2.0)  # seed logits around 2: probabilities around 0.9
    out = tmp_path / f"run{spatial_dims}d"
    out.mkdir()
    torch.save({"model": net.state_dict()}, out / "model.pt")
    (out / "dataset_properties.json").write_text(
        json.dumps({"min_object_size": 4, "crop_size": [16] * spatial_dims, "spacing": [1.0] * spatial_dims})
    )
    (out / "thresholds.json").write_text(json.dumps({"seed_thresh": 0.85, "fg_thresh": 0.5, "min_object_size": 4}))
    return out


def test_architecture_file_needs_only_torch_and_monai(tmp_path):
    (tmp_path / "arch.py").write_text(architecture_source())
    code = (
        "import sys, runpy; sys.modules['monai_embedseg'] = None; "
        f"ns = runpy.run_path({str(tmp_path / 'arch.py')!r}); "
        "net = ns['BranchedERFNet'](spatial_dims=3, in_channels=2, out_channels=[6, 1]); "
        "print(sum(p.numel() for p in net.parameters()))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    ours = BranchedERFNet(3, 2, out_channels=[6, 1])
    assert int(result.stdout.split()[-1]) == sum(p.numel() for p in ours.parameters())


def test_channel_names():
    assert channel_names(2, 5) == ["offset_y", "offset_x", "sigma_y", "sigma_x", "seed"]
    assert channel_names(3, 5) == ["offset_z", "offset_y", "offset_x", "sigma", "seed"]


@pytest.mark.parametrize(
    "spatial_dims, bundle, shape",
    [(2, "synthetic_2d", (72, 64)), (3, "synthetic_3d", (16, 40, 48))],
)
def test_export_validates_offline_and_segments_like_the_checkpoint(tmp_path, spatial_dims, bundle, shape):
    run = _trained_folder(tmp_path, spatial_dims)
    if spatial_dims == 2:
        image = synthetic_nuclei_2d(shape, n_objects=5, radius=(5, 8), seed=1)[0]
    else:
        image = synthetic_cells_3d(shape, n_objects=4, radius=(5, 7), seed=1)[0]
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", (image * 200).astype(np.uint16))
    package = tmp_path / "model.zip"
    export = ["export", "--bundle", bundle_path(bundle), "--checkpoint", str(run / "model.pt"), "--output"]
    assert main([*export, str(package), "--image", str(images / "a.tif")]) == 0
    assert main([*export, str(package)]) == 2  # exists: refused without --overwrite

    result = subprocess.run(
        [sys.executable, "-c", _TEST_WITHOUT_US, str(package)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        "pytorch_state_dict",
        "passed",
        "torchscript",
        "passed",
        "onnx",
        "passed",
    ], result.stdout + result.stderr[-3000:]

    with zipfile.ZipFile(package) as z:
        import yaml

        rdf = yaml.safe_load(z.read("rdf.yaml"))
    config = rdf["config"]["monai_embedseg"]
    assert config["bundle"] == bundle and config["thresholds"]["seed_thresh"] == 0.85
    axes = rdf["outputs"][0]["axes"]
    assert axes[1]["channel_names"][-1] == "seed" and all(a["halo"] >= 1 for a in axes[2:])
    assert rdf["inputs"][0]["preprocessing"][1]["kwargs"]["max_percentile"] == 99.8

    base = ["segment", str(images), "--no-tta", "--precision", "float32"]
    ckpt = [*base, "--bundle", bundle_path(bundle), "--checkpoint", str(run / "model.pt"), "--output"]
    assert main([*ckpt, str(tmp_path / "by_ckpt")]) == 0
    assert main([*base, "--model", str(package), "--output", str(tmp_path / "by_zip")]) == 0
    a = read_tiff(str(tmp_path / "by_ckpt" / "a_labels.tif"))
    b = read_tiff(str(tmp_path / "by_zip" / "a_labels.tif"))
    assert a.max() > 0 and np.array_equal(a, b)


def test_unpack_refuses_what_is_not_ours(tmp_path):
    (tmp_path / "plain.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip"):
        unpack_package(tmp_path / "plain.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("rdf.yaml", "type: model\nformat_version: 0.5.4\nconfig: {}\n")
    with pytest.raises(ValueError, match="not exported by monai_embedseg"):
        unpack_package(tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as z:
        z.writestr("x.txt", "x")
    assert (
        main(["segment", str(tmp_path), "--model", str(tmp_path / "empty.zip"), "--output", str(tmp_path / "o")]) == 2
    )
