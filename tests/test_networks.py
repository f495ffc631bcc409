"""Tests for the ERF-Net blocks, BranchedERFNet and BackboneAdapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, UNet

from monai_embedseg.embedding import decode_prediction
from monai_embedseg.networks.blocks import DownsamplerBlock, NonBottleneck1d, UpsamplerBlock
from monai_embedseg.networks.nets import BackboneAdapter, BranchedERFNet

EPS = 1e-3


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters (for eval-mode references)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def bn_eval(h: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    return F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, EPS)


# ---------------------------------------------------------------- blocks against functional references


@pytest.mark.parametrize("dims", [2, 3])
def test_downsampler_matches_reference(dims):
    torch.manual_seed(0)
    block = DownsamplerBlock(dims, 3, 10)
    randomise_bn(block)
    block.eval()
    x = torch.randn(2, 3, *([6] * dims))
    conv_fn = F.conv2d if dims == 2 else F.conv3d
    pool_fn = F.max_pool2d if dims == 2 else F.max_pool3d
    conv = block.conv
    assert conv.weight.shape == (7, 3, *([3] * dims)) and conv.bias is not None
    ref = torch.cat([conv_fn(x, conv.weight, conv.bias, stride=2, padding=1), pool_fn(x, 2)], dim=1)
    ref = F.relu(bn_eval(ref, block.norm))
    assert block.norm.eps == EPS
    torch.testing.assert_close(block(x), ref)
    # odd sizes: ceil(n / 2)
    assert block(torch.randn(1, 3, *([7] * dims))).shape == (1, 10, *([4] * dims))


@pytest.mark.parametrize("dims,dilation", [(2, 1), (2, 4), (3, 2)])
def test_non_bottleneck_matches_reference(dims, dilation):
    torch.manual_seed(0)
    c = 6
    block = NonBottleneck1d(dims, c, dropout=0.3, dilation=dilation)
    randomise_bn(block)
    block.eval()
    x = torch.randn(2, c, *([9] * dims))
    convs = [m for m in block.residual if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    bns = [m for m in block.residual if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(convs) == 2 * dims and len(bns) == 2
    conv_fn = F.conv2d if dims == 2 else F.conv3d
    h = x
    for stage, dil in enumerate((1, dilation)):
        for axis in range(dims):
            conv = convs[stage * dims + axis]
            kernel = [1] * dims
            kernel[axis] = 3
            assert tuple(conv.weight.shape[2:]) == tuple(kernel) and conv.bias is not None
            if axis > 0:
                h = F.relu(h)
            pad = [0] * dims
            pad[axis] = dil
            dl = [1] * dims
            dl[axis] = dil
            h = conv_fn(h, conv.weight, conv.bias, padding=tuple(pad), dilation=tuple(dl))
        h = bn_eval(h, bns[stage])
        if stage == 0:
            h = F.relu(h)
    ref = F.relu(x + h)
    torch.testing.assert_close(block(x), ref)


def test_non_bottleneck_dropout_only_in_training():
    block = NonBottleneck1d(2, 4, dropout=0.5)
    assert any(isinstance(m, nn.Dropout2d) for m in block.modules())
    assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in NonBottleneck1d(2, 4).modules())
    block.eval()
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(block(x), block(x))


@pytest.mark.parametrize("dims", [2, 3])
def test_upsampler_matches_reference(dims):
    torch.manual_seed(0)
    block = UpsamplerBlock(dims, 8, 4)
    randomise_bn(block)
    block.eval()
    x = torch.randn(2, 8, *([5] * dims))
    convs = [m for m in block.modules() if isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d))]
    bns = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(convs) == 1 and len(bns) == 1 and bns[0].eps == EPS
    fn = F.conv_transpose2d if dims == 2 else F.conv_transpose3d
    ref = fn(x, convs[0].weight, convs[0].bias, stride=2, padding=1, output_padding=1)
    ref = F.relu(bn_eval(ref, bns[0]))
    out = block(x)
    assert out.shape == (2, 4, *([10] * dims))
    torch.testing.assert_close(out, ref)


def test_block_argument_errors():
    with pytest.raises(ValueError, match="out_channels > in_channels"):
        DownsamplerBlock(2, 16, 16)
    with pytest.raises(ValueError, match="spatial_dims"):
        NonBottleneck1d(1, 4)
    with pytest.raises(ValueError, match="dropout"):
        NonBottleneck1d(2, 4, dropout=1.5)
    with pytest.raises(ValueError, match="channels"):
        UpsamplerBlock(2, 0, 4)


# ---------------------------------------------------------------- BranchedERFNet


def test_parameter_counts():
    assert n_params(BranchedERFNet(2, 1)) == 2_251_979
    assert n_params(BranchedERFNet(3, 1)) == 3_689_243
    # explicit default, and init options do not change the count
    assert n_params(BranchedERFNet(2, 1, out_channels=(4, 1), init_sigma_bias=1.0, init_offset_scale=0.0)) == 2_251_979


def test_architecture_layout():
    net = BranchedERFNet(2, 1)
    enc = list(net.encoder)
    assert [type(m).__name__ for m in enc] == (
        ["DownsamplerBlock"] * 2 + ["NonBottleneck1d"] * 5 + ["DownsamplerBlock"] + ["NonBottleneck1d"] * 8
    )
    # the second-stage convs of each 128-channel block carry the dilation (first stage undilated)
    dils = [[c.dilation for c in b.residual if isinstance(c, nn.Conv2d)] for b in enc[8:]]
    assert dils == [[(1, 1), (1, 1), (d, 1), (1, d)] for d in (2, 4, 8, 16, 2, 4, 8, 16)]
    assert all(c.dilation == (1, 1) for b in enc[2:7] for c in b.residual if isinstance(c, nn.Conv2d))
    drops = [[m.p for m in b.modules() if isinstance(m, nn.Dropout2d)] for b in enc if isinstance(b, NonBottleneck1d)]
    assert drops == [[0.03]] * 5 + [[0.3]] * 8
    assert len(net.decoders) == 2
    assert [d[-1].out_channels for d in net.decoders] == [4, 1]
    for d in net.decoders:  # decoder blocks have no dropout
        assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in d.modules())


@pytest.mark.parametrize(
    "dims,shape,out_channels,expected_c",
    [
        (2, (2, 1, 32, 48), None, 5),
        (2, (1, 1, 37, 53), None, 5),
        (2, (2, 2, 33, 17), (4, 1), 5),
        (2, (1, 1, 24, 24), (3, 1), 4),
        (3, (1, 1, 16, 32, 32), None, 7),
        (3, (1, 1, 13, 29, 30), None, 7),
    ],
)
def test_output_shapes(dims, shape, out_channels, expected_c):
    torch.manual_seed(0)
    net = BranchedERFNet(dims, shape[1], out_channels=out_channels).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], expected_c, *shape[2:])
    assert torch.isfinite(out).all()
    emb, sig, seed = decode_prediction(out)  # the layout of monai_embedseg/embedding.py
    assert emb.shape == sig.shape == (shape[0], dims, *shape[2:]) and seed.shape == (shape[0], 1, *shape[2:])


def test_branch_concatenation_order():
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1, out_channels=(4, 1)).eval()
    x = torch.rand(1, 1, 32, 40)
    with torch.no_grad():
        out = net(x)
        feat = net.encoder(x)
        torch.testing.assert_close(out[:, :4], net.decoders[0](feat))
        torch.testing.assert_close(out[:, 4:], net.decoders[1](feat))


def test_padding_then_crop_matches_reference():
    """Odd sizes: the same as padding at the end (replicate) by hand and cropping."""
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1).eval()
    x = torch.rand(1, 1, 37, 53)
    with torch.no_grad():
        out = net(x)
        ref = net(F.pad(x, (0, 3, 0, 3), mode="replicate"))[..., :37, :53]
    torch.testing.assert_close(out, ref)
    assert out.shape == (1, 5, 37, 53)


def test_gradients_reach_all_parameters():
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1, init_sigma_bias=None, init_offset_scale=None).train()
    out = net(torch.rand(2, 1, 32, 32))
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_gradients_reach_all_parameters_3d():
    torch.manual_seed(0)
    net = BranchedERFNet(3, 1, init_sigma_bias=None, init_offset_scale=None).train()
    out = net(torch.rand(2, 1, 16, 16, 16))
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_eval_is_deterministic_and_train_is_not():
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1)
    x = torch.rand(2, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
        # batch independence in eval mode
        torch.testing.assert_close(net(x)[1:], net(x[1:]))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))  # dropout


def test_output_initialisation():
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1, init_sigma_bias=0.5, init_offset_scale=0.0).eval()
    last = net.decoders[0][-1]
    torch.testing.assert_close(last.bias[2:], torch.full((2,), 0.5))
    with torch.no_grad():
        out = net(torch.rand(1, 1, 24, 32))
    assert torch.equal(out[:, :2], torch.zeros_like(out[:, :2]))  # zero offsets: every pixel embeds at itself
    assert out[:, 2:4].abs().sum() > 0 and out[:, 4:].abs().sum() > 0
    # small scale keeps gradients flowing and shrinks the offsets
    torch.manual_seed(0)
    base = BranchedERFNet(2, 1, init_sigma_bias=None, init_offset_scale=None).eval()
    torch.manual_seed(0)
    small = BranchedERFNet(2, 1, init_sigma_bias=None, init_offset_scale=0.01).eval()
    torch.testing.assert_close(small.decoders[0][-1].weight[:, :2], base.decoders[0][-1].weight[:, :2] * 0.01)
    torch.testing.assert_close(small.decoders[0][-1].weight[:, 2:], base.decoders[0][-1].weight[:, 2:])
    with pytest.raises(ValueError, match="init_sigma_bias"):
        BranchedERFNet(2, 1, out_channels=(2, 1), init_sigma_bias=1.0)


def test_default_initialisation_starts_at_zero_offsets_and_constant_sigma_then_learns():
    torch.manual_seed(0)
    net = BranchedERFNet(2, 1).train()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 24, 32))
    assert torch.equal(out[:, :2], torch.zeros_like(out[:, :2]))
    assert torch.equal(out[:, 2:4], torch.zeros_like(out[:, 2:4]))  # sigma = sigma_scale * exp(0) everywhere
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):  # after the first update the zeroed head passes gradients upstream
        optimizer.zero_grad()
        out = net(torch.rand(2, 1, 32, 32))
        (out * torch.randn_like(out)).sum().backward()
        optimizer.step()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_network_errors():
    net = BranchedERFNet(2, 1)
    with pytest.raises(ValueError, match="4 dims"):
        net(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match="input channel"):
        net(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match="spatial_dims"):
        BranchedERFNet(4, 1)
    with pytest.raises(ValueError, match="out_channels"):
        BranchedERFNet(2, 1, out_channels=(4, 0))
    with pytest.raises(TypeError, match="out_channels"):
        BranchedERFNet(2, 1, out_channels=5)
    with pytest.raises(ValueError, match="encoder_dropout"):
        BranchedERFNet(2, 1, encoder_dropout=(0.1,))
    with pytest.raises(ValueError, match="padding_mode"):
        BranchedERFNet(2, 1, padding_mode="wrap")


# ---------------------------------------------------------------- BackboneAdapter


def test_adapter_basic_unet():
    torch.manual_seed(0)
    backbone = BasicUNet(spatial_dims=2, in_channels=1, out_channels=5, features=(4, 4, 8, 8, 16, 4))
    net = BackboneAdapter(backbone, spatial_dims=2).eval()
    x = torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(out, backbone(x))
    assert out.shape == (2, 5, 37, 53) and net.n_sigma == 2
    # isotropic-sigma variant (D + 2 channels)
    iso = BackboneAdapter(BasicUNet(2, 1, 4, features=(4, 4, 8, 8, 16, 4)), spatial_dims=2)
    assert iso(torch.rand(1, 1, 32, 32)).shape == (1, 4, 32, 32) and iso.n_sigma == 1


def test_adapter_pads_to_divisible_by():
    torch.manual_seed(0)
    seen = []
    unet = UNet(spatial_dims=2, in_channels=1, out_channels=5, channels=(4, 8, 8), strides=(2, 2), num_res_units=0)
    unet.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    net = BackboneAdapter(unet, spatial_dims=2, divisible_by=4).eval()
    x = torch.rand(1, 1, 37, 53)
    with torch.no_grad():
        out = net(x)
        ref = unet(F.pad(x, (0, 3, 0, 3), mode="replicate"))[..., :37, :53]
    assert seen[0] == (1, 1, 40, 56)
    assert out.shape == (1, 5, 37, 53)
    torch.testing.assert_close(out, ref)
    # 3D with a tiny UNet
    unet3 = UNet(spatial_dims=3, in_channels=1, out_channels=7, channels=(4, 8), strides=(2,), num_res_units=0)
    assert BackboneAdapter(unet3, 3, divisible_by=2)(torch.rand(1, 1, 7, 9, 5)).shape == (1, 7, 7, 9, 5)


def test_adapter_errors():
    wrong = BackboneAdapter(BasicUNet(2, 1, 4 + 2, features=(4, 4, 8, 8, 16, 4)), spatial_dims=2)
    with pytest.raises(ValueError, match=r"outputs 6 channels.*5 .*or 4"):
        wrong(torch.rand(1, 1, 32, 32))
    # 6 channels in 3D is neither 2D+1 = 7 nor D+2 = 5
    bad3d = BackboneAdapter(nn.Conv3d(1, 6, 1), spatial_dims=3)
    with pytest.raises(ValueError, match="7 .*or 5"):
        bad3d(torch.rand(1, 1, 4, 4, 4))
    # spatial size changed by the backbone
    shrink = BackboneAdapter(nn.Conv2d(1, 5, 3), spatial_dims=2)
    with pytest.raises(ValueError, match="spatial size"):
        shrink(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="4 dims"):
        BackboneAdapter(nn.Conv2d(1, 5, 1), spatial_dims=2)(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(TypeError, match="one tensor"):
        BackboneAdapter(_TupleNet(), spatial_dims=2)(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="nn.Module"):
        BackboneAdapter(lambda x: x, spatial_dims=2)
    with pytest.raises(ValueError, match="divisible_by"):
        BackboneAdapter(nn.Conv2d(1, 5, 1), spatial_dims=2, divisible_by=0)


class _TupleNet(nn.Module):
    def forward(self, x):
        return (torch.cat([x] * 5, dim=1),)
