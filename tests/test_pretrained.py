"""The registry of pretrained models: checksums, the shipped nuclei model, ``segment --model NAME``, a shipped bundle
without weights falling back to its model, and training's ``pretrained`` starting point."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser

from monai_embedseg.bundle.paths import bundle_path, trained_model_files
from monai_embedseg.cli import main
from monai_embedseg.data.io import read_tiff
from monai_embedseg.data.synthetic import synthetic_nuclei_2d
from monai_embedseg.networks.nets import BranchedERFNet
from monai_embedseg.pretrained import (
    MODELS,
    PretrainedModel,
    default_model_for,
    init_weights,
    model_folder,
    registry,
    sha256_of,
)
from monai_embedseg.pretrained.publish import publish


def _run_folder(tmp_path):
    torch.manual_seed(1)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": BranchedERFNet(2, 1).state_dict()}, run / "model.pt")
    (run / "dataset_properties.json").write_text(json.dumps({"min_object_size": 5, "crop_size": [32, 32]}))
    (run / "thresholds.json").write_text(json.dumps({"seed_thresh": 0.8, "fg_thresh": 0.4, "min_object_size": 5}))
    return run


def test_shipped_model_matches_its_checksum_and_fits_its_bundle():
    entry = MODELS["nuclei-2d"]
    folder = model_folder("nuclei-2d")
    assert {"model.pt", "dataset_properties.json", "thresholds.json", "MODEL_CARD.md"} <= {
        p.name for p in folder.iterdir()
    }
    assert sha256_of(folder / "model.pt") == entry.sha256
    assert (folder / "model.pt").stat().st_size <= 10 * 2**20
    assert default_model_for(bundle_path("dsb2018")) is entry and default_model_for(bundle_path("synthetic_2d")) is None
    net = init_weights(BranchedERFNet(2, 1), "nuclei-2d")  # load_weights' checks: the file fits the bundle's network
    state = torch.load(folder / "model.pt", weights_only=True)
    key = next(iter(state))
    torch.testing.assert_close(net.state_dict()[key], state[key].float())


def test_unknown_corrupt_and_downloaded_models(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no pretrained model named 'nope'.*nuclei-2d"):
        model_folder("nope")
    sha = publish(_run_folder(tmp_path), tmp_path / "local", half=True)
    state = torch.load(tmp_path / "local" / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    monkeypatch.setitem(MODELS, "local", PretrainedModel("local", "synthetic_2d", sha, str(tmp_path / "local")))
    assert model_folder("local") == tmp_path / "local"
    monkeypatch.setitem(MODELS, "bad", PretrainedModel("bad", "synthetic_2d", "0" * 64, str(tmp_path / "local")))
    with pytest.raises(ValueError, match="SHA-256"):
        model_folder("bad")

    archive = tmp_path / "hosted.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (tmp_path / "local").iterdir():
            z.write(f, f.name)
    calls = []

    def fake_download(url, filepath, output_dir, **kwargs):  # stands in for the network: unpacks the local zip
        calls.append(url)
        with zipfile.ZipFile(archive) as z:
            z.extractall(output_dir)

    monkeypatch.setattr("monai.apps.download_and_extract", fake_download)
    monkeypatch.setattr(registry, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setitem(MODELS, "hosted", PretrainedModel("hosted", "synthetic_2d", sha, "https://example.org/m.zip"))
    folder = model_folder("hosted")
    assert folder == tmp_path / "cache" / "hosted" and sha256_of(folder / "model.pt") == sha
    model_folder("hosted")
    assert calls == ["https://example.org/m.zip"]  # cached: downloaded once


def test_init_weights_for_training(tmp_path):
    run = _run_folder(tmp_path)
    net = BranchedERFNet(2, 1)
    assert init_weights(net, None) is net
    loaded = init_weights(BranchedERFNet(2, 1), run / "model.pt")
    saved = torch.load(run / "model.pt", weights_only=True)["model"]
    torch.testing.assert_close(loaded.state_dict()["encoder.0.conv.weight"], saved["encoder.0.conv.weight"])
    with pytest.raises(ValueError, match="neither a checkpoint file nor a pretrained model"):
        init_weights(net, "nothing-here")
    parser = ConfigParser()  # the bundles' training network: --pretrained nuclei-2d starts from the shipped model
    parser.read_config(f"{bundle_path('dsb2018')}/configs/train.json")
    parser.update({"pretrained": "nuclei-2d", "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network")
    shipped = torch.load(model_folder("nuclei-2d") / "model.pt", weights_only=True)
    torch.testing.assert_close(network.state_dict()["encoder.0.conv.weight"], shipped["encoder.0.conv.weight"].float())


def test_segment_with_the_pretrained_model_by_name_and_by_bundle(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    image, _ = synthetic_nuclei_2d((96, 96), n_objects=6, radius=(6, 9), seed=4)
    tifffile.imwrite(images / "n.tif", (image * 255).astype(np.uint8))
    base = ["segment", str(images), "--no-tta", "--precision", "float32", "--output"]
    assert main([*base, str(tmp_path / "by_name"), "--model", "nuclei-2d"]) == 0
    assert main([*base, str(tmp_path / "by_bundle"), "--bundle", bundle_path("dsb2018")]) == 0
    assert "using the pretrained model 'nuclei-2d'" in capsys.readouterr().err
    a = read_tiff(str(tmp_path / "by_name" / "n_labels.tif"))
    b = read_tiff(str(tmp_path / "by_bundle" / "n_labels.tif"))
    assert a.max() > 0 and np.array_equal(a, b)
    assert main([*base, str(tmp_path / "x"), "--model", "nuclei-2d", "--checkpoint", "m.pt"]) == 2
    assert main([*base, str(tmp_path / "x"), "--model", "no-such-model"]) == 2
    resolved = trained_model_files(model="nuclei-2d")
    assert resolved.bundle.name == "dsb2018" and not resolved.exported
