"""Resume a killed training run from the last epoch checkpoint written by ``CheckpointSaver``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = [
    "epoch_checkpoints",
    "latest_checkpoint",
    "refuse_earlier_run",
    "ResumeHandler",
    "TrainingCheckpointSaver",
    "BestModelSaver",
]

_EPOCH = re.compile(r"epoch=(\d+)")


def epoch_checkpoints(save_dir: str | Path, prefix: str = "checkpoint") -> list[Path]:
    """The ``<prefix>_epoch=N.pt`` files in ``save_dir``, oldest (smallest N) first."""
    found = []
    for path in Path(save_dir).glob(f"{prefix}*epoch=*.pt"):
        match = _EPOCH.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(save_dir: str | Path, prefix: str = "checkpoint") -> Path | None:
    """The newest ``<prefix>_epoch=N.pt`` in ``save_dir`` (largest N), or ``None`` when there is none."""
    found = epoch_checkpoints(save_dir, prefix)
    return found[-1] if found else None


def refuse_earlier_run(save_dir: str | Path, resume: bool, overwrite: bool, prefix: str = "checkpoint") -> Path | None:
    """The newest epoch checkpoint in ``save_dir``; a fresh run (neither ``resume`` nor ``overwrite``) is refused there.

    Raises:
        FileExistsError: ``save_dir`` holds another run's epoch checkpoints and the run would start over them; the
            message names one and the ways out.
    """
    path = latest_checkpoint(save_dir, prefix)
    if path is not None and not resume and not overwrite:
        raise FileExistsError(
            f"{save_dir} holds checkpoints of an earlier run (e.g. {path.name}): pass --resume true to continue it, "
            "--overwrite true to start over there, or choose another --output_dir."
        )
    return path


class ResumeHandler:
    """Load model, optimiser, scheduler and trainer state from the last epoch checkpoint when ``enabled``.

    With ``enabled=False`` a fresh run starts, but not over another run's checkpoints: if ``save_dir`` already holds
    ``checkpoint_epoch=N.pt`` files it stops with a ``FileExistsError`` saying to pass ``--resume true`` (continue
    that run) or ``--overwrite true`` (delete those epoch checkpoints and start over), so a later resume can never
    continue the wrong run. When enabled and no checkpoint exists yet, training starts from scratch and says so.

    The engine it is attached to is added to ``load_dict`` as ``"trainer"`` (a config cannot refer to the trainer
    from inside the trainer's own handler list without a circular reference).

    Args:
        save_dir: folder where :class:`TrainingCheckpointSaver` writes ``checkpoint_epoch=N.pt``.
        load_dict: the same objects as the saver's ``save_dict`` (e.g. model, optimizer, lr_scheduler).
        enabled: whether to resume.
        map_location: passed to ``torch.load`` (e.g. ``"cpu"``).
        overwrite: for a fresh run, delete the epoch checkpoints of an earlier run in ``save_dir`` instead of
            refusing to start.
    """

    def __init__(
        self,
        save_dir: str,
        load_dict: dict,
        enabled: bool = False,
        map_location=None,
        prefix: str = "checkpoint",
        overwrite: bool = False,
    ):
        self.save_dir = save_dir
        self.load_dict = load_dict
        self.enabled = enabled
        self.map_location = map_location
        self.prefix = prefix
        self.overwrite = overwrite
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Attach a MONAI ``CheckpointLoader`` for the newest checkpoint (if enabled and one exists).

        Objects of ``load_dict`` that the checkpoint lacks (state that an earlier version did not save) start afresh,
        with a warning; a checkpoint without model or trainer state is refused.

        Raises:
            FileExistsError: a fresh run (not enabled, not ``overwrite``) in a folder with another run's checkpoints.
            ValueError: the newest checkpoint holds no model or trainer state.
        """
        path = refuse_earlier_run(self.save_dir, self.enabled, self.overwrite, self.prefix)
        if not self.enabled:
            for old in epoch_checkpoints(self.save_dir, self.prefix):
                old.unlink()
                self.logger.info(f"overwrite: deleted {old} of an earlier run")
            return
        if path is None:
            self.logger.warning(f"resume requested but no checkpoint in {self.save_dir}: starting from scratch.")
            return
        self.logger.info(f"resuming from {path}")
        load_dict = {**self.load_dict, "trainer": engine}
        saved = set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
        lacking = [key for key in load_dict if key not in saved]
        if {"model", "trainer"} & set(lacking):
            raise ValueError(f"{path} is not an epoch checkpoint of this training: it holds no {lacking[0]!r}.")
        for key in lacking:  # state added to the checkpoints by a later version (e.g. the training clock)
            self.logger.warning(f"{path} holds no {key!r} (an earlier version wrote it): {key} starts afresh")
            del load_dict[key]
        CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location=self.map_location).attach(engine)


