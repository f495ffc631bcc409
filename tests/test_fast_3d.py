"""The 3D fast profile: a schedule in steps whatever the number of volumes, crops that fit, one volume trains."""

import json

import pytest
from _bundle_runs import workflow

from monai_embedseg.data.io import write_tiff
from monai_embedseg.data.synthetic import synthetic_cells_3d

SHAPE = (10, 40, 40)  # fewer slices than the crop the masks ask for


def _dataset(root, n_train):
    """``n_train`` training volumes and one validation volume, spacing (3, 1, 1) in the files."""
    for split, seeds in (("train", range(n_train)), ("val", [99])):
        for s in seeds:
            img, lab = synthetic_cells_3d(SHAPE, z_anisotropy=3, n_objects=(3, 4), radius=(7, 9), seed=s)
            write_tiff(root / split / "images" / f"v{s}.tif", img, spacing=(3.0, 1.0, 1.0))
            write_tiff(root / split / "masks" / f"v{s}.tif", lab, spacing=(3.0, 1.0, 1.0))


def _fast(tmp_path, n_train, **overrides):
    _dataset(tmp_path / "data", n_train)
    return workflow(
        "synthetic_3d",
        "train",
        ["train.json", "train_fast.json"],
        tmp_path,
        steps=6,
        epochs=2,
        val_interval=2,
        roi_size=list(SHAPE),
        **overrides,
    )


@pytest.mark.parametrize("n_train", [1, 8])
def test_the_schedule_is_counted_in_steps_not_in_volumes(n_train, tmp_path):
    wf = _fast(tmp_path, n_train)
    wf.initialize()
    parser = wf.parser
    loader = parser.get_parsed_content("train#dataloader")
    assert len(loader) * parser.get_parsed_content("epochs") == 6  # the same for 1 and for 8 volumes
    assert parser.get_parsed_content("lr_scheduler").total_steps == 6
    crop = parser.get_parsed_content("crop_size")
    assert crop[0] <= SHAPE[0] and crop[1] == crop[2] <= SHAPE[1]  # never larger than the volumes
    assert parser.get_parsed_content("properties")["crop_size"][0] > SHAPE[0]  # the paper's rule asked for more
    assert loader.dataset.pool_size >= 4 * n_train  # crops per volume follow the data
    handlers = parser.get_parsed_content("train#handlers")
    assert any(type(h).__name__ == "BoundedValidationHandler" for h in handlers)  # validation bounded in time
    assert not any(type(h).__name__ == "ValidationHandler" for h in handlers)


def test_a_one_volume_dataset_trains_and_leaves_a_model(tmp_path):
    wf = _fast(tmp_path, 1, tune_tta=False)
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 6
    out = tmp_path / "out"
    assert (out / "model.pt").is_file() and (out / "thresholds.json").is_file()
    props = json.loads((out / "dataset_properties.json").read_text())
    assert props["n_images"] == 2 and props["spacing"] == [3.0, 1.0, 1.0]
