import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_embedseg.embedding import decode_prediction, encode_prediction
from monai_embedseg.testing.oracle import oracle_prediction
from monai_embedseg.transforms import EmbedSegCluster, EmbedSegClusterd, cluster_embeddings
from monai_embedseg.transforms.cluster import CLAIM_Q, EmbedSegClusterD, EmbedSegClusterDict


def reference_cluster(
    pred,
    spacing=None,
    seed_thresh=0.9,
    fg_thresh=0.5,
    min_object_size=0,
    min_unclaimed=0.5,
    split_components=False,
    **scales,
):
    """Slow, literal implementation of the greedy definition in ``monai_embedseg.transforms.cluster``."""
    emb, sig, seed = decode_prediction(pred, spacing, batched=False, **scales)
    d, spatial = emb.shape[0], tuple(emb.shape[1:])
    emb = emb.reshape(d, -1)  # all arithmetic in the prediction's dtype, as documented
    sig = sig.reshape(d, -1)
    seed = seed.reshape(-1)
    n = seed.numel()
    fg = seed > fg_thresh
    comp = torch.from_numpy(ndimage.label(fg.reshape(spatial).numpy())[0].reshape(-1)) if split_components else None
    unclaimed = fg.clone()
    visited = torch.zeros(n, dtype=torch.bool)
    seeds = [i for i in range(n) if fg[i] and seed[i] > seed_thresh]
    seeds.sort(key=lambda i: (-float(seed[i]), i))
    objects = []
    for s in seeds:
        if visited[s]:
            continue
        q = torch.zeros(n, dtype=emb.dtype)
        for k in range(d):
            t = (emb[k] - emb[k, s]) / sig[k, s]
            q = q + t * t
        proposal = fg & (q < torch.tensor(CLAIM_Q, dtype=q.dtype))  # phi_s = exp(-q / 2) > 0.5
        if comp is not None:
            proposal &= comp == comp[s]
        n_prop = int(proposal.sum())
        if n_prop >= min_object_size and int((proposal & unclaimed).sum()) > min_unclaimed * n_prop:
            objects.append((proposal & unclaimed, float(seed[s])))
            unclaimed &= ~proposal
        visited |= proposal
        visited[s] = True
    labels = torch.zeros(n, dtype=torch.int32)
    conf = []
    for mask, c in objects:
        if int(mask.sum()) >= min_object_size:
            conf.append(c)
            labels[mask] = len(conf)
    return labels.reshape(1, *spatial), torch.tensor(conf, dtype=torch.float32)


def random_labels(shape, n_obj, rng):
    """Touching blobs: Voronoi cells of random points, cut to balls. ``(1, *shape)`` int32."""
    markers = np.zeros(shape, dtype=np.int32)
    pts = (rng.random((n_obj, len(shape))) * np.asarray(shape)).astype(int)
    markers[tuple(pts.T)] = np.arange(1, n_obj + 1)
    dist, idx = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    lab = markers[tuple(idx)]
    lab[dist > 0.6 * (np.prod(shape) / n_obj) ** (1 / len(shape))] = 0
    return np.unique(lab, return_inverse=True)[1].reshape(shape).astype(np.int32)[None]


def noisy_prediction(shape, spacing, rng, isotropic_sigma=False, ties=False, outlier=False):
    """Oracle-like prediction with noisy embeddings, random bandwidths and noisy (optionally tied) seeds."""
    lab = random_labels(shape, 6, rng)
    d = len(shape)
    unit = min(spacing) if spacing is not None else 1.0
    oracle = torch.as_tensor(oracle_prediction(lab, spacing, mode="centroid"))
    emb, _, _ = decode_prediction(oracle, spacing, batched=False)
    emb = emb.double() + torch.as_tensor(rng.normal(0, 0.5 * unit, emb.shape))
    n_sig = 1 if isotropic_sigma else d
    sig = torch.as_tensor(unit * np.exp(rng.normal(0.0, 0.6, (n_sig, *shape))))
    seed = np.where(lab[0] > 0, rng.uniform(0.6, 1.0, shape), rng.uniform(0.0, 0.7, shape))
    if ties:
        seed = np.round(seed * 8) / 8 * 0.999 + 0.0005
    if outlier:  # one embedding far away: exercises the grid-size cap
        emb.view(d, -1)[:, 3] = 1e6
    raw = encode_prediction(emb, sig.expand(n_sig, *shape), torch.as_tensor(seed)[None], spacing).float()
    return raw


