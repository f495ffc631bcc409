"""The EmbedSeg dock widget: segment the active image, tune thresholds live, train from painted labels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from monai_embedseg.constants import FG_THRESH, SEED_THRESH

__all__ = ["SegmentWidget"]

_BUNDLE = "bundle folder + checkpoint"
_FILE = "model file (.zip / .ts / .onnx)"
_SLIDER_STEPS = 100


def _parse_numbers(text: str, kind: type, what: str) -> list | None:
    text = text.strip()
    if not text:
        return None
    try:
        values = [kind(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{what}: numbers separated by spaces, got {text!r}.") from None
    if any(v <= 0 for v in values):
        raise ValueError(f"{what}: every value must be positive, got {text!r}.")
    return values


class SegmentWidget(QWidget):
    """Dock widget (napari ``Plugins > EmbedSeg``).

    * **Segment**: the chosen image layer with a pretrained model (``nuclei-2d``), a bundle folder + checkpoint, or a
      model file (bioimage.io ``.zip`` of ours, TorchScript, ONNX); TTA, tile size and precision as in ``segment``.
      The network runs in a worker thread (the viewer stays responsive; Cancel discards the running prediction).
      Adds a Labels layer at the image's scale and translate, optionally the seed map.
    * **Thresholds**: seed, foreground and minimum size re-cluster the cached network output without running the
      network again; the model's tuned thresholds are the defaults, the paper's 0.9 / 0.5 one click away.
    * **Train from painted labels**: the image layer and a Labels layer painted on it train the model's bundle
      (its fast profile, ``monai.bundle`` training workflow), starting from the current model; the new output
      folder (``model.pt``, ``dataset_properties.json``, ``thresholds.json``) becomes the current model.

    Args:
        napari_viewer: the viewer (napari passes it); anything with ``layers``, ``add_labels`` and ``add_image``.
    """

    #: (message, step, total) from the training thread, delivered in the GUI thread
    progressed = Signal(str, int, int)

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from monai_embedseg.pretrained.registry import MODELS

        self.viewer = napari_viewer
        self.segmenter = None
        self._segmenter_key = None
        self._worker = None
        self._cancelled = False
        self._image_layer = None
        self.last_seconds: float | None = None
        #: images with more voxels than this are segmented block by block into a Zarr store (bounded memory)
        self.blockwise_voxels = 2**26

        self.setMaximumWidth(520)  # a dock beside the canvas, not over it
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        form.addRow("image", self.image_combo)
        self.model_combo = QComboBox()
        self.model_combo.addItems([*sorted(MODELS), _BUNDLE, _FILE])
        form.addRow("model", self.model_combo)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("bundle folder, or the model file")
        form.addRow("path", self.path_edit)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("model.pt (default <bundle>/models/model.pt)")
        form.addRow("checkpoint", self.checkpoint_edit)
        self.spacing_edit = QLineEdit()
        self.spacing_edit.setPlaceholderText(
            "pixel size z y x (default: the layer's scale, if the model's is physical)"
        )
        form.addRow("spacing", self.spacing_edit)
        self.tile_edit = QLineEdit()
        self.tile_edit.setPlaceholderText("tile size per axis (default: the bundle's)")
        form.addRow("tile", self.tile_edit)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["auto", "float32", "bfloat16"])
        form.addRow("precision", self.precision_combo)
        self.tta_check = QCheckBox("test-time augmentation")
        self.tta_check.setChecked(True)
        self.seed_map_check = QCheckBox("add the seed map")
        form.addRow(self.tta_check)
        form.addRow(self.seed_map_check)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.segment_button = QPushButton("Segment")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        layout.addWidget(self.progress)

        thresholds = QGroupBox("thresholds (re-cluster, no network call)")
        tform = QFormLayout(thresholds)
        self.seed_slider, self.seed_value = self._slider()
        self.fg_slider, self.fg_value = self._slider()
        tform.addRow("seed", self._row(self.seed_slider, self.seed_value))
        tform.addRow("foreground", self._row(self.fg_slider, self.fg_value))
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 10**9)
        tform.addRow("min size (px)", self.min_size_spin)
        self.border_check = QCheckBox("drop objects touching the border")
        tform.addRow(self.border_check)
        tbuttons = QHBoxLayout()
        self.tuned_button = QPushButton("tuned")
        self.paper_button = QPushButton("paper 0.9 / 0.5")
        tbuttons.addWidget(self.tuned_button)
        tbuttons.addWidget(self.paper_button)
        tform.addRow(tbuttons)
        layout.addWidget(thresholds)

        training = QGroupBox("train from painted labels")
        trform = QFormLayout(training)
        self.labels_combo = QComboBox()
        trform.addRow("labels", self.labels_combo)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(10)
        trform.addRow("epochs", self.epochs_spin)
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(0.0, 24 * 60.0)
        self.minutes_spin.setDecimals(1)
        self.minutes_spin.setSpecialValueText("none")  # 0: the epochs alone decide
        self.minutes_spin.setToolTip("stop training after this many minutes (the learning-rate schedule fits them)")
        trform.addRow("time limit (min)", self.minutes_spin)
        self.train_dir_edit = QLineEdit("~/monai_embedseg_runs")
        trform.addRow("runs folder", self.train_dir_edit)
        note = QLabel(
            "Only the region around the painted objects is used; inside it, unpainted pixels count as "
            "background, so paint every object there."
        )
        note.setWordWrap(True)
        trform.addRow(note)
        self.train_button = QPushButton("Train")
        trform.addRow(self.train_button)
        layout.addWidget(training)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch()

        self._set_thresholds({"seed_thresh": SEED_THRESH, "fg_thresh": FG_THRESH, "min_object_size": 0}, quiet=True)
        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.tuned_button.clicked.connect(
            lambda: self._set_thresholds(self.segmenter.thresholds if self.segmenter else {})
        )
        self.paper_button.clicked.connect(
            lambda: self._set_thresholds({"seed_thresh": SEED_THRESH, "fg_thresh": FG_THRESH})
        )
        self.seed_slider.valueChanged.connect(self._thresholds_changed)
        self.fg_slider.valueChanged.connect(self._thresholds_changed)
        self.min_size_spin.valueChanged.connect(self._thresholds_changed)
        self.border_check.toggled.connect(self._thresholds_changed)
        self.train_button.clicked.connect(self.train)
        self.progressed.connect(self._show_progress)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # -- building blocks -------------------------------------------------------------------------------------------
    @staticmethod
    def _slider() -> tuple[QSlider, QLabel]:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, _SLIDER_STEPS)
        return slider, QLabel("")

    @staticmethod
    def _row(*widgets) -> QWidget:
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        for w in widgets:
            box.addWidget(w)
        return row

    def _layers(self, kind: str) -> list:
        return [layer for layer in self.viewer.layers if type(layer).__name__ == kind]

    def _refresh_layers(self, *_) -> None:
        for combo, kind in ((self.image_combo, "Image"), (self.labels_combo, "Labels")):
            current = combo.currentText()
            combo.clear()
            combo.addItems([layer.name for layer in self._layers(kind)])
            if current in [layer.name for layer in self._layers(kind)]:
                combo.setCurrentText(current)

    def _say(self, text: str) -> None:
        self.status.setText(text)

    # -- thresholds ------------------------------------------------------------------------------------------------
    @property
    def thresholds(self) -> dict:
        """The clustering settings the sliders show."""
        return {
            "seed_thresh": self.seed_slider.value() / _SLIDER_STEPS,
            "fg_thresh": self.fg_slider.value() / _SLIDER_STEPS,
            "min_object_size": int(self.min_size_spin.value()),
            "exclude_border": self.border_check.isChecked(),
        }

    def _set_thresholds(self, values: dict, quiet: bool = False) -> None:
        widgets = (self.seed_slider, self.fg_slider, self.min_size_spin, self.border_check)
        for w in widgets:
            w.blockSignals(True)
        if "seed_thresh" in values:
            self.seed_slider.setValue(round(float(values["seed_thresh"]) * _SLIDER_STEPS))
        if "fg_thresh" in values:
            self.fg_slider.setValue(round(float(values["fg_thresh"]) * _SLIDER_STEPS))
        if "min_object_size" in values:
            self.min_size_spin.setValue(int(values["min_object_size"]))
        if "exclude_border" in values:
            self.border_check.setChecked(bool(values["exclude_border"]))
        for w in widgets:
            w.blockSignals(False)
        self.seed_value.setText(f"{self.seed_slider.value() / _SLIDER_STEPS:.2f}")
        self.fg_value.setText(f"{self.fg_slider.value() / _SLIDER_STEPS:.2f}")
        if not quiet:
            self._thresholds_changed()

    def _thresholds_changed(self, *_) -> None:
        self.seed_value.setText(f"{self.seed_slider.value() / _SLIDER_STEPS:.2f}")
        self.fg_value.setText(f"{self.fg_slider.value() / _SLIDER_STEPS:.2f}")
        if self.segmenter is not None and self.segmenter.prediction is not None and self._image_layer is not None:
            self._show_labels()

    # -- segmentation ----------------------------------------------------------------------------------------------
    def _choice(self) -> tuple:
        """(model, bundle, checkpoint) for :class:`~monai_embedseg.segmenter.Segmenter` from the model fields."""
        choice, path, ckpt = (
            self.model_combo.currentText(),
            self.path_edit.text().strip(),
            self.checkpoint_edit.text().strip(),
        )
        if choice == _BUNDLE:
            if not path:
                raise ValueError("choose a bundle folder (path) for 'bundle folder + checkpoint'.")
            return None, path, ckpt or None
        if choice == _FILE:
            if not path:
                raise ValueError("choose a model file (path): a .zip package, .ts or .onnx.")
            return path, None, None
        return choice, None, None

    def _selected_image(self):
        layers = {layer.name: layer for layer in self._layers("Image")}
        layer = layers.get(self.image_combo.currentText())
        if layer is None:
            raise ValueError("no image layer: open or add an image first.")
        if getattr(layer, "rgb", False):
            raise ValueError(
                f"'{layer.name}' is an RGB layer: EmbedSeg models take grayscale or channel images; "
                "split the channels (right-click > Split RGB) and segment one."
            )
        return layer

    def _segmenter_for(self, layer):
        from monai_embedseg.segmenter import Segmenter

        model, bundle, checkpoint = self._choice()
        tile = _parse_numbers(self.tile_edit.text(), int, "tile")
        spacing = _parse_numbers(self.spacing_edit.text(), float, "spacing") or self._layer_spacing(
            layer, model, bundle, checkpoint
        )
        key = (
            model,
            bundle,
            checkpoint,
            tuple(tile or ()),
            self.precision_combo.currentText(),
            self.tta_check.isChecked(),
            tuple(spacing or ()),
        )
        if key != self._segmenter_key:
            self.segmenter = Segmenter(
                model=model,
                bundle=bundle,
                checkpoint=checkpoint,
                tta=self.tta_check.isChecked(),
                roi_size=tile,
                precision=self.precision_combo.currentText(),
                spacing=spacing,
            )
            self._segmenter_key = key
        return self.segmenter

    @staticmethod
    def _layer_spacing(layer, model, bundle, checkpoint) -> list[float] | None:
        """The layer's ``scale`` as the pixel size, when it is not all ones and the model was trained in physical
        units (its training data recorded a spacing); else ``None`` (the model's own)."""
        from monai_embedseg.bundle.paths import trained_model_files
        from monai_embedseg.data.properties import load_properties

        scale = [float(s) for s in layer.scale]
        if all(s == 1.0 for s in scale):
            return None
        props = load_properties(str(trained_model_files(bundle, checkpoint, None, model).properties))
        return None if props.get("spacing_source", "unit") == "unit" else scale

    def segment(self) -> None:
        """Run the network on the chosen image in a worker thread, then show the labels."""
        try:
            layer = self._selected_image()
            self._check_args()
        except ValueError as e:
            self._say(str(e))
            return
        from napari.qt.threading import create_worker

        if int(np.prod(np.shape(layer.data))) > self.blockwise_voxels:
            self._segment_blockwise(layer)
            return
        data = np.asarray(layer.data)
        self._cancelled = False
        started = time.perf_counter()

        def work():
            segmenter = self._segmenter_for(layer)
            segmenter.check_image(data)
            segmenter.predict(data, cancelled=lambda: self._cancelled)
            return segmenter

        def done(segmenter) -> None:
            if self._cancelled:
                self._say("cancelled: the labels were not changed.")
                return
            self.last_seconds = time.perf_counter() - started
            self._image_layer = layer
            self._set_thresholds(segmenter.thresholds, quiet=True)
            self._show_labels()
            if self.seed_map_check.isChecked():
                self._show_seed_map()

        self._start(create_worker(work, _ignore_errors=True), done, busy="segmenting ...")

    def _segment_blockwise(self, layer) -> None:
        """A large image: block by block (Dask, bounded memory) into an OME-Zarr label store in the runs folder,
        shown as a Labels layer read from that store. There is no cached prediction to re-cluster: the thresholds
        apply at the next Segment."""
        from napari.qt.threading import create_worker

        model, bundle, checkpoint = self._choice()
        if model is not None and model.lower().endswith((".ts", ".pt", ".onnx")):
            self._say("a large image is segmented block by block, which needs a checkpoint or a pretrained model.")
            return
        tile = _parse_numbers(self.tile_edit.text(), int, "tile")
        spacing = _parse_numbers(self.spacing_edit.text(), float, "spacing") or self._layer_spacing(
            layer, model, bundle, checkpoint
        )
        folder = Path(self.train_dir_edit.text()).expanduser()
        output = folder / f"{layer.name.replace(' ', '_')}-labels-{time.strftime('%Y%m%d-%H%M%S')}.zarr"
        data = layer.data
        tta, precision = self.tta_check.isChecked(), self.precision_combo.currentText()
        self._cancelled = False
        started = time.perf_counter()

        def work():
            from monai_embedseg.cli.blockwise import segment_large
            from monai_embedseg.data.zarr_io import ArrayVolume

            folder.mkdir(parents=True, exist_ok=True)
            return segment_large(
                ArrayVolume(data, spatial_dims=np.ndim(data)),
                bundle,
                str(output),
                checkpoint=checkpoint,
                model=model,
                tta=tta,
                roi_size=tile,
                precision=precision,
                spacing=spacing,
                progress=False,
            )

        def done(summary) -> None:
            import zarr

            labels = zarr.open_array(str(output), path="0", mode="r")
            self._put_layer("Labels", labels, f"{layer.name} labels", layer, np.ndim(data))
            self.last_seconds = time.perf_counter() - started
            self._say(
                f"{summary['objects']} objects in {self.last_seconds:.1f} s, block by block ({summary['blocks']} "
                f"blocks) into {output}; the thresholds apply at the next Segment."
            )

        self._start(create_worker(work, _ignore_errors=True), done, busy="segmenting block by block ...")

    def _check_args(self) -> None:
        _parse_numbers(self.tile_edit.text(), int, "tile")
        _parse_numbers(self.spacing_edit.text(), float, "spacing")
        self._choice()

    def _start(self, worker, done, busy: str) -> None:
        self._worker = worker
        self.progress.setRange(0, 0)  # busy
        self.segment_button.setEnabled(False)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._say(busy)
        worker.returned.connect(done)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._idle)
        worker.start()

    def _failed(self, error: Exception) -> None:
        """A job's error as one line in the widget (ours name the problem; others get their type)."""
        explained = isinstance(error, (ValueError, FileNotFoundError, FileExistsError))
        self._say(f"error: {error}" if explained else f"error: {type(error).__name__}: {error}")

    def _idle(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.segment_button.setEnabled(True)
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._worker = None

    def cancel(self) -> None:
        """Stop the running job: training stops after its current step; a prediction is discarded when it ends."""
        self._cancelled = True
        self._say("cancelling ...")

    def _put_layer(self, kind: str, data, name: str, image_layer, spatial_dims: int, **style) -> None:
        """Show ``data`` in the ``kind`` layer ``name`` ("Labels" or "Image"): its data replaced when it exists, else
        added at the spatial scale and translate of ``image_layer``."""
        existing = {layer.name: layer for layer in self._layers(kind)}
        if name in existing:
            existing[name].data = data
            return
        geometry = {
            "scale": tuple(image_layer.scale)[-spatial_dims:],
            "translate": tuple(image_layer.translate)[-spatial_dims:],
        }
        add = self.viewer.add_labels if kind == "Labels" else self.viewer.add_image
        add(data, name=name, **geometry, **style)

    def _show_labels(self) -> None:
        labels = self.segmenter.cluster(**self.thresholds)
        layer = self._image_layer
        self._put_layer("Labels", labels, f"{layer.name} labels", layer, self.segmenter.spatial_dims)
        n = int(labels.max())
        timing = f" in {self.last_seconds:.1f} s" if self.last_seconds is not None else ""
        self._say(
            f"{n} objects{timing} (seed {self.thresholds['seed_thresh']:.2f}, foreground "
            f"{self.thresholds['fg_thresh']:.2f}, min size {self.thresholds['min_object_size']})"
            + (f"\n{self.segmenter.warning}" if self.segmenter.warning else "")
        )

    def _show_seed_map(self) -> None:
        import torch

        seed = torch.sigmoid(self.segmenter.prediction[-1]).numpy()
        layer = self._image_layer
        d = self.segmenter.spatial_dims
        self._put_layer("Image", seed, f"{layer.name} seeds", layer, d, colormap="magma", blending="additive")

    # -- training --------------------------------------------------------------------------------------------------
    def _show_progress(self, message: str, step: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(step)
        self._say(message)

    def train(self) -> None:
        """Train the current model's bundle on the chosen image and Labels layer, in a worker thread."""
        try:
            image = self._selected_image()
            labels = {layer.name: layer for layer in self._layers("Labels")}.get(self.labels_combo.currentText())
            if labels is None:
                raise ValueError("no Labels layer: paint the objects in a Labels layer first.")
            if tuple(np.shape(labels.data)) != tuple(np.shape(image.data))[-np.ndim(labels.data) :]:
                raise ValueError(
                    f"'{labels.name}' {np.shape(labels.data)} does not cover '{image.name}' {np.shape(image.data)}."
                )
            if not np.any(np.asarray(labels.data)):
                raise ValueError(f"'{labels.name}' is empty: paint at least one object.")
            model, bundle, checkpoint = self._choice()
        except ValueError as e:
            self._say(str(e))
            return
        from napari.qt.threading import create_worker

        from monai_embedseg.bundle.paths import bundle_path
        from monai_embedseg.pretrained.registry import MODELS

        if model in MODELS:
            bundle, pretrained = bundle_path(MODELS[model].bundle), model
        elif bundle is not None:
            pretrained = checkpoint or (
                str(Path(bundle) / "models" / "model.pt") if (Path(bundle) / "models" / "model.pt").is_file() else None
            )
        else:
            self._say("training needs a pretrained model or a bundle folder (not an exported file).")
            return
        output = Path(self.train_dir_edit.text()).expanduser() / time.strftime("run-%Y%m%d-%H%M%S")
        images, label_maps = [np.asarray(image.data)], [np.asarray(labels.data)]
        self._cancelled = False
        epochs = int(self.epochs_spin.value())
        overrides = getattr(self, "train_overrides", {})
        if self.minutes_spin.value() > 0:
            overrides = {"max_minutes": float(self.minutes_spin.value()), **overrides}

        def work():
            from monai_embedseg.bundle.train_on_arrays import train_on_arrays

            return train_on_arrays(
                images,
                label_maps,
                bundle,
                output,
                pretrained=pretrained,
                progress=lambda m, s, t: self.progressed.emit(m, s, t),
                should_stop=lambda: self._cancelled,
                **{"epochs": epochs, **overrides},
            )

        def done(folder) -> None:
            self.model_combo.setCurrentText(_BUNDLE)
            self.path_edit.setText(str(bundle))
            self.checkpoint_edit.setText(str(Path(folder) / "model.pt"))
            self._say(f"trained: {folder}; Segment now uses it (or pass --checkpoint {folder}/model.pt to segment).")

        self._start(create_worker(work, _ignore_errors=True), done, busy="preparing the training data ...")
