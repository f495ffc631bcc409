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
duplicates, and none is lost as long as its owner sees it whole.

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
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from monai_embedseg.constants import FG_THRESH, NORMALIZE_PERCENTILES, SEED_THRESH
from monai_embedseg.embedding import resolve_spacing

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

#: group of the output store holding the resumable state of an unfinished run (deleted when the run completes)
STATE_GROUP = "blockwise_state"
_ATTR = "embedseg_blockwise"
#: receptive-field margin (voxels per axis) added to the object extent when none is given; ``segment_large`` (the
#: command line) measures it on the network instead (:func:`~monai_embedseg.inferers.block_margin.measure_margin`)
DEFAULT_MARGIN = 8
# memory model (bytes per voxel of an extended block): network activations of a whole-block BranchedERFNet forward
# pass (inference mode), and the rest (input, prediction, clustering, ownership bookkeeping). Measured peaks above the
# process's base: 90 B/voxel (trained synthetic_3d network, 465 objects in 9.8 M voxels), 97 (untrained), 114 (TTA);
# the model below (124 / 160 with TTA) leaves ~30 % headroom.
_NET_BYTES = 80
_PIPE_BYTES = 40
_CHUNK_EDGE = 64


# ------------------------------------------------------------------------------------------------------------ layout
def _tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * ndim if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(out) != ndim:
        raise ValueError(f"{name} {list(out)} needs {ndim} values (one per spatial axis).")
    return out


@dataclass(frozen=True)
class BlockLayout:
    """A grid of cores covering ``shape``, each grown by ``halo`` into its extended block.

    Args:
        shape: spatial shape ``(*spatial)`` of the volume.
        block: core size per axis (clipped to ``shape``); the last core along an axis may be smaller.
        halo: voxels added on each side of a core (clipped at the volume border).
        align: an extended block starts a multiple of this from the volume's start and ends a multiple of it from
            the volume's end: a CNN that downsamples by ``align`` (8 for ``BranchedERFNet``) is
            translation-equivariant only for shifts by multiples of it, so an aligned block is seen at the same
            sampling phase as in a whole-volume pass, also when TTA flips it (phase then counted from the end).

    Raises:
        ValueError: non-positive sizes, or a core smaller than the halo along an axis with more than one block.
    """

    shape: tuple[int, ...]
    block: tuple[int, ...]
    halo: tuple[int, ...]
    align: int = 1

    def __post_init__(self) -> None:
        nd = len(self.shape)
        object.__setattr__(self, "shape", _tuple(self.shape, nd, "shape"))
        block = tuple(min(b, s) for b, s in zip(_tuple(self.block, nd, "block size"), self.shape))
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "halo", _tuple(self.halo, nd, "halo"))
        if min(self.shape) < 1 or min(self.block) < 1 or min(self.halo) < 0:
            raise ValueError(f"invalid block layout: shape {self.shape}, block {self.block}, halo {self.halo}.")
        small = [d for d in range(nd) if self.block[d] < self.shape[d] and self.block[d] < self.halo[d]]
        if small:
            need = [max(b, h) if b < s else b for b, h, s in zip(self.block, self.halo, self.shape)]
            raise ValueError(
                f"block size {list(self.block)} is smaller than the halo {list(self.halo)} that the objects need "
                f"(largest object extent + receptive-field margin) along axis {small[0]}; use a block size of at "
                f"least {need}."
            )

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of blocks per axis."""
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block))

    @property
    def n_blocks(self) -> int:
        return math.prod(self.grid)

    def position(self, i: int) -> tuple[int, ...]:
        """Grid position of block ``i`` (C order)."""
        return tuple(int(p) for p in np.unravel_index(int(i), self.grid))

    def core(self, i: int) -> tuple[slice, ...]:
        """Slices of the core of block ``i``."""
        return tuple(slice(p * b, min((p + 1) * b, s)) for p, b, s in zip(self.position(i), self.block, self.shape))

    def ext(self, i: int) -> tuple[slice, ...]:
        """Slices of the extended block (core + halo, clipped) of block ``i``."""
        a = max(1, int(self.align))
        out = []
        for c, h, s in zip(self.core(i), self.halo, self.shape):
            start = max((c.start - h) // a * a, 0)  # a multiple of ``align`` from the volume's start
            stop = s - max((s - c.stop - h) // a * a, 0)  # a multiple of ``align`` from the volume's end (flips)
            out.append(slice(start, stop))
        return tuple(out)

    def neighbours(self, i: int) -> list[int]:
        """Blocks whose grid position differs from block ``i``'s by at most 1 per axis (``i`` excluded)."""
        pos = np.array(self.position(i))
        out = []
        for off in np.ndindex(*(3,) * len(self.shape)):
            q = pos + np.array(off) - 1
            if np.all(q >= 0) and np.all(q < self.grid) and np.any(q != pos):
                out.append(int(np.ravel_multi_index(tuple(q), self.grid)))
        return out

    def ext_shape(self, i: int) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.ext(i))


