"""Networks that produce an EmbedSeg raw prediction.

Output convention (shared by :class:`BranchedERFNet` and any backbone wrapped in :class:`BackboneAdapter`): a
network maps an image ``(B, C_in, *spatial)`` to ONE tensor ``(B, C, *spatial)`` with the same spatial size and
``C = 2 * D + 1`` channels (``D`` = spatial_dims; offsets, per-axis log-bandwidths, seed logit) or ``C = D + 2``
(offsets, one isotropic log-bandwidth, seed logit), laid out as :mod:`monai_embedseg.embedding` defines::

    channels [0, D)            raw offsets (z, y, x order, like the array axes)
    channels [D, D + n_sigma)  raw log-bandwidths, n_sigma = D or 1
    channel  D + n_sigma       seed logit

The channels are raw (no activation): :func:`monai_embedseg.embedding.decode_prediction` turns them into
embeddings, bandwidths and seed probabilities.

Any MONAI backbone can serve as the network when it outputs that many channels, e.g.::

    from monai.networks.nets import BasicUNet, SegResNet
    from monai_embedseg.networks.nets import BackboneAdapter

    net = BackboneAdapter(BasicUNet(spatial_dims=2, in_channels=1, out_channels=5), spatial_dims=2)
    net3d = BackboneAdapter(SegResNet(spatial_dims=3, in_channels=1, out_channels=7), spatial_dims=3, divisible_by=8)
    pred = net(torch.rand(2, 1, 100, 75))  # (2, 5, 100, 75): 2 offsets, 2 sigmas, 1 seed

The adapter pads the input (at the end of every spatial axis) to a multiple of ``divisible_by`` (for
``UNet``/``SegResNet`` the product of the strides; ``BasicUNet`` handles any size) and crops the output back, and
checks the output channel count, raising a ``ValueError`` that names the expected counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv

from monai_embedseg.embedding import n_sigma_of
from monai_embedseg.networks.blocks.erfnet import DownsamplerBlock, NonBottleneck1d, UpsamplerBlock

__all__ = ["BranchedERFNet", "BackboneAdapter"]

_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _check_input(x: torch.Tensor, spatial_dims: int, in_channels: int | None, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} ({spatial_dims}D) expects input (B, C, {', '.join(['*'] * spatial_dims)}) with "
            f"{spatial_dims + 2} dims, got shape {tuple(x.shape)}."
        )
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built for {in_channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)})."
        )
    if any(s < 1 for s in x.shape[2:]):
        raise ValueError(f"{name} got an empty spatial axis: shape {tuple(x.shape)}.")


def _pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    """Pad ``(B, C, *spatial)`` at the end of each spatial axis up to a multiple of ``multiple``.

    Padding at the end keeps pixel indices (hence the offset meaning) unchanged for the original pixels.
    Written so TorchScript compiles it (exported networks pad inside, for any input size).
    """
    spatial = x.shape[2:]
    pad: List[int] = []
    too_small = False
    for i in range(len(spatial) - 1, -1, -1):  # F.pad takes the last axis first
        extra = (multiple - spatial[i] % multiple) % multiple
        pad.append(0)
        pad.append(extra)
        too_small = too_small or extra >= spatial[i]
    if max(pad) == 0:
        return x
    if mode == "reflect" and too_small:
        mode = "replicate"  # reflection needs the padding to be smaller than the axis
    return F.pad(x, pad, mode=mode)


def _crop(x: torch.Tensor, spatial: List[int]) -> torch.Tensor:
    """Crop ``(B, C, *larger)`` to ``(B, C, *spatial)`` from the start of each axis."""
    for i in range(len(spatial)):
        if x.shape[2 + i] != spatial[i]:
            x = x.narrow(2 + i, 0, spatial[i])
    return x


class BranchedERFNet(nn.Module):
    """EmbedSeg's branched ERF-Net for 2D and 3D images: one ERF-Net encoder and one decoder per output group.

    Encoder (Romera et al., 2018): downsampler ``in -> 16``, downsampler ``16 -> 64``, 5 non-bottleneck-1D blocks
    at 64 channels (dropout ``encoder_dropout[0]``), downsampler ``64 -> 128``, 8 non-bottleneck-1D blocks at 128
    channels with dilations 2, 4, 8, 16, 2, 4, 8, 16 (dropout ``encoder_dropout[1]``). Each decoder: upsampler
    ``128 -> 64``, 2 blocks at 64, upsampler ``64 -> 16``, 2 blocks at 16, then a ``2x2`` stride-2 transposed
    convolution to its ``out_channels[i]`` channels. The decoder outputs are concatenated along the channel axis,
    so with the default ``out_channels = (2 * D, 1)`` the first decoder gives offsets and sigmas and the second
    the seed logit, i.e. the layout of :mod:`monai_embedseg.embedding`. With ``in_channels=1`` the network
    has 2,251,979 parameters in 2D and 3,689,243 in 3D.

    The encoder downsamples by 8: inputs whose spatial size is not a multiple of 8 are padded at the end of each
    axis (``padding_mode``) and the output is cropped back, so any size works and pixel ``i`` of the output
    belongs to pixel ``i`` of the input.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: channels of each decoder branch; ``None`` means ``(2 * spatial_dims, 1)`` (offsets + per-axis
            sigmas, seed). ``(spatial_dims + 1, 1)`` gives an isotropic sigma.
        encoder_dropout: channel-dropout probabilities of the 64- and 128-channel encoder blocks.
        init_sigma_bias: if given (default 0), the final-layer weights of the sigma channels (channels
            ``[D, out_channels[0])`` of the first branch) are zeroed and their biases set to this constant, so
            training starts from the same bandwidth ``sigma_scale * exp(init_sigma_bias)`` pixels everywhere (see
            ``decode_prediction``), as the spatial-embedding papers initialise it; ``None`` keeps PyTorch's
            default initialisation.
        init_offset_scale: if given, the final-layer weights of the offset channels (channels ``[0, D)`` of the
            first branch) are multiplied by this factor and their biases zeroed, so training starts from (near-)zero
            offsets, i.e. every pixel embedded at its own position. The default ``0`` gives exactly zero offsets
            (gradients then reach the upstream layers after the first update), as the spatial-embedding papers
            initialise it; without it, random initial offsets of about ``offset_scale`` pixels slow training down
            considerably. ``None`` keeps PyTorch's default initialisation. Neither option changes the parameter
            count.
        padding_mode: ``torch.nn.functional.pad`` mode for inputs that are not a multiple of 8.

    Shapes:
        ``(B, in_channels, *spatial)`` -> ``(B, sum(out_channels), *spatial)``.

    Example::

        net = BranchedERFNet(spatial_dims=2, in_channels=1)           # out_channels (4, 1)
        pred = net(torch.rand(2, 1, 37, 53))                          # (2, 5, 37, 53)
    """

    #: spatial down-sampling factor of the encoder
    DIVISOR = 8

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: Sequence[int] | None = None,
        encoder_dropout: Sequence[float] = (0.03, 0.3),
        init_sigma_bias: float | None = 0.0,
        init_offset_scale: float | None = 0.0,
        padding_mode: str = "replicate",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}.")
        if out_channels is None:
            out_channels = (2 * spatial_dims, 1)
        if isinstance(out_channels, int):
            raise TypeError(
                f"out_channels must be a sequence with one int per branch, e.g. (4, 1); got {out_channels}."
            )
        out_channels = tuple(out_channels)
        if not out_channels or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in out_channels):
            raise ValueError(f"out_channels must be a non-empty sequence of positive ints, got {out_channels}.")
        encoder_dropout = tuple(float(p) for p in encoder_dropout)
        if len(encoder_dropout) != 2 or not all(0.0 <= p < 1.0 for p in encoder_dropout):
            raise ValueError(f"encoder_dropout must be two probabilities in [0, 1), got {encoder_dropout}.")
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}.")
        if init_sigma_bias is not None and out_channels[0] <= spatial_dims:
            raise ValueError(
                f"init_sigma_bias needs sigma channels after the {spatial_dims} offsets in the first branch, "
                f"but out_channels[0] = {out_channels[0]}."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.padding_mode = padding_mode
        self.divisor = self.DIVISOR  # an instance attribute, so TorchScript sees it

        d = spatial_dims
        p64, p128 = encoder_dropout
        self.encoder = nn.Sequential(
            DownsamplerBlock(d, in_channels, 16),
            DownsamplerBlock(d, 16, 64),
            *(NonBottleneck1d(d, 64, dropout=p64, dilation=1) for _ in range(5)),
            DownsamplerBlock(d, 64, 128),
            *(NonBottleneck1d(d, 128, dropout=p128, dilation=dil) for dil in (2, 4, 8, 16, 2, 4, 8, 16)),
        )
        self.decoders = nn.ModuleList([self._decoder(d, c) for c in out_channels])
        self._init_output(init_sigma_bias, init_offset_scale)

    @staticmethod
    def _decoder(spatial_dims: int, out_channels: int) -> nn.Sequential:
        return nn.Sequential(
            UpsamplerBlock(spatial_dims, 128, 64),
            NonBottleneck1d(spatial_dims, 64),
            NonBottleneck1d(spatial_dims, 64),
            UpsamplerBlock(spatial_dims, 64, 16),
            NonBottleneck1d(spatial_dims, 16),
            NonBottleneck1d(spatial_dims, 16),
            Conv[Conv.CONVTRANS, spatial_dims](16, out_channels, kernel_size=2, stride=2, padding=0, bias=True),
        )

    @torch.no_grad()
    def _init_output(self, init_sigma_bias: float | None, init_offset_scale: float | None) -> None:
        last = self.decoders[0][-1]  # transposed conv: weight (in, out, *kernel)
        d = self.spatial_dims
        if init_offset_scale is not None:
            last.weight[:, :d].mul_(float(init_offset_scale))
            last.bias[:d].zero_()
        if init_sigma_bias is not None:
            last.weight[:, d:].zero_()
            last.bias[d:].fill_(float(init_sigma_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw prediction.

        Args:
            x: image ``(B, in_channels, *spatial)``, any spatial size.

        Returns:
            ``(B, sum(out_channels), *spatial)``: the branch outputs concatenated in order.
        """
        if not torch.jit.is_scripting():  # TorchScript cannot compile the message formatting
            _check_input(x, self.spatial_dims, self.in_channels, type(self).__name__)
        spatial = x.shape[2:]
        features = self.encoder(_pad_to_multiple(x, self.divisor, self.padding_mode))
        out = torch.cat([decoder(features) for decoder in self.decoders], dim=1)
        return _crop(out, spatial)


