"""References for tests and benchmarks: perfect ("oracle") predictions made from ground-truth labels."""

from .oracle import oracle_prediction
