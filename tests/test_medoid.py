"""Exact medoid and per-object centers, checked against brute force over the full distance matrix."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from monai_embedseg.medoid import CENTER_MODES, exact_medoid, object_centers


def brute_medoid(points, candidates=None, rtol=1e-9):
    """Reference: lowest index with energy within rtol of the minimum."""
    energy = cdist(points, points).sum(axis=1)
    if candidates is not None:
        energy = np.where(candidates, energy, np.inf)
    e_min = energy.min()
    return int(np.flatnonzero(energy <= e_min + rtol * e_min)[0])


def brute_centroid_pixel(points):
    d2 = ((points - points.mean(axis=0)) ** 2).sum(axis=1)
    return int(np.flatnonzero(d2 <= d2.min() * (1 + 1e-9) + 1e-12)[0])


def u_shape_2d():
    """U shape whose medoid (9, 2) differs from the pixel nearest to its centroid (8, 2)."""
    u = np.zeros((16, 11), dtype=bool)
    u[:, :3] = True
    u[:, 8:] = True
    u[13:, :] = True
    return u


def random_blob(rng, shape, threshold=0.55):
    """Largest connected component of smoothed noise: irregular, often non-convex."""
    field = ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
    mask = field > np.quantile(field, threshold)
    lab, n = ndimage.label(mask)
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (np.argmax(sizes) + 1)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("brute_force_below", [0, 10**6])
def test_random_clouds_match_brute_force(dims, brute_force_below):
    rng = np.random.default_rng(dims)
    for trial in range(25):
        n = int(rng.integers(20, 400))
        if trial % 3 == 0:  # heavy tails
            pts = rng.standard_cauchy((n, dims))
        elif trial % 3 == 1:  # many duplicates and exact ties
            pts = rng.integers(0, 5, (n, dims)).astype(float)
        else:
            pts = rng.normal(size=(n, dims)) * rng.uniform(0.2, 4.0, dims)
        assert exact_medoid(pts, brute_force_below=brute_force_below) == brute_medoid(pts)


def test_candidates_mask_matches_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(20):
        pts = rng.normal(size=(300, 3))
        mask = rng.random(300) < 0.3
        mask[0] = True
        got = exact_medoid(pts, candidates=mask, brute_force_below=0)
        assert mask[got]
        assert got == brute_medoid(pts, mask)


@pytest.mark.parametrize("dims", [2, 3])
def test_random_blobs_match_brute_force(dims):
    rng = np.random.default_rng(10 + dims)
    shape = (40, 40) if dims == 2 else (14, 14, 14)
    for _ in range(4):
        blob = random_blob(rng, shape)
        pts = np.argwhere(blob).astype(float)
        spacing = rng.uniform(0.3, 3.0, dims)
        assert exact_medoid(pts * spacing, brute_force_below=0) == brute_medoid(pts * spacing)


def test_ellipsoid_larger_than_brute_force_threshold():
    zz, yy, xx = np.mgrid[:17, :25, :31]
    ell = ((zz - 8.2) / 8) ** 2 + ((yy - 12.1) / 11) ** 2 + ((xx - 14.7) / 14) ** 2 <= 1
    pts = np.argwhere(ell) * np.array([2.0, 0.4, 0.4])
    assert len(pts) > 3000
    assert exact_medoid(pts) == brute_medoid(pts)


@pytest.mark.parametrize(
    "shape",
    ["u", "ring", "c"],
)
def test_non_convex_shapes(shape):
    yy, xx = np.mgrid[:23, :23]
    r = np.hypot(yy - 11, xx - 11)
    if shape == "u":
        mask = u_shape_2d()
    elif shape == "ring":
        mask = (r >= 6) & (r <= 10)
    else:
        mask = (r >= 5) & (r <= 10) & ~((xx > 11) & (np.abs(yy - 11) <= 3))
    pts = np.argwhere(mask).astype(float)
    m = exact_medoid(pts, brute_force_below=0)
    assert m == brute_medoid(pts)
    # the centroid of a ring / C lies in the hole; the medoid is an object pixel by definition
    assert mask[tuple(pts[m].astype(int))]
    if shape == "u":
        assert tuple(pts[m].astype(int)) == (9, 2)
        assert tuple(pts[brute_centroid_pixel(pts)].astype(int)) == (8, 2)


def test_anisotropic_spacing_changes_the_answer():
    mask = np.zeros((9, 9), dtype=bool)  # L shape
    mask[:, :3] = True
    mask[6:, :] = True
    pts = np.argwhere(mask).astype(float)
    iso = exact_medoid(pts, brute_force_below=0)
    aniso = exact_medoid(pts * [3.0, 1.0], brute_force_below=0)
    assert iso == brute_medoid(pts) and aniso == brute_medoid(pts * [3.0, 1.0])
    assert tuple(pts[iso]) == (5, 2) and tuple(pts[aniso]) == (6, 3)
    ids, coords = object_centers(mask[None].astype(int), spacing=(3.0, 1.0))
    assert ids.tolist() == [1] and coords.tolist() == [[6, 3]]


def test_ties_go_to_lowest_index():
    square = np.argwhere(np.ones((2, 2))).astype(float)  # all four pixels tie
    assert exact_medoid(square) == 0
    cube = np.argwhere(np.ones((2, 2, 2))).astype(float)
    assert exact_medoid(cube, brute_force_below=0) == 0
    # a symmetric ring has many tied pixels: the lexicographically smallest wins
    yy, xx = np.mgrid[:41, :41]
    r = np.hypot(yy - 20, xx - 20)
    pts = np.argwhere((r >= 12) & (r <= 19)).astype(float)
    energy = cdist(pts, pts).sum(axis=1)
    tied = np.flatnonzero(energy <= energy.min() * (1 + 1e-9))
    assert len(tied) >= 4
    assert exact_medoid(pts, brute_force_below=0) == tied[0]
    # unordered input: the tie still resolves by index, not by coordinate
    assert exact_medoid(square[::-1].copy()) == 0
    assert exact_medoid(np.zeros((5, 2))) == 0


def test_medoid_errors():
    with pytest.raises(ValueError, match="non-empty"):
        exact_medoid(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        exact_medoid(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        exact_medoid(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(ValueError, match="bool mask"):
        exact_medoid(np.zeros((4, 2)), candidates=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="no point"):
        exact_medoid(np.zeros((4, 2)), candidates=np.zeros(4, dtype=bool))
    with pytest.raises(ValueError, match="rtol"):
        exact_medoid(np.zeros((4, 2)), rtol=-1.0)


def label_map_3d():
    lab = np.zeros((1, 12, 16, 18), dtype=np.int32)
    lab[0, 1:6, 2:9, 3:12] = 2
    lab[0, 7:11, 10:15, 1:17] = 5
    lab[0, 3:9, 12:14, 13:15] = 7  # overlaps (overwrites part of) 5
    lab[0, 0, 0, 0] = 9
    return lab


@pytest.mark.parametrize("center", CENTER_MODES)
def test_object_centers_label_map(center):
    lab = label_map_3d()
    spacing = (2.0, 0.5, 0.7)
    ids, coords = object_centers(lab, spacing=spacing, mode=center, max_points=50)
    assert ids.tolist() == [2, 5, 7, 9]
    assert coords.shape == (4, 3) and coords.dtype == np.int64
    for obj, c in zip(ids, coords):
        assert lab[(0, *c)] == obj  # inside its object
        pix = np.argwhere(lab[0] == obj)
        if center == "medoid":
            assert (pix[brute_medoid(pix * spacing)] == c).all()
        elif center == "centroid":
            assert (pix[brute_centroid_pixel(pix * spacing)] == c).all()
    if center == "approximate-medoid":  # deterministic
        assert (object_centers(lab, spacing=spacing, mode=center, max_points=50)[1] == coords).all()
        # objects not larger than max_points get the exact medoid
        exact = object_centers(lab, spacing=spacing)[1]
        assert (object_centers(lab, spacing=spacing, mode=center, max_points=10**6)[1] == exact).all()


def test_object_centers_one_hot_overlap_and_empty_channels():
    mask = u_shape_2d()
    stack = np.zeros((4, *mask.shape), dtype=np.uint8)
    stack[0] = mask
    stack[2] = mask  # identical object: must get a different center
    stack[3, 10:16, 0:4] = 1  # overlaps both, contains the U medoid region corner
    ids, coords = object_centers(stack)
    assert ids.tolist() == [0, 2, 3]  # channel 1 is empty
    assert len({tuple(c) for c in coords.tolist()}) == 3
    pts = np.argwhere(mask).astype(float)
    assert coords[0].tolist() == [9, 2]
    # second copy: the best pixel of its own that is not the first center
    allowed = ~(pts == [9, 2]).all(axis=1)
    assert (pts[brute_medoid(pts, allowed)] == coords[1]).all()
    for ch, c in zip(ids, coords):
        assert stack[(ch, *c)] == 1


def test_object_centers_identical_single_pixels_warn():
    stack = np.zeros((2, 5, 5), dtype=np.uint8)
    stack[:, 2, 3] = 1
    with pytest.warns(UserWarning, match="already the center"):
        ids, coords = object_centers(stack)
    assert ids.tolist() == [0, 1] and coords.tolist() == [[2, 3], [2, 3]]


def test_object_centers_errors_and_empty():
    ids, coords = object_centers(np.zeros((1, 4, 4), dtype=int))
    assert ids.shape == (0,) and coords.shape == (0, 2)
    with pytest.raises(ValueError, match="mode must be"):
        object_centers(np.zeros((1, 4, 4), dtype=int), mode="mean")
    with pytest.raises(ValueError, match="spatial dims"):
        object_centers(np.zeros((4, 4), dtype=int))
    with pytest.raises(ValueError, match="spacing"):
        object_centers(np.ones((1, 4, 4), dtype=int), spacing=(1.0, 2.0, 3.0))


def test_object_centers_sparse_huge_ids():
    lab = np.zeros((1, 6, 7), dtype=np.int64)
    lab[0, :2, :3] = 3_000_000_000
    lab[0, 3:, 2:] = 17
    ids, coords = object_centers(lab)
    assert ids.tolist() == [17, 3_000_000_000]
    for obj, c in zip(ids, coords):
        pix = np.argwhere(lab[0] == obj)
        assert (pix[brute_medoid(pix.astype(float))] == c).all()
