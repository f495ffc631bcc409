"""Tests of the Lovasz hinge and of the EmbedSeg spatial embedding loss.

The module also holds a plain per-object Python-loop reference of the loss (``reference_loss``) and a synthetic
blob generator (``make_blobs``); ``benchmarks/bench_loss.py`` imports both.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from monai_embedseg.embedding import decode_prediction, encode_prediction, pixel_coordinates
from monai_embedseg.losses import SpatialEmbeddingLoss, lovasz_hinge, lovasz_hinge_flat

# ---------------------------------------------------------------------------------------------- reference code


def lovasz_hinge_reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Textbook 1-D binary Lovasz hinge (full sort) of ``(P,)`` logits against ``(P,)`` binary labels."""
    labels = labels.to(logits.dtype)
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    errors_sorted, perm = torch.sort(errors, descending=True)
    gt = labels[perm]
    n_fg = gt.sum()
    jaccard = 1.0 - (n_fg - gt.cumsum(0)) / (n_fg + (1.0 - gt).cumsum(0))
    grad = jaccard.clone()
    grad[1:] = jaccard[1:] - jaccard[:-1]
    return torch.dot(torch.relu(errors_sorted), grad)


def reference_loss(
    pred,
    instance,
    center,
    spacing=None,
    w_inst=1.0,
    w_var=10.0,
    w_seed=1.0,
    foreground_weight=1.0,
    background_weight=1.0,
    center_rule="closest",
):
    """Per-image, per-object Python loop of the EmbedSeg loss (same maths as ``SpatialEmbeddingLoss``).

    Returns:
        (mean total over the batch, dict of batch-mean terms).
    """
    emb, sigma, seed = decode_prediction(pred, spacing)
    coords = pixel_coordinates(pred.shape[2:], spacing, device=pred.device, dtype=pred.dtype)
    n_pix = seed[0, 0].numel()
    totals, terms = [], {"instance": [], "variance": [], "seed": []}
    for b in range(pred.shape[0]):
        if instance.shape[1] == 1:
            objects = [instance[b, 0] == i for i in torch.unique(instance[b, 0]).tolist() if i > 0]
        else:
            objects = [instance[b, c] != 0 for c in range(instance.shape[1]) if instance[b, c].any()]
        inst = var = seed_fg = torch.zeros((), dtype=pred.dtype, device=pred.device)
        background = torch.ones(pred.shape[2:], dtype=torch.bool, device=pred.device)
        for mask in objects:
            candidates = torch.nonzero(mask & (center[b, 0] != 0))
            if len(candidates) == 0:
                raise ValueError("object without center")
            mean = coords[:, mask].mean(1)
            best, best_d = None, float("inf")
            for cand in candidates:
                c = coords[(slice(None), *cand.tolist())]
                dist = float(((c - mean) ** 2).sum())
                if dist < best_d:
                    best, best_d = c, dist
                if center_rule == "first":
                    break
            sigma_k = torch.log(sigma[b][:, mask]).mean(1).exp()
            dist2 = sum((emb[b, d] - best[d]) ** 2 / (2 * sigma_k[d] ** 2) for d in range(len(best)))
            phi = torch.exp(-dist2)
            inst = inst + lovasz_hinge_reference((2 * phi - 1).flatten(), mask.flatten())
            var = var + ((torch.log(sigma[b][:, mask]) - torch.log(sigma_k.detach())[:, None]) ** 2).sum(0).mean()
            seed_fg = seed_fg + ((seed[b, 0][mask] - phi[mask].detach()) ** 2).sum()
            background &= ~mask
        if objects:
            inst, var = inst / len(objects), var / len(objects)
        seed_term = (foreground_weight * seed_fg + background_weight * (seed[b, 0][background] ** 2).sum()) / n_pix
        totals.append(w_inst * inst + w_var * var + w_seed * seed_term)
        for k, v in zip(("instance", "variance", "seed"), (inst, var, seed_term)):
            terms[k].append(v)
    return torch.stack(totals).mean(), {k: torch.stack(v).mean() for k, v in terms.items()}


