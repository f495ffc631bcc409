"""Networks for EmbedSeg."""

from .branched_erfnet import BranchedERFNet, BackboneAdapter
from .precision import FastForward, bf16_supported, resolve_precision
from .onnx_network import OnnxNetwork, export_onnx
