"""Choose the torch CPU thread count again while an engine runs, as other programs start and stop."""

from __future__ import annotations

import time

from ignite.engine import Engine, Events

from monai_embedseg.utils.threads import configure_threads

__all__ = ["ThreadCountHandler"]


class ThreadCountHandler:
    """Call :func:`~monai_embedseg.utils.configure_threads` on ``event`` (at most every ``min_interval`` seconds).

    A count chosen once at start stays wrong for the whole run when another program was busy then (one thread on an
    idle machine) or starts later (oversubscription). ``configure_threads`` logs each change. An explicit
    ``threads`` or ``OMP_NUM_THREADS`` disables the re-check (the user's choice is kept).

    Args:
        reserve: cores kept free (e.g. DataLoader workers).
        threads: the user's explicit count, or ``None`` to measure.
        event: ignite event name, ``"EPOCH_STARTED"`` for trainers, ``"ITERATION_STARTED"`` for one check per image.
        min_interval: seconds between two measurements (each takes 0.3 s).
    """

    def __init__(
        self, reserve: int = 0, threads: int | None = None, event: str = "EPOCH_STARTED", min_interval: float = 30.0
    ) -> None:
        self.reserve = int(reserve)
        self.threads = threads
        self.event = Events[event]
        self.min_interval = float(min_interval)
        self._last = time.monotonic()
        #: thread counts chosen at each check, in order
        self.history: list[int] = []

    def attach(self, engine: Engine) -> None:
        """Register on ``event`` of ``engine``; the first check comes ``min_interval`` after construction."""
        engine.add_event_handler(self.event, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Re-check now unless the last check was less than ``min_interval`` seconds ago."""
        now = time.monotonic()
        if self.threads is not None or now - self._last < self.min_interval:
            return
        self._last = now
        self.history.append(configure_threads(reserve=self.reserve, threads=None))
