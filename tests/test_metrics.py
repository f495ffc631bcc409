import itertools

import numpy as np
import pytest
import torch

from monai_embedseg.metrics import APDSBMetric, ap_dsb, matching_report
from monai_embedseg.metrics.matching import image_match_counts


def _random_labels(rng, shape, n, max_size=7):
    """Label map with up to ``n`` random boxes painted in order (later ones overwrite), ids shuffled and sparse."""
    lab = np.zeros(shape, np.int64)
    ids = rng.choice(np.arange(1, 50), size=n, replace=False)
    for i in ids:
        lo = [rng.integers(0, s - 2) for s in shape]
        hi = [min(s, a + rng.integers(2, max_size)) for a, s in zip(lo, shape)]
        lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = i
    return lab


def _perturbed(rng, lab):
    """A plausible prediction: ``lab`` shifted by up to one pixel, one object dropped, one random box added."""
    p = np.roll(lab, tuple(rng.integers(-1, 2, size=lab.ndim)), axis=tuple(range(lab.ndim)))
    ids = [i for i in np.unique(p) if i]
    if ids:
        p[p == rng.choice(ids)] = 0
    box = tuple(slice(a, a + 3) for a in (rng.integers(0, s - 3) for s in lab.shape))
    p[box] = 99
    return p


def _brute_force(y_true, y_pred, thr):
    """Reference: IoU from per-object masks, best matching by enumerating all one-to-one assignments."""
    t_ids = [i for i in np.unique(y_true) if i]
    p_ids = [j for j in np.unique(y_pred) if j]
    iou = np.zeros((len(t_ids), len(p_ids)))
    for a, i in enumerate(t_ids):
        for b, j in enumerate(p_ids):
            ti, pj = y_true == i, y_pred == j
            iou[a, b] = (ti & pj).sum() / (ti | pj).sum()
    flip = len(t_ids) > len(p_ids)
    m = iou.T if flip else iou
    best = (0, 0.0)
    for perm in itertools.permutations(range(m.shape[1]), m.shape[0]):
        s = m[np.arange(m.shape[0]), list(perm)]
        ok = s >= thr
        best = max(best, (int(ok.sum()), float(s[ok].sum())))
    return best[0], best[1], len(t_ids), len(p_ids)


@pytest.mark.parametrize("seed", range(6))
def test_matching_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    thresholds = (0.1, 0.3, 0.5, 0.7)
    y_true = _random_labels(rng, (14, 14), 5)
    y_pred = _random_labels(rng, (14, 14), 5)
    counts = image_match_counts(y_true, y_pred, thresholds)
    for row, thr in zip(counts, thresholds):
        tp, score, n_t, n_p = _brute_force(y_true, y_pred, thr)
        assert row[0] == tp and row[1] == n_p - tp and row[2] == n_t - tp and (row[4], row[5]) == (n_t, n_p)
        assert row[3] == pytest.approx(score)


def test_conflicting_candidates_need_optimal_assignment():
    # true 1 overlaps pred A and B; true 2 overlaps only pred A: the greedy choice (1-A) gives 1 match, optimum 2
    t = np.zeros((1, 10), int)
    p = np.zeros((1, 10), int)
    t[0, 0:4] = 1
    t[0, 4:6] = 2
    p[0, 1:5] = 7  # IoU(1, 7) = 3/5, IoU(2, 7) = 1/5
    p[0, 0:1] = 9  # IoU(1, 9) = 1/4
    rep = matching_report([t], [p], thresholds=(0.2, 0.25))
    assert rep[0]["tp"] == 2 and rep[0]["mean_matched_score"] == pytest.approx((0.2 + 0.25) / 2)
    assert rep[1]["tp"] == 1 and rep[1]["mean_matched_score"] == pytest.approx(0.6)


def test_stardist_docstring_example_and_report_values():
    y_true = np.zeros((100, 100), np.uint16)
    y_true[10:20, 10:20] = 1
    y_pred = np.roll(y_true, 5, axis=0)  # IoU 50 / 150
    rep = matching_report([y_true], [y_pred], thresholds=(0.5, 0.3))
    assert rep[0]["tp"] == 0 and rep[0]["fp"] == 1 and rep[0]["fn"] == 1
    assert rep[0]["accuracy"] == 0 and rep[0]["panoptic_quality"] == 0
    r = rep[1]
    assert (r["tp"], r["fp"], r["fn"], r["n_true"], r["n_pred"]) == (1, 0, 0, 1, 1)
    assert r["accuracy"] == r["precision"] == r["recall"] == r["f1"] == 1.0
    assert r["mean_matched_score"] == pytest.approx(1 / 3) and r["panoptic_quality"] == pytest.approx(1 / 3)


