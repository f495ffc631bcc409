"""Checks of training settings that need no library: the training workflow, its command line and its handlers
share them (the command line refuses a bad value before torch loads)."""

from __future__ import annotations

__all__ = ["check_max_minutes"]


def check_max_minutes(max_minutes: float | None) -> float | None:
    """``max_minutes`` (a training time limit) as float minutes; ``None``: no limit.

    Raises:
        ValueError: neither ``None`` nor a positive number.
    """
    if max_minutes is None:
        return None
    if isinstance(max_minutes, bool) or not isinstance(max_minutes, (int, float)) or not max_minutes > 0:
        raise ValueError(f"--max_minutes must be a positive number of minutes (or null), got {max_minutes!r}.")
    return float(max_minutes)
