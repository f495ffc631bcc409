"""Block geometry and memory planning of block-wise segmentation: the layout of cores and extended blocks, the halo
from the dataset properties, the memory model of one block and the block size that fits a memory limit."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BlockLayout",
    "DEFAULT_MARGIN",
    "choose_block_size",
    "estimate_block_memory",
    "halo_from_properties",
    "parse_memory",
    "per_axis",
]

#: receptive-field margin (voxels per axis) added to the object extent when none is given; ``segment_large`` (the
#: command line) measures it on the network instead (:func:`~monai_embedseg.inferers.block_margin.measure_margin`)
DEFAULT_MARGIN = 8
# memory model (bytes per voxel of an extended block): network activations of a whole-block BranchedERFNet forward
# pass (inference mode), and the rest (input, prediction, clustering, ownership bookkeeping). Measured peaks above the
# process's base: 90 B/voxel (trained synthetic_3d network, 465 objects in 9.8 M voxels), 97 (untrained), 114 (TTA);
# the model below (124 / 160 with TTA) leaves ~30 % headroom.
_NET_BYTES = 80
_PIPE_BYTES = 40


# ------------------------------------------------------------------------------------------------------------ layout
def per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
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
        object.__setattr__(self, "shape", per_axis(self.shape, nd, "shape"))
        block = tuple(min(b, s) for b, s in zip(per_axis(self.block, nd, "block size"), self.shape))
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "halo", per_axis(self.halo, nd, "halo"))
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
    m = per_axis(margin, len(ext), "margin")
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
