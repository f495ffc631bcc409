"""A torch CPU thread count that does not oversubscribe the machine."""

from __future__ import annotations

import logging
import os

import psutil
import torch

__all__ = ["available_cpus", "busy_cpus", "configure_threads"]

logger = logging.getLogger(__name__)

#: environment variables through which a user sets the thread count
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _affinity() -> list[int] | None:
    """Ids of the CPUs this process may run on, ``None`` where the platform does not say."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, or ``os.cpu_count()`` where that is unknown)."""
    mine = _affinity()
    return max(1, len(mine) if mine is not None else os.cpu_count() or 1)


def busy_cpus(interval: float = 0.3) -> int:
    """CPUs of this process's affinity kept busy by other programs now (measured over ``interval`` seconds).

    Measured, not the 1-minute load average: that average still counts a job that ended a minute ago, so a
    training started right after another would run on one thread for hours. This process's own use over the same
    interval (e.g. its threads still spinning after a step) is not counted; child processes such as DataLoader workers
    are counted as other programs, and ``configure_threads`` reserves cores for them separately.
    """
    try:
        me = psutil.Process()
        me.cpu_percent(None)
        per_cpu = psutil.cpu_percent(interval=interval, percpu=True)
        own = me.cpu_percent(None)
        mine = _affinity()
        if mine is None:
            mine = range(len(per_cpu))
        return max(0, int(round((sum(per_cpu[i] for i in mine if i < len(per_cpu)) - own) / 100.0)))
    except (OSError, RuntimeError, NotImplementedError):  # no /proc: fall back to the load average
        try:
            return int(round(os.getloadavg()[0]))
        except (AttributeError, OSError):
            return 0


def configure_threads(reserve: int = 0, threads: int | None = None) -> int:
    """Set ``torch.set_num_threads`` to what this machine can give now, unless the user chose it.

    PyTorch starts one OpenMP thread per core; on a small CPU shared with other programs those threads wait for
    each other and a step can become many times slower. The count used here is the CPUs of this process's
    affinity, minus ``reserve`` (e.g. the DataLoader workers), minus the cores already busy (measured now,
    :func:`busy_cpus`), and at least 1. An explicit ``threads``, or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
    environment, wins.

    Returns:
        the thread count now in use.
    """
    if threads is None:
        user = next((os.environ[v] for v in THREAD_VARS if os.environ.get(v, "").strip()), None)
        if user is not None:
            return torch.get_num_threads()  # torch already follows the variable
        cpus = available_cpus()
        busy = busy_cpus()
        threads = max(1, min(cpus - int(reserve), cpus - busy))
    threads = max(1, int(threads))
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
        logger.info(f"using {threads} torch CPU thread(s), was {before} (set OMP_NUM_THREADS or --threads to choose)")
    return threads