def make_blobs(batch, shape, n_objects, spacing=None, one_hot=False, seed=0, radius=(2.0, 6.0)):
    """Random ellipsoidal blobs.

    Returns:
        ``instance`` ``(B, 1, *shape)`` long label map (later blobs paint over earlier ones), or with ``one_hot``
        ``(B, n_objects + 2, *shape)`` uint8 overlapping stack (2 empty padding channels), and
        ``center`` ``(B, 1, *shape)`` bool: per object the pixel of its mask closest to its mean.
    """
    g = torch.Generator().manual_seed(seed)
    coords = pixel_coordinates(shape, spacing, dtype=torch.float64)
    extent = torch.tensor([(n - 1) * s for n, s in zip(shape, spacing or (1.0,) * len(shape))], dtype=torch.float64)
    view = (-1,) + (1,) * len(shape)
    n_ch = n_objects + 2 if one_hot else 1
    instance = torch.zeros(batch, n_ch, *shape, dtype=torch.uint8 if one_hot else torch.long)
    center = torch.zeros(batch, 1, *shape, dtype=torch.bool)
    for b in range(batch):
        masks = []
        for k in range(n_objects):
            mid = torch.rand(len(shape), generator=g, dtype=torch.float64) * extent
            rad = radius[0] + torch.rand(len(shape), generator=g, dtype=torch.float64) * (radius[1] - radius[0])
            mask = (((coords - mid.view(view)) / rad.view(view)) ** 2).sum(0) <= 1
            if one_hot:
                instance[b, k] = mask.to(torch.uint8)
            else:
                instance[b, 0][mask] = k + 1
            masks.append(mask)
        if not one_hot:
            masks = [instance[b, 0] == k + 1 for k in range(n_objects)]
        for mask in masks:
            if mask.any():
                mean = coords[:, mask].mean(1)
                d2 = ((coords - mean.view(view)) ** 2).sum(0).masked_fill(~mask, float("inf"))
                center[b, 0].view(-1)[d2.argmin()] = True
    return instance, center


def random_pred(batch, shape, n_sigma=None, seed=0, dtype=torch.float64, requires_grad=False):
    """Random raw prediction ``(B, D + n_sigma + 1, *shape)`` of moderate amplitude."""
    d = len(shape)
    g = torch.Generator().manual_seed(seed)
    pred = 0.3 * torch.randn(batch, d + (n_sigma or d) + 1, *shape, generator=g, dtype=dtype)
    return pred.requires_grad_(requires_grad)


# ---------------------------------------------------------------------------------------------- Lovasz hinge


def test_lovasz_hand_computed():
    # errors [-1, 1.5, 2]; sorted [2 (fg), 1.5 (bg), -1 (fg)]; Jaccard grad [1/2, 1/6, 1/3] -> 2/2 + 1.5/6 = 1.25
    out = lovasz_hinge_flat(torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1, 0, 1]))
    assert out.shape == () and out.item() == pytest.approx(1.25)
    # all correct with margin -> 0; all-background row with one wrong pixel -> its error (Jaccard loss 1)
    assert lovasz_hinge_flat(torch.tensor([3.0, -2.0]), torch.tensor([True, False])).item() == 0.0
    assert lovasz_hinge_flat(torch.tensor([0.5, -1.0, -3.0]), torch.tensor([0, 0, 0])).item() == pytest.approx(1.5)
    # ties: both orders of [1 (fg), 1 (bg)] give 1
    assert lovasz_hinge_flat(torch.zeros(2), torch.tensor([1, 0])).item() == pytest.approx(1.0)
    assert lovasz_hinge_flat(torch.zeros(0), torch.zeros(0)).item() == 0.0


def test_lovasz_equals_jaccard_loss_on_binary_errors():
    """With errors in {0, 1} the Lovasz extension equals the Jaccard loss of the mispredicted set."""
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        labels = torch.rand(15, generator=g) < 0.4
        wrong = torch.rand(15, generator=g) < 0.3
        sign = labels.double() * 2 - 1
        logits = torch.where(wrong, torch.zeros(15, dtype=torch.float64), sign)  # error 1 if wrong else 0
        pred = labels ^ wrong
        union = (labels | pred).sum().item()
        expected = 1 - (labels & pred).sum().item() / union if union else 0.0
        assert lovasz_hinge_flat(logits, labels).item() == pytest.approx(expected)


