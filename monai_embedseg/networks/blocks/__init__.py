"""ERF-Net building blocks."""

from .erfnet import DownsamplerBlock, NonBottleneck1d, UpsamplerBlock
