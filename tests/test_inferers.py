import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_embedseg.embedding import encode_prediction, pixel_coordinates
from monai_embedseg.inferers import EmbedSegInferer, tta_transforms
from monai_embedseg.metrics import ap_dsb
from monai_embedseg.testing.oracle import oracle_prediction


def _boxes(shape, boxes):
    """Label map ``(*shape)`` with the given boxes (tuples of (start, stop) per axis), ids 1.. in order."""
    lab = np.zeros(shape, np.int64)
    for i, b in enumerate(boxes, start=1):
        lab[tuple(slice(a, z) for a, z in b)] = i
    return lab


class OracleNet:
    """Equivariant fake network: maps a label image ``(B, 1, *spatial)`` (as float) to its oracle prediction."""

    def __init__(self, spacing=None):
        self.spacing = spacing
        self.batch_shapes = []

    def __call__(self, x):
        self.batch_shapes.append(tuple(x.shape))
        preds = [oracle_prediction(xi.round().long(), spacing=self.spacing, eps=0.05) for xi in x]
        return torch.stack(preds)


class CentroidNet:
    """Equivariant fake with anisotropic sigmas: offsets to the object centroid, sigma_d from the object's extent
    along axis d (so rotations must swap the sigma channels), seed decaying with the distance to the centroid."""

    def __call__(self, x):
        out = []
        for xi in x:
            lab = xi[0].round().long()
            d, sp = lab.ndim, lab.shape
            coords = pixel_coordinates(sp, dtype=torch.float64).reshape(d, -1)
            flat = lab.reshape(-1)
            n = int(flat.max()) + 1
            cnt = torch.zeros(n, dtype=torch.float64).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
            mean = torch.zeros(n, d, dtype=torch.float64).index_add_(0, flat, coords.T) / cnt[:, None]
            sq = (coords.T - mean[flat]) ** 2
            var = torch.zeros(n, d, dtype=torch.float64).index_add_(0, flat, sq) / cnt[:, None]
            inside = (flat > 0)[None]
            emb = torch.where(inside, mean[flat].T, coords)
            sig = torch.where(inside, var[flat].T.sqrt() + 0.5, torch.ones_like(coords))
            seed = torch.where(inside, torch.exp(-((emb - coords) ** 2).sum(0, keepdim=True) / 20), 0.1 * inside)
            seed = seed.clamp(0.05, 0.95)
            out.append(encode_prediction(emb.reshape(d, *sp), sig.reshape(d, *sp), seed.reshape(1, *sp)).float())
        return torch.stack(out)


def _image(lab_list):
    return torch.as_tensor(np.stack(lab_list))[:, None].float()


LAB_2D = [
    _boxes((13, 18), [((1, 4), (2, 9)), ((6, 11), (3, 6)), ((2, 9), (11, 14))]),
    _boxes((13, 18), [((0, 5), (0, 3)), ((8, 13), (7, 16))]),
]
LAB_3D = [_boxes((6, 9, 11), [((0, 3), (1, 4), (2, 9)), ((3, 6), (4, 9), (1, 4)), ((1, 4), (0, 3), (8, 11))])]


def test_tta_transforms_cover_the_groups():
    ops2 = tta_transforms(2)
    assert len(ops2) == 8 and len(tta_transforms(3)) == 16
    assert len(tta_transforms(2, rotations=False)) == 4 and len(tta_transforms(3, rotations=False)) == 8
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    images = [fwd(x) for fwd, _ in ops2]
    expected = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
    expected += [torch.rot90(x.flip(-1), k, (-2, -1)) for k in range(4)]
    for e in expected:  # the 8 ops are exactly the 4 rotations x optional flip
        assert sum(img.shape == e.shape and torch.equal(img, e) for img in images) == 1
    assert torch.equal(images[0], x)
    x3 = torch.randn(1, 1, 2, 3, 4)
    for fwd, _ in tta_transforms(3):
        assert fwd(x3).shape[2] == 2  # z is never swapped
    with pytest.raises(ValueError):
        tta_transforms(1)