def test_lovasz_batched_rows_truncation_and_gradient():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 40, generator=g, dtype=torch.float64) * 2
    logits[0] = -5.0  # row with few positive errors -> topk path over the whole batch
    logits[1, :] = torch.where(torch.arange(40) < 3, 0.5, -4.0).double()
    labels = torch.rand(6, 40, generator=g) < 0.3
    labels[2] = False  # empty ground truth
    labels[3] = True
    batched = lovasz_hinge_flat(logits, labels)
    assert batched.shape == (6,)
    ref = torch.stack([lovasz_hinge_reference(logits[r], labels[r]) for r in range(6)])
    assert torch.allclose(batched, ref, atol=1e-12)
    # mostly-negative errors take the topk path; compare with the full-sort reference
    few = torch.full((3, 50), -3.0, dtype=torch.float64)
    few[:, :4] = torch.randn(3, 4, generator=g, dtype=torch.float64)
    lab = torch.zeros(3, 50, dtype=torch.bool)
    lab[:, 2:6] = True
    few[:, 4:6] = 3.0
    out = lovasz_hinge_flat(few, lab)
    assert torch.allclose(out, torch.stack([lovasz_hinge_reference(few[r], lab[r]) for r in range(3)]), atol=1e-12)
    x = logits[:3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: lovasz_hinge_flat(t, labels[:3]), (x,))
    # image-level wrapper
    imgs, gts = logits.view(6, 5, 8), labels.view(6, 5, 8)
    assert lovasz_hinge(imgs, gts).item() == pytest.approx(ref.mean().item())
    assert lovasz_hinge(imgs, gts, per_image=False).item() == pytest.approx(
        lovasz_hinge_reference(logits.flatten(), labels.flatten()).item()
    )
    with pytest.raises(ValueError, match="same shape"):
        lovasz_hinge_flat(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError):
        lovasz_hinge_flat(torch.zeros(3, dtype=torch.long), torch.zeros(3))


# ---------------------------------------------------------------------------------------------- loss vs reference

CASES = {
    "2d_labels": dict(shape=(24, 28), n_obj=5, spacing=None, one_hot=False, n_sigma=None),
    "2d_labels_aniso_isosigma": dict(shape=(20, 26), n_obj=4, spacing=(1.5, 0.5), one_hot=False, n_sigma=1),
    "2d_onehot_overlap": dict(shape=(22, 22), n_obj=6, spacing=None, one_hot=True, n_sigma=None),
    "3d_labels_aniso": dict(shape=(6, 14, 16), n_obj=4, spacing=(2.0, 0.5, 0.5), one_hot=False, n_sigma=None),
    "3d_onehot_overlap": dict(shape=(6, 12, 12), n_obj=5, spacing=(1.0, 0.7, 0.7), one_hot=True, n_sigma=None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_loss_matches_loop_reference(name):
    c = CASES[name]
    spacing = c["spacing"]
    radius = (2.0, 6.0) if len(c["shape"]) == 2 else (1.5, 4.0)
    instance, center = make_blobs(3, c["shape"], c["n_obj"], spacing, c["one_hot"], seed=7, radius=radius)
    instance[2] = 0  # an image without objects: only its seed term counts
    center[2] = False
    kwargs = dict(w_inst=1.0, w_var=10.0, w_seed=2.0, foreground_weight=5.0, background_weight=0.5)
    pred = random_pred(3, c["shape"], c["n_sigma"], seed=3, requires_grad=True)
    loss_fn = SpatialEmbeddingLoss(spacing=spacing, **kwargs)
    out = loss_fn(pred, {"instance": instance, "center": center})
    out.backward()
    grad = pred.grad.clone()
    pred.grad = None
    ref, ref_terms = reference_loss(pred, instance, center, spacing, **kwargs)
    ref.backward()
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    for k in ("instance", "variance", "seed"):
        assert loss_fn.terms[k].item() == pytest.approx(ref_terms[k].item(), rel=1e-5, abs=1e-5)
        assert loss_fn.terms[k].item() > 0
    # documented bounds: hinge errors < 2e-7 are dropped (instance term moves by <= 2e-7), nothing else differs
    assert abs(loss_fn.terms["instance"].item() - ref_terms["instance"].item()) <= 2e-7
    assert loss_fn.terms["variance"].item() == pytest.approx(ref_terms["variance"].item(), rel=1e-10)
    assert loss_fn.terms["seed"].item() == pytest.approx(ref_terms["seed"].item(), rel=1e-10)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(grad, pred.grad, rtol=1e-5, atol=1e-8)
    # the tuple form of the target and float32 inputs give the same value
    out32 = SpatialEmbeddingLoss(spacing=spacing, **kwargs)(pred.detach().float(), (instance, center))
    assert out32.dtype == torch.float32
    assert out32.item() == pytest.approx(ref.item(), rel=1e-4)


def test_chunking_over_objects_gives_the_same_loss_and_gradient(monkeypatch):
    import monai_embedseg.losses.spatial_embedding as module

    instance, center = make_blobs(2, (20, 22), 5, one_hot=True, seed=2)
    pred = random_pred(2, (20, 22), seed=6, requires_grad=True)
    whole = SpatialEmbeddingLoss()(pred, (instance, center))
    (grad,) = torch.autograd.grad(whole, pred)
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 3 * 2 * 20 * 22)  # 3 objects per chunk
    chunked = SpatialEmbeddingLoss()(pred, (instance, center))
    (grad_chunked,) = torch.autograd.grad(chunked, pred)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-12)
    assert torch.allclose(grad, grad_chunked, rtol=1e-10, atol=1e-14)


