"""The output store of a block-wise run and its resumable state.

The output is an OME-Zarr label store (labels at ``"0"``, one shard per block). While the run is unfinished the store
also holds the group :data:`STATE_GROUP`: the provisional labels of every core, each block's kept objects and spill,
flags for the blocks predicted and merged, and, once all blocks are predicted, the global object ids. Its attribute
:data:`RUN_ATTR` records the job (every setting that changes the result), the status and the intensity range used,
so that a rerun with the same job resumes and a rerun with another job is refused. The group is removed when the run
completes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "RUN_ATTR",
    "STATE_GROUP",
    "assign_global_ids",
    "create_output",
    "finish_output",
    "job_record",
    "prepare_output",
    "read_run",
    "state_group",
]

#: group of the output store holding the resumable state of an unfinished run (deleted when the run completes)
STATE_GROUP = "blockwise_state"
#: attribute of the output store's root group describing the run (job, status, intensity range, object count)
RUN_ATTR = "embedseg_blockwise"
_CHUNK_EDGE = 64


def job_record(job: dict) -> dict:
    """``job`` as it is stored and compared: JSON types only (arrays as lists, tuples as lists)."""
    return json.loads(json.dumps(job, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def state_group(store: str, mode: str = "r+") -> Any:
    """The state group of an unfinished run's store."""
    import zarr

    return zarr.open_group(os.path.join(store, STATE_GROUP), mode=mode)


def read_run(store: str) -> dict | None:
    """The run record of ``store`` (``None`` when it is not a readable store of ours)."""
    import zarr

    from monai_embedseg.data.zarr_io import is_zarr_store

    if not is_zarr_store(store):
        return None
    try:
        return dict(zarr.open_group(store, mode="r").attrs).get(RUN_ATTR)
    except Exception:  # not a readable group: treated as somebody else's store
        return None


def prepare_output(output: str, job: dict, overwrite: bool) -> dict | None:
    """Decide what to do with an existing ``output``: the run record to resume (same job, unfinished), or ``None``
    when the store must be created (it did not exist, or ``overwrite`` removed it).

    Raises:
        FileExistsError: ``output`` holds data, a finished segmentation or another job's unfinished run, and
            ``overwrite`` is False.
    """
    from monai_embedseg.data.zarr_io import remove_zarr_store

    if not os.path.exists(output):
        return None
    info = read_run(output)
    if overwrite:
        remove_zarr_store(output)
        return None
    if info and info.get("status") == "running" and info.get("job") == job:
        return info
    if info and info.get("status") == "running":
        diff = sorted(k for k in job if info.get("job", {}).get(k) != job[k])
        raise FileExistsError(
            f"output {output} holds an unfinished block-wise run with other settings ({', '.join(diff)}); rerun "
            "with the same settings to resume, or pass --overwrite to start again."
        )
    what = "a finished segmentation" if info else "data"
    raise FileExistsError(f"output {output} exists ({what}); pass --overwrite to replace it.")


def _inner_chunks(block: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Output ``(chunks, shards)``: one shard per block, chunks of <= 64 voxels per axis dividing it (else no shard)."""
    chunks = []
    for b in block:
        c = next((c for c in range(min(b, _CHUNK_EDGE), 0, -1) if b % c == 0), b)
        chunks.append(c)
    if all(c == b for c, b in zip(chunks, block)) or min(chunks) < 8:
        return tuple(block), None
    return tuple(chunks), tuple(block)


def create_output(
    output: str,
    shape: Sequence[int],
    block: Sequence[int],
    grid: Sequence[int],
    spacing: Sequence[float] | None,
    job: dict,
    intensity_range: list | None,
) -> None:
    """Create the OME-Zarr label store ``output`` ``(*shape)`` uint32 (one shard per ``block``) with an empty state
    for a run of ``grid`` blocks, recording ``job`` and the ``intensity_range`` used."""
    import zarr

    from monai_embedseg.data.zarr_io import create_ome_zarr

    chunks, shards = _inner_chunks(block)
    create_ome_zarr(output, tuple(shape), np.uint32, spacing, chunks=chunks, shards=shards, overwrite=False)
    root = zarr.open_group(output, mode="r+")
    state = root.create_group(STATE_GROUP)
    state.create_array("provisional", shape=tuple(shape), chunks=tuple(block), dtype="uint32", fill_value=0)
    for name in ("predicted", "merged"):
        state.create_array(name, shape=tuple(grid), chunks=(1,) * len(grid), dtype="uint8", fill_value=0)
    root.attrs[RUN_ATTR] = {"status": "running", "job": job, "intensity_range_used": intensity_range}


def assign_global_ids(store: str, n_blocks: int) -> int:
    """Number the kept objects of all blocks ``1..K`` in the whole-volume acceptance order (confidence descending,
    then representative raster index) and store them; done once per run (a resumed run finds them). Returns K.

    Raises:
        ValueError: more objects than uint32 labels hold.
    """
    import zarr

    root = zarr.open_group(store, mode="r+")
    info = dict(root.attrs)[RUN_ATTR]
    if info.get("ids_ready"):
        return int(info["n_objects"])
    state = root[STATE_GROUP]
    tables = [state[f"objects_{i}"][...] for i in range(n_blocks)]
    counts = np.array([len(t) for t in tables], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    allobj = np.concatenate(tables) if counts.sum() else np.zeros((0, 3))
    if len(allobj) >= 2**32 - 1:
        raise ValueError(f"{len(allobj)} objects do not fit uint32 labels.")
    order = np.lexsort((allobj[:, 0], -allobj[:, 1]))
    gids = np.empty(len(allobj), dtype=np.uint32)
    gids[order] = np.arange(1, len(allobj) + 1, dtype=np.uint32)
    for name, values in (("gids", gids), ("gid_offsets", offsets)):
        array = state.create_array(
            name, shape=values.shape, chunks=(max(1, len(values)),), dtype=values.dtype, overwrite=True
        )
        array[...] = values
    info.update({"ids_ready": True, "n_objects": len(allobj)})
    root.attrs[RUN_ATTR] = info
    return len(allobj)


def finish_output(store: str, conflict_voxels: int) -> int:
    """Mark the run of ``store`` complete and remove its state group. Returns the number of objects."""
    import zarr

    root = zarr.open_group(store, mode="r+")
    info = dict(root.attrs)[RUN_ATTR]
    n_objects = int(info["n_objects"])
    info.update({"status": "complete", "n_objects": n_objects, "conflict_voxels": int(conflict_voxels)})
    info.pop("ids_ready", None)
    del root[STATE_GROUP]
    root.attrs[RUN_ATTR] = info
    return n_objects
