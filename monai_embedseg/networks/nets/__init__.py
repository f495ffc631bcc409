"""Networks for EmbedSeg."""

from .branched_erfnet import BranchedERFNet, BackboneAdapter
