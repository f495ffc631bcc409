"""Periodic validation that never takes more than a set share of the training time."""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events

__all__ = ["BoundedValidationHandler"]

logger = logging.getLogger(__name__)


class BoundedValidationHandler:
    """Run ``validator`` every ``interval`` epochs, skipping a run while validation would exceed ``max_fraction``.

    Like MONAI's ``ValidationHandler``, but a validation is skipped when the previous one took longer than
    ``max_fraction`` of the training time since it ended (large validation volumes against short epochs), so
    validation stays within about that share of the run, whatever the validation split holds. The first scheduled
    validation and the one at the last epoch always run (a run always leaves a best model; the threshold search
    compares the last step anyway).

    Args:
        validator: the evaluator.
        interval: epochs between scheduled validations.
        max_fraction: largest ratio of one validation's time to the training time since the previous one.
    """

    def __init__(self, validator: Engine, interval: int = 1, max_fraction: float = 0.1) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1 epoch, got {interval}.")
        if not float(max_fraction) > 0:
            raise ValueError(f"max_fraction must be > 0, got {max_fraction}.")
        self.validator = validator
        self.interval = int(interval)
        self.max_fraction = float(max_fraction)
        self._seconds: float | None = None  # duration of the last validation
        self._ended = 0.0  # when it ended
        #: epochs whose scheduled validation was skipped
        self.skipped: list[int] = []

    def attach(self, engine: Engine) -> None:
        """Register on every ``interval``-th ``EPOCH_COMPLETED`` of ``engine``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        """Validate now unless the time bound says to skip (see the class docstring)."""
        now = time.perf_counter()
        last = engine.state.max_epochs is not None and engine.state.epoch >= engine.state.max_epochs
        if not last and self._seconds is not None and self._seconds > self.max_fraction * (now - self._ended):
            if not self.skipped:
                logger.info(
                    f"validation takes {self._seconds:.1f} s: skipping scheduled runs while it would exceed "
                    f"{100 * self.max_fraction:.0f} % of the training time (the last epoch is always validated)"
                )
            self.skipped.append(engine.state.epoch)
            return
        self.validator.run(engine.state.epoch)
        self._ended = time.perf_counter()
        self._seconds = self._ended - now
