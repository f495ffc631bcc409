"""The napari widget, headless (``QT_QPA_PLATFORM=offscreen``, a ``ViewerModel`` without a canvas): segment with the
shipped model, sliders re-cluster without a network call, cancel, messages for bad inputs, training from a painted
layer that leaves a usable model; and the Qt-free :class:`Segmenter` giving ``segment``'s labels."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt creates the application

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

pytest.importorskip("napari", reason="the napari extra: pip install -e '.[napari]' (the test extra installs it)")
from napari.components import ViewerModel  # noqa: E402

from monai_embedseg.bundle.paths import bundle_path  # noqa: E402
from monai_embedseg.bundle.train_on_arrays import painted_region  # noqa: E402
from monai_embedseg.cli import main  # noqa: E402
from monai_embedseg.data.io import read_tiff  # noqa: E402
from monai_embedseg.metrics import ap_dsb  # noqa: E402
from monai_embedseg.napari._sample_data import nuclei_2d, nuclei_3d  # noqa: E402
from monai_embedseg.napari._widget import SegmentWidget  # noqa: E402
from monai_embedseg.segmenter import Segmenter  # noqa: E402

_WAIT_MS = 300_000


@pytest.fixture
def viewer_and_widget(qtbot):
    viewer = ViewerModel()
    image, truth = nuclei_2d()
    viewer.add_image(image[0], **image[1], scale=(0.5, 0.5), translate=(10, 20))
    viewer.add_labels(truth[0], name="painted")
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.tta_check.setChecked(False)
    widget.precision_combo.setCurrentText("float32")
    return viewer, widget


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget._worker is None, timeout=_WAIT_MS)


def test_segmenter_gives_the_labels_of_segment(tmp_path):
    image = nuclei_2d()[0][0]
    tifffile.imwrite(tmp_path / "n.tif", image)
    assert (
        main(["segment", str(tmp_path / "n.tif"), "--model", "nuclei-2d", "--no-tta", "--output", str(tmp_path / "o")])
        == 0
    )
    segmenter = Segmenter(model="nuclei-2d", tta=False)
    labels = segmenter(image)
    assert labels.max() > 5 and np.array_equal(labels, read_tiff(str(tmp_path / "o" / "n_labels.tif")))
    fewer = segmenter.cluster(min_object_size=10**6)
    assert fewer.max() == 0 and segmenter.network_calls == 1
    inner = segmenter.cluster(exclude_border=True)  # as `segment --border drop`
    edges = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    assert 0 < inner.max() < labels.max() and not edges.any()
    assert (
        main(
            [
                "segment",
                str(tmp_path / "n.tif"),
                "--model",
                "nuclei-2d",
                "--no-tta",
                "--border",
                "drop",
                "--output",
                str(tmp_path / "d"),
            ]
        )
        == 0
    )
    assert np.array_equal(inner, read_tiff(str(tmp_path / "d" / "n_labels.tif")))
    with pytest.raises(ValueError, match="3D image with a 2D model"):
        segmenter.predict(np.zeros((4, 32, 32), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        segmenter.predict(np.full((32, 32), np.nan, np.float32))


def test_widget_segments_and_sliders_recluster_without_the_network(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    widget.image_combo.setCurrentText("nuclei 2D")
    widget.segment()
    _wait(qtbot, widget)
    layer = viewer.layers["nuclei 2D labels"]
    assert layer.data.max() > 5, widget.status.text()
    assert tuple(layer.scale) == (0.5, 0.5) and tuple(layer.translate) == (10, 20)
    assert widget.thresholds["min_object_size"] == widget.segmenter.thresholds["min_object_size"]  # tuned defaults
    n_before = int(layer.data.max())
    widget.min_size_spin.setValue(10**6)  # every object below: none left
    assert layer.data.max() == 0
    widget.tuned_button.click()
    assert int(layer.data.max()) == n_before
    widget.border_check.setChecked(True)  # the objects the border cuts go, without the network
    edges = np.concatenate([layer.data[0], layer.data[-1], layer.data[:, 0], layer.data[:, -1]])
    assert 0 < int(layer.data.max()) < n_before and not edges.any()
    widget.tuned_button.click()  # nuclei-2d keeps them (its DSB masks label them)
    assert not widget.border_check.isChecked() and int(layer.data.max()) == n_before
    widget.seed_slider.setValue(99)
    widget.paper_button.click()
    assert widget.thresholds["seed_thresh"] == pytest.approx(0.9) and widget.thresholds["fg_thresh"] == pytest.approx(
        0.5
    )
    assert widget.segmenter.network_calls == 1  # the sliders never ran the network
    widget.seed_map_check.setChecked(True)
    widget.segment()
    _wait(qtbot, widget)
    assert "nuclei 2D seeds" in [x.name for x in viewer.layers] and widget.segmenter.network_calls == 2


def test_cancel_discards_the_prediction(qtbot, viewer_and_widget):
    viewer, widget = viewer_and_widget
    widget.segment()
    widget.cancel()
    _wait(qtbot, widget)
    assert "nuclei 2D labels" not in [x.name for x in viewer.layers]
    assert "cancel" in widget.status.text()


def test_bad_inputs_give_a_message_not_a_traceback(qtbot, tmp_path):
    viewer = ViewerModel()
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.segment()
    assert "no image layer" in widget.status.text()
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="photo")
    widget.segment()
    assert "RGB" in widget.status.text()
    volume = nuclei_3d()[0]
    viewer.add_image(volume[0], name="stack")
    widget.image_combo.setCurrentText("stack")
    widget.segment()
    _wait(qtbot, widget)
    assert "3D image with a 2D model" in widget.status.text()
    widget.model_combo.setCurrentText("bundle folder + checkpoint")
    widget.segment()
    assert "choose a bundle folder" in widget.status.text()
    widget.path_edit.setText(str(tmp_path))
    widget.segment()
    _wait(qtbot, widget)
    assert "is not a bundle folder" in widget.status.text()
    widget.model_combo.setCurrentText("nuclei-2d")
    widget.tile_edit.setText("0 5")
    widget.segment()
    assert "tile" in widget.status.text()
    widget.tile_edit.setText("")
    widget.train()
    assert "no Labels layer" in widget.status.text()


def test_painted_region_keeps_a_margin_around_the_objects():
    labels = np.zeros((100, 80), np.uint16)
    labels[40:50, 30:35] = 1
    assert painted_region(labels, margin=5) == (slice(35, 55), slice(25, 40))
    with pytest.raises(ValueError, match="no painted object"):
        painted_region(np.zeros((4, 4), np.uint16))


def test_training_from_painted_labels_gives_a_model_the_widget_and_the_cli_use(qtbot, viewer_and_widget, tmp_path):
    viewer, widget = viewer_and_widget
    widget.labels_combo.setCurrentText("painted")
    widget.train_dir_edit.setText(str(tmp_path / "runs"))
    widget.epochs_spin.setValue(1)
    widget.minutes_spin.setValue(10.0)  # a time limit, not reached by this one-epoch run
    widget.train_overrides = {"samples_per_epoch": 32, "val_interval": 1, "roi_size": [128, 128]}
    messages = []
    widget.progressed.connect(lambda m, s, t: messages.append(m))
    widget.train()
    _wait(qtbot, widget)
    checkpoint = widget.checkpoint_edit.text()
    assert checkpoint.endswith("model.pt") and os.path.isfile(checkpoint), widget.status.text()
    folder = os.path.dirname(checkpoint)
    assert {"dataset_properties.json", "thresholds.json"} <= set(os.listdir(folder))
    assert any(m.startswith("training: epoch 1/1") for m in messages) and any("validation AP" in m for m in messages)
    assert any(m.endswith(" of 10 min") for m in messages)  # the limit reached the run's clock
    assert widget.model_combo.currentText() == "bundle folder + checkpoint"
    assert widget.path_edit.text() == bundle_path("dsb2018")
    widget.segment()  # the new model
    _wait(qtbot, widget)
    assert str(widget.segmenter.source.weights) == checkpoint, widget.status.text()
    image = tmp_path / "n.tif"
    tifffile.imwrite(image, np.asarray(viewer.layers["nuclei 2D"].data))
    cli = ["segment", str(image), "--bundle", bundle_path("dsb2018"), "--checkpoint", checkpoint, "--no-tta"]
    assert main([*cli, "--precision", "float32", "--output", str(tmp_path / "o")]) == 0


def test_layer_scale_is_the_spacing_only_for_a_model_trained_in_physical_units(tmp_path):
    import json

    import torch

    from monai_embedseg.networks.nets import BranchedERFNet

    layer = ViewerModel().add_image(np.zeros((16, 16), np.float32), scale=(0.25, 0.25))
    assert SegmentWidget._layer_spacing(layer, "nuclei-2d", None, None) is None  # trained in pixels
    run = tmp_path / "run"
    run.mkdir()
    torch.save(BranchedERFNet(2, 1).state_dict(), run / "model.pt")
    props = {"min_object_size": 4, "spacing": [0.5, 0.5], "spacing_source": "metadata"}
    (run / "dataset_properties.json").write_text(json.dumps(props))
    spacing = SegmentWidget._layer_spacing(layer, None, bundle_path("synthetic_2d"), run / "model.pt")
    assert spacing == [0.25, 0.25]


def test_a_mostly_empty_image_is_normalised_over_its_objects(tmp_path, capsys):
    field = np.ascontiguousarray(nuclei_2d()[0][0][:128, :128])
    sparse = np.full((1536, 1536), 3, np.uint8)  # objects on 0.1 % of the pixels: the percentiles are background
    sparse[:128, :128] = field
    # nuclei-2d records the peak of its training images (2.5): this slide peaks far above it, so by default it is
    # scaled over the tiles holding objects
    segmenter = Segmenter(model="nuclei-2d", tta=False)
    segmenter.predict(field)
    assert segmenter.warning is None
    alone = segmenter.cluster()
    with pytest.warns(UserWarning, match="a mostly empty image .* normalised over the"):
        segmenter.predict(sparse)
    in_slide = segmenter.cluster()
    assert in_slide[128:].max() == 0 and in_slide[:, 128:].max() == 0
    # whole-image percentiles over-segment the field (21 objects for 11); the content tiles' give the field's result
    assert alone.max() >= 5 and ap_dsb([alone], [in_slide[:128, :128]], 0.5)[0] >= 0.9
    tifffile.imwrite(tmp_path / "slide.tif", sparse)
    args = ["segment", str(tmp_path / "slide.tif"), "--model", "nuclei-2d", "--no-tta", "--output", str(tmp_path / "o")]
    assert main(args) == 0
    assert "slide.tif: a mostly empty image" in capsys.readouterr().err
    labels = tmp_path / "o" / "slide_labels.tif"
    assert ap_dsb([alone], [read_tiff(labels)[:128, :128]], 0.5)[0] >= 0.9
    # asked to scale it over the whole image, as in training: the field is over-segmented, and the warning says so
    assert main([*args, "--normalize", "image", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "slide.tif: its brightest pixels are far above" in err and "--normalize content" in err
    assert ap_dsb([alone], [read_tiff(labels)[:128, :128]], 0.5)[0] < 0.5
    # block by block, the same rule: the content range by default
    zarr_out = tmp_path / "slide.zarr"
    assert main([*args[:-1], str(zarr_out), "--block-size", "512", "512"]) == 0
    import zarr

    blocks = np.asarray(zarr.open_group(str(zarr_out), mode="r")["0"])
    assert ap_dsb([alone], [blocks[:128, :128]], 0.5)[0] >= 0.9 and blocks[128:].max() == 0


def test_a_large_image_is_segmented_block_by_block_into_a_zarr_store(qtbot, viewer_and_widget, tmp_path):
    viewer, widget = viewer_and_widget
    widget.blockwise_voxels = 1000  # the 256 x 256 sample counts as large here
    widget.train_dir_edit.setText(str(tmp_path / "runs"))
    widget.segment()
    _wait(qtbot, widget)
    assert "block by block" in widget.status.text(), widget.status.text()
    layer = viewer.layers["nuclei 2D labels"]
    blocks = np.asarray(layer.data)
    assert blocks.max() > 5 and tuple(layer.scale) == (0.5, 0.5)
    assert len(list((tmp_path / "runs").glob("*.zarr"))) == 1
    widget.blockwise_voxels = 2**26
    widget.segment()  # the same image in memory: the labels of both paths mostly agree
    _wait(qtbot, widget)
    whole = np.asarray(viewer.layers["nuclei 2D labels"].data)
    assert whole.max() > 5 and np.mean((whole > 0) == (blocks > 0)) > 0.95