def halo_from_properties(properties: dict, margin: int | Sequence[int] = DEFAULT_MARGIN) -> tuple[int, ...]:
    """Halo per spatial axis from a bundle's dataset properties: largest object extent + receptive-field margin.

    Args:
        properties: ``dataset_properties.json`` content (see
            :func:`~monai_embedseg.data.properties.compute_dataset_properties`): ``object_extent_mean`` and
            ``object_extent_std`` (voxels per axis), else ``crop_size``.
        margin: voxels added per axis for the network's receptive field at the block border.

    Returns:
        ``(*halo)`` voxels per axis: ``ceil(mean + 5 std) + margin``.

    Raises:
        ValueError: the properties hold neither object extents nor a crop size.
    """
    from monai_embedseg.data.properties import CROP_N_STD

    if "object_extent_mean" in properties and "object_extent_std" in properties:
        ext = [
            math.ceil(m + CROP_N_STD * s)
            for m, s in zip(properties["object_extent_mean"], properties["object_extent_std"])
        ]
    elif "crop_size" in properties:
        ext = [int(c) for c in properties["crop_size"]]
    else:
        raise ValueError(
            "the dataset properties hold no object extents (object_extent_mean / _std) nor crop_size; "
            "pass the halo explicitly."
        )
    m = _tuple(margin, len(ext), "margin")
    return tuple(int(e) + int(g) for e, g in zip(ext, m))


def parse_memory(value: str | float) -> int:
    """Bytes from ``"4GB"``, ``"4GiB"``, ``"500MB"``, ``4e9`` (Dask's rules: GB = 1e9, GiB = 2**30).

    Raises:
        ValueError: not a memory size.
    """
    from dask.utils import parse_bytes

    try:
        n = int(parse_bytes(value)) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise ValueError(f"--memory-limit {value!r} is not a memory size (e.g. 4GB, 6GiB, 500MB).") from None
    if n <= 0:
        raise ValueError(f"--memory-limit must be positive, got {value!r}.")
    return n


def estimate_block_memory(
    ext_shape: Sequence[int],
    in_channels: int = 1,
    tta: bool = False,
    roi_size: Sequence[int] | None = None,
    sw_batch_size: int = 1,
) -> int:
    """Peak bytes (above the process's base) of one block of extended shape ``ext_shape``.

    The network's activations scale with what one network call sees (the whole block, or ``sw_batch_size``
    windows of ``roi_size``); input, prediction, clustering and ownership arrays with the block.
    """
    v = math.prod(int(s) for s in ext_shape)
    net_v = v if roi_size is None else min(v, math.prod(int(r) for r in roi_size) * int(sw_batch_size))
    per_voxel = _PIPE_BYTES + 4 * int(in_channels) + (36 if tta else 0)
    return int(v * per_voxel + net_v * _NET_BYTES)


