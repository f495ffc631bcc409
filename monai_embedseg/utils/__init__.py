"""Utilities: checkpoint loading, atomic file output, thread settings, training-setting checks (imported on first
use)."""

from monai_embedseg._lazy import lazy_exports

_EXPORTS = {
    "load_weights": "checkpoint",
    "atomic_output": "files",
    "available_cpus": "threads",
    "configure_threads": "threads",
    "check_max_minutes": "settings",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
