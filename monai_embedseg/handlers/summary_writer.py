"""One TensorBoard writer for a training run, created when the first event is written."""

from __future__ import annotations

from typing import Any

__all__ = ["LazySummaryWriter"]


class LazySummaryWriter:
    """A ``torch.utils.tensorboard.SummaryWriter`` for ``log_dir`` whose event file is created on first use.

    The bundles give this one writer to all their TensorBoard handlers (MONAI's ``TensorBoardStatsHandler``,
    :class:`InstancePanelsHandler`, :class:`TimeToAccuracyHandler`), so a run writes one event file, and building the
    workflow (MONAI's ``check_properties`` instantiates every handler) writes nothing. Every ``SummaryWriter`` method
    (``add_scalar``, ``add_image``, ...) is forwarded; :meth:`flush` and :meth:`close` do nothing before first use.

    Args:
        log_dir: the TensorBoard folder.
        kwargs: passed to ``SummaryWriter``.
    """

    def __init__(self, log_dir: str, **kwargs: Any) -> None:
        self.log_dir = str(log_dir)
        self._kwargs = kwargs
        self._writer = None

    @property
    def writer(self):
        """The underlying ``SummaryWriter`` (created, with its event file, on first access)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._writer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.writer, name)

    def flush(self) -> None:
        """Write pending events to disk (nothing before first use)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (nothing before first use); a later event opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