def test_report_ratios_hand_computed():
    t = np.zeros((20, 20), int)
    p = np.zeros((20, 20), int)
    t[0:4, 0:4], t[10:14, 10:14], t[0:2, 15:20] = 1, 2, 3
    p[0:4, 0:4], p[10:14, 10:12], p[18:20, 0:3], p[15:17, 15:17] = 4, 8, 5, 6  # exact, IoU 0.5, two FPs
    (r,) = matching_report([t], [p], 0.5)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 2, 1)
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(2 / 5) and r["f1"] == pytest.approx(4 / 7)
    assert r["mean_matched_score"] == pytest.approx(0.75) and r["mean_true_score"] == pytest.approx(1.5 / 3)
    assert r["panoptic_quality"] == pytest.approx(1.5 / (2 + 1 + 0.5))
    assert ap_dsb([t], [p], (0.5, 0.6, 1.0)) == pytest.approx([0.4, 1 / 6, 1 / 6])


def test_pooled_versus_by_image():
    rng = np.random.default_rng(3)
    ts = [_random_labels(rng, (16, 16), k) for k in (2, 6, 4)]
    ps = [_perturbed(rng, t) for t in ts]
    th = (0.3, 0.5)
    c = np.stack([image_match_counts(t, p, th) for t, p in zip(ts, ps)])
    pooled = c[:, :, 0].sum(0) / c[:, :, :3].sum((0, 2))
    per_image = (c[:, :, 0] / c[:, :, :3].sum(2)).mean(0)
    assert np.allclose(ap_dsb(ts, ps, th), pooled)
    assert np.allclose(ap_dsb(ts, ps, th, by_image=True), per_image)
    assert not np.allclose(pooled, per_image)
    rep = matching_report(ts, ps, th, by_image=True)
    assert [r["accuracy"] for r in rep] == pytest.approx(per_image)
    assert rep[0]["tp"] == c[:, 0, 0].sum()


def test_empty_conventions():
    e = np.zeros((8, 8), int)
    one = e.copy()
    one[2:5, 2:5] = 3
    assert ap_dsb([e], [e]).tolist() == [1.0]
    assert ap_dsb([e], [e], empty_value=0.0).tolist() == [0.0]  # StarDist's value
    assert ap_dsb([e], [one]).tolist() == [0.0] and ap_dsb([one], [e]).tolist() == [0.0]
    # pooled: the empty image adds no counts; by image: it scores 1
    assert ap_dsb([one, e], [one, e]).tolist() == [1.0]
    assert ap_dsb([one, e], [e, e], by_image=True).tolist() == [0.5]
    assert ap_dsb([one, e], [e, e]).tolist() == [0.0]
    (r,) = matching_report([e], [e])
    assert r["precision"] == r["panoptic_quality"] == 1.0 and r["tp"] == 0


def test_layouts_torch_numpy_and_ids():
    rng = np.random.default_rng(5)
    t2, p2 = _random_labels(rng, (12, 15), 4), _random_labels(rng, (12, 15), 4)
    ref = ap_dsb([t2], [p2], (0.3, 0.5))
    assert np.allclose(ap_dsb([torch.as_tensor(t2)[None]], [p2[None]], (0.3, 0.5)), ref)
    assert np.allclose(ap_dsb([t2.astype(np.float32)], [torch.as_tensor(p2).int()], (0.3, 0.5)), ref)
    perm = np.concatenate([[0], rng.permutation(np.arange(1, 50)) * 1000])  # non-consecutive, permuted ids
    assert np.allclose(ap_dsb([t2], [perm[p2]], (0.3, 0.5)), ref)
    t3, p3 = _random_labels(rng, (5, 8, 9), 4, 5), _random_labels(rng, (5, 8, 9), 4, 5)
    a = ap_dsb([t3], [p3], (0.2, 0.5))
    assert np.allclose(ap_dsb([t3[None]], [torch.as_tensor(p3)[None]], (0.2, 0.5)), a)
    for thr, v in zip((0.2, 0.5), a):
        tp, _, n_t, n_p = _brute_force(t3, p3, thr)
        assert v == pytest.approx(tp / (n_t + n_p - tp))


def test_one_hot_ground_truth_with_overlaps():
    rng = np.random.default_rng(7)
    t = _random_labels(rng, (12, 12), 4)
    p = _perturbed(rng, t)
    ids = [i for i in np.unique(t) if i]
    oh = np.stack([t == i for i in ids] + [np.zeros_like(t, bool)]).astype(np.uint8)  # plus an empty padding channel
    assert np.allclose(ap_dsb([oh], [p], (0.3, 0.5)), ap_dsb([t], [p], (0.3, 0.5)))
    # overlapping objects: true 0 = rows 0:6, true 1 = rows 3:9 (overlap rows 3:6); pred = rows 0:6 and rows 6:9
    oh = np.zeros((2, 10, 4), np.uint8)
    oh[0, 0:6], oh[1, 3:9] = 1, 1
    pred = np.zeros((10, 4), int)
    pred[0:6], pred[6:9] = 1, 2
    # IoU(t0, p1) = 1; IoU(t1, p1) = 3/9; IoU(t1, p2) = 3/6; a label map would have lost the overlap
    rep = matching_report([oh], [pred], (0.5, 0.34), one_hot=True)
    assert rep[0]["tp"] == 2 and rep[0]["mean_matched_score"] == pytest.approx(0.75)
    assert rep[1]["tp"] == 2
    assert rep[0]["accuracy"] == 1.0
    rep = matching_report([oh], [pred], (0.51,))
    assert rep[0]["tp"] == 1 and rep[0]["fn"] == 1 and rep[0]["fp"] == 1


