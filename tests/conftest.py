"""Test-session settings: one torch thread, so that tests running beside other processes (or spawning their own,
like the torchrun test) never oversubscribe a small CPU, where spinning OpenMP threads slow convolutions down 10x+."""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")  # what the bundles' configure_threads respects

torch.set_num_threads(1)