def test_overlapping_centers_use_the_one_closest_to_the_mean():
    shape = (16, 16)
    instance = torch.zeros(1, 2, *shape, dtype=torch.uint8)
    instance[0, 0, 2:14, 2:14] = 1  # big square, mean (7.5, 7.5)
    instance[0, 1, 1:6, 1:6] = 1  # small square overlapping its corner, center (3, 3) inside the big one
    center = torch.zeros(1, 1, *shape, dtype=torch.bool)
    center[0, 0, 3, 3] = True  # first in C order, lies inside both
    center[0, 0, 8, 8] = True
    pred = random_pred(1, shape, seed=5)
    out = SpatialEmbeddingLoss()(pred, {"instance": instance, "center": center})
    closest, _ = reference_loss(pred, instance, center, center_rule="closest")
    first, _ = reference_loss(pred, instance, center, center_rule="first")
    assert abs(closest.item() - first.item()) > 1e-3
    assert out.item() == pytest.approx(closest.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("shape,spacing", [((24, 24), (1.0, 1.0)), ((6, 12, 12), (2.0, 0.6, 0.6))])
def test_perfect_prediction_has_near_zero_terms(shape, spacing):
    instance, center = make_blobs(1, shape, 4, spacing, seed=11, radius=(2.0, 5.0))
    coords = pixel_coordinates(shape, spacing, dtype=torch.float64)
    emb = coords.clone()  # background pixels embed at themselves
    sigma = torch.full((len(shape), *shape), 0.15 * min(spacing), dtype=torch.float64)
    seed = torch.zeros(1, *shape, dtype=torch.float64)
    for i in torch.unique(instance)[1:]:
        mask = instance[0, 0] == i
        c = coords[:, (center[0, 0] & mask)][:, 0]
        emb[:, mask] = c[:, None]
        sigma[:, mask] = 0.2 + 0.05 * float(i)  # constant per object, differs between objects
        seed[:, mask] = 1.0
    pred = encode_prediction(emb, sigma, seed, spacing)[None]
    loss_fn = SpatialEmbeddingLoss(spacing=spacing)
    loss_fn(pred, {"instance": instance, "center": center})
    assert loss_fn.terms["instance"].item() < 1e-3
    assert loss_fn.terms["seed"].item() < 1e-6
    assert loss_fn.terms["variance"].item() < 1e-10
    # a poor prediction is far from zero
    loss_fn(torch.zeros_like(pred), {"instance": instance, "center": center})
    assert loss_fn.terms["instance"].item() > 0.1


def test_loss_decreases_when_optimising_a_free_prediction():
    torch.manual_seed(0)
    instance, center = make_blobs(1, (32, 32), 5, seed=4, radius=(3.0, 6.0))
    raw = torch.zeros(1, 5, 32, 32, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=0.05)
    loss_fn = SpatialEmbeddingLoss(foreground_weight=10.0)
    history = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(raw, {"instance": instance, "center": center})
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]
    assert min(history[-5:]) < min(history[:5])


