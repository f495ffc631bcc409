"""TensorBoard image panels for instance segmentation: input, seed map, predicted and true instances."""

from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils import optional_import

from monai_embedseg.constants import NORMALIZE_PERCENTILES, PRED_LABELS_KEY
from monai_embedseg.labels import one_hot_to_label_map

SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["InstancePanelsHandler", "instance_colors", "middle_slice"]


def instance_colors(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Colour a label map ``(H, W)`` with random (seeded) colours per id, background black.

    Returns:
        float32 RGB image ``(3, H, W)`` in [0, 1].
    """
    labels = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    lut = rng.uniform(0.25, 1.0, size=(int(labels.max(initial=0)) + 1, 3)).astype(np.float32)
    lut[0] = 0.0
    return np.moveaxis(lut[labels], -1, 0)


def middle_slice(x: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W)`` of channel 0; ``(C, D, H, W)`` -> the middle z-slice of channel 0."""
    x = np.asarray(x)[0]
    return x[x.shape[0] // 2] if x.ndim == 3 else x


class InstancePanelsHandler:
    """Write four panels of the first item of the first batch of every evaluator run to TensorBoard.

    Panels (tags ``<prefix>/input``, ``/seed``, ``/prediction``, ``/ground_truth``): the normalised input, the seed
    probability map, predicted instances and true instances in random colours. 3D volumes show their middle z-slice.
    Works with a decollated evaluator output (a list of dicts, one per item). The step is the evaluator's
    ``state.epoch``, which MONAI's ``ValidationHandler`` sets to the trainer's epoch.

    Args:
        log_dir: TensorBoard folder (or pass ``summary_writer``).
        image_key, pred_key, instance_key, label_key: keys in each output dict: input ``(C, *sp)``, raw prediction
            ``(2D+1, *sp)`` (seed logit last), predicted labels ``(1, *sp)``, true labels ``(1, *sp)`` or ``(N, *sp)``.
    """

    def __init__(
        self,
        log_dir: str = "./runs",
        summary_writer=None,
        image_key: str = "image",
        pred_key: str = "pred",
        instance_key: str = PRED_LABELS_KEY,
        label_key: str = "label",
        prefix: str = "val",
    ) -> None:
        self.writer = summary_writer if summary_writer is not None else SummaryWriter(log_dir=log_dir)
        self.keys = (image_key, pred_key, instance_key, label_key)
        self.prefix = prefix

    def attach(self, engine: Engine) -> None:
        """Write on the first iteration of each run, flush at its end."""
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._rearm)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.writer.flush())

    def _rearm(self, engine: Engine) -> None:
        # ITERATION_COMPLETED(once=1) counts engine iterations, which keep growing across evaluator runs.
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=engine.state.iteration + 1), self)

    def __call__(self, engine: Engine) -> None:
        """Write the panels of ``engine.state.output[0]``."""
        output = engine.state.output
        item = output[0] if isinstance(output, (list, tuple)) else output
        image_key, pred_key, instance_key, label_key = self.keys

        def numpy(key):
            value = item[key]
            return value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

        step = engine.state.epoch
        image = middle_slice(numpy(image_key))
        lo, hi = np.percentile(image, NORMALIZE_PERCENTILES)
        self.writer.add_image(f"{self.prefix}/input", np.clip((image - lo) / max(hi - lo, 1e-8), 0, 1)[None], step)
        seed = 1.0 / (1.0 + np.exp(-middle_slice(numpy(pred_key)[-1:])))
        self.writer.add_image(f"{self.prefix}/seed", seed[None].astype(np.float32), step)
        self.writer.add_image(f"{self.prefix}/prediction", instance_colors(middle_slice(numpy(instance_key))), step)
        truth = numpy(label_key)
        if truth.shape[0] > 1:  # one-hot stack: flatten for display (later objects on top)
            truth = one_hot_to_label_map(truth)
        self.writer.add_image(f"{self.prefix}/ground_truth", instance_colors(middle_slice(truth)), step)