def test_vector_correction_hand_derived():
    """rot90 (k=1) maps a displacement (dy, dx) to (-dx, dy); a flip of x negates dx; sigmas swap with the axes."""
    pred_orig = torch.randn(1, 5, 4, 6)
    ops = {}
    x = torch.randn(1, 1, 4, 6)
    for fwd, inv in tta_transforms(2):
        for name, ref in (("rot90", torch.rot90(x, 1, (-2, -1))), ("flipx", x.flip(-1))):
            if fwd(x).shape == ref.shape and torch.equal(fwd(x), ref):
                ops[name] = inv
    rot = torch.rot90(pred_orig, 1, (-2, -1))
    rotated_field = torch.cat([-rot[:, 1:2], rot[:, 0:1], rot[:, 3:4], rot[:, 2:3], rot[:, 4:]], 1)
    assert torch.allclose(ops["rot90"](rotated_field), pred_orig)
    fl = pred_orig.flip(-1)
    flipped_field = torch.cat([fl[:, :1], -fl[:, 1:2], fl[:, 2:]], 1)
    assert torch.allclose(ops["flipx"](flipped_field), pred_orig)


@pytest.mark.parametrize(
    "labs,net_cls,spacing",
    [(LAB_2D, OracleNet, None), (LAB_2D, CentroidNet, None), (LAB_3D, OracleNet, (2.0, 1.0, 1.0))],
)
def test_flip_rotate_then_inverse_equals_prediction(labs, net_cls, spacing):
    net = net_cls(spacing) if net_cls is OracleNet else net_cls()
    x = _image(labs)
    ref = net(x)
    inferer = EmbedSegInferer(tta=False)
    for fwd, inv in tta_transforms(x.ndim - 2):
        out = inv(inferer(fwd(x), net))
        assert torch.allclose(out, ref, atol=1e-5)
    # without the channel correction a rotated/flipped prediction is wrong
    fwd, _ = tta_transforms(x.ndim - 2)[1]
    assert not torch.allclose(fwd(inferer(fwd(x), net)), ref, atol=1e-3)


@pytest.mark.parametrize(
    "labs,net_cls,spacing,n_ops",
    [(LAB_2D, OracleNet, None, 8), (LAB_2D, CentroidNet, None, 8), (LAB_3D, OracleNet, (2.0, 1.0, 1.0), 16)],
)
def test_tta_of_equivariant_network_is_its_prediction(labs, net_cls, spacing, n_ops):
    net = net_cls(spacing) if net_cls is OracleNet else net_cls()
    x = _image(labs)
    ref = net(x)
    shapes = []
    out = EmbedSegInferer(tta=True, spacing=spacing)(x, lambda t: shapes.append(tuple(t.shape)) or net(t))
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-4)
    b = x.shape[0]
    assert sum(s[0] for s in shapes) == n_ops * b and len(shapes) == 2  # non-square: two shape groups
    out_chunked = EmbedSegInferer(tta=True, spacing=spacing, tta_batch_size=3)(x, net)
    assert torch.allclose(out_chunked, out, atol=1e-6)


def test_tta_batches_copies_by_size_on_cpu(monkeypatch):
    """``tta_batch_size=None`` on a CPU: as many copies per call as stay under ``CPU_TTA_VOXELS`` (large batches run
    slower there), the same result as one copy per call."""
    from monai_embedseg.inferers import embedseg

    net = torch.nn.Conv2d(1, 5, 3, padding=1)
    x = torch.rand(1, 1, 16, 16)
    calls = []
    with torch.no_grad():
        ref = EmbedSegInferer(tta=True, tta_batch_size=1)(x, net)
        monkeypatch.setattr(embedseg, "CPU_TTA_VOXELS", 2 * 16 * 16)
        out = EmbedSegInferer(tta=True)(x, lambda t: calls.append(t.shape[0]) or net(t))
    assert calls == [2, 2, 2, 2] and torch.allclose(out, ref, atol=1e-6)
    monkeypatch.setattr(embedseg, "CPU_TTA_VOXELS", 10)
    calls.clear()
    EmbedSegInferer(tta=True)(x, lambda t: calls.append(t.shape[0]) or net(t))
    assert calls == [1] * 8  # never fewer than one copy


def test_tta_skips_rotations_for_unequal_yx_spacing():
    sp = (1.0, 0.5)
    net = OracleNet(sp)
    x = _image(LAB_2D)
    shapes = []
    out = EmbedSegInferer(tta=True, spacing=sp)(x, lambda t: shapes.append(tuple(t.shape)) or net(t))
    assert shapes == [(4 * x.shape[0], 1, 13, 18)]
    assert torch.allclose(out, net(x), atol=1e-4)
    assert EmbedSegInferer(spacing=(3.0, 1.0, 1.0)).rotations_allowed(3)
    assert not EmbedSegInferer(spacing=(1.0, 1.0, 0.5)).rotations_allowed(3)


