"""Validation metrics against wall-clock training time: TensorBoard curves, a CSV, model snapshots at set times."""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from ignite.engine import Engine, Events

from monai_embedseg.handlers.time_limit import TrainingTimeLimit
from monai_embedseg.utils.files import atomic_output

__all__ = ["TimeToAccuracyHandler"]

logger = logging.getLogger(__name__)


class TimeToAccuracyHandler:
    """Log a validator's metrics against the seconds since training started (a trainer handler).

    After every validation run it writes each metric of ``validator.state.metrics`` to TensorBoard under
    ``time_to_accuracy/<metric>`` with the elapsed training seconds as the step (TensorBoard's x axis then reads
    wall-clock time), and appends a row to ``<output_dir>/time_to_accuracy.csv`` (``seconds, epoch, iteration,
    <metrics>``). With ``snapshot_minutes``, the best-so-far model file (``model.pt``, as the validator's
    ``CheckpointSaver`` keeps it) is copied to ``model_<m>min.pt`` when training passes each mark, so a benchmark
    can later evaluate "the model one had after m minutes". The seconds are those of the training's clock
    (:class:`TrainingTimeLimit`, whose state the epoch checkpoints keep, so a resumed run's rows continue its time).

    Args:
        validator: the evaluator run by the trainer's ``ValidationHandler``.
        output_dir: folder of the CSV, the snapshots and the TensorBoard events.
        snapshot_minutes: training times (minutes) at which to copy ``model.pt``; empty = none.
        model_file: the best-model file name to snapshot.
        summary_writer: an existing ``SummaryWriter``; by default one writing into ``output_dir``.
        clock: the training's :class:`TrainingTimeLimit` (attached to the trainer on its own, as the bundles do);
            by default one of this handler's, attached with it.
    """

    CSV = "time_to_accuracy.csv"

    def __init__(
        self,
        validator: Engine,
        output_dir: str,
        snapshot_minutes: Sequence[float] = (),
        model_file: str = "model.pt",
        summary_writer=None,
        clock: TrainingTimeLimit | None = None,
    ) -> None:
        self.validator = validator
        self.output_dir = Path(output_dir)
        self.snapshot_minutes = sorted(float(m) for m in snapshot_minutes)
        self.model_file = model_file
        self._writer = summary_writer
        self._own_clock = clock is None
        self.clock = TrainingTimeLimit() if clock is None else clock
        self._taken: set[float] = set()
        self.trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Log after each validation run of ``engine`` (the trainer); attach this handler's own clock, if it has one."""
        self.trainer = engine
        if self._own_clock:
            self.clock.attach(engine)
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._snapshots)
        engine.add_event_handler(Events.COMPLETED, self._snapshots, True)
        self.validator.add_event_handler(Events.COMPLETED, self._log)

    def elapsed(self) -> float:
        """Seconds of training so far (0 before the start; a resumed run's earlier seconds included)."""
        return self.clock.elapsed()

    def _start(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def _writer_or_new(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output_dir))
        return self._writer

    def _log(self, validator: Engine) -> None:
        seconds = self.elapsed()
        metrics = {k: float(v) for k, v in validator.state.metrics.items() if isinstance(v, (int, float))}
        writer = self._writer_or_new()
        for name, value in metrics.items():
            writer.add_scalar(f"time_to_accuracy/{name}", value, global_step=int(round(seconds)))
        writer.flush()
        path = self.output_dir / self.CSV
        new = not path.is_file()
        trainer_state = self.trainer.state if self.trainer is not None else None
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["seconds", "epoch", "iteration", *metrics])
            w.writerow(
                [
                    f"{seconds:.1f}",
                    getattr(trainer_state, "epoch", 0),
                    getattr(trainer_state, "iteration", 0),
                    *(f"{v:.4f}" for v in metrics.values()),
                ]
            )

    def _snapshots(self, engine: Engine, final: bool = False) -> None:
        """Copy the best model at each passed mark; at the end of training, at every mark not yet reached."""
        minutes = self.elapsed() / 60
        src = self.output_dir / self.model_file
        for mark in self.snapshot_minutes:
            if mark in self._taken or not (final or minutes >= mark) or not src.is_file():
                continue
            with atomic_output(self.output_dir / f"model_{mark:g}min.pt", overwrite=True) as tmp:
                shutil.copyfile(src, tmp)
            self._taken.add(mark)
            logger.info(f"{minutes:.1f} min of training: {src.name} -> model_{mark:g}min.pt")
