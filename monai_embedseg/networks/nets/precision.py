"""Run any EmbedSeg network in a faster numeric format: channels-last memory layout and bf16 autocast.

On CPUs with native bf16 (AVX-512 BF16 / AMX) and on recent GPUs, bf16 autocast roughly halves the cost of the
convolutions; channels-last lets oneDNN / cuDNN pick faster kernels. The wrapper only changes how the wrapped
network is *run*: its parameters stay float32 and its ``state_dict`` is saved from the wrapped network itself, so
checkpoints are the same with or without it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

__all__ = ["FastForward", "bf16_supported", "resolve_precision"]

PRECISIONS = ("auto", "float32", "bfloat16")


@functools.cache
def bf16_supported(device_type: str) -> bool:
    """Whether ``device_type`` (``"cpu"`` or ``"cuda"``) runs bf16 convolutions natively (not emulated)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str, device_type: str) -> torch.dtype:
    """``"auto"`` -> bf16 where natively supported, float32 otherwise; ``"float32"`` / ``"bfloat16"`` as given.

    Raises:
        ValueError: an unknown name, or ``"bfloat16"`` on a device without native bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "float32":
        return torch.float32
    native = bf16_supported(device_type)
    if precision == "bfloat16" and not native:
        raise ValueError(f"precision 'bfloat16' asked for, but this {device_type} has no native bf16; use 'auto'.")
    return torch.bfloat16 if native else torch.float32


class FastForward(nn.Module):
    """Wrap ``network`` so its forward runs channels-last under bf16 autocast, returning a float32 tensor.

    Use the wrapper for running (trainer, evaluator, inferer) and the wrapped network for checkpoints and the
    optimiser: ``FastForward(net).network is net``. Backward passes through autocast as usual (float32 master
    weights, no loss scaling needed for bf16).

    Args:
        network: any module mapping ``(B, C_in, *spatial)`` to ``(B, C_out, *spatial)``.
        precision: ``"auto"`` (bf16 where the device has it natively, else float32), ``"float32"`` or
            ``"bfloat16"``; resolved per call from the input's device.
        channels_last: run in channels-last memory format (``channels_last_3d`` for 5D inputs).

    Shapes:
        ``(B, C_in, *spatial)`` -> ``(B, C_out, *spatial)`` float32, contiguous.
    """

    def __init__(self, network: nn.Module, precision: str = "auto", channels_last: bool = True) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
        self.network = network
        self.precision = precision
        self.channels_last = bool(channels_last)
        self._layout: torch.memory_format | None = None

    def _set_layout(self, ndim: int) -> None:
        fmt = torch.channels_last if ndim == 4 else torch.channels_last_3d
        if isinstance(self.network, nn.parallel.DistributedDataParallel):
            return  # DDP's gradient buckets are laid out at wrapping time: keep the parameters' layout
        if self._layout is not fmt:
            self.network.to(memory_format=fmt)
            self._layout = fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the wrapped network; see the class docstring for shapes."""
        if self.channels_last and x.ndim in (4, 5):
            self._set_layout(x.ndim)
            x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
        dtype = resolve_precision(self.precision, x.device.type)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = self.network(x)
        return out.float().contiguous()
