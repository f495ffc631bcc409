"""Validate once more at the end of training, so that a run always leaves a best model to use."""

from __future__ import annotations

from ignite.engine import Engine, Events

__all__ = ["FinalValidationHandler"]


class FinalValidationHandler:
    """Run ``validator`` when training completes on an epoch that the periodic validation skipped.

    MONAI's ``ValidationHandler(interval=10)`` never validates a 4-epoch run, so no best model is written; with this
    handler beside it the last epoch is always validated (once: nothing happens when the last epoch was validated
    anyway, or when no epoch ran). A run stopped within an epoch (e.g. by :class:`TrainingTimeLimit`) is validated too.

    Args:
        validator: the evaluator (as given to ``ValidationHandler``).
        interval: the ``ValidationHandler``'s epoch interval.
    """

    def __init__(self, validator: Engine, interval: int) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1 epoch, got {interval}.")
        self.validator = validator
        self.interval = int(interval)

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s ``COMPLETED`` event."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Validate if the last epoch, or the part of it that ran, was not validated."""
        state = engine.state
        stopped_within_epoch = bool(state.epoch_length) and state.iteration % state.epoch_length != 0
        if state.iteration > 0 and (state.epoch % self.interval != 0 or stopped_within_epoch):
            self.validator.run(state.epoch)
