"""Utilities: checkpoint loading, atomic file output, thread settings."""

from .checkpoint import load_weights
from .files import atomic_output
from .threads import available_cpus, configure_threads