def test_translation_into_a_larger_image():
    """Content placed in a larger image (extra pixels predicted far away, seed 0) gives the same object terms."""
    instance, center = make_blobs(2, (16, 18), 3, seed=9)
    pred = random_pred(2, (16, 18), seed=1)
    big_pred = torch.zeros(2, 5, 30, 31, dtype=torch.float64)
    big_pred[:, :2] = 1e3  # embeddings of the padding land far from every center: phi = 0 exactly
    big_pred[:, 4] = -1e3  # seed 0
    big_pred[:, :, 7:23, 5:23] = pred
    big_inst = torch.zeros(2, 1, 30, 31, dtype=torch.long)
    big_inst[..., 7:23, 5:23] = instance
    big_cen = torch.zeros(2, 1, 30, 31, dtype=torch.bool)
    big_cen[..., 7:23, 5:23] = center
    small, big = SpatialEmbeddingLoss(), SpatialEmbeddingLoss()
    small(pred, (instance, center))
    big(big_pred, (big_inst, big_cen))
    for k in ("instance", "variance"):
        assert big.terms[k].item() == pytest.approx(small.terms[k].item(), rel=1e-9)
    assert big.terms["seed"].item() * 30 * 31 == pytest.approx(small.terms["seed"].item() * 16 * 18, rel=1e-9)


def test_reductions_terms_and_dtype():
    instance, center = make_blobs(3, (12, 12), 2, seed=2, radius=(2.0, 3.0))
    pred = random_pred(3, (12, 12), seed=2, dtype=torch.float32)
    per_image = SpatialEmbeddingLoss(reduction="none")(pred, (instance, center))
    assert per_image.shape == (3,)
    mean_fn = SpatialEmbeddingLoss()
    mean = mean_fn(pred, (instance, center))
    total = SpatialEmbeddingLoss(reduction="sum")(pred, (instance, center))
    assert mean.item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    assert total.item() == pytest.approx(per_image.sum().item(), rel=1e-6)
    assert set(mean_fn.terms) == {"instance", "variance", "seed", "total"}
    assert all(not t.requires_grad for t in mean_fn.terms.values())
    recombined = mean_fn.terms["instance"] + 10 * mean_fn.terms["variance"] + mean_fn.terms["seed"]
    assert recombined.item() == pytest.approx(mean_fn.terms["total"].item(), rel=1e-6)
    # half-precision input (as under AMP) is computed in float32
    out = SpatialEmbeddingLoss()(pred.to(torch.bfloat16), (instance, center))
    assert out.dtype == torch.float32 and out.item() == pytest.approx(mean.item(), rel=0.1)
    # label maps given as float (after spatial transforms) or int32, centers as float
    same = SpatialEmbeddingLoss()(pred, (instance.float(), center.float()))
    assert same.item() == pytest.approx(mean.item(), rel=1e-6)


def test_empty_batch_of_objects():
    instance = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    center = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    pred = random_pred(2, (8, 8), seed=0, requires_grad=True)
    loss_fn = SpatialEmbeddingLoss()
    out = loss_fn(pred, {"instance": instance, "center": center})
    out.backward()
    expected = (torch.sigmoid(pred[:, 4].detach()) ** 2).mean()
    assert out.item() == pytest.approx(expected.item(), rel=1e-9)
    assert loss_fn.terms["instance"].item() == 0.0 and loss_fn.terms["variance"].item() == 0.0
    assert pred.grad[:, :4].abs().sum() == 0 and pred.grad[:, 4].abs().sum() > 0