CASES = [
    ((40, 48), None, {}, {}),
    ((40, 48), (0.5, 1.5), {"isotropic_sigma": True}, {"seed_thresh": 0.7, "fg_thresh": 0.4}),
    ((40, 48), None, {"ties": True}, {"min_object_size": 5, "min_unclaimed": 0.3}),
    ((36, 36), None, {"ties": True}, {"split_components": True, "seed_thresh": 0.8}),
    ((8, 18, 20), (2.0, 0.4, 0.4), {}, {"min_object_size": 3}),
    ((8, 18, 20), (2.0, 0.4, 0.4), {"ties": True, "outlier": True}, {"split_components": True, "min_unclaimed": 0.7}),
    ((10, 16, 16), None, {"isotropic_sigma": True}, {"fg_thresh": 0.3, "seed_thresh": 0.75}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_equals_reference(case):
    shape, spacing, gen, kw = CASES[case]
    rng = np.random.default_rng(case)
    pred = noisy_prediction(shape, spacing, rng, **gen)
    labels, conf = cluster_embeddings(pred, spacing, **kw)
    ref_labels, ref_conf = reference_cluster(pred, spacing, **kw)
    assert labels.dtype == torch.int32 and labels.shape == (1, *shape)
    assert ref_labels.max() >= 3  # the case is not trivial
    assert torch.equal(labels, ref_labels)
    assert torch.equal(conf, ref_conf)


def test_fast_equals_reference_on_raw_noise_with_wide_bandwidths():
    # pure noise with some huge bandwidths: proposals that cover most of the image (the "test every pixel" path)
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(5, 30, 34, generator=g) * torch.tensor([0.08, 0.08, 1.5, 1.5, 2.0]).view(5, 1, 1)
    pred[2:4] -= 1.0
    cases = (
        {},
        {"min_unclaimed": 0.2, "seed_thresh": 0.8},
        {"split_components": True, "fg_thresh": 0.7},
        {"sigma_scale": 1e-9},  # tiny bandwidths: one object per seed, and the grid of cells must be coarsened
    )
    for kw in cases:
        labels, conf = cluster_embeddings(pred, **kw)
        ref_labels, ref_conf = reference_cluster(pred, **kw)
        assert ref_labels.max() >= 2
        assert torch.equal(labels, ref_labels) and torch.equal(conf, ref_conf)


def test_float64_and_half_predictions():
    rng = np.random.default_rng(11)
    pred = noisy_prediction((30, 34), None, rng, ties=True).double()  # float64: arithmetic and seed order in float64
    labels, conf = cluster_embeddings(pred, min_unclaimed=0.4)
    ref_labels, ref_conf = reference_cluster(pred, min_unclaimed=0.4)
    assert ref_labels.max() >= 3 and torch.equal(labels, ref_labels) and torch.equal(conf, ref_conf)
    half = noisy_prediction((30, 34), None, rng).half()  # upcast to float32
    assert torch.equal(cluster_embeddings(half)[0], reference_cluster(half.float())[0])


def test_torch_and_numpy_foreground_selection_agree_with_full_decoding():
    from monai_embedseg.transforms.cluster import _decode_foreground

    for pred, dtype in ((torch.randn(7, 5, 6, 7), torch.float32), (torch.randn(5, 9, 11).half(), torch.float32)):
        sp = (2.0, 1.0, 0.5)[-(pred.ndim - 1) :]
        a = _decode_foreground(pred, sp, 0.5, 16.0, 4.0, dtype, True)
        b = _decode_foreground(pred, sp, 0.5, 16.0, 4.0, dtype, False)  # the CUDA code path
        assert a[1].size > 0
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
        # the same values as a full decoding (what the clustering did before decoding only the foreground)
        emb, sig, seed = decode_prediction(pred.to(dtype), sp, batched=False)
        d = pred.ndim - 1
        seed = seed.reshape(-1).numpy()
        assert np.array_equal(a[0], seed > 0.5) and np.array_equal(a[1], np.flatnonzero(seed > 0.5))
        assert np.array_equal(a[2], emb.reshape(d, -1).numpy()[:, a[1]])
        assert np.array_equal(a[3], sig.reshape(d, -1).numpy()[:, a[1]])
        assert np.array_equal(a[4], seed[a[1]])


def test_only_foreground_pixels_are_decoded(monkeypatch):
    import monai_embedseg.transforms.cluster as cluster_mod

    seen = []
    real = cluster_mod.decode_pixels

    def spy(pred, index, *args, **kwargs):
        seen.append(int(index.numel()))
        return real(pred, index, *args, **kwargs)

    monkeypatch.setattr(cluster_mod, "decode_pixels", spy)
    pred = noisy_prediction((10, 16, 16), None, np.random.default_rng(5))
    fg = int((torch.sigmoid(pred[-1]) > 0.5).sum())
    labels, conf = cluster_embeddings(pred)
    assert seen == [fg] and 0 < fg < pred[0].numel()
    ref_labels, ref_conf = reference_cluster(pred)
    assert torch.equal(labels, ref_labels) and torch.equal(conf, ref_conf)


def _same_partition(a, b):
    """True if two label maps are equal up to a bijective relabelling of the object ids."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize(
    "shape,spacing,n_obj", [((64, 80), None, 12), ((48, 40), (1.0, 0.5), 8), ((12, 40, 44), (2.0, 0.4, 0.4), 10)]
)
def test_oracle_round_trip(shape, spacing, n_obj):
    lab = random_labels(shape, n_obj, np.random.default_rng(len(shape)))
    assert lab.max() == n_obj
    # the objects touch: otherwise this would only test connected components
    assert (ndimage.label(lab[0] > 0)[0].max()) < n_obj
    for split in (False, True):
        out = EmbedSegCluster(spacing=spacing, split_components=split)(oracle_prediction(lab, spacing))
        assert isinstance(out, np.ndarray) and out.dtype == np.int32 and out.shape == lab.shape
        assert _same_partition(out, lab)
        assert out.max() == n_obj


def test_min_object_size_drops_small_objects():
    lab = np.zeros((1, 30, 30), dtype=np.int32)
    lab[0, 2:12, 2:12] = 1  # 100 px
    lab[0, 20:23, 20:23] = 2  # 9 px
    lab[0, 12:22, 2:12] = 3  # 100 px, touching 1
    pred = torch.as_tensor(oracle_prediction(lab))
    labels, conf = cluster_embeddings(pred, min_object_size=10)
    expected = np.where(lab == 2, 0, lab)
    assert labels.max() == 2 and _same_partition(labels.numpy(), expected)
    assert conf.shape == (2,)
    labels, _ = cluster_embeddings(pred, min_object_size=9)
    assert _same_partition(labels.numpy(), lab)


def test_confidence_is_seed_of_the_seed_pixel():
    lab = np.zeros((1, 20, 20), dtype=np.int32)
    lab[0, 1:8, 1:8] = 1
    lab[0, 10:18, 10:18] = 2
    pred = torch.as_tensor(oracle_prediction(lab))
    pred[-1][lab[0] == 1] = math.log(0.95 / 0.05)  # seed 0.95 everywhere in object 1
    pred[-1][lab[0] == 2] = math.log(0.97 / 0.03)
    pred[-1, 14, 14] = math.log(0.99 / 0.01)  # best seed of object 2
    labels, conf = EmbedSegCluster(return_confidence=True)(pred)
    assert torch.allclose(conf, torch.tensor([0.99, 0.95]), atol=1e-6)  # sorted by seed: object 2 first
    assert labels[0, 14, 14] == 1 and labels[0, 3, 3] == 2


def test_empty_foreground_and_no_seeds():
    pred = torch.zeros(5, 16, 16)
    pred[-1] = -5.0
    labels, conf = cluster_embeddings(pred)
    assert labels.shape == (1, 16, 16) and labels.dtype == torch.int32 and not labels.any() and conf.shape == (0,)
    pred[-1] = 0.5  # foreground (seed 0.62) but no seed above 0.9
    labels, conf = cluster_embeddings(pred)
    assert not labels.any() and conf.numel() == 0


def test_errors():
    with pytest.raises(ValueError, match="channels"):
        cluster_embeddings(torch.zeros(6, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        EmbedSegCluster()(np.zeros((4, 4, 8, 8), dtype=np.float32))
    bad = torch.zeros(5, 8, 8)
    bad[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cluster_embeddings(bad)
    with pytest.raises(ValueError, match="spatial"):
        cluster_embeddings(torch.zeros(5, 8))
    with pytest.raises(ValueError, match="spacing"):
        cluster_embeddings(torch.zeros(5, 8, 8), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="min_unclaimed"):
        cluster_embeddings(torch.zeros(5, 8, 8), min_unclaimed=1.5)
    with pytest.raises(TypeError):
        cluster_embeddings(np.zeros((5, 8, 8), dtype=np.float32))


def test_numpy_torch_meta_and_dictionary():
    lab = random_labels((32, 32), 5, np.random.default_rng(0))
    pred_np = oracle_prediction(lab)
    assert isinstance(pred_np, np.ndarray)
    out_np = EmbedSegCluster()(pred_np)
    out_t = EmbedSegCluster()(torch.as_tensor(pred_np))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.int32
    assert type(out_t) is torch.Tensor and out_t.dtype == torch.int32
    assert np.array_equal(out_np, out_t.numpy())
    meta = MetaTensor(torch.as_tensor(pred_np), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    out_m = EmbedSegCluster()(meta)
    assert isinstance(out_m, MetaTensor) and torch.equal(out_m.affine, meta.affine)
    labels, conf = EmbedSegCluster(return_confidence=True)(pred_np)
    assert isinstance(conf, np.ndarray) and conf.shape == (5,)
    assert EmbedSegClusterD is EmbedSegClusterd and EmbedSegClusterDict is EmbedSegClusterd
    d = EmbedSegClusterd("pred", output_keys="inst", confidence_keys="conf")({"pred": pred_np, "img": 1})
    assert np.array_equal(d["inst"], out_np) and d["conf"].shape == (5,) and d["img"] == 1
    d = EmbedSegClusterd("pred")({"pred": pred_np})
    assert np.array_equal(d["pred"], out_np)
    with pytest.raises(ValueError, match="one entry per key"):
        EmbedSegClusterd(["a", "b"], output_keys="x")


def test_validate_false_skips_the_nan_scan():
    """The NaN/Inf scan (a host synchronisation) runs by default and is skipped with validate=False."""
    lab = np.zeros((1, 16, 16), dtype=np.int32)
    lab[0, 3:8, 3:8] = 1
    raw = torch.as_tensor(oracle_prediction(lab))
    raw[0, 15, 15] = float("nan")  # an offset of a background pixel: never decoded
    with pytest.raises(ValueError, match="NaN"):
        cluster_embeddings(raw)
    labels, _ = cluster_embeddings(raw, validate=False)
    assert int(labels.max()) == 1 and bool((labels[0, 3:8, 3:8] == 1).all())


@pytest.mark.parametrize("shape", [(24, 30), (6, 20, 22)])
def test_exclude_border_drops_the_objects_the_border_cuts(shape):
    """Objects with a pixel on any face of the image are dropped, the others keep their order and confidences."""
    lab = np.zeros((1, *shape), dtype=np.int32)
    inner = tuple(slice(2, 5) for _ in shape)
    lab[(0, *inner)] = 1  # inside
    lab[(0, *(slice(n - 4, n) for n in shape))] = 2  # touches the last plane of every axis
    low = [slice(1, 4) for _ in shape]
    low[0] = slice(0, 3)  # touches the first plane of axis 0 only
    low[-1] = slice(10, 13)
    lab[(0, *low)] = 3
    mid = [slice(n // 2 - 1, n // 2 + 1) for n in shape]
    lab[(0, *mid)] = 4  # inside
    pred = torch.as_tensor(oracle_prediction(lab))
    pred[-1][torch.as_tensor(lab[0] > 0)] = math.log(0.95 / 0.05)
    pred[-1][torch.as_tensor(lab[0] == 4)] = math.log(0.99 / 0.01)  # object 4 has the best seed
    assert cluster_embeddings(pred)[0].max() == 4
    labels, conf = cluster_embeddings(pred, exclude_border=True)
    expected = np.where(np.isin(lab, (2, 3)), 0, lab)
    assert labels.max() == 2 and _same_partition(labels.numpy(), expected)
    assert labels[(0, *mid)].eq(1).all() and labels[(0, *inner)].eq(2).all()  # acceptance order kept: 4 first
    assert torch.allclose(conf, torch.tensor([0.99, 0.95]), atol=1e-6)
    out = EmbedSegCluster(exclude_border=True)(oracle_prediction(lab))
    assert isinstance(out, np.ndarray) and _same_partition(out, expected)
    d = EmbedSegClusterd("p", exclude_border=True)({"p": pred})
    assert torch.equal(d["p"], labels)


def test_exclude_border_must_be_a_bool():
    with pytest.raises(ValueError, match="exclude_border"):
        cluster_embeddings(torch.zeros(5, 8, 8), exclude_border="yes")
