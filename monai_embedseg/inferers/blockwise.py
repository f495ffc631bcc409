"""Block-wise EmbedSeg segmentation of images larger than memory, on one machine or a Dask cluster.

The volume is cut into **cores** (a regular grid of blocks of ``block`` voxels, the last ones smaller) that cover it
exactly once. Each core is grown by a **halo** (clipped at the volume border) into its **extended block**, which is
read, normalised, predicted (:class:`~monai_embedseg.inferers.EmbedSegInferer`: whole block or sliding window,
optional TTA) and clustered (:func:`~monai_embedseg.transforms.cluster_embeddings`, the whole-volume greedy algorithm
run on the extended block). Embeddings are pixel position + offset in physical units, so an object's embedding
centre means the same thing in every block: the clustering of an extended block reproduces the whole-volume objects
that lie inside it.

**Ownership.** Every object found in an extended block gets a *representative voxel*: its voxel with the highest raw
seed logit, ties broken by the lowest raster index (a function of the object alone, so two blocks that find the same
object pick the same voxel; it is the greedy seed itself unless a higher-seed voxel of the object had been swallowed
by an earlier rejected proposal). A block **keeps exactly the objects whose representative lies in its core**, with
all their voxels, also those in its halo. Cores partition the volume, so an object is kept by one block only: no
duplicates, and none is lost as long as its owner sees it whole. With ``exclude_border`` the owner also drops the
objects that touch the volume's border (its extended block reaches that border wherever they do), never those that
touch only a block's edge.

**Ids.** Each block records its kept objects (representative's global raster index, confidence, size), writes their
voxels inside its core to a provisional array (block-local ids) and lists their voxels outside its core (the
*spill*: global raster index, local id). When all blocks are done, the objects of all blocks are numbered ``1..K`` in
the whole-volume acceptance order (confidence descending, ties by representative raster index) and every core is
written once, as a Zarr chunk (shard) of the output: its own objects plus the spill of its (up to ``3^D - 1``)
neighbours that falls into it. If two blocks claim the same voxel (only possible where a block's result deviates
from the whole-volume one), the object that comes first in the acceptance order keeps it, as in the greedy
algorithm.

**Exactness, and its approximations.** The result equals the whole-volume result when (a) the prediction of an
extended block equals the whole-volume prediction on the voxels that matter, and (b) the greedy decisions that shape a
kept object are the same in the block as in the whole volume.

(a) holds exactly for a translation-equivariant predictor. A CNN that downsamples by 8 (``BranchedERFNet``) is
translation-equivariant only for shifts by multiples of 8, so extended blocks start a multiple of ``align`` = 8 voxels
from the volume's start and end a multiple of 8 from its end (TTA flips see the same phase as well); what remains is
the network's view of the block edge (padding instead of image), which the receptive-field ``margin`` keeps away from
the kept objects. The reference is the network run over the whole volume in one pass, which is what block-wise
segmentation reproduces; a whole-volume run with MONAI's sliding window is itself a different approximation of it
(its windows see other edges), and so is a block-wise run with ``roi_size`` (windows inside blocks). Measured with
the trained ``synthetic_3d`` network: AP@0.9 = 1.0 against the one-pass whole volume for three block layouts, where a
sliding-window whole-volume run scores 0.88 against the same reference, and unaligned blocks 0.2 - 0.6
(``benchmarks/bench_blockwise.py``).

(b) holds when every proposal that competes with a kept object (its own, and those of earlier seeds that claim some of
its voxels, recursively) lies inside the extended block. A halo of at least the largest object extent puts a kept
object and the proposals of its touching neighbours inside the block; the greedy order is global, though, so a long
chain of mutually overlapping proposals (seed A's proposal decides B's unclaimed fraction, which decides C's, ...)
could in principle carry an effect past the halo. With a trained network proposals compete only with touching objects
and this did not occur in our measurements; with an exact (pointwise) predictor whose noisy embeddings split objects
into competing fragments the labels are identical, ids included (``tests/test_blockwise.py``). A block also logs how
many of its kept objects touch its outer border (a sign that the halo is too small for the data), and voxels claimed
by objects of two blocks are counted and reported.

**Halo.** :func:`halo_from_properties`: per axis ``ceil(mean + 5 std)`` of the training objects' bounding-box extent
(the crop-size statistic of :mod:`monai_embedseg.data.properties`, before rounding) plus ``margin`` voxels, which the
command line measures on the network (:func:`~monai_embedseg.inferers.block_margin.measure_margin`). Cores must
be at least as large as the halo (so a spill only reaches adjacent cores).

**Execution.** Blocks are ``dask.delayed`` tasks: Dask's threaded scheduler by default (``workers`` threads in this
process), or any ``dask.distributed`` cluster (``scheduler=ADDRESS`` or a ``Client``), where every worker loads the
network once. Finished blocks are recorded in the output store (``blockwise_state/predicted``, ``.../merged``); a
killed run restarted with the same arguments resumes from the blocks not yet done, and the result equals an
uninterrupted run. An existing store is never replaced without ``overwrite=True``.

**Memory** per worker depends on the block, not on the volume: about ``bytes_per_voxel`` times the extended block
(:func:`estimate_block_memory`); :func:`choose_block_size` picks the largest blocks that fit a memory limit.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from monai_embedseg.cluster_settings import ClusteringSettings
from monai_embedseg.embedding import resolve_spacing
from monai_embedseg.inferers.block_layout import (
    BlockLayout,
    choose_block_size,
    estimate_block_memory,
    halo_from_properties,
    parse_memory,
    per_axis,
)
from monai_embedseg.inferers.block_predictor import BlockPredictor
from monai_embedseg.inferers.block_runner import BlockRunner
from monai_embedseg.inferers.block_store import (
    STATE_GROUP,
    assign_global_ids,
    create_output,
    finish_output,
    job_record,
    prepare_output,
    state_group,
)
from monai_embedseg.intensity import SPARSE_RATIO, sparse_message
from monai_embedseg.labels import border_ids

__all__ = [
    "STATE_GROUP",
    "BlockLayout",
    "BlockPredictor",
    "choose_block_size",
    "estimate_block_memory",
    "halo_from_properties",
    "parse_memory",
    "segment_blockwise",
]

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    """Everything a block task needs (small and picklable; the predictor travels separately)."""

    volume: Any
    store: str
    layout: BlockLayout
    clustering: ClusteringSettings  # spacing resolved
    intensity_range: Any


def _representatives(lab: np.ndarray, raw_seed: np.ndarray, k: int) -> np.ndarray:
    """Per object ``1..k`` of ``lab`` the raster index of its voxel with the highest raw seed (ties: lowest index)."""
    flat = np.flatnonzero(lab)
    ids = lab.reshape(-1)[flat]
    raw = raw_seed.reshape(-1)[flat]
    best = np.full(k + 1, -np.inf, dtype=raw.dtype)
    np.maximum.at(best, ids, raw)
    hit = raw == best[ids]
    rep = np.full(k + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(rep, ids[hit], flat[hit])
    return rep[1:]


def _predict_block(job: _Job, predictor: BlockPredictor, i: int) -> dict:
    """Phase 1 of block ``i``: predict and cluster its extended block, keep its objects, record them in the store."""
    from monai_embedseg.transforms import cluster_embeddings

    t0 = time.perf_counter()
    lay = job.layout
    ext, core = lay.ext(i), lay.core(i)
    ext0 = np.array([s.start for s in ext])
    eshape = lay.ext_shape(i)
    pred = predictor(job.volume.read(ext), job.intensity_range)
    if tuple(pred.shape[1:]) != eshape:
        raise ValueError(f"block {i}: the predictor returned shape {tuple(pred.shape)} for a block of {eshape}.")
    t1 = time.perf_counter()
    # objects the volume border cuts are dropped below: a block's own border is not the volume's
    labels, conf = cluster_embeddings(pred, **job.clustering.replace(exclude_border=False).as_dict())
    lab = labels[0].numpy()
    raw_seed = pred[-1].numpy()
    del labels, pred
    k = int(conf.numel())
    rep_local = _representatives(lab, raw_seed, k)
    del raw_seed
    rep_pos = np.stack(np.unravel_index(rep_local, eshape), axis=1) + ext0 if k else np.zeros((0, lab.ndim), int)
    c0 = np.array([s.start for s in core])
    c1 = np.array([s.stop for s in core])
    owned = np.all((rep_pos >= c0) & (rep_pos < c1), axis=1)
    # the extended block's faces: on the volume's border, or inside the volume (where an object may be cut)
    faces = [
        (d, side, at)
        for d in range(lab.ndim)
        for side, at in ((0, ext[d].start == 0), (-1, ext[d].stop == lay.shape[d]))
    ]
    if job.clustering.exclude_border and k:
        owned[border_ids(lab, [(d, side) for d, side, at in faces if at]) - 1] = False
    sizes = np.bincount(lab.reshape(-1), minlength=k + 1)[1:]
    n_own = int(owned.sum())
    lut = np.zeros(k + 1, dtype=np.uint32)
    lut[1:][owned] = np.arange(1, n_own + 1, dtype=np.uint32)
    own = lut[lab]
    del lab
    # kept objects touching the outer border of the extended block (not the volume border): possibly cut
    touching = border_ids(own, [(d, side) for d, side, at in faces if not at])
    core_local = tuple(slice(c.start - e.start, c.stop - e.start) for c, e in zip(core, ext))
    spill_mask = own > 0
    spill_mask[core_local] = False
    spill_local = np.flatnonzero(spill_mask)
    del spill_mask
    spill_global = np.ravel_multi_index(
        tuple(np.asarray(a) + o for a, o in zip(np.unravel_index(spill_local, eshape), ext0)), lay.shape
    )
    spill = np.stack([spill_global.astype(np.int64), own.reshape(-1)[spill_local].astype(np.int64)], axis=1)
    rep_global = np.ravel_multi_index(tuple(rep_pos[owned].T), lay.shape) if n_own else np.zeros(0, np.int64)
    objects = (
        np.stack(
            [rep_global.astype(np.float64), conf.numpy()[owned].astype(np.float64), sizes[owned].astype(np.float64)],
            axis=1,
        )
        if n_own
        else np.zeros((0, 3))
    )
    state = state_group(job.store)
    state["provisional"][core] = own[core_local]
    state.create_array(
        f"objects_{i}", shape=objects.shape, chunks=(max(1, len(objects)), 3), dtype="float64", overwrite=True
    )[...] = objects
    state.create_array(
        f"spill_{i}", shape=spill.shape, chunks=(max(1, min(len(spill), 1 << 20)), 2), dtype="int64", overwrite=True
    )[...] = spill
    state["predicted"][lay.position(i)] = 1  # last: the block is done
    t2 = time.perf_counter()
    return {
        "block": i,
        "objects": n_own,
        "found": k,
        "touching": len(touching),
        "predict_s": t1 - t0,
        "cluster_s": t2 - t1,
        "seconds": t2 - t0,
    }


@functools.lru_cache(maxsize=4)
def _global_ids(store: str, run_key: float) -> tuple[np.ndarray, np.ndarray]:
    """``(gids, offsets)`` of a store, read once per process and run (``run_key``)."""
    state = state_group(store, "r")
    return state["gids"][...], state["gid_offsets"][...]


def _merge_block(job: _Job, i: int, ids_key: float) -> dict:
    """Phase 2 of block ``i``: its own objects and its neighbours' spill into its core, with global ids."""
    import zarr

    t0 = time.perf_counter()
    lay = job.layout
    gids, offsets = _global_ids(job.store, ids_key)
    root = zarr.open_group(job.store, mode="r+")
    state = root[STATE_GROUP]
    core = lay.core(i)
    c0 = np.array([s.start for s in core])
    cshape = tuple(s.stop - s.start for s in core)
    lut = np.concatenate([[0], gids[offsets[i] : offsets[i + 1]]]).astype(np.uint32)
    out = lut[state["provisional"][core]]
    conflicts = 0
    flat_out = out.reshape(-1)
    for j in lay.neighbours(i):
        spill = state[f"spill_{j}"][...]
        if not len(spill):
            continue
        pos = np.stack(np.unravel_index(spill[:, 0], lay.shape), axis=1) - c0
        inside = np.all((pos >= 0) & (pos < np.array(cshape)), axis=1)
        if not inside.any():
            continue
        loc = np.ravel_multi_index(tuple(pos[inside].T), cshape)
        gid = gids[offsets[j] + spill[inside, 1] - 1].astype(np.uint32)
        cur = flat_out[loc]
        conflicts += int(np.count_nonzero(cur))
        flat_out[loc] = np.where((cur == 0) | (gid < cur), gid, cur)  # the earlier object (greedy order) wins
    root["0"][core] = out
    state["merged"][lay.position(i)] = 1
    return {"block": i, "conflicts": conflicts, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------------- scheduling
def _open_image(image: Any, spatial_dims: int | None) -> Any:
    from monai_embedseg.data.zarr_io import ArrayVolume, open_volume

    if isinstance(image, (str, os.PathLike)):
        return open_volume(image, spatial_dims)
    if hasattr(image, "read") and hasattr(image, "spatial_shape"):
        return image
    return ArrayVolume(image, spatial_dims)


def segment_blockwise(
    image: Any,
    output: str | os.PathLike,
    predictor: BlockPredictor,
    halo: int | Sequence[int],
    *,
    clustering: ClusteringSettings | None = None,
    block_size: Sequence[int] | None = None,
    memory_limit: int | str | None = None,
    intensity_range: Any = None,
    scheduler: Any = None,
    workers: int | None = None,
    spatial_dims: int | None = None,
    output_spacing: Sequence[float] | None = None,
    align: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    normalize_content: bool = False,
    sparse_ratio: float = SPARSE_RATIO,
) -> dict:
    """Segment an image larger than memory block by block into an OME-Zarr label store (see the module docstring).

    Args:
        image: ``*.zarr`` (OME-Zarr level 0 or plain array) or ``*.tif`` path, a
            :class:`~monai_embedseg.data.zarr_io.LazyVolume`, or an array ``(*spatial)`` / ``(C, *spatial)`` (numpy,
            zarr, dask).
        output: the OME-Zarr store to write: labels ``(*spatial)`` uint32 at ``"0"``, spacing in the OME metadata.
        predictor: a :class:`BlockPredictor` (``(C_in, *block)`` numpy -> ``(C, *block)`` raw prediction).
        halo: voxels per axis around each core (:func:`halo_from_properties`).
        clustering: thresholds, minimum object size, claim rule and voxel size per spatial axis (spacing default:
            the image's, else 1; the embeddings are in these units); default: the paper's thresholds.
        block_size: core size per axis (default: from ``memory_limit`` with :func:`choose_block_size`).
        memory_limit: bytes or ``"4GB"`` for this process (local) or per worker (cluster); default: half of this
            machine's available memory, or the smallest worker's limit on a cluster.
        intensity_range: ``(C_in, 2)`` low / high intensities mapped to 0 / 1 (default: the ``predictor.percentiles``
            of the whole volume, or, with ``normalize_content``, of its tiles holding objects when it is mostly empty,
            as :func:`~monai_embedseg.data.percentiles.content_percentiles` finds them; computed once and stored in
            the output).
        scheduler: ``None``/``"threads"`` (Dask's local threaded scheduler), ``"synchronous"``, a
            ``dask.distributed`` address (``"tcp://host:8786"``) or ``Client``.
        workers: blocks at the same time on the local scheduler (default 1: the network already uses every core).
        spatial_dims: 2 or 3 (default: from the image).
        output_spacing: voxel size written to the output's OME metadata (default: the image's, else ``spacing``).
        align: extended blocks start at multiples of this (the network's downsampling factor; see
            :class:`BlockLayout`).
        overwrite: replace an existing store at ``output`` (else a finished store or another run's store is refused,
            and an unfinished run of the same job is resumed).
        progress: tqdm bars over the blocks.
        normalize_content: for a mostly empty volume, take the percentiles over its tiles holding objects (default:
            over the whole volume, as the model was trained, with a warning).
        sparse_ratio: scaled peak above which the volume is mostly empty (the model's:
            :func:`monai_embedseg.intensity.model_sparse_ratio`).

    Returns:
        summary dict: ``output``, ``shape``, ``block_size``, ``halo``, ``grid``, ``blocks``, ``blocks_resumed``,
        ``objects``, ``conflict_voxels``, ``touching_border``, ``seconds``.

    Raises:
        FileNotFoundError / ValueError: missing or unreadable image, a block size smaller than the halo, a memory
            limit too small, an unreachable scheduler.
        FileExistsError: ``output`` exists (finished, or another job's) and ``overwrite`` is False.
    """
    from monai_embedseg.data.percentiles import content_percentiles
    from monai_embedseg.utils import configure_threads
    from monai_embedseg.utils.files import check_output_apart

    t_start = time.perf_counter()
    if isinstance(image, (str, os.PathLike)):
        check_output_apart([image], output)  # before anything is removed
    elif hasattr(image, "location"):  # a LazyVolume: its store, and the array inside it
        check_output_apart([image.path, image.location], output)
    output = os.path.abspath(os.fspath(output))
    volume = _open_image(image, spatial_dims)
    shape = tuple(volume.spatial_shape)
    nd = len(shape)
    clustering = clustering or ClusteringSettings()
    spacing = resolve_spacing(clustering.spacing if clustering.spacing is not None else volume.spacing, nd)
    clustering = clustering.replace(spacing=spacing)
    halo = per_axis(halo, nd, "halo")
    runner_workers = int(workers) if workers else 1
    runner = BlockRunner(scheduler, runner_workers)
    try:
        if block_size is None:
            import psutil

            if runner.client is not None:
                infos = runner.client.scheduler_info().get("workers", {}).values()
                limits = [w.get("memory_limit") or 0 for w in infos]
                default = min((m for m in limits if m), default=4 * 2**30)
                limit = parse_memory(memory_limit) if memory_limit is not None else int(0.6 * default)
                base, par = 2**29, 1
            else:
                limit = (
                    parse_memory(memory_limit)
                    if memory_limit is not None
                    else int(0.5 * psutil.virtual_memory().available)
                )
                base, par = psutil.Process().memory_info().rss + 2**28, runner_workers
            est = functools.partial(
                estimate_block_memory,
                in_channels=volume.n_channels,
                tta=predictor.tta,
                roi_size=predictor.roi_size,
                sw_batch_size=predictor.sw_batch_size,
            )
            block_size = choose_block_size(shape, halo, limit, base_bytes=base, workers=par, estimate=est, align=align)
        layout = BlockLayout(shape, per_axis(block_size, nd, "block size"), halo, align)
        if runner.client is None:
            threads = configure_threads()
            if runner_workers > 1:
                torch.set_num_threads(max(1, threads // runner_workers))
        job_id = job_record(
            {
                "input": getattr(volume, "path", None),
                "input_shape": list(volume.shape),
                "dtype": str(volume.dtype),
                "block": list(layout.block),
                "halo": list(layout.halo),
                "align": layout.align,
                **clustering.as_dict(),
                "predictor": predictor.fingerprint(),
                "intensity_range": None if intensity_range is None else np.asarray(intensity_range).tolist(),
                "normalize_content": bool(normalize_content),
                "sparse_ratio": float(sparse_ratio),
            }
        )
        info = prepare_output(output, job_id, overwrite)
        resumed = info is not None
        if resumed:
            rng = info.get("intensity_range_used")
        else:
            rng = None
            if intensity_range is not None:
                rng = np.asarray(intensity_range, dtype=np.float32).reshape(volume.n_channels, 2).tolist()
            elif predictor.percentiles is not None:
                found, fraction = content_percentiles(
                    volume, predictor.percentiles, compute=runner.compute, ratio=sparse_ratio, apply=normalize_content
                )
                rng = found.tolist()
                if fraction is not None:
                    name = getattr(volume, "path", None) or "the image"
                    low, high = predictor.percentiles
                    logger.warning(sparse_message(name, fraction if normalize_content else None, low, high))
            meta_spacing = output_spacing if output_spacing is not None else (volume.spacing or spacing)
            create_output(output, shape, layout.block, layout.grid, meta_spacing, job_id, rng)
        job = _Job(
            volume,
            output,
            layout,
            clustering,
            None if rng is None else np.asarray(rng, dtype=np.float32),
        )
        summary = _run_phases(job, predictor, runner, progress)
        summary["blocks_resumed"] = summary.pop("_skipped") if resumed else 0
    finally:
        runner.close()
    summary.update(
        {
            "output": output,
            "shape": list(shape),
            "block_size": list(layout.block),
            "halo": list(halo),
            "grid": list(layout.grid),
            "blocks": layout.n_blocks,
            "seconds": time.perf_counter() - t_start,
        }
    )
    summary.pop("_skipped", None)
    return summary


def _run_phases(job: _Job, predictor: BlockPredictor, runner: BlockRunner, progress: bool) -> dict:
    """Phase 1 (predict + cluster the pending blocks), id assignment, phase 2 (merge into the output), finish."""
    import dask

    lay = job.layout
    predicted = state_group(job.store)["predicted"][...].reshape(-1)
    pending = [i for i in range(lay.n_blocks) if not predicted[i]]
    skipped = lay.n_blocks - len(pending)
    if skipped:
        logger.info(f"{job.store}: resuming, {skipped} of {lay.n_blocks} blocks already done")
    tag = hashlib.sha1(f"{job.store}{time.time()}".encode()).hexdigest()[:12]
    job_d = dask.delayed(job, name=f"embedseg-job-{tag}", traverse=False)
    if runner.client is not None:  # one copy of the predictor (and its weights) on every worker, sent once
        pred_d = runner.client.scatter(predictor, broadcast=True, hash=False)
    else:
        pred_d = dask.delayed(predictor, name=f"embedseg-predictor-{tag}", traverse=False)
    touching = [0]

    def log_block(r: dict) -> None:
        touching[0] += r["touching"]
        pos = lay.position(r["block"])
        note = (
            f"; {r['touching']} kept object(s) touch the block border: the halo {list(lay.halo)} may be too small"
            if r["touching"]
            else ""
        )
        logger.info(
            f"block {r['block'] + 1}/{lay.n_blocks} {pos}: {r['objects']} objects kept of {r['found']} "
            f"found, {r['seconds']:.1f} s (predict {r['predict_s']:.1f} s, cluster {r['cluster_s']:.1f} s)"
            f"{note}"
        )

    tasks = [
        dask.delayed(_predict_block, pure=False)(job_d, pred_d, i, dask_key_name=f"embedseg-predict-{i}")
        for i in pending
    ]
    runner.run(tasks, "blocks", log_block, progress)
    assign_global_ids(job.store, lay.n_blocks)
    merged = state_group(job.store)["merged"][...].reshape(-1)
    todo = [i for i in range(lay.n_blocks) if not merged[i]]
    conflicts = [0]

    def log_merge(r: dict) -> None:
        conflicts[0] += r["conflicts"]

    ids_key = time.time()
    tasks = [
        dask.delayed(_merge_block, pure=False)(job_d, i, ids_key, dask_key_name=f"embedseg-merge-{i}") for i in todo
    ]
    runner.run(tasks, "write", log_merge, progress)
    if conflicts[0]:
        logger.warning(
            f"{conflicts[0]} voxel(s) were claimed by objects of two blocks (kept by the earlier object in "
            "the greedy order); a larger halo avoids this."
        )
    n_objects = finish_output(job.store, conflicts[0])
    logger.info(f"{job.store}: {n_objects} objects in {lay.n_blocks} blocks")
    return {"objects": n_objects, "conflict_voxels": conflicts[0], "touching_border": touching[0], "_skipped": skipped}
