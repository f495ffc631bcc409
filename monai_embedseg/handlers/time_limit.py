"""Stop training after a given number of minutes of training time, whatever the epoch count says."""

from __future__ import annotations

import logging
import time

import ignite.distributed as idist
from ignite.engine import Engine, Events

from monai_embedseg.utils.settings import check_max_minutes

__all__ = ["TrainingTimeLimit"]

logger = logging.getLogger(__name__)


class TrainingTimeLimit:
    """A trainer handler that ends training once ``max_minutes`` of training time are spent.

    The clock runs from the trainer's start (after the data is cached) and counts validation, not what comes after
    training (the threshold search). The check is made after each iteration; the trainer then fires ``COMPLETED`` as
    at the end of its epochs, so the final validation and the best model are written as usual. Its state (the
    seconds spent) is saved in the epoch checkpoints, so a resumed run continues the same budget.

    ``fraction()`` is the share of the budget spent, which :class:`monai_embedseg.optimizers.TimedOneCycleLR` reads to
    fit its learning-rate cycle into the budget. It changes only at the check, and under ``torchrun`` the check takes
    the slowest process's time (an all-reduce), so every process sees the same fraction, sets the same learning rate
    and stops at the same iteration. With ``max_minutes=None`` the handler only keeps time (and makes no all-reduce).

    Args:
        max_minutes: training time allowed, minutes (> 0), or ``None`` for no limit
            (:func:`monai_embedseg.utils.settings.check_max_minutes`).
    """

    def __init__(self, max_minutes: float | None = None) -> None:
        self.max_minutes = check_max_minutes(max_minutes)
        self._t0: float | None = None
        self._offset = 0.0
        self._checked = 0.0  # training seconds at the last check, the same in every process

    def attach(self, engine: Engine) -> None:
        """Start the clock when ``engine`` starts; check the limit after each of its iterations."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def elapsed(self) -> float:
        """Seconds of training so far, earlier runs of a resumed training included."""
        return self._offset + (0.0 if self._t0 is None else time.perf_counter() - self._t0)

    def fraction(self) -> float:
        """Share of the budget spent at the last check (after the last iteration), in [0, 1]; 0 without a limit."""
        if self.max_minutes is None:
            return 0.0
        return min(self._checked / (60.0 * self.max_minutes), 1.0)

    def _start(self, engine: Engine) -> None:
        self._t0 = time.perf_counter()
        self._checked = self._offset

    def _check(self, engine: Engine) -> None:
        if self.max_minutes is None:
            return
        self._checked = float(idist.all_reduce(self.elapsed(), op="MAX"))
        if self.fraction() >= 1.0:
            logger.info(
                f"training time limit of {self.max_minutes:g} min reached at epoch {engine.state.epoch}, "
                f"iteration {engine.state.iteration}: training stops"
            )
            engine.terminate()

    def state_dict(self) -> dict:
        """``{"seconds": training seconds so far}``."""
        return {"seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from the seconds a checkpoint recorded (the clock restarts from there)."""
        self._offset = self._checked = float(state_dict["seconds"])
        if self._t0 is not None:
            self._t0 = time.perf_counter()
