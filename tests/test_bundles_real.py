"""Each real-dataset bundle runs as shipped (only sizes shrunk) on generated data in the EmbedSeg release layout.

No network and no ../shared data: the data is written here by the synthetic generators, in the layout the release
archives unpack to (2-channel images and one-hot masks for BBBC010, anisotropic volumes for the 3D sets).
"""

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _bundle_runs import workflow

from monai_embedseg.data.io import read_tiff
from monai_embedseg.data.synthetic import write_synthetic_dataset

BUNDLES_2D = {"dsb2018": "nuclei_2d", "usiigaci": "nuclei_2d", "bbbc010": "worms_2d"}
BUNDLES_3D = [
    "mouse_organoid_cells_cbg",
    "platynereis_nuclei_cbg",
    "mouse_skull_nuclei_cbg",
    "platynereis_ish_nuclei_cbg",
    "parhyale_nuclei_igfl",
]


def make_dataset(bundle: str, root: Path) -> dict:
    """Generate a tiny dataset for ``bundle`` and return the size overrides that go with it."""
    if bundle in BUNDLES_2D:
        kind = BUNDLES_2D[bundle]
        extra = {"n_worms": (2, 3)} if kind == "worms_2d" else {"n_objects": (3, 5), "radius": (4, 6)}
        write_synthetic_dataset(str(root), kind, n_train=3, n_test=1, seed=1, shape=(48, 48), **extra)
        if bundle == "bbbc010":  # BBBC010 images have 2 channels (brightfield, fluorescence), CYX
            for path in root.glob("*/images/*.tif"):
                img = tifffile.imread(path)
                tifffile.imwrite(path, np.stack([img, img[::-1]]), metadata={"axes": "CYX"})
        return {"crop_size": [32, 32], "roi_size": [48, 48]}
    write_synthetic_dataset(
        str(root),
        "cells_3d",
        n_train=3,
        n_test=1,
        seed=1,
        shape=(8, 32, 32),
        n_objects=(2, 3),
        radius=(5, 7),
        z_anisotropy=2,
    )
    return {"crop_size": [8, 32, 32], "roi_size": [8, 32, 32]}


@pytest.mark.parametrize("bundle", [*BUNDLES_2D, *BUNDLES_3D])
def test_bundle_trains_evaluates_and_infers_on_generated_data(bundle, tmp_path):
    sizes = make_dataset(bundle, tmp_path / "data")
    train = workflow(bundle, "train", ["train.json"], tmp_path, **sizes, epochs=1, val_interval=1, samples_per_epoch=2)
    train.initialize()
    assert train.check_properties() == []
    assert train.parser.get_parsed_content("epochs") == 1
    train.run()
    out = tmp_path / "out"
    assert (out / "model.pt").is_file() and (out / "checkpoint_epoch=1.pt").is_file()

    evaluate = workflow(bundle, "eval", ["train.json", "evaluate.json"], tmp_path, **sizes, **{"validate#tta": False})
    evaluate.initialize()
    assert evaluate.check_properties() == []
    evaluate.run()
    with open(out / "ap_summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 9

    infer = workflow(bundle, "infer", ["inference.json"], tmp_path, **sizes, tta=False)
    infer.initialize()
    assert infer.check_properties() == []
    infer.run()
    (written,) = sorted((out / "predictions").glob("*_labels.tif"))
    assert read_tiff(str(written)).shape == tuple(sizes["roi_size"])


@pytest.mark.parametrize("bundle", [*BUNDLES_2D, *BUNDLES_3D[:-1]])
def test_prepare_step_fails_clearly_offline(bundle, tmp_path, monkeypatch):
    """The bundle's ``prepare`` step downloads the release archive; offline it raises a ConnectionError."""
    import urllib.error

    import monai_embedseg.data.download as download

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download, "download_url", offline)
    wf = workflow(bundle, "train", ["train.json"], tmp_path, run_id="prepare")
    wf.initialize()
    with pytest.raises(Exception) as info:
        wf.run()
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__
    assert any(isinstance(e, ConnectionError) and "offline" in str(e) for e in chain), chain
