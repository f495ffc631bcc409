"""Expose the loss terms of :class:`SpatialEmbeddingLoss` (and the learning rate) to Ignite handlers."""

from __future__ import annotations

from collections import defaultdict

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

__all__ = ["LossTermsHandler"]


class LossTermsHandler:
    """Copy the loss's detached terms into ``engine.state.output[output_key]`` after every loss computation.

    The loss must keep a ``terms`` dict of scalar tensors (``SpatialEmbeddingLoss`` does). The handler also adds the
    current learning rate (``"lr"``, from the engine's optimizer) and, at the end of each epoch, writes the epoch
    means into ``engine.state.metrics`` as ``loss_<term>`` so epoch-level loggers see them. Pair it with
    ``TensorBoardStatsHandler(output_transform=lambda o: o["loss_terms"])`` on a trainer with ``decollate=False``.

    Args:
        loss_function: the loss module whose ``terms`` are read; defaults to ``engine.loss_function``.
        output_key: key in ``engine.state.output`` to write.
    """

    def __init__(self, loss_function: torch.nn.Module | None = None, output_key: str = "loss_terms") -> None:
        self.loss_function = loss_function
        self.output_key = output_key
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Register on ``LOSS_COMPLETED``, ``EPOCH_STARTED`` and ``EPOCH_COMPLETED`` of ``engine``."""
        if self.loss_function is None:
            self.loss_function = getattr(engine, "loss_function", None)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.on_loss)
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.on_epoch)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the running sums (called at each epoch start)."""
        self._sums.clear()
        self._count = 0

    def on_loss(self, engine: Engine) -> None:
        """Write ``{term: float}`` (and ``lr``) into the iteration output."""
        terms = getattr(self.loss_function, "terms", None)
        if not terms:
            raise RuntimeError(f"{type(self.loss_function).__name__} has no 'terms' dict to log.")
        values = {name: float(value) for name, value in terms.items()}
        for name, value in values.items():
            self._sums[name] += value
        self._count += 1
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            values["lr"] = float(optimizer.param_groups[0]["lr"])
        engine.state.output[self.output_key] = values

    def on_epoch(self, engine: Engine) -> None:
        """Store the epoch means as ``engine.state.metrics["loss_<term>"]``."""
        for name, total in self._sums.items():
            engine.state.metrics[f"loss_{name}"] = total / max(self._count, 1)