class TrainingCheckpointSaver(CheckpointSaver):
    """``CheckpointSaver`` that also saves the state of the engine it is attached to (as ``"trainer"``).

    Saves ``checkpoint_epoch=N.pt`` every ``save_interval`` epochs, keeping the last ``n_saved``: with the model,
    optimiser and scheduler in ``save_dict`` that is everything :class:`ResumeHandler` needs to continue a killed run.
    The ``n_saved`` newest epoch checkpoints in ``save_dir`` are kept across processes too: those a killed run left
    behind are deleted once the resumed run has saved newer ones. Other arguments as MONAI's ``CheckpointSaver``.
    """

    def __init__(self, save_dir: str, save_dict: dict, save_interval: int = 1, n_saved: int | None = 2, **kwargs):
        self._save_dict = dict(save_dict)
        self._keep = n_saved
        super().__init__(save_dir, self._save_dict, save_interval=save_interval, n_saved=n_saved, **kwargs)

    def attach(self, engine: Engine) -> None:
        """Add ``engine`` to the saved objects, then attach as ``CheckpointSaver`` and prune after each save."""
        self._save_dict["trainer"] = engine
        super().attach(engine)
        if self._keep:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._prune)

    def _prune(self, engine: Engine) -> None:
        """Delete all but the ``n_saved`` newest ``checkpoint_epoch=N.pt`` of ``save_dir``."""
        for path in epoch_checkpoints(self.save_dir)[: -self._keep]:
            path.unlink(missing_ok=True)


class BestModelSaver(CheckpointSaver):
    """``CheckpointSaver`` of the best model by the validator's key metric, whose record of the best score resumes.

    Writes ``save_dir/filename`` (a plain state dict, as MONAI's ``CheckpointSaver`` writes a single object) whenever
    the key metric improves or equals the best so far: a later model of equal score replaces an earlier one (a small
    validation split saturates AP@0.5 early, while the schedule keeps improving the masks).

    It has ``state_dict()`` / ``load_state_dict()`` (the record of the best score), so
    listing it in the epoch checkpoints' ``save_dict`` (and in :class:`ResumeHandler`'s ``load_dict``) makes a
    resumed run replace the best model only by a better one, instead of by whatever its first validation gives.

    Args:
        save_dir: output folder.
        save_dict: ``{"model": network}``.
        filename: the best model's file name.
        kwargs: other ``CheckpointSaver`` arguments.
    """

    def __init__(self, save_dir: str, save_dict: dict, filename: str = "model.pt", **kwargs):
        kwargs = {
            "save_key_metric": True,
            "key_metric_filename": filename,
            "key_metric_n_saved": 1,
            "key_metric_greater_or_equal": True,
            **kwargs,
        }
        super().__init__(save_dir, save_dict, **kwargs)

    def state_dict(self) -> dict:
        """The best-score record: ``{"_saved": [(score, filename), ...]}`` (Ignite's ``Checkpoint`` state)."""
        return self._key_metric_checkpoint.state_dict()

    def best_score(self) -> float | None:
        """The best key-metric value saved so far (``None`` before the first save)."""
        saved = self.state_dict().get("_saved", [])
        return float(saved[-1][0]) if saved else None
