"""Utilities: prediction encoding/decoding, oracle predictions, checkpoint loading."""

from .embedding import (
    OFFSET_SCALE,
    SIGMA_SCALE,
    decode_pixels,
    decode_prediction,
    encode_prediction,
    n_sigma_of,
    pixel_coordinates,
    resolve_spacing,
)
from .checkpoint import load_weights
from .files import atomic_output
from .oracle import oracle_prediction
from .threads import available_cpus, configure_threads