def test_thresholds_from_one_table_match_single_calls():
    rng = np.random.default_rng(11)
    ts = [_random_labels(rng, (16, 16), 6) for _ in range(3)]
    ps = [_perturbed(rng, t) for t in ts]
    th = (0.2, 0.5, 0.6, 0.9)
    multi = ap_dsb(ts, ps, th)
    assert np.allclose(multi, [ap_dsb(ts, ps, t)[0] for t in th])
    assert np.all(np.diff(multi) <= 1e-12)  # AP cannot grow with the threshold


def test_errors():
    a = np.zeros((6, 6), int)
    with pytest.raises(ValueError, match=r"\(6, 6\).*\(6, 7\)"):
        ap_dsb([a], [np.zeros((6, 7), int)])
    with pytest.raises(ValueError, match="non-integer"):
        ap_dsb([a + 0.5], [a])
    with pytest.raises(ValueError, match="NaN"):
        ap_dsb([a], [np.full((6, 6), np.nan)])
    with pytest.raises(ValueError, match="negative"):
        ap_dsb([a - 1], [a])
    with pytest.raises(ValueError, match="negative"):
        ap_dsb([a], [torch.full((6, 6), -2)])
    with pytest.raises(ValueError, match="binary"):
        ap_dsb([np.full((3, 6, 6), 2)], [a], one_hot=True)
    with pytest.raises(ValueError, match="thresholds"):
        ap_dsb([a], [a], (0.0,))
    with pytest.raises(ValueError, match="images"):
        ap_dsb([a, a], [a])
    with pytest.raises(TypeError, match="lists"):
        ap_dsb(a, a)
    with pytest.raises(ValueError, match="label map"):
        ap_dsb([a[None, None]], [np.zeros((2, 1, 6, 6), int)])


def test_apdsb_metric_matches_function_and_buffers():
    rng = np.random.default_rng(2)
    ts = [_random_labels(rng, (16, 16), k) for k in (3, 5, 4, 2)]
    ps = [_perturbed(rng, t) for t in ts[:3]] + [np.zeros((16, 16), np.int64)]
    th = (0.3, 0.5, 0.7)
    for by_image in (False, True):
        m = APDSBMetric(thresholds=th, by_image=by_image)
        ret = m(torch.as_tensor(np.stack(ps[:2]))[:, None], torch.as_tensor(np.stack(ts[:2]))[:, None])
        assert ret.shape == (2, 3, 3)
        m([torch.as_tensor(p)[None] for p in ps[2:]], [torch.as_tensor(t)[None] for t in ts[2:]])  # decollated
        assert m.get_buffer().shape == (4, 3, 3)
        agg = m.aggregate()
        assert agg.shape == (3,)
        ref = ap_dsb(ts, ps, th, by_image=by_image)
        assert ref[0] > 0.2 and np.allclose(agg.numpy(), ref, atol=1e-6)
        m.reset()
        m(torch.as_tensor(ps[0])[None, None], torch.as_tensor(ts[0])[None, None])
        assert np.allclose(m.aggregate().numpy(), ap_dsb(ts[:1], ps[:1], th), atol=1e-6)
    m = APDSBMetric(thresholds=th, reduction="mean")
    m(torch.as_tensor(np.stack(ps))[:, None], torch.as_tensor(np.stack(ts))[:, None])
    assert m.aggregate().shape == () and m.aggregate().item() == pytest.approx(ap_dsb(ts, ps, th).mean(), abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        APDSBMetric(reduction="sum")
    with pytest.raises(ValueError, match=r"\(B, 1"):
        APDSBMetric()(torch.zeros(1, 2, 4, 4, dtype=torch.long), torch.zeros(1, 2, 4, 4, dtype=torch.long))


def test_apdsb_metric_with_ignite_handler():
    from ignite.engine import Engine
    from monai.handlers import IgniteMetricHandler, from_engine

    rng = np.random.default_rng(4)
    labels = [np.stack([_random_labels(rng, (16, 16), 4) for _ in range(2)]) for _ in range(3)]
    data = [
        {
            "pred": torch.as_tensor(np.stack([_perturbed(rng, t) for t in lab]))[:, None],
            "label": torch.as_tensor(lab)[:, None],
        }
        for lab in labels
    ]
    engine = Engine(lambda eng, batch: batch)
    th = (0.3, 0.5)
    handler = IgniteMetricHandler(metric_fn=APDSBMetric(th), output_transform=from_engine(["pred", "label"]))
    handler.attach(engine, "ap_dsb")
    engine.run(data, max_epochs=1)
    ts = [t[0] for b in data for t in b["label"]]
    ps = [p[0] for b in data for p in b["pred"]]
    expected = ap_dsb(ts, ps, th)
    assert expected[0] > 0.2
    assert np.allclose(np.asarray(engine.state.metrics["ap_dsb"]), expected, atol=1e-6)
    assert engine.state.metric_details["ap_dsb"].shape == (6, 2, 3)
