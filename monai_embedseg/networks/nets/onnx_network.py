"""ONNX export of an EmbedSeg network, and an ONNX Runtime model usable wherever a network is (``segment --model``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from monai_embedseg.utils.files import atomic_output

__all__ = ["export_onnx", "OnnxNetwork"]


def export_onnx(network: nn.Module, path: str, spatial_dims: int, in_channels: int, overwrite: bool = False) -> str:
    """Export ``network`` to ONNX with dynamic batch and spatial axes (any input size, padded inside).

    Args:
        network: e.g. a trained ``BranchedERFNet`` (put in eval mode here).
        path: the ``.onnx`` file, written atomically.
        spatial_dims, in_channels: shape of the example input ``(1, in_channels, *[37] * spatial_dims)``: a size
            that the network must pad and crop back, so that the traced graph pads and crops for any input size.
        overwrite: replace an existing file.

    Returns:
        the path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    network = network.eval()
    axes = {0: "batch", **{2 + i: f"dim{i}" for i in range(spatial_dims)}}
    example = torch.rand(1, in_channels, *[37] * spatial_dims)
    with atomic_output(path, overwrite=overwrite) as tmp, torch.no_grad():
        torch.onnx.export(
            network,
            (example,),
            tmp,
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes={"image": axes, "pred": axes},
            dynamo=False,
        )
    return str(path)


class OnnxNetwork(nn.Module):
    """Run an exported ``.onnx`` EmbedSeg network with ONNX Runtime, as a torch module (CPU).

    Args:
        path: the ``.onnx`` file (``export_onnx``).
        threads: intra-op threads of the session (``None``: torch's current thread count).

    Shapes:
        ``(B, C_in, *spatial)`` float32 -> ``(B, C_out, *spatial)`` float32, on the input's device.

    Raises:
        ImportError: ``onnxruntime`` is not installed (``pip install onnxruntime``).
        ValueError: ``path`` is not a readable ONNX model.
    """

    def __init__(self, path: str, threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("running an .onnx model needs onnxruntime: pip install onnxruntime") from e
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(Path(path)), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e}).") from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the session; see the class docstring for shapes."""
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(out).to(x.device)