def _manual_tta(x, net, spatial_dims):
    """Reference TTA: one augmentation at a time, seeds averaged as probabilities."""
    outs = [inv(net(fwd(x))) for fwd, inv in tta_transforms(spatial_dims)]
    stack = torch.stack(outs)
    seed = torch.logit(torch.sigmoid(stack[:, :, -1:]).mean(0), eps=1e-6)
    return torch.cat([stack[:, :, :-1].mean(0), seed], 1)


@pytest.mark.parametrize("shape", [(2, 1, 12, 12), (2, 1, 10, 14), (1, 1, 5, 8, 6)])
@pytest.mark.parametrize("roi", [None, "small"])
def test_generic_conv_shapes_and_manual_reference(shape, roi):
    torch.manual_seed(0)
    d = len(shape) - 2
    conv = (torch.nn.Conv2d if d == 2 else torch.nn.Conv3d)(1, 2 * d + 1, 3, padding=1)
    x = torch.randn(shape)
    roi_size = None if roi is None else (4,) * d
    with torch.no_grad():
        plain = EmbedSegInferer(roi_size=roi_size, sw_batch_size=4)(x, conv)
        assert plain.shape == (shape[0], 2 * d + 1, *shape[2:])
        if roi is None:
            assert torch.allclose(plain, conv(x), atol=1e-6)
        out = EmbedSegInferer(roi_size=roi_size, sw_batch_size=4, tta=True)(x, conv)
        assert out.shape == plain.shape
        if roi is None:
            assert torch.allclose(out, _manual_tta(x, conv, d), atol=1e-5)
            assert not torch.allclose(out, plain, atol=1e-3)  # a random conv is not equivariant


def test_sliding_window_equals_whole_image():
    # windows of 12 with overlap 0.5 on 36 x 24 start at 0, 6, ..., so their borders lie on multiples of 6:
    # objects kept inside 6-pixel cells are never cut and relative embeddings stitch without seams
    lab = _boxes((36, 24), [((1, 4), (1, 6)), ((7, 12), (13, 16)), ((19, 22), (6, 11)), ((30, 35), (19, 22))])
    lab3 = _boxes((8, 16, 16), [((0, 3), (1, 4), (4, 7)), ((1, 6), (9, 12), (13, 16))])  # 3D windows: 4-cells
    for labs, roi, spacing in (([lab, lab[::-1]], (12, 12), None), ([lab3], (8, 8, 8), (2.0, 1.0, 1.0))):
        net = OracleNet(spacing)
        x = _image([np.ascontiguousarray(a) for a in labs])
        whole = EmbedSegInferer()(x, net)
        sw = EmbedSegInferer(roi_size=roi, sw_batch_size=3, overlap=0.5, mode="gaussian")(x, net)
        assert max(s[-1] for s in net.batch_shapes[1:]) == roi[-1]  # really ran on windows
        assert torch.allclose(sw, whole, atol=1e-5)
        sw_tta = EmbedSegInferer(roi_size=roi, overlap=0.5, tta=True, spacing=spacing)(x, net)
        assert torch.allclose(sw_tta, whole, atol=1e-4)
        try:
            from monai_embedseg.transforms.cluster import EmbedSegCluster
        except ImportError:  # pragma: no cover - clustering written elsewhere
            continue
        cluster = EmbedSegCluster(spacing=spacing)
        for i, a in enumerate(labs):
            got = cluster(sw_tta[i])
            assert torch.equal(got, cluster(whole[i]))
            assert ap_dsb([a], [got], thresholds=(1.0,)).tolist() == [1.0]  # the labels, up to renumbering


def test_metatensor_devices_and_errors():
    x = MetaTensor(_image(LAB_2D), affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    net = OracleNet()
    out = EmbedSegInferer(tta=True, sw_device="cpu", device="cpu")(x, net)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine) and out.shape == (2, 5, 13, 18)
    with pytest.raises(ValueError, match="inputs must be"):
        EmbedSegInferer()(torch.zeros(1, 4, 4), net)
    with pytest.raises(ValueError, match="channels"):
        EmbedSegInferer(tta=True)(torch.zeros(1, 1, 4, 4), torch.nn.Conv2d(1, 3, 1))
    with pytest.raises(ValueError, match="does not match"):
        EmbedSegInferer()(torch.zeros(1, 1, 4, 4), torch.nn.Conv2d(1, 5, 3))
    with pytest.raises(ValueError, match="seed_average"):
        EmbedSegInferer(seed_average="median")
    with pytest.raises(TypeError, match="floating point"):
        EmbedSegInferer(roi_size=(4, 4))(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), net)


