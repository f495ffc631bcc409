"""Networks for EmbedSeg."""

from .branched_erfnet import BackboneAdapter, BranchedERFNet
from .onnx_network import OnnxNetwork, export_onnx
from .precision import FastForward, bf16_supported, resolve_precision
