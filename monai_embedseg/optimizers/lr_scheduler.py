"""A one-cycle learning-rate schedule that ends on time as well as on steps."""

from __future__ import annotations

from typing import Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

__all__ = ["TimedOneCycleLR"]


class TrainingProgress(Protocol):
    """What :class:`TimedOneCycleLR` reads: the share of the training time used so far (0 with no time limit)."""

    def fraction(self) -> float: ...


class TimedOneCycleLR(OneCycleLR):
    """``torch.optim.lr_scheduler.OneCycleLR`` that runs its cycle over a time budget or ``total_steps``, whichever
    ends first.

    At each ``step()`` the schedule moves to step ``max(steps taken, clock.fraction() * (total_steps - 1))``: a run
    limited by time (``clock`` is e.g. :class:`monai_embedseg.handlers.TrainingTimeLimit`) warms up, peaks and anneals
    within its minutes however fast the machine is, and ends at the final learning rate when the time is up. With
    no clock, or a clock without a limit (fraction 0), the learning rates are those of ``OneCycleLR``, step for step.

    Args:
        optimizer: the wrapped optimiser.
        max_lr: peak learning rate (float or one per parameter group).
        total_steps: iterations of the full schedule (e.g. ``epochs * len(loader)``).
        clock: an object with ``fraction()`` in [0, 1], the share of the time budget spent; ``None`` = steps only.
        kwargs: other ``OneCycleLR`` arguments (``pct_start``, ``anneal_strategy``, ...).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int,
        clock: TrainingProgress | None = None,
        **kwargs,
    ) -> None:
        self.clock = clock
        self.steps_taken = -1  # OneCycleLR's constructor takes the first step
        super().__init__(optimizer, max_lr, total_steps=total_steps, **kwargs)

    def schedule_step(self) -> int:
        """The schedule's position for the next learning rate: steps taken or time spent, whichever is further."""
        timed = 0 if self.clock is None else int(min(max(self.clock.fraction(), 0.0), 1.0) * (self.total_steps - 1))
        return min(max(self.steps_taken, timed), self.total_steps)

    def step(self, epoch: int | None = None) -> None:
        """Advance one iteration (``epoch`` is not supported, as in ``OneCycleLR``'s recommended use)."""
        if epoch is not None:
            raise ValueError("TimedOneCycleLR follows steps and time; call step() without an epoch.")
        self.steps_taken += 1
        self.last_epoch = self.schedule_step() - 1  # LRScheduler.step adds the one
        super().step()

    def state_dict(self) -> dict:
        """``OneCycleLR``'s state without the clock (which has its own state)."""
        return {k: v for k, v in super().state_dict().items() if k != "clock"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the schedule's state, keeping this scheduler's clock."""
        clock = self.clock
        super().load_state_dict(state_dict)
        self.clock = clock
