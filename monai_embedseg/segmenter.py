"""A trained model loaded once, for interactive use (napari, notebooks): predict an array, then cluster the cached
prediction with any thresholds without running the network again.

The network output (offsets, bandwidths, seeds) does not depend on the clustering thresholds, so moving a threshold
only re-runs the clustering (about 0.06 s per megapixel). The model is resolved and built exactly as ``segment``
does it (:func:`~monai_embedseg.bundle.paths.trained_model_files` and the bundle's ``configs/inference.json``:
network, precision, sliding-window inferer with TTA, normalisation), so the labels equal ``segment``'s.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import torch

from monai_embedseg.cluster_settings import ClusteringSettings

__all__ = ["Segmenter", "exported_network_overrides"]


def exported_network_overrides(path: str | os.PathLike, device: str | torch.device | None = None) -> dict:
    """Config overrides that run an exported network instead of the bundle's ``network_def`` + weights: ONNX
    (``.onnx``, run by ONNX Runtime as exported, so in float32) or TorchScript (any other suffix), in eval mode.

    Raises:
        ValueError: the file is not a TorchScript model.
    """
    path = str(path)
    if path.endswith(".onnx"):
        from monai_embedseg.networks.nets import OnnxNetwork

        return {"network": OnnxNetwork(path).eval(), "precision": "float32", "load_weights": None}
    try:  # the weights are in the file: the workflow's weight-loading step does nothing
        return {"network": torch.jit.load(path, map_location=device or "cpu").eval(), "load_weights": None}
    except Exception as e:  # torch raises RuntimeError/ValueError variants for non-TorchScript files
        raise ValueError(f"{path} is not a TorchScript model ({type(e).__name__}: {e}).") from None


class Segmenter:
    """One trained model for repeated, interactive segmentation.

    Args:
        model: a pretrained model name (``"nuclei-2d"``), a bioimage.io package of ours (``.zip``) or an exported
            TorchScript / ONNX network (then ``bundle`` is needed).
        bundle: bundle folder (``configs/inference.json``).
        checkpoint: weights of the bundle's network (default ``<bundle>/models/model.pt``).
        device: e.g. ``"cpu"``, ``"cuda:0"`` (default: the bundle's).
        tta: test-time augmentation (8 transforms in 2D, 16 in 3D).
        roi_size: sliding-window size (default: the bundle's, cut to the image).
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (default: the bundle's).
        spacing: pixel size per spatial axis (default: the training data's).
        normalize_content: take a mostly empty image's intensity percentiles over its tiles holding objects, or
            over the whole image (as in training, with a :attr:`warning`); ``None`` (default): over its tiles when the
            model records its training images' peak (:func:`monai_embedseg.intensity.content_default`).

    Attributes:
        spatial_dims, in_channels: what the network takes.
        settings: the clustering settings: the model's tuned ``seed_thresh``, ``fg_thresh``, ``min_object_size``
            (the paper's seed and foreground thresholds when training tuned none) and the pixel spacing.
        thresholds: the three thresholds of ``settings`` as a dict.
        prediction: the cached raw prediction ``(C, *spatial)`` of the last :meth:`predict` (``None`` before).
        network_calls: how many times :meth:`predict` ran the network.
        warning: why the last image's normalisation looks wrong (a mostly empty image), else ``None``.

    Example::

        seg = Segmenter(model="nuclei-2d")
        labels = seg(image)                                  # (H, W) uint16/uint32
        relaxed = seg.cluster(seed_thresh=0.7)               # no network call
    """

    def __init__(
        self,
        model: str | None = None,
        bundle: str | os.PathLike | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str | None = None,
        tta: bool = True,
        roi_size: list[int] | None = None,
        precision: str | None = None,
        spacing: list[float] | None = None,
        normalize_content: bool | None = None,
    ) -> None:
        from monai.transforms import Compose

        from monai_embedseg.bundle.paths import inference_parser, trained_model_files
        from monai_embedseg.data.properties import load_properties
        from monai_embedseg.engines import read_thresholds

        resolved = trained_model_files(bundle, checkpoint, None, model)
        self.source = resolved
        parser = inference_parser(resolved.bundle)
        props = load_properties(str(resolved.properties))
        parser.update(
            {
                "output_dir": str(resolved.weights.parent),
                "ckpt_path": str(resolved.weights),
                "properties": props,
                "tta": bool(tta),
                "normalize_content": None if normalize_content is None else bool(normalize_content),
            }
        )
        for key, value in (("roi_size", roi_size), ("precision", precision), ("spacing", spacing)):
            if value is not None:
                parser[key] = list(value) if isinstance(value, (list, tuple)) else value
        if device is not None:
            parser["device"] = f"$torch.device({str(device)!r})"
        if resolved.exported:
            parser.update(exported_network_overrides(resolved.weights, device))
        self.spatial_dims = int(parser.get_parsed_content("spatial_dims"))
        self.in_channels = int(parser.get_parsed_content("in_channels"))
        self.device = parser.get_parsed_content("device")
        spacing = parser.get_parsed_content("voxel_spacing")
        parser.get_parsed_content("load_weights")
        parser.get_parsed_content("network").eval()  # as the bundle's evaluator runs it: no dropout, running statistics
        self._runner = parser.get_parsed_content("runner")
        self._inferer = parser.get_parsed_content("inferer")
        # the bundle's preprocessing after its file loader: the same normalisation as `segment`
        self._normalise = Compose(parser.get_parsed_content("preprocessing").transforms[1:])
        tuned = read_thresholds(str(resolved.weights.parent), int(props["min_object_size"]), tta=tta)
        self.settings = ClusteringSettings.from_mapping(tuned, spacing=spacing)
        self.prediction: torch.Tensor | None = None
        self.network_calls = 0
        self.warning: str | None = None

    def check_image(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """``image`` as ``(C, *spatial)`` float32, or a ``ValueError`` that says why it does not fit the model."""
        image = np.asarray(image)
        if channel_axis is not None:
            image = np.moveaxis(image, channel_axis, 0)
        elif image.ndim == self.spatial_dims and self.in_channels == 1:
            image = image[None]
        if image.ndim != self.spatial_dims + 1 or image.shape[0] != self.in_channels:
            shape = image.shape[1:] if channel_axis is None and image.shape[:1] == (1,) else image.shape
            raise ValueError(
                f"an image of shape {tuple(shape)} does not fit this model, which takes {self.spatial_dims}D images "
                f"with {self.in_channels} channel(s)"
                + (
                    " (a 3D image with a 2D model: pick a 3D model, or segment one slice)"
                    if len(shape) == 3 and self.spatial_dims == 2
                    else ""
                )
                + "."
            )
        if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
            raise ValueError(f"an image of dtype {image.dtype} cannot be segmented (numbers expected).")
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise ValueError("the image holds NaN or infinite values.")
        return image.astype(np.float32, copy=False)

    @torch.no_grad()
    def predict(
        self, image: np.ndarray, channel_axis: int | None = None, cancelled: Callable[[], bool] | None = None
    ) -> torch.Tensor:
        """Run the network (with the bundle's sliding window and TTA) and cache the raw prediction.

        Args:
            image: ``(*spatial)`` or, with ``channel_axis``, channels on that axis.
            channel_axis: channel axis of a multi-channel image.
            cancelled: polled before the network runs; ``True`` skips it (returns the previous prediction).

        Returns:
            the raw prediction ``(2D + 1, *spatial)``, float32 on the CPU (also :attr:`prediction`).
        """
        from monai.data import MetaTensor

        from monai_embedseg.transforms.intensity import SparseImageWarning
        from monai_embedseg.utils import configure_threads

        data = self.check_image(image, channel_axis)
        if cancelled is not None and cancelled():
            return self.prediction
        configure_threads()
        with warnings.catch_warnings(record=True) as caught:  # the normaliser's note on a mostly empty image
            warnings.simplefilter("always", SparseImageWarning)
            batch = self._normalise({"image": MetaTensor(torch.from_numpy(data))})["image"]
        self.warning = "; ".join(str(w.message) for w in caught if issubclass(w.category, SparseImageWarning)) or None
        if self.warning:
            warnings.warn(self.warning, stacklevel=2)
        inputs = torch.as_tensor(batch)[None].to(self.device)
        pred = self._inferer(inputs, self._runner)
        self.network_calls += 1
        self.prediction = pred[0].float().cpu()
        return self.prediction

    def cluster(
        self,
        seed_thresh: float | None = None,
        fg_thresh: float | None = None,
        min_object_size: int | None = None,
        exclude_border: bool | None = None,
    ) -> np.ndarray:
        """Instance labels ``(*spatial)`` (uint16, or uint32 past 65,535 objects) from the cached prediction.

        Settings default to :attr:`thresholds` (the model's tuned ones; ``exclude_border`` drops the objects
        touching the image border).

        Raises:
            RuntimeError: :meth:`predict` has not run.
        """
        from monai_embedseg.data.io import as_label_dtype
        from monai_embedseg.transforms import cluster_embeddings

        if self.prediction is None:
            raise RuntimeError("no prediction to cluster: call predict(image) first.")
        settings = self.settings.replace(
            seed_thresh=seed_thresh, fg_thresh=fg_thresh, min_object_size=min_object_size, exclude_border=exclude_border
        )
        labels = cluster_embeddings(self.prediction, **settings.as_dict())[0][0]
        return np.asarray(as_label_dtype(labels.numpy()))

    @property
    def thresholds(self) -> dict:
        """The model's tuned ``seed_thresh``, ``fg_thresh``, ``min_object_size``, ``exclude_border`` (from
        :attr:`settings`)."""
        return self.settings.tuned()

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Pixel size per spatial axis used by the clustering (from :attr:`settings`)."""
        return self.settings.spacing

    def __call__(self, image: np.ndarray, channel_axis: int | None = None, **thresholds) -> np.ndarray:
        """:meth:`predict` then :meth:`cluster` (``thresholds`` as for :meth:`cluster`)."""
        self.predict(image, channel_axis)
        return self.cluster(**thresholds)