def choose_block_size(
    shape: Sequence[int],
    halo: Sequence[int],
    memory_limit: int,
    base_bytes: int = 0,
    workers: int = 1,
    estimate: Callable[[Sequence[int]], int] = estimate_block_memory,
    multiple: int = 16,
    align: int = 8,
) -> tuple[int, ...]:
    """The block layout with the least total work (voxels of all extended blocks) whose blocks fit a memory limit.

    Every split of the volume into ``n_d`` blocks per axis (cores rounded up to a multiple of ``multiple``, at least
    the halo) is considered; the one with the fewest extended-block voxels in all (the halo makes smaller blocks
    costlier), then the fewest blocks, wins.

    Args:
        shape: spatial shape of the volume; halo: per axis.
        memory_limit: bytes for the whole process (local run) or per worker; ``base_bytes`` of it are taken already
            (interpreter, libraries, model); ``workers`` blocks run at the same time.
        estimate: bytes of one block from its extended shape (:func:`estimate_block_memory`).
        align: the extended blocks' alignment (see :class:`BlockLayout`), counted as extra voxels.

    Returns:
        ``(*block)`` core size.

    Raises:
        ValueError: even the smallest block (core = halo) does not fit.
    """
    import itertools

    shape = [int(s) for s in shape]
    halo = [int(h) for h in halo]
    budget = (int(memory_limit) - int(base_bytes)) / max(1, int(workers))
    a = max(1, int(align))

    def axis(d: int, core: int) -> tuple[int, int, int]:
        """(core, largest extended length, sum of the extended lengths of all blocks) along axis ``d``."""
        s, h = shape[d], halo[d]
        starts = range(0, s, core)
        lengths = [(s - max((s - min(c + core, s) - h) // a * a, 0)) - max((c - h) // a * a, 0) for c in starts]
        return core, max(lengths), sum(lengths)

    options = []
    for d in range(len(shape)):
        cores: list[int] = []
        n = 1
        while True:  # n = 1, 2, ... then geometric steps: a few hundred candidate core sizes per axis at most
            core = min(shape[d], math.ceil(math.ceil(shape[d] / n) / multiple) * multiple)
            if core < shape[d] and core < max(halo[d], 1):
                break
            if not cores or core < cores[-1]:
                cores.append(core)
            if core <= multiple:
                break
            n = n + 1 if n < 64 else int(n * 1.05) + 1
        options.append([axis(d, c) for c in cores])
    best = None
    for head in itertools.product(*options[:-1]):
        for last in options[-1]:  # cores shrink along the list: the first that fits costs the least on this axis
            combo = (*head, last)
            if estimate([e for _, e, _ in combo]) <= budget:
                count = math.prod(math.ceil(s / c) for s, (c, _, _) in zip(shape, combo))
                key = (math.prod(t for _, _, t in combo), count)
                if best is None or key < best[0]:
                    best = (key, tuple(c for c, _, _ in combo))
                break
    if best is None:
        need = estimate([o[-1][1] for o in options]) * max(1, workers) + base_bytes
        raise ValueError(
            f"memory limit {memory_limit / 2**30:.2f} GiB is too small: one block with the halo {halo} needs "
            f"about {need / 2**30:.2f} GiB; raise --memory-limit."
        )
    return best[1]


# --------------------------------------------------------------------------------------------------------- predictor
def _load_bundle_network(bundle: str, checkpoint: str) -> torch.nn.Module:
    """The bundle's ``network_def`` with the checkpoint's weights, in eval mode, on the CPU."""
    from monai.bundle import ConfigParser

    from monai_embedseg.utils import load_weights

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    parser["bundle_root"] = bundle
    return load_weights(parser.get_parsed_content("network_def"), checkpoint, map_location="cpu").eval()


def _module_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class BlockPredictor:
    """Raw EmbedSeg prediction of one image block, picklable, with the network built once per process.

    Args:
        network: a network ``(B, C_in, *spatial) -> (B, C, *spatial)`` (``nn.Module`` or any callable; pickled with
            the task graph, so one copy per Dask worker).
        network_factory: instead of ``network``, a picklable function returning it, called once per process (e.g.
            ``functools.partial`` loading a checkpoint: workers read the weights themselves).
        roi_size: sliding-window size inside a block (``None``: the whole block in one network call).
        overlap, sw_batch_size: sliding-window settings; tta: the 8 (2D) / 16 (3D) fold test-time augmentation.
        spacing: voxel size (z, y, x), for TTA (rotations only when y and x sizes are equal).
        device: where the network runs (``None``: CUDA when available, else CPU); the output is on the CPU.
        precision: ``FastForward`` precision for ``nn.Module`` networks (``"float32"``, ``"bfloat16"``, ``"auto"``;
            ``None``: call the network as it is).
        percentiles: the per-image intensity normalisation (low, high percentile mapped to 0, 1; ``None``: feed the
            image as float32 unchanged). The values are computed once over the whole volume by
            :func:`segment_blockwise` and passed to every call.
        threads: torch CPU threads in the calling process (``None``: leave as is).
        fingerprint: a string identifying the network for resuming (default: a digest of the weights, or the
            factory's arguments).

    ``__call__(image (C_in, *spatial) numpy, intensity_range (C_in, 2) | None) -> (C, *spatial)`` float32 CPU tensor.
    """

    def __init__(
        self,
        network: Callable | None = None,
        network_factory: Callable[[], Callable] | None = None,
        roi_size: Sequence[int] | None = None,
        overlap: float = 0.25,
        sw_batch_size: int = 1,
        tta: bool = False,
        spacing: Sequence[float] | None = None,
        device: str | None = None,
        precision: str | None = "float32",
        percentiles: Sequence[float] | None = NORMALIZE_PERCENTILES,
        threads: int | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if (network is None) == (network_factory is None):
            raise ValueError("pass exactly one of network and network_factory.")
        self._network = network
        self.network_factory = network_factory
        self.roi_size = None if roi_size is None else [int(r) for r in roi_size]
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.tta = bool(tta)
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.device = device
        self.precision = precision
        self.percentiles = None if percentiles is None else [float(p) for p in percentiles]
        self.threads = threads
        self._fingerprint = fingerprint
        self._runner: Any = None

    @classmethod
    def from_bundle(cls, bundle: str, checkpoint: str | None = None, **kwargs: Any) -> BlockPredictor:
        """A predictor running ``bundle``'s network with ``checkpoint`` (default ``<bundle>/models/model.pt``).

        Every process (Dask worker) loads the checkpoint once. ``kwargs`` go to :class:`BlockPredictor`.
        """
        bundle = os.path.abspath(bundle)
        checkpoint = os.path.abspath(checkpoint or os.path.join(bundle, "models", "model.pt"))
        st = os.stat(checkpoint)
        kwargs.setdefault("fingerprint", f"{checkpoint}:{st.st_size}:{int(st.st_mtime)}")
        return cls(network_factory=functools.partial(_load_bundle_network, bundle, checkpoint), **kwargs)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_runner"] = None  # built again in each process
        return state

    def fingerprint(self) -> str:
        """What identifies this predictor when a run is resumed (network weights and inference settings)."""
        if self._fingerprint is None:
            if isinstance(self._network, torch.nn.Module):
                net = f"{type(self._network).__name__}:{_module_digest(self._network)}"
            elif self._network is not None:
                net = getattr(self._network, "fingerprint", None) or type(self._network).__qualname__
            else:
                net = repr(self.network_factory)
            self._fingerprint = str(net)
        settings = [self.roi_size, self.overlap, self.tta, self.precision, self.percentiles]
        return f"{self._fingerprint}|{json.dumps(settings)}"

    def runner(self) -> Callable:
        """The network as called (built on first use in this process, moved to the device, ``FastForward``)."""
        if self._runner is None:
            from monai_embedseg.networks.nets import FastForward

            net = self._network if self._network is not None else self.network_factory()
            if isinstance(net, torch.nn.Module):
                net = net.to(self._device()).eval()
                if self.precision is not None:
                    net = FastForward(net, precision=self.precision).eval()
            self._runner = net
        return self._runner

    def _device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def normalise(self, image: np.ndarray, intensity_range: np.ndarray | None) -> torch.Tensor:
        """``image (C, *spatial)`` -> float32 tensor, each channel scaled as MONAI's ``ScaleIntensityRange`` does."""
        from monai.transforms import ScaleIntensityRange

        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if intensity_range is None:
            return x
        rng = np.asarray(intensity_range, dtype=np.float32).reshape(x.shape[0], 2)
        out = torch.empty_like(x)
        for c in range(x.shape[0]):
            lo, hi = (torch.tensor(v, dtype=torch.float32) for v in rng[c])
            out[c] = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=False, dtype=np.float32)(x[c])
        return out

    def __call__(self, image: np.ndarray, intensity_range: np.ndarray | None = None) -> torch.Tensor:
        """Raw prediction ``(C, *spatial)`` (float32, CPU) of ``image (C_in, *spatial)``."""
        from monai_embedseg.inferers import EmbedSegInferer

        if self.threads:
            torch.set_num_threads(int(self.threads))
        device = self._device()
        inferer = EmbedSegInferer(
            roi_size=self.roi_size,
            sw_batch_size=self.sw_batch_size,
            overlap=self.overlap,
            tta=self.tta,
            spacing=self.spacing,
            sw_device=device,
            device="cpu",
            tta_batch_size=1,
        )
        x = self.normalise(image, intensity_range)[None]
        with torch.inference_mode():
            pred = inferer(x, self.runner())[0]
        return pred.float().cpu()


# ------------------------------------------------------------------------------------------------------ block tasks
@dataclass
class _Job:
    """Everything a block task needs (small and picklable; the predictor travels separately)."""

    volume: Any
    store: str
    layout: BlockLayout
    spacing: tuple[float, ...]
    seed_thresh: float
    fg_thresh: float
    min_object_size: int
    min_unclaimed: float
    intensity_range: Any


def _state(store: str, mode: str = "r+") -> Any:
    import zarr

    return zarr.open_group(os.path.join(store, STATE_GROUP), mode=mode)


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
    labels, conf = cluster_embeddings(
        pred,
        spacing=job.spacing,
        seed_thresh=job.seed_thresh,
        fg_thresh=job.fg_thresh,
        min_object_size=job.min_object_size,
        min_unclaimed=job.min_unclaimed,
    )
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
    sizes = np.bincount(lab.reshape(-1), minlength=k + 1)[1:]
    n_own = int(owned.sum())
    lut = np.zeros(k + 1, dtype=np.uint32)
    lut[1:][owned] = np.arange(1, n_own + 1, dtype=np.uint32)
    own = lut[lab]
    del lab
    # kept objects touching the outer border of the extended block (not the volume border): possibly cut
    touching: set[int] = set()
    for d in range(own.ndim):
        for side, at_border in ((0, ext[d].start == 0), (-1, ext[d].stop == lay.shape[d])):
            if not at_border:
                touching.update(int(v) for v in np.unique(np.take(own, side, axis=d)) if v)
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
    import zarr

    root = zarr.open_group(job.store, mode="r+")
    state = root[STATE_GROUP]
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
    state = _state(store, "r")
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
class _Runner:
    """Runs lists of ``dask.delayed`` tasks on the chosen scheduler, with a progress bar and a callback per result."""

    def __init__(self, scheduler: Any = None, workers: int = 1) -> None:
        self.client = None
        self._own_client = False
        self.workers = max(1, int(workers))
        if scheduler is None or scheduler in ("threads", "synchronous", "sync", "single-threaded"):
            self.local = "threads" if scheduler in (None, "threads") else "synchronous"
        else:
            from dask.distributed import Client

            self.local = None
            if isinstance(scheduler, str):
                try:
                    self.client = Client(scheduler, timeout="30s")
                except OSError as e:
                    raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
                self._own_client = True
            else:
                self.client = scheduler

    def close(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()

    def compute(self, tasks: list) -> list:
        """Results of ``tasks`` in order (no progress bar): for small passes like the percentiles."""
        import dask

        if self.client is not None:
            return self.client.gather(self.client.compute(tasks))
        return list(dask.compute(*tasks, scheduler=self.local, num_workers=self.workers))

    def run(self, tasks: list, desc: str, on_result: Callable[[dict], None], progress: bool = True) -> None:
        """Run ``tasks`` (each returning a dict), calling ``on_result`` as each finishes; the first error is raised."""
        import dask
        from dask.callbacks import Callback
        from tqdm import tqdm

        if not tasks:
            return
        from tqdm.contrib.logging import logging_redirect_tqdm

        keys = {str(t.key) for t in tasks}
        with (
            tqdm(total=len(tasks), desc=desc, unit="block", disable=not progress) as bar,
            logging_redirect_tqdm(loggers=[logger] if progress and logger.handlers else []),
        ):
            if self.client is not None:
                from dask.distributed import as_completed

                futures = self.client.compute(tasks)
                try:
                    for fut in as_completed(futures):
                        on_result(fut.result())
                        bar.update()
                except BaseException:
                    self.client.cancel(futures)
                    raise
                return

            class _Progress(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):
                    if str(key) in keys:
                        on_result(result)
                        bar.update()

            with _Progress():
                dask.compute(*tasks, scheduler=self.local, num_workers=self.workers)


# ----------------------------------------------------------------------------------------------------------- driver
def _normalise_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _open_image(image: Any, spatial_dims: int | None) -> Any:
    from monai_embedseg.data.zarr_io import ArrayVolume, open_volume

    if isinstance(image, (str, os.PathLike)):
        return open_volume(image, spatial_dims)
    if hasattr(image, "read") and hasattr(image, "spatial_shape"):
        return image
    return ArrayVolume(image, spatial_dims)


def _inner_chunks(block: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Output ``(chunks, shards)``: one shard per block, chunks of <= 64 voxels per axis dividing it (else no shard)."""
    chunks = []
    for b in block:
        c = next((c for c in range(min(b, _CHUNK_EDGE), 0, -1) if b % c == 0), b)
        chunks.append(c)
    if all(c == b for c, b in zip(chunks, block)) or min(chunks) < 8:
        return tuple(block), None
    return tuple(chunks), tuple(block)


def segment_blockwise(
    image: Any,
    output: str | os.PathLike,
    predictor: BlockPredictor,
    halo: int | Sequence[int],
    *,
    spacing: Sequence[float] | None = None,
    block_size: Sequence[int] | None = None,
    memory_limit: int | str | None = None,
    seed_thresh: float = SEED_THRESH,
    fg_thresh: float = FG_THRESH,
    min_object_size: int = 0,
    min_unclaimed: float = 0.5,
    intensity_range: Any = None,
    scheduler: Any = None,
    workers: int | None = None,
    spatial_dims: int | None = None,
    output_spacing: Sequence[float] | None = None,
    align: int = 8,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Segment an image larger than memory block by block into an OME-Zarr label store (see the module docstring).

    Args:
        image: ``*.zarr`` (OME-Zarr level 0 or plain array) or ``*.tif`` path, a
            :class:`~monai_embedseg.data.zarr_io.LazyVolume`, or an array ``(*spatial)`` / ``(C, *spatial)`` (numpy,
            zarr, dask).
        output: the OME-Zarr store to write: labels ``(*spatial)`` uint32 at ``"0"``, spacing in the OME metadata.
        predictor: a :class:`BlockPredictor` (``(C_in, *block)`` numpy -> ``(C, *block)`` raw prediction).
        halo: voxels per axis around each core (:func:`halo_from_properties`).
        spacing: voxel size per spatial axis (default: the image's, else 1); the embeddings are in these units.
        block_size: core size per axis (default: from ``memory_limit`` with :func:`choose_block_size`).
        memory_limit: bytes or ``"4GB"`` for this process (local) or per worker (cluster); default: half of this
            machine's available memory, or the smallest worker's limit on a cluster.
        seed_thresh, fg_thresh, min_object_size, min_unclaimed: clustering, see
            :func:`~monai_embedseg.transforms.cluster_embeddings`.
        intensity_range: ``(C_in, 2)`` low / high intensities mapped to 0 / 1 (default: the ``predictor.percentiles``
            of the whole volume, computed once and stored in the output).
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

    Returns:
        summary dict: ``output``, ``shape``, ``block_size``, ``halo``, ``grid``, ``blocks``, ``blocks_resumed``,
        ``objects``, ``conflict_voxels``, ``touching_border``, ``seconds``.

    Raises:
        FileNotFoundError / ValueError: missing or unreadable image, a block size smaller than the halo, a memory
            limit too small, an unreachable scheduler.
        FileExistsError: ``output`` exists (finished, or another job's) and ``overwrite`` is False.
    """
    import zarr

    from monai_embedseg.data.percentiles import volume_percentiles
    from monai_embedseg.data.zarr_io import (
        create_ome_zarr,
        is_zarr_store,
        remove_zarr_store,
    )
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
    spacing = resolve_spacing(spacing if spacing is not None else volume.spacing, nd)
    halo = _tuple(halo, nd, "halo")
    runner_workers = int(workers) if workers else 1
    runner = _Runner(scheduler, runner_workers)
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
        layout = BlockLayout(shape, _tuple(block_size, nd, "block size"), halo, align)
        if runner.client is None:
            threads = configure_threads()
            if runner_workers > 1:
                torch.set_num_threads(max(1, threads // runner_workers))
        job_id = _normalise_json(
            {
                "input": getattr(volume, "path", None),
                "input_shape": list(volume.shape),
                "dtype": str(volume.dtype),
                "block": list(layout.block),
                "halo": list(layout.halo),
                "align": layout.align,
                "spacing": list(spacing),
                "seed_thresh": seed_thresh,
                "fg_thresh": fg_thresh,
                "min_object_size": int(min_object_size),
                "min_unclaimed": min_unclaimed,
                "predictor": predictor.fingerprint(),
                "intensity_range": None if intensity_range is None else np.asarray(intensity_range).tolist(),
            }
        )
        resumed = False
        if os.path.exists(output):
            info = None
            if is_zarr_store(output):
                try:
                    info = dict(zarr.open_group(output, mode="r").attrs).get(_ATTR)
                except Exception:  # not a readable group: treated as somebody else's store
                    info = None
            if overwrite:
                remove_zarr_store(output)
            elif info and info.get("status") == "running" and info.get("job") == job_id:
                resumed = True
            elif info and info.get("status") == "running":
                diff = sorted(k for k in job_id if info.get("job", {}).get(k) != job_id[k])
                raise FileExistsError(
                    f"output {output} holds an unfinished block-wise run with other settings "
                    f"({', '.join(diff)}); rerun with the same settings to resume, or pass "
                    "--overwrite to start again."
                )
            else:
                what = "a finished segmentation" if info else "data"
                raise FileExistsError(f"output {output} exists ({what}); pass --overwrite to replace it.")
        if resumed:
            root = zarr.open_group(output, mode="r+")
            info = dict(root.attrs)[_ATTR]
            rng = info.get("intensity_range_used")
        else:
            rng = None
            if intensity_range is not None:
                rng = np.asarray(intensity_range, dtype=np.float32).reshape(volume.n_channels, 2).tolist()
            elif predictor.percentiles is not None:
                rng = volume_percentiles(volume, predictor.percentiles, compute=runner.compute).tolist()
            chunks, shards = _inner_chunks(layout.block)
            meta_spacing = output_spacing if output_spacing is not None else (volume.spacing or spacing)
            create_ome_zarr(output, shape, np.uint32, meta_spacing, chunks=chunks, shards=shards, overwrite=False)
            root = zarr.open_group(output, mode="r+")
            state = root.create_group(STATE_GROUP)
            state.create_array("provisional", shape=shape, chunks=layout.block, dtype="uint32", fill_value=0)
            for name in ("predicted", "merged"):
                state.create_array(name, shape=layout.grid, chunks=(1,) * nd, dtype="uint8", fill_value=0)
            root.attrs[_ATTR] = {"status": "running", "job": job_id, "intensity_range_used": rng}
        job = _Job(
            volume,
            output,
            layout,
            tuple(spacing),
            float(seed_thresh),
            float(fg_thresh),
            int(min_object_size),
            float(min_unclaimed),
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


def _run_phases(job: _Job, predictor: BlockPredictor, runner: _Runner, progress: bool) -> dict:
    """Phase 1 (predict + cluster the pending blocks), id assignment, phase 2 (merge into the output), finish."""
    import dask
    import zarr

    lay = job.layout
    root = zarr.open_group(job.store, mode="r+")
    state = root[STATE_GROUP]
    predicted = state["predicted"][...].reshape(-1)
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
    info = dict(root.attrs)[_ATTR]
    if not info.get("ids_ready"):
        tables = [state[f"objects_{i}"][...] for i in range(lay.n_blocks)]
        counts = np.array([len(t) for t in tables], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        allobj = np.concatenate(tables) if counts.sum() else np.zeros((0, 3))
        if len(allobj) >= 2**32 - 1:
            raise ValueError(f"{len(allobj)} objects do not fit uint32 labels.")
        order = np.lexsort((allobj[:, 0], -allobj[:, 1]))  # confidence descending, then representative index
        gids = np.empty(len(allobj), dtype=np.uint32)
        gids[order] = np.arange(1, len(allobj) + 1, dtype=np.uint32)
        state.create_array("gids", shape=gids.shape, chunks=(max(1, len(gids)),), dtype="uint32", overwrite=True)[
            ...
        ] = gids
        state.create_array("gid_offsets", shape=offsets.shape, chunks=(len(offsets),), dtype="int64", overwrite=True)[
            ...
        ] = offsets
        info["ids_ready"] = True
        info["n_objects"] = len(allobj)
        root.attrs[_ATTR] = info
    merged = state["merged"][...].reshape(-1)
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
    n_objects = int(info["n_objects"])
    info.update({"status": "complete", "n_objects": n_objects, "conflict_voxels": conflicts[0]})
    info.pop("ids_ready", None)
    del root[STATE_GROUP]
    root.attrs[_ATTR] = info
    logger.info(f"{job.store}: {n_objects} objects in {lay.n_blocks} blocks")
    return {"objects": n_objects, "conflict_voxels": conflicts[0], "touching_border": touching[0], "_skipped": skipped}
