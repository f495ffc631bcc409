"""Where a training step's time goes: waiting for data, forward, loss, backward + optimiser step."""

from __future__ import annotations

import time

from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

__all__ = ["StepTimeHandler", "STEP_PARTS"]

#: the parts of a step, in order
STEP_PARTS = ("data", "forward", "loss", "backward_step")


class StepTimeHandler:
    """Time each part of every iteration of a MONAI ``SupervisedTrainer``, and report epoch means.

    ``data`` is the wait for the next batch (``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED``: zero when DataLoader
    workers keep up), ``forward`` ends at ``FORWARD_COMPLETED``, ``loss`` at ``LOSS_COMPLETED``, ``backward_step``
    at ``MODEL_COMPLETED`` (backward and optimiser step). On a GPU the parts are host times (no synchronisation is
    added, so they are only exact on a CPU); the total is exact on both.

    At each epoch end ``engine.state.metrics`` gets ``step_s_<part>`` (mean seconds per step) and
    ``step_data_fraction``; :attr:`totals` keeps the sums over the whole run (``{part: seconds}``, plus ``"steps"``).
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {part: 0.0 for part in STEP_PARTS} | {"steps": 0.0}
        self._epoch: dict[str, float] = {}
        self._steps = 0
        self._t = 0.0
        self._mark = 0.0

    def attach(self, engine: Engine) -> None:
        """Register on the batch, iteration and epoch events of ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._start)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._lap, "data")
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._lap, "forward")
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self._lap, "loss")
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self._lap, "backward_step")
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _reset(self, engine: Engine) -> None:
        self._epoch = {part: 0.0 for part in STEP_PARTS}
        self._steps = 0

    def _start(self, engine: Engine) -> None:
        self._mark = time.perf_counter()

    def _lap(self, engine: Engine, part: str) -> None:
        now = time.perf_counter()
        self._epoch[part] = self._epoch.get(part, 0.0) + now - self._mark
        self.totals[part] += now - self._mark
        self._mark = now

    def _count(self, engine: Engine) -> None:
        self._steps += 1
        self.totals["steps"] += 1

    def _report(self, engine: Engine) -> None:
        steps = max(self._steps, 1)
        total = sum(self._epoch.values())
        for part in STEP_PARTS:
            engine.state.metrics[f"step_s_{part}"] = self._epoch.get(part, 0.0) / steps
        engine.state.metrics["step_data_fraction"] = self._epoch.get("data", 0.0) / total if total else 0.0

    def mean_step(self) -> dict[str, float]:
        """Mean seconds per step over the whole run: ``{part: s}`` and ``"total"``."""
        steps = max(self.totals["steps"], 1)
        out = {part: self.totals[part] / steps for part in STEP_PARTS}
        out["total"] = sum(out.values())
        return out
