"""Writing files atomically, without ever replacing a user's file by accident."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "check_output_apart"]


def _umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block succeeds, move it to ``path`` in one step.

    Readers never see a half-written file, a failed write leaves nothing behind, and without ``overwrite`` an
    existing ``path`` is never replaced: the check is made before writing and again, race-free, when the file is
    moved into place (``os.link`` refuses an existing target). The file gets the permissions a plain ``open`` would
    give it (``0o666`` minus the process umask), not the private ``0o600`` of a temporary file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"refusing to overwrite existing file {path} (pass overwrite=True).")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"refusing to overwrite existing file {path} (pass overwrite=True).") from None
            except OSError:  # no hard links on this file system: check, then replace
                if os.path.exists(path):
                    msg = f"refusing to overwrite existing file {path} (pass overwrite=True)."
                    raise FileExistsError(msg) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_apart(inputs: Iterable[str | os.PathLike], output: str | os.PathLike) -> None:
    """Refuse an output that is, contains or lies inside one of the inputs, whatever ``--overwrite`` says.

    Paths are compared after resolving symbolic links, so a link to the input is the input. Replacing such an output
    would delete or overwrite what the user gave us (``--output c.zarr`` for input ``c.zarr``, or ``container.zarr``
    for input ``container.zarr/raw``).

    Raises:
        ValueError: naming the output and the input it overlaps.
    """
    out = Path(output).resolve()
    for item in inputs:
        src = Path(item).resolve()
        if src == out or out in src.parents or src in out.parents:
            how = "is" if src == out else ("contains" if out in src.parents else "lies inside")
            raise ValueError(
                f"output {output} {how} the input {item}: writing there could overwrite or delete the input, so it is "
                "refused whatever --overwrite says; choose another --output."
            )


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Make sure ``folder`` exists (created if needed) and accepts new files, before any long work starts.

    Raises:
        ValueError: it cannot be created or written to (read-only, a file in the way, no permission), naming it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write to the output folder {folder}: {e.strerror or e}.") from None