def test_logit_seed_average_and_isotropic_sigma():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)  # D + 2 channels: isotropic sigma
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        out = EmbedSegInferer(tta=True, seed_average="logit")(x, conv)
        outs = torch.stack([inv(conv(fwd(x))) for fwd, inv in tta_transforms(2)])
    assert torch.allclose(out, outs.mean(0), atol=1e-5)


def _old_style_tta(x, net, spacing=None, seed_average="probability"):
    """TTA the straightforward way: every augmented prediction inverted as a whole (``AxisOp.inverse``), summed in
    the inferer's order (ops grouped by transformed shape), averaged (the implementation before the per-channel
    accumulation)."""
    d = x.ndim - 2
    ops = tta_transforms(d, rotations=EmbedSegInferer(spacing=spacing).rotations_allowed(d))
    shapes = [tuple(fwd(x).shape) for fwd, _ in ops]
    ops = [ops[i] for i in sorted(range(len(ops)), key=lambda i: (shapes.index(shapes[i]), i))]
    acc = seed = None
    for fwd, inv in ops:
        out = net(fwd(x))
        y = inv(out).float()
        s = torch.sigmoid(y[:, -1:]) if seed_average == "probability" else y[:, -1:]
        acc, seed = (y[:, :-1].contiguous(), s.contiguous()) if acc is None else (acc + y[:, :-1], seed + s)
    acc, seed = acc / len(ops), seed / len(ops)
    if seed_average == "probability":
        seed = torch.logit(seed, eps=1e-6)
    return torch.cat([acc, seed], dim=1).to(out.dtype)


@pytest.mark.parametrize(
    "shape,channels,spacing,kw",
    [
        ((1, 1, 6, 13, 14), 7, None, {}),
        ((2, 1, 13, 18), 5, None, {"tta_batch_size": 3}),
        ((3, 2, 11, 9), 4, None, {"seed_average": "logit"}),
        ((2, 1, 5, 10, 9), 7, (2.0, 1.0, 0.5), {"tta_batch_size": 1}),  # flips only
        ((1, 1, 17, 19), 5, None, {"half": True}),
    ],
)
def test_tta_accumulation_is_bitwise_the_whole_tensor_inversion(shape, channels, spacing, kw):
    # the inferer inverts one image and one channel at a time (bounded memory); the values must not change
    torch.manual_seed(3)
    d = len(shape) - 2
    conv = (torch.nn.Conv2d if d == 2 else torch.nn.Conv3d)(shape[1], channels, 3, padding=1)
    half = kw.pop("half", False)

    def net(t):  # one image at a time, so the result does not depend on how the augmented copies are batched
        out = torch.cat([conv(t[i : i + 1]) for i in range(t.shape[0])])
        return out.half() if half else out

    x = torch.randn(shape)
    with torch.no_grad():
        out = EmbedSegInferer(tta=True, spacing=spacing, **kw)(x, net)
        ref = _old_style_tta(x, net, spacing, kw.get("seed_average", "probability"))
    assert out.dtype == (torch.float16 if half else torch.float32) and out.shape == ref.shape
    assert torch.equal(out, ref)


def test_an_image_that_fits_one_window_runs_whole_without_padding():
    shapes = []

    def net(x):
        shapes.append(tuple(x.shape[2:]))
        return torch.zeros(x.shape[0], 5, *x.shape[2:])

    x = torch.rand(1, 1, 70, 50)
    EmbedSegInferer(roi_size=(128, 128))(x, net)
    assert shapes == [(70, 50)]  # one call, the image's own size (MONAI would pad to 128 x 128)
    shapes.clear()
    EmbedSegInferer(roi_size=(128, 128), whole_if_fits=False)(x, net)
    assert shapes == [(128, 128)]
    shapes.clear()
    EmbedSegInferer(roi_size=(64, 64), overlap=0.25)(x, net)
    assert len(shapes) > 1 and set(shapes) == {(64, 50)}  # sliding along y, the window cut to the image along x
    shapes.clear()
    EmbedSegInferer(roi_size=(64, 64), overlap=0.25, whole_if_fits=False)(x, net)
    assert set(shapes) == {(64, 64)}  # MONAI's own windows, padded
