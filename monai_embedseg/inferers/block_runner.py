"""Running the blocks as Dask tasks: the local threaded scheduler or a ``dask.distributed`` cluster, with a progress
bar and a callback per finished block."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["BlockRunner"]

logger = logging.getLogger("monai_embedseg.inferers.blockwise")  # the block-wise run's log


class BlockRunner:
    """Runs lists of ``dask.delayed`` tasks on the chosen scheduler, with a progress bar and a callback per result."""

    def __init__(self, scheduler: Any = None, workers: int = 1) -> None:
        self.client = None
        self._own_client = False
        self.workers = max(1, int(workers))
        if scheduler is None or scheduler in ("threads", "synchronous", "sync", "single-threaded"):
            self.local = "threads" if scheduler in (None, "threads") else "synchronous"
        else:
            from dask.distributed import Client

            self.local = None
            if isinstance(scheduler, str):
                try:
                    self.client = Client(scheduler, timeout="30s")
                except OSError as e:
                    raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
                self._own_client = True
            else:
                self.client = scheduler

    def close(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()

    def compute(self, tasks: list) -> list:
        """Results of ``tasks`` in order (no progress bar): for small passes like the percentiles."""
        import dask

        if self.client is not None:
            return self.client.gather(self.client.compute(tasks))
        return list(dask.compute(*tasks, scheduler=self.local, num_workers=self.workers))

    def run(self, tasks: list, desc: str, on_result: Callable[[dict], None], progress: bool = True) -> None:
        """Run ``tasks`` (each returning a dict), calling ``on_result`` as each finishes; the first error is raised."""
        import dask
        from dask.callbacks import Callback
        from tqdm import tqdm

        if not tasks:
            return
        from tqdm.contrib.logging import logging_redirect_tqdm

        keys = {str(t.key) for t in tasks}
        with (
            tqdm(total=len(tasks), desc=desc, unit="block", disable=not progress) as bar,
            logging_redirect_tqdm(loggers=[logger] if progress and logger.handlers else []),
        ):
            if self.client is not None:
                from dask.distributed import as_completed

                futures = self.client.compute(tasks)
                try:
                    for fut in as_completed(futures):
                        on_result(fut.result())
                        bar.update()
                except BaseException:
                    self.client.cancel(futures)
                    raise
                return

            class _Progress(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):
                    if str(key) in keys:
                        on_result(result)
                        bar.update()

            with _Progress():
                dask.compute(*tasks, scheduler=self.local, num_workers=self.workers)


# ----------------------------------------------------------------------------------------------------------- driver
