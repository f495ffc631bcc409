"""Block-wise segmentation of large volumes: stitching, ownership, resume, overwrite safety, Zarr I/O, errors, Dask.

Most tests use a *pointwise* stand-in network (``PointOracle``): its input channels are the object id and the
global voxel coordinates, so its prediction on any block equals the whole-volume prediction cropped to that block
(bit for bit, only +, -, *, / and sqrt). The block-wise labels can then be compared exactly with the whole-volume
clustering, and every difference is the stitching's fault. Its embeddings carry voxel-wise noise, so the greedy
clustering also splits objects into fragments that compete for voxels (the hard case for stitching).
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from monai_embedseg.bundle.paths import bundle_path
from monai_embedseg.cli import main
from monai_embedseg.cluster_settings import ClusteringSettings
from monai_embedseg.data import (
    ArrayVolume,
    create_ome_zarr,
    open_volume,
    volume_percentiles,
    write_ome_zarr,
)
from monai_embedseg.inferers import (
    BlockLayout,
    BlockPredictor,
    choose_block_size,
    estimate_block_memory,
    halo_from_properties,
    segment_blockwise,
)
from monai_embedseg.metrics import ap_dsb
from monai_embedseg.networks.nets import BranchedERFNet
from monai_embedseg.transforms import cluster_embeddings


# ------------------------------------------------------------------------------------------------------ fixtures
def paint_balls(shape, centres, radii):
    """Touching balls (Voronoi-cut): int32 labels ``(*shape)``, ids 1..K in the order of ``centres``."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, len(shape))
    d = np.sqrt(((grid[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1)) / np.asarray(radii)[None]
    k = d.argmin(1)
    return np.where(d[np.arange(len(k)), k] <= 1.0, k + 1, 0).astype(np.int32).reshape(shape)


def oracle_image(lab):
    """The stand-in network's input ``(1 + D, *spatial)``: object ids and global voxel coordinates."""
    coords = np.stack(np.meshgrid(*[np.arange(s) for s in lab.shape], indexing="ij")).astype(np.float32)
    return np.concatenate([lab[None].astype(np.float32), coords])


class PointOracle:
    """Pointwise stand-in network ``(B, 1 + D, *sp) -> (B, 2D + 1, *sp)`` for the label map it was built from.

    Embeddings: the object's centroid plus hashed voxel-wise noise (+-``noise`` voxels per axis); bandwidth
    ``sigma`` voxels; seed logit 3 at the centroid falling to 1 at the object's radius plus hashed noise, -3 outside.
    """

    def __init__(self, lab, spacing, noise=0.6, sigma=1.0):
        nd = lab.ndim
        self.spacing = [float(s) for s in spacing]
        self.unit = min(self.spacing)
        k = int(lab.max())
        idx = np.nonzero(lab)
        cnt = np.bincount(lab[idx], minlength=k + 1).astype(np.float64)
        cen = (
            np.stack([np.bincount(lab[idx], weights=idx[d] * self.spacing[d], minlength=k + 1) for d in range(nd)], 1)
            / np.maximum(cnt, 1)[:, None]
        )
        rad = (cnt * 3 / (4 * math.pi)) ** (1 / 3) if nd == 3 else np.sqrt(cnt / math.pi)
        self.centres = torch.tensor(cen, dtype=torch.float32)
        self.radius = torch.tensor(np.maximum(rad, 1.0) * self.unit, dtype=torch.float32)
        self.noise, self.raw_sigma = noise, math.log(sigma / 4.0)
        self.fingerprint = f"PointOracle:{k}:{noise}:{sigma}:{int(lab.sum())}"

    @staticmethod
    def _hash(g, salt):
        gi = g.round().long()
        h = torch.full_like(gi[:, 0], salt)
        for d in range(gi.shape[1]):
            h = (h * 1000003) ^ (gi[:, d] * (73856093 + 19349663 * d + salt))
        return (h % 1024).float() / 1024.0

    def __call__(self, x):
        nd = x.shape[1] - 1
        ids, g = x[:, 0].round().long(), x[:, 1:]
        coords = g * torch.tensor(self.spacing, dtype=torch.float32).view(1, nd, *([1] * nd))
        centre = self.centres[ids].movedim(-1, 1)
        noise = torch.stack([self._hash(g, d + 1) - 0.5 for d in range(nd)], 1) * (2 * self.noise * self.unit)
        emb = torch.where((ids > 0)[:, None], centre + noise, coords)
        raw_seed = torch.where(
            ids > 0,
            3.0 - 2.0 * ((coords - centre) ** 2).sum(1).sqrt() / self.radius[ids] + 0.3 * self._hash(g, 7),
            torch.full_like(ids, -3, dtype=torch.float32),
        )
        raw_off = (emb - coords) / (16.0 * self.unit)
        return torch.cat([raw_off, torch.full_like(raw_off, self.raw_sigma), raw_seed[:, None]], 1)


class CrashAfter:
    """The same network, but the call after ``n`` good ones raises (a worker killed in the middle of a run)."""

    def __init__(self, net, n):
        self.net, self.n, self.fingerprint = net, n, net.fingerprint

    def __call__(self, x):
        if self.n <= 0:
            raise RuntimeError("simulated crash")
        self.n -= 1
        return self.net(x)


SHAPE_3D = (36, 48, 48)
HALO = 12  # > the largest ball (diameter 11) + a margin


@pytest.fixture(scope="module")
def scene3d():
    """Touching balls, with balls centred on the corners, edges and faces of the 2 x 2 x 2 core grid."""
    rng = np.random.default_rng(0)
    centres = list(rng.uniform(0, 1, (36, 3)) * np.array(SHAPE_3D))
    centres += [
        [18, 24, 24],
        [18, 24, 2],
        [2, 24, 24],
        [18, 2, 24],
        [18, 24, 46],
        [34, 24, 24],
        [18, 46, 24],
        [18, 12, 36],
        [9, 24, 12],
    ]
    lab = paint_balls(SHAPE_3D, centres, rng.uniform(3, 5.5, len(centres)))
    return lab, oracle_image(lab)


def whole_volume(net, image, spacing, **kw):
    labels, _ = cluster_embeddings(net(torch.from_numpy(image)[None])[0], spacing, **kw)
    return labels[0].numpy()


def cores_spanned(lab, layout):
    """Per object, the set of blocks whose core holds some of its voxels."""
    pos = np.nonzero(lab)
    blocks = np.ravel_multi_index(tuple(p // b for p, b in zip(pos, layout.block)), layout.grid)
    spans = {}
    for obj, blk in zip(lab[pos].tolist(), blocks.tolist()):
        spans.setdefault(obj, set()).add(blk)
    return spans


def read_labels(store):
    return zarr.open_group(str(store), mode="r")["0"][...]


# ---------------------------------------------------------------------------------------------------- stitching
@pytest.mark.parametrize("block", [(18, 24, 24), (12, 16, 16), (24, 13, 30)])
@pytest.mark.parametrize("noise,sigma", [(0.6, 1.0), (1.2, 0.8)])
def test_blockwise_equals_whole_volume_across_every_face_and_corner(scene3d, tmp_path, block, noise, sigma):
    lab, image = scene3d
    net = PointOracle(lab, (1, 1, 1), noise=noise, sigma=sigma)
    ref = whole_volume(net, image, (1, 1, 1), min_object_size=3)
    out = tmp_path / "labels.zarr"
    summary = segment_blockwise(
        image,
        out,
        BlockPredictor(net, percentiles=None),
        HALO,
        clustering=ClusteringSettings(min_object_size=3, spacing=(1, 1, 1)),
        block_size=block,
        spatial_dims=3,
        progress=False,
    )
    res = read_labels(out)
    layout = BlockLayout(SHAPE_3D, block, (HALO,) * 3)
    # the layout really cuts objects across faces along every axis, edges and corners
    spans = cores_spanned(ref, layout)
    steps = [
        {tuple(abs(a - b) for a, b in zip(layout.position(i), layout.position(j))) for i in s for j in s}
        for s in spans.values()
    ]
    crossed = set().union(*steps)
    assert {(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)} <= crossed
    if noise > 1:
        assert ref.max() > 2 * lab.max()  # the greedy clustering fragments objects: fragments compete for voxels
    # exactly the whole-volume result: same objects, same ids (acceptance order), nothing duplicated or lost
    assert res.dtype == np.uint32 and res.shape == SHAPE_3D
    np.testing.assert_array_equal(res, ref)
    assert summary["objects"] == int(ref.max()) and summary["conflict_voxels"] == 0
    assert summary["touching_border"] == 0
    assert ap_dsb([ref], [res], 0.9)[0] == 1.0


@pytest.mark.parametrize("block", [(12, 16, 16), (24, 13, 30)])
def test_exclude_border_drops_what_the_volume_border_cuts_not_what_a_block_edge_cuts(scene3d, tmp_path, block):
    lab, image = scene3d
    net = PointOracle(lab, (1, 1, 1), noise=0.6, sigma=1.0)
    ref = whole_volume(net, image, (1, 1, 1), min_object_size=3, exclude_border=True)
    assert 0 < ref.max() < whole_volume(net, image, (1, 1, 1), min_object_size=3).max()
    summary = segment_blockwise(
        image,
        tmp_path / "l.zarr",
        BlockPredictor(net, percentiles=None),
        HALO,
        clustering=ClusteringSettings(min_object_size=3, spacing=(1, 1, 1), exclude_border=True),
        block_size=block,
        spatial_dims=3,
        progress=False,
    )
    res = read_labels(tmp_path / "l.zarr")
    assert any(len(s) > 1 for s in cores_spanned(ref, BlockLayout(SHAPE_3D, block, (HALO,) * 3)).values())  # kept
    np.testing.assert_array_equal(res, ref)  # ids too: the same acceptance order
    assert summary["objects"] == int(ref.max())


def test_too_small_halo_is_visible(scene3d, tmp_path):
    """The comparison above can fail: with a halo smaller than the objects the result differs and it is reported."""
    lab, image = scene3d
    net = PointOracle(lab, (1, 1, 1), noise=1.2, sigma=0.8)
    ref = whole_volume(net, image, (1, 1, 1), min_object_size=3)
    summary = segment_blockwise(
        image,
        tmp_path / "l.zarr",
        BlockPredictor(net, percentiles=None),
        4,
        clustering=ClusteringSettings(min_object_size=3, spacing=(1, 1, 1)),
        block_size=(12, 16, 16),
        progress=False,
    )
    assert summary["touching_border"] > 0
    assert not np.array_equal(read_labels(tmp_path / "l.zarr"), ref)


def test_2d_image_uses_the_same_path(tmp_path):
    rng = np.random.default_rng(3)
    shape = (90, 110)
    centres = list(rng.uniform(0, 1, (60, 2)) * np.array(shape)) + [[45, 55], [45, 0], [0, 55], [89, 55]]
    lab = paint_balls(shape, centres, rng.uniform(4, 7, len(centres)))
    image = oracle_image(lab)
    net = PointOracle(lab, (0.5, 0.5), noise=1.0, sigma=0.9)
    ref = whole_volume(net, image, (0.5, 0.5), min_object_size=4)
    for block in [(45, 55), (30, 37)]:
        out = tmp_path / f"l{block[0]}.zarr"
        summary = segment_blockwise(
            image,
            out,
            BlockPredictor(net, percentiles=None),
            16,
            clustering=ClusteringSettings(min_object_size=4, spacing=(0.5, 0.5)),
            block_size=block,
            spatial_dims=2,
            progress=False,
        )
        np.testing.assert_array_equal(read_labels(out), ref)
        assert summary["objects"] == int(ref.max()) > lab.max()
        assert open_volume(out).spacing == (0.5, 0.5)


# -------------------------------------------------------------------------------------------- resume and safety
def test_kill_then_resume_equals_an_uninterrupted_run(scene3d, tmp_path):
    lab, image = scene3d
    net = PointOracle(lab, (1, 1, 1), noise=1.2, sigma=0.8)
    clustering = ClusteringSettings(min_object_size=3, spacing=(1, 1, 1))
    kw = {"clustering": clustering, "block_size": (12, 16, 16), "spatial_dims": 3, "progress": False}
    full = tmp_path / "full.zarr"
    segment_blockwise(image, full, BlockPredictor(net, percentiles=None), HALO, **kw)
    out = tmp_path / "killed.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_blockwise(image, out, BlockPredictor(CrashAfter(net, 5), percentiles=None), HALO, **kw)
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)["embedseg_blockwise"]
    assert attrs["status"] == "running"
    done = zarr.open_group(str(out), mode="r")["blockwise_state/predicted"][...]
    assert int(done.sum()) == 5 and done.size == 27
    # the same command again continues from the 22 blocks not done; other settings are refused
    with pytest.raises(FileExistsError, match="other settings.*min_object_size"):
        segment_blockwise(
            image,
            out,
            BlockPredictor(net, percentiles=None),
            HALO,
            **{**kw, "clustering": clustering.replace(min_object_size=4)},
        )
    with pytest.raises(FileExistsError, match="other settings.*normalize_content"):  # its stored range would differ
        segment_blockwise(image, out, BlockPredictor(net, percentiles=None), HALO, **kw, normalize_content=True)
    summary = segment_blockwise(image, out, BlockPredictor(net, percentiles=None), HALO, **kw)
    assert summary["blocks_resumed"] == 5
    np.testing.assert_array_equal(read_labels(out), read_labels(full))
    assert "blockwise_state" not in zarr.open_group(str(out), mode="r")  # the state is gone once complete


def test_refuses_to_overwrite_without_overwrite(scene3d, tmp_path):
    lab, image = scene3d
    pred = BlockPredictor(PointOracle(lab, (1, 1, 1)), percentiles=None)
    kw = {
        "clustering": ClusteringSettings(spacing=(1, 1, 1)),
        "block_size": (18, 24, 24),
        "spatial_dims": 3,
        "progress": False,
    }
    out = tmp_path / "labels.zarr"
    segment_blockwise(image, out, pred, HALO, **kw)
    before = read_labels(out)
    with pytest.raises(FileExistsError, match="finished segmentation.*--overwrite"):
        segment_blockwise(image, out, pred, HALO, **kw)
    segment_blockwise(image, out, pred, HALO, **kw, overwrite=True)
    np.testing.assert_array_equal(read_labels(out), before)
    other = tmp_path / "notes.zarr"  # a user's folder that is not a Zarr store is never deleted
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        segment_blockwise(image, other, pred, HALO, **kw, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="exists"):
        create_ome_zarr(out, (4, 4), np.uint8)
    link = tmp_path / "link.zarr"  # --overwrite onto a link to a store: one clear error, the store kept
    link.symlink_to(out)
    with pytest.raises(FileExistsError, match="symbolic link"):
        segment_blockwise(image, link, pred, HALO, **kw, overwrite=True)
    np.testing.assert_array_equal(read_labels(out), before)


# ------------------------------------------------------------------------------------------------------- Zarr I/O
def test_ome_zarr_and_tiff_spacing_round_trip(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    vol = rng.integers(0, 4000, (2, 10, 20, 30), dtype=np.uint16)  # (C, Z, Y, X)
    path = write_ome_zarr(tmp_path / "img.zarr", vol, spacing=(2.5, 0.5, 0.25), chunks=(1, 4, 8, 8), channel_axis=True)
    v = open_volume(path)
    assert v.axes == "czyx" and v.spacing == (2.5, 0.5, 0.25) and v.n_channels == 2
    assert v.spatial_shape == (10, 20, 30)
    sl = (slice(3, 9), slice(5, 17), slice(0, 30))
    np.testing.assert_array_equal(v.read(sl), vol[(slice(None), *sl)])
    meta = json.loads((tmp_path / "img.zarr" / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    assert meta["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 2.5, 0.5, 0.25]}]
    assert [a["name"] for a in meta["axes"]] == ["c", "z", "y", "x"]
    # TIFF: memory-mapped (uncompressed) or page-wise (compressed), same blocks and spacing
    from monai_embedseg.data.io import write_tiff

    write_tiff(str(tmp_path / "a.tif"), vol[0], spacing=(2.5, 0.5, 0.25))
    tifffile.imwrite(tmp_path / "b.tif", vol[0], compression="zlib")
    for name in ("a.tif", "b.tif"):
        t = open_volume(tmp_path / name)
        np.testing.assert_array_equal(t.read(sl)[0], vol[0][sl])
    assert open_volume(tmp_path / "a.tif").spacing == (2.5, 0.5, 0.25)


def test_output_spacing_comes_from_the_input_store(scene3d, tmp_path):
    lab, image = scene3d
    src = write_ome_zarr(tmp_path / "in.zarr", image, spacing=(2.0, 1.0, 1.0), channel_axis=True)
    net = PointOracle(lab, (2.0, 1.0, 1.0))
    summary = segment_blockwise(
        src, tmp_path / "out.zarr", BlockPredictor(net, percentiles=None), HALO, block_size=(18, 24, 24), progress=False
    )
    assert open_volume(tmp_path / "out.zarr").spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(read_labels(tmp_path / "out.zarr"), whole_volume(net, image, (2.0, 1.0, 1.0)))
    assert summary["objects"] == lab.max()


def test_percentiles_of_a_volume_match_numpy_and_monai(tmp_path):
    from monai.transforms import ScaleIntensityRangePercentiles

    rng = np.random.default_rng(2)
    ints = rng.integers(0, 3000, (2, 20, 40, 40)).astype(np.uint16)
    floats = (rng.standard_normal((1, 30, 70, 64)) ** 3).astype(np.float32)
    floats[0, :5] = 0.0  # many equal values
    for arr, spatial in ((ints, 3), (floats, 3), (floats[0, 0], 2)):
        vol = ArrayVolume(arr, spatial_dims=spatial)
        got = volume_percentiles(vol, (1.0, 99.8), max_voxels=10_000)
        chans = arr.reshape(vol.n_channels, -1).astype(np.float32)
        want = np.stack([np.percentile(c, [1.0, 99.8]) for c in chans])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # the block-wise normalisation equals the bundles' whole-image one on every block
    norm = ScaleIntensityRangePercentiles(1.0, 99.8, 0.0, 1.0, clip=False, channel_wise=True, dtype=np.float32)
    whole = np.asarray(norm(torch.from_numpy(floats)))
    pred = BlockPredictor(lambda x: x, precision=None)
    block = pred.normalise(floats[:, 3:20, 10:50], volume_percentiles(ArrayVolume(floats), (1.0, 99.8)))
    np.testing.assert_allclose(block.numpy(), whole[:, 3:20, 10:50], rtol=1e-6, atol=1e-6)


def test_layout_cores_partition_the_volume_and_blocks_are_aligned():
    layout = BlockLayout((37, 50, 61), (12, 16, 20), (5, 9, 7), align=8)
    cover = np.zeros(layout.shape, dtype=np.int32)
    for i in range(layout.n_blocks):
        cover[layout.core(i)] += 1
        for c, e, h, s in zip(layout.core(i), layout.ext(i), layout.halo, layout.shape):
            assert e.start <= max(c.start - h, 0) and e.stop >= min(c.stop + h, s)  # core + halo inside
            assert e.start % 8 == 0 and (s - e.stop) % 8 == 0  # same sampling phase as the whole volume
    assert cover.min() == cover.max() == 1 and layout.grid == (4, 4, 4)
    assert len(layout.neighbours(0)) == 7 and len(layout.neighbours(layout.n_blocks // 2 + 5)) == 26


def test_block_predictor_runs_the_inferer_with_its_settings():
    from monai_embedseg.inferers import EmbedSegInferer
    from monai_embedseg.networks.nets import FastForward

    torch.manual_seed(0)
    net = BranchedERFNet(2, 1).eval()
    image = np.random.default_rng(5).integers(0, 200, (1, 40, 48)).astype(np.uint8)
    rng = np.array([[10.0, 190.0]], dtype=np.float32)
    pred = BlockPredictor(net, roi_size=(32, 32), tta=True, spacing=(1.0, 1.0))
    x = pred.normalise(image, rng)
    np.testing.assert_allclose(x.numpy(), (image.astype(np.float32) - 10) / 180, rtol=1e-6)
    with torch.inference_mode():
        want = EmbedSegInferer(roi_size=(32, 32), tta=True, spacing=(1.0, 1.0), tta_batch_size=1)(
            x[None], FastForward(net, precision="float32")
        )[0]
    got = pred(image, rng)
    assert got.shape == (5, 40, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    assert pred.fingerprint() != BlockPredictor(net, tta=False).fingerprint()


# --------------------------------------------------------------------------------------------------- errors, memory
def test_clear_errors_for_missing_corrupt_store_and_small_blocks(scene3d, tmp_path):
    lab, image = scene3d
    pred = BlockPredictor(PointOracle(lab, (1, 1, 1)), percentiles=None)
    with pytest.raises(FileNotFoundError, match="nowhere.zarr does not exist"):
        segment_blockwise(tmp_path / "nowhere.zarr", tmp_path / "o.zarr", pred, HALO)
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read Zarr store .*bad.zarr"):
        open_volume(bad)
    with pytest.raises(ValueError, match=r"block size \[8, 24, 24\] is smaller than the halo \[12, 12, 12\]"):
        segment_blockwise(image, tmp_path / "o.zarr", pred, HALO, block_size=(8, 24, 24), spatial_dims=3)
    assert not (tmp_path / "o.zarr").exists()


def test_block_size_follows_the_memory_limit():
    from monai_embedseg.inferers.blockwise import parse_memory

    shape, halo = (515, 648, 648), (24, 40, 40)
    small = choose_block_size(shape, halo, parse_memory("3GB"), base_bytes=2**29)
    large = choose_block_size(shape, halo, parse_memory("12GB"), base_bytes=2**29)
    assert math.prod(large) > math.prod(small)
    for blk, limit in ((small, 3e9), (large, 12e9)):
        layout = BlockLayout(shape, blk, halo, align=8)
        assert max(estimate_block_memory(layout.ext_shape(i)) for i in range(layout.n_blocks)) <= limit - 2**29
        assert all(b >= h for b, h in zip(blk, halo))
    with pytest.raises(ValueError, match="memory limit .* too small"):
        choose_block_size(shape, halo, parse_memory("20MB"))
    assert parse_memory("4GiB") == 4 * 2**30
    with pytest.raises(ValueError, match="not a memory size"):
        parse_memory("lots")
    assert halo_from_properties({"object_extent_mean": [6.2, 18.8], "object_extent_std": [1.4, 4.0]}, 8) == (22, 47)


# ----------------------------------------------------------------------------------------------------------- Dask
def test_local_cluster_with_two_worker_processes_gives_the_same_labels(scene3d, tmp_path):
    import cloudpickle
    from dask.distributed import Client, LocalCluster

    lab, image = scene3d
    net = PointOracle(lab, (1, 1, 1), noise=1.2, sigma=0.8)
    clustering = ClusteringSettings(min_object_size=3, spacing=(1, 1, 1))
    kw = {"clustering": clustering, "block_size": (18, 24, 24), "spatial_dims": 3, "progress": False}
    src = write_ome_zarr(tmp_path / "in.zarr", image, spacing=(1, 1, 1), channel_axis=True)
    local = segment_blockwise(src, tmp_path / "local.zarr", BlockPredictor(net, percentiles=None), HALO, **kw)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        with (
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            dist = segment_blockwise(
                src, tmp_path / "dist.zarr", BlockPredictor(net, percentiles=None), HALO, scheduler=client, **kw
            )
            assert len(client.scheduler_info()["workers"]) == 2
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    np.testing.assert_array_equal(read_labels(tmp_path / "dist.zarr"), read_labels(tmp_path / "local.zarr"))
    assert dist["objects"] == local["objects"] > lab.max()


# ------------------------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def model3d(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model3d")
    torch.manual_seed(0)
    torch.save(BranchedERFNet(3, 1).state_dict(), folder / "model.pt")
    props = {"min_object_size": 5, "object_extent_mean": [2.0, 6.0, 6.0], "object_extent_std": [0.0, 0.0, 0.0]}
    (folder / "dataset_properties.json").write_text(json.dumps(props))
    return folder


def test_cli_segments_a_zarr_volume_block_by_block(model3d, tmp_path, capsys):
    rng = np.random.default_rng(4)
    vol = write_ome_zarr(
        tmp_path / "vol.zarr", rng.integers(0, 255, (8, 32, 32), dtype=np.uint8), spacing=(3.0, 1.0, 1.0)
    )
    out = tmp_path / "labels.zarr"

    def args(src=vol, dst=out, block=("8", "16", "16"), extra=()):
        return [
            "segment",
            str(src),
            "--bundle",
            bundle_path("synthetic_3d"),
            "--output",
            str(dst),
            "--checkpoint",
            str(model3d / "model.pt"),
            "--block-size",
            *block,
            "--tile",
            "8",
            "24",
            "24",
            "--no-tta",
            *extra,
        ]

    assert main(args()) == 0  # with the bundle's default 16-fold TTA, sliding windows inside each block
    captured = capsys.readouterr()
    # halo = object extent (2x6x6 here) + the receptive-field margin measured on this network (0 for its zero
    # initial offsets and constant bandwidths: a block's output equals the one-pass output right to its edge)
    assert "4 blocks of 8x16x16, halo 2x6x6" in captured.out and "block 4/4" in captured.err
    assert "receptive-field margin measured on the network: [0, 0, 0]" in captured.err
    labels = read_labels(out)
    assert labels.shape == (8, 32, 32) and labels.dtype == np.uint32
    assert open_volume(out).spacing == (3.0, 1.0, 1.0)
    # one-line errors, exit code 2: existing output, block smaller than the halo, output not a Zarr store, missing
    assert main(args()) == 2
    assert "exists (a finished segmentation); pass --overwrite" in capsys.readouterr().err
    assert main(args(block=("1", "16", "16"), extra=["--overwrite"])) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "smaller than the halo" in errors[0]  # one line (after the margin's log line)
    assert labels.shape == read_labels(out).shape  # the refused run left the store alone
    assert main(args(dst=tmp_path / "labels")) == 2
    assert "--output must end with .zarr" in capsys.readouterr().err
    assert main(args(src=tmp_path / "missing.zarr", dst=tmp_path / "o.zarr")) == 2
    assert "missing.zarr does not exist" in capsys.readouterr().err


def test_an_output_that_is_or_holds_the_input_is_refused_even_with_overwrite(model3d, tmp_path, capsys):
    """--output onto the input store, onto the container of the input array, or onto a link to the input: one line,
    exit 2, and the input is still there, byte for byte."""
    import zarr

    rng = np.random.default_rng(4)
    vol = write_ome_zarr(tmp_path / "c.zarr", rng.integers(0, 255, (8, 32, 32), dtype=np.uint8), spacing=(3, 1, 1))
    container = tmp_path / "container.zarr"
    zarr.open_group(str(container), mode="w").create_array("raw", data=rng.random((8, 32, 32)).astype(np.float32))
    link = tmp_path / "link.zarr"
    link.symlink_to(vol)

    def snapshot(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}

    before = {vol: snapshot(vol), container: snapshot(container)}
    common = ["--bundle", bundle_path("synthetic_3d"), "--checkpoint", str(model3d / "model.pt")]
    common += ["--block-size", "8", "16", "16", "--no-tta", "--overwrite"]
    for src, dst, how in [(vol, vol, "is"), (container / "raw", container, "contains"), (vol, link, "is")]:
        assert main(["segment", str(src), "--output", str(dst), *common]) == 2
        err = capsys.readouterr().err
        assert f"{how} the input" in err and "refused whatever --overwrite says" in err and err.count("\n") == 1
    assert {vol: snapshot(vol), container: snapshot(container)} == before


def test_measured_margin_makes_small_blocks_of_a_trained_network_match_the_one_pass_result(tmp_path):
    """Issue: with a real network a fixed 8-voxel margin leaves blocks near, not equal, to the one-pass result."""
    from monai_embedseg.data.synthetic import synthetic_nuclei_2d
    from monai_embedseg.inferers.block_margin import measure_margin
    from monai_embedseg.pretrained import init_weights, model_folder

    image = synthetic_nuclei_2d((448, 448), n_objects=(110, 140), radius=(6, 12), seed=5)[0]
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    predictor = BlockPredictor(network=init_weights(BranchedERFNet(2, 1), "nuclei-2d").eval())
    margin = measure_margin(predictor, image[None])
    assert all(m >= 16 for m in margin)  # far beyond the old fixed 8 voxels for this trained network
    props = json.loads((model_folder("nuclei-2d") / "dataset_properties.json").read_text())
    settings = {"clustering": ClusteringSettings(0.9, 0.5, min_object_size=21), "progress": False}

    def run(name, halo, block):
        out = tmp_path / f"{name}.zarr"
        segment_blockwise(image, str(out), predictor, halo, block_size=block, **settings)
        return read_labels(out)

    one_pass = run("one", (0, 0), (448, 448))
    halo = halo_from_properties(props, margin)
    small = run("small", halo, tuple(max(h, 8) for h in halo))
    assert one_pass.max() > 50
    assert ap_dsb([one_pass], [small], thresholds=0.9)[0] >= 0.99
    # voxel for voxel: with the old fixed margin of 8 voxels 0.99989 of the voxels agreed here
    assert np.mean((one_pass > 0) == (small > 0)) >= 0.99995