def test_bad_inputs():
    instance, center = make_blobs(1, (10, 10), 2, seed=3, radius=(2.0, 3.0))
    pred = random_pred(1, (10, 10), seed=0, dtype=torch.float32)
    loss_fn = SpatialEmbeddingLoss()
    with pytest.raises(ValueError, match="channels"):
        loss_fn(torch.zeros(1, 6, 10, 10), (instance, center))
    with pytest.raises(ValueError, match="instance"):
        loss_fn(pred, (instance[..., :9], center))
    with pytest.raises(ValueError, match="center"):
        loss_fn(pred, (instance, center[..., :9, :]))
    with pytest.raises(ValueError, match="spatial"):
        loss_fn(pred[:, :, 0], (instance, center))
    missing = center.clone()
    missing[0, 0, instance[0, 0] == int(instance.max())] = False
    with pytest.raises(ValueError, match="no True pixel"):
        loss_fn(pred, (instance, missing))
    nan = pred.clone()
    nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        loss_fn(nan, (instance, center))
    with pytest.raises(ValueError, match="negative"):
        loss_fn(pred, (-instance, center))
    with pytest.raises(ValueError, match="integer"):
        loss_fn(pred, (instance.float() + 0.5, center))
    with pytest.raises(ValueError, match="binary"):
        loss_fn(pred, (torch.cat([instance, instance]).view(1, 2, 10, 10) * 2, center))
    with pytest.raises(ValueError, match="missing|misses"):
        loss_fn(pred, {"instance": instance})
    with pytest.raises(TypeError):
        loss_fn(pred, instance)
    with pytest.raises(ValueError, match="spacing"):
        SpatialEmbeddingLoss(spacing=(1.0, 1.0))(
            torch.zeros(1, 7, 4, 10, 10),
            (instance[:, :, None].expand(1, 1, 4, 10, 10), center[:, :, None].expand(1, 1, 4, 10, 10)),
        )
    with pytest.raises(ValueError):
        SpatialEmbeddingLoss(reduction="average")
    with pytest.raises(ValueError, match="w_var"):
        SpatialEmbeddingLoss(w_var=-1.0)


def test_metatensor_inputs_and_all_pairs_of_target_formats():
    from monai.data import MetaTensor

    instance, center = make_blobs(2, (14, 14), 3, seed=5, radius=(2.0, 4.0))
    pred = random_pred(2, (14, 14), seed=4, dtype=torch.float32)
    ref = SpatialEmbeddingLoss()(pred, (instance, center))
    # the same objects given as a one-hot stack (with padding channels in any position)
    ids = [i for i in torch.unique(instance).tolist() if i > 0]
    one_hot = torch.zeros(2, len(ids) + 2, 14, 14, dtype=torch.bool)
    for j, i in enumerate(ids):
        one_hot[:, j + 1] = instance[:, 0] == i
    for inst, cen in itertools.product([one_hot, MetaTensor(instance)], [center, MetaTensor(center.float())]):
        out = SpatialEmbeddingLoss()(MetaTensor(pred), {"instance": inst, "center": cen})
        assert type(out) is torch.Tensor
        assert out.item() == pytest.approx(ref.item(), rel=1e-6)


def test_validate_false_skips_value_checks_without_host_sync(monkeypatch):
    """validate=False: bad values are not checked (no .any()/.all() host syncs), shapes still are."""
    pred = torch.zeros(1, 5, 8, 8)
    inst = torch.zeros(1, 1, 8, 8, dtype=torch.int64)
    inst[0, 0, 2:5, 2:5] = 1
    center = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    center[0, 0, 3, 3] = True
    bad = pred.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        SpatialEmbeddingLoss()(bad, {"instance": inst, "center": center})
    loss = SpatialEmbeddingLoss(validate=False)
    calls = []
    monkeypatch.setattr(SpatialEmbeddingLoss, "_check_instance_values", staticmethod(lambda t: calls.append(t)))
    assert torch.isfinite(loss(pred, {"instance": inst, "center": center}))
    assert calls == []  # the value checks were skipped
    with pytest.raises(ValueError, match="'center' must have shape"):
        loss(pred, {"instance": inst, "center": center[..., :4]})
    checked = SpatialEmbeddingLoss()
    checked(pred, {"instance": inst, "center": center})
    assert len(calls) == 1  # ... and run by default