class BackboneAdapter(nn.Module):
    """Use any image-to-image backbone (e.g. MONAI's ``BasicUNet``, ``UNet``, ``SegResNet``) as an EmbedSeg network.

    The backbone must return one tensor ``(B, 2 * D + 1, *spatial)`` (or ``D + 2`` channels for an isotropic
    sigma) in the layout of :mod:`monai_embedseg.embedding`; see the module docstring for an example.

    Args:
        backbone: module mapping ``(B, C_in, *spatial)`` to ``(B, C, *spatial)``.
        spatial_dims: 2 or 3.
        divisible_by: if given, the input is padded at the end of every spatial axis to a multiple of this (the
            backbone's total down-sampling factor) and the output is cropped back.
        padding_mode: ``torch.nn.functional.pad`` mode used for that padding.

    Raises:
        ValueError (in ``forward``): the backbone's output is not ``(B, 2D+1 or D+2, *spatial)`` with the spatial
            size of its input.

    Shapes:
        ``(B, C_in, *spatial)`` -> ``(B, 2D + 1 or D + 2, *spatial)``.
    """

    def __init__(
        self, backbone: nn.Module, spatial_dims: int, divisible_by: int | None = None, padding_mode: str = "replicate"
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if divisible_by is not None and (
            isinstance(divisible_by, bool) or not isinstance(divisible_by, int) or divisible_by < 1
        ):
            raise ValueError(f"divisible_by must be a positive int or None, got {divisible_by!r}.")
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}.")
        self.backbone = backbone
        self.spatial_dims = spatial_dims
        self.divisible_by = divisible_by
        self.padding_mode = padding_mode
        #: number of sigma channels, known after the first forward (1 or spatial_dims)
        self.n_sigma: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw prediction.

        Args:
            x: image ``(B, C_in, *spatial)``.

        Returns:
            ``(B, 2D + 1 or D + 2, *spatial)``.

        Raises:
            ValueError: wrong input dimensionality, or the backbone's output has the wrong shape or channel count.
            TypeError: the backbone does not return a tensor.
        """
        name = type(self).__name__
        _check_input(x, self.spatial_dims, None, name)
        spatial = x.shape[2:]
        xp = _pad_to_multiple(x, self.divisible_by, self.padding_mode) if self.divisible_by else x
        out = self.backbone(xp)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"{name}: the backbone must return one tensor (B, C, *spatial), got {type(out).__name__} "
                "(disable deep supervision / multiple outputs)."
            )
        if out.ndim != x.ndim or out.shape[0] != x.shape[0] or out.shape[2:] != xp.shape[2:]:
            raise ValueError(
                f"{name}: the backbone maps input {tuple(xp.shape)} to {tuple(out.shape)}; expected "
                f"(B, C, *spatial) with the input's batch and spatial size (set divisible_by to the backbone's "
                "down-sampling factor?)."
            )
        try:
            n_sigma = n_sigma_of(out.shape[1], self.spatial_dims)
        except ValueError as err:
            raise ValueError(
                f"{name}: the backbone outputs {out.shape[1]} channels; an EmbedSeg network must output "
                f"{2 * self.spatial_dims + 1} (offsets, sigmas, seed) or {self.spatial_dims + 2} (isotropic sigma) "
                f"channels in the layout of monai_embedseg.embedding; build it with that out_channels."
            ) from err
        self.n_sigma = n_sigma
        return _crop(out, spatial)
