"""Download the paper's datasets (the EmbedSeg v0.1.0 release archives) into the release layout.

Each archive ``<zip>`` from ``https://github.com/juglab/EmbedSeg/releases/download/v0.1.0/<zip>`` holds
``<name>/train/{images,masks}/*.tif`` and, for some sets, ``<name>/test/...``. :func:`prepare_dataset` downloads it
with MONAI's ``download_url``, extracts it with ``extractall`` into a temporary folder next to ``dataset_dir`` and then
moves the split folders into ``dataset_dir``, which ends up as::

    <dataset_dir>/train/images/*.tif
    <dataset_dir>/train/masks/*.tif
    <dataset_dir>/test/...            (where the archive has one)
    <dataset_dir>/SHA256              "<sha256>  <zip>" (``sha256sum`` format), written on the first download

No checksums are published with the release. The SHA-256 of the archive is recorded in ``SHA256`` on the first
successful download and checked whenever the archive is fetched again for that folder. For four archives a hash
computed by a third party (the torch-em loader for the EmbedSeg data) is known and checked from the first download.

Command line::

    monai-embedseg download NAME DATASET_DIR [--sha256 HEX]
    monai-embedseg download --list
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from monai.apps.utils import download_url, extractall

from monai_embedseg.data.datalist import file_stem

PathLike = str | os.PathLike

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ChecksumMismatchError",
    "RELEASE_URL",
    "SPLITS",
    "SHA_FILE",
    "has_release_layout",
    "prepare_dataset",
    "sha256_of_file",
]

#: base URL of the EmbedSeg release that holds the archives
RELEASE_URL = "https://github.com/juglab/EmbedSeg/releases/download/v0.1.0"
#: split folders moved from an archive into ``dataset_dir``
SPLITS = ("train", "val", "test")
#: name of the checksum record inside ``dataset_dir``
SHA_FILE = "SHA256"
_INCOMPLETE = ".prepare_incomplete"


class ChecksumMismatchError(ValueError):
    """The SHA-256 of a downloaded archive differs from the expected (given or recorded) one."""


@dataclass(frozen=True)
class DatasetInfo:
    """One downloadable dataset.

    Attributes:
        name: registry key (e.g. ``"dsb2018"``).
        filename: archive file name (``None`` when there is no single archive).
        url: download URL, or ``None`` when the data must be placed by hand (see ``manual``).
        archive_root: folder inside the archive that holds the split folders.
        sha256: known SHA-256 of the archive, or ``None`` (then the first download is recorded and trusted).
        sha256_source: where ``sha256`` comes from.
        manual: instructions shown when ``url`` is ``None``.
    """

    name: str
    filename: str | None
    url: str | None
    archive_root: str | None
    sha256: str | None = None
    sha256_source: str = ""
    manual: str = ""


_TORCH_EM = "SHA-256 published by the torch-em EmbedSeg loader (constantinpape/torch-em), not by the EmbedSeg authors"


def _release(name: str, filename: str, sha256: str | None = None) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        filename=filename,
        url=f"{RELEASE_URL}/{filename}",
        archive_root=filename[: -len(".zip")],
        sha256=sha256,
        sha256_source=_TORCH_EM if sha256 else "",
    )


_PARHYALE_MANUAL = (
    "The Parhyale nuclei data (Alwes et al. 2016, eLife 5:e19766; used by StarDist-3D, Weigert et al. 2020, and in "
    "EmbedSeg's appendix C) is not part of the EmbedSeg release and no archive in the release layout is published. "
    "A candidate source is Zenodo record 8252039 (https://zenodo.org/records/8252039): a time-lapse "
    "'Parhyale_H2B-EGFP_images_tp01-50.tif' and six '*_instance-segmentation-labels_*.tif' volumes (time points 1, "
    "11, 21, 31, 41, 50); it was not verified to be the exact set or split of the papers. Download the data "
    "manually and arrange it in the release layout: each annotated time point as a (Z, Y, X) TIFF in "
    "<dataset_dir>/train/images, its label volume under the same file name in <dataset_dir>/train/masks (and "
    "likewise test/images, test/masks for held-out volumes); then pass --dataset_dir <dataset_dir>."
)

#: registry of downloadable datasets, keyed by bundle name
DATASETS: dict[str, DatasetInfo] = {
    "dsb2018": _release("dsb2018", "dsb-2018.zip"),
    "bbbc010": _release("bbbc010", "bbbc010-2012.zip"),
    "usiigaci": _release("usiigaci", "usiigaci-2017.zip"),
    "mouse_organoid_cells_cbg": _release(
        "mouse_organoid_cells_cbg",
        "Mouse-Organoid-Cells-CBG.zip",
        "3695ac340473900ace8c37fd7f3ae0d37217de9f2b86c2341f36b1727825e48b",
    ),
    "platynereis_nuclei_cbg": _release(
        "platynereis_nuclei_cbg",
        "Platynereis-Nuclei-CBG.zip",
        "448cb7b46f2fe7d472795e05c8d7dfb40f259d94595ad2cfd256bc2aa4ab3be7",
    ),
    "mouse_skull_nuclei_cbg": _release(
        "mouse_skull_nuclei_cbg",
        "Mouse-Skull-Nuclei-CBG.zip",
        "3600ec261a48bf953820e0536cacd0bb8a5141be6e7435a4cb0fffeb0caf594e",
    ),
    "platynereis_ish_nuclei_cbg": _release(
        "platynereis_ish_nuclei_cbg",
        "Platynereis-ISH-Nuclei-CBG.zip",
        "bc9284df6f6d691a8e81b47310d95617252cc98ebf7daeab55801b330ba921e0",
    ),
    "parhyale_nuclei_igfl": DatasetInfo(
        name="parhyale_nuclei_igfl", filename=None, url=None, archive_root=None, manual=_PARHYALE_MANUAL
    ),
}

# errors that mean "the network did not deliver the file"; HTTPError and ContentTooShortError are URLErrors
_NETWORK_ERRORS = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException)


def sha256_of_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file as a lower-case hex string (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def has_release_layout(path: PathLike) -> bool:
    """Whether ``path`` holds a dataset in the release layout, completely prepared.

    True when some split folder (``train``, ``val`` or ``test``) has an ``images`` folder with at least one image
    file and a ``masks`` folder, and no interrupted :func:`prepare_dataset` left its marker behind.
    """
    root = Path(os.fspath(path))
    if not root.is_dir() or (root / _INCOMPLETE).exists():
        return False
    for split in SPLITS:
        images, masks = root / split / "images", root / split / "masks"
        if images.is_dir() and masks.is_dir():
            if any(e.is_file() and file_stem(e.name) is not None for e in images.iterdir()):
                return True
    return False


def _read_sha_record(dataset_dir: Path) -> dict[str, str]:
    """``{archive name: sha256}`` from ``dataset_dir/SHA256`` (empty when absent)."""
    rec = dataset_dir / SHA_FILE
    if not rec.is_file():
        return {}
    out = {}
    for line in rec.read_text().splitlines():
        parts = line.strip().split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _get_info(name: str) -> DatasetInfo:
    """Registry entry for a key, also accepting the archive name (``"dsb-2018"``, ``"Mouse-Skull-Nuclei-CBG.zip"``)."""
    if name in DATASETS:
        return DATASETS[name]
    norm = str(name).lower().removesuffix(".zip").replace("-", "_")
    for key, info in DATASETS.items():
        if norm == key or (info.archive_root and norm == info.archive_root.lower().replace("-", "_")):
            return info
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}.")


def _offline_message(url: str, dataset_dir: Path, err: BaseException) -> str:
    return (
        f"could not download {url} ({type(err).__name__}: {err}). The machine seems to be offline or the URL is "
        f"unreachable. Place the data by hand instead: download the archive elsewhere, unpack it and move its "
        f"train/ and test/ folders (each holding images/ and masks/) into a folder, e.g. {dataset_dir}, then pass "
        f"that folder as --dataset_dir (or call prepare_dataset again with the folder in place: an existing release "
        f"layout is used as is)."
    )


def _find_split_root(extracted: Path, archive_root: str | None) -> Path:
    """Folder of the extracted archive that holds the split folders (the archive root, or the top level)."""
    candidates = []
    if archive_root:
        candidates.append(extracted / archive_root)
    candidates.append(extracted)
    candidates += sorted(p for p in extracted.iterdir() if p.is_dir())
    for cand in candidates:
        if cand.is_dir() and any((cand / s / "images").is_dir() for s in SPLITS):
            return cand
    raise RuntimeError(
        f"the archive does not hold the release layout (<name>/train/images, ...); top level: "
        f"{sorted(p.name for p in extracted.iterdir())}"
    )


def prepare_dataset(
    name: str,
    dataset_dir: PathLike,
    sha256: str | None = None,
    url: str | None = None,
    progress: bool = True,
) -> str:
    """Download and unpack one dataset into ``dataset_dir`` in the release layout, unless it is already there.

    The archive is downloaded (MONAI ``download_url``) and extracted (``extractall``) inside a temporary folder next
    to ``dataset_dir`` and moved into place at the end, so an interruption never leaves a half-extracted dataset.
    The expected checksum is, in this order: ``sha256``, the one recorded in ``dataset_dir/SHA256`` by an earlier
    download, the registry's known one. Without any, the archive's SHA-256 is recorded for later downloads.

    Args:
        name: registry key, one of ``DATASETS``.
        dataset_dir: target folder; it receives ``train/``, ``test/`` (and ``val/``) and ``SHA256``.
        sha256: expected SHA-256 of the archive (hex), or None.
        url: override the registry URL (e.g. a mirror).
        progress: show a download progress bar.

    Returns:
        ``dataset_dir`` as an absolute path string.

    Raises:
        ValueError: unknown ``name`` or a malformed ``sha256``.
        FileNotFoundError: the dataset has no download URL (the message says how to place it by hand).
        ConnectionError: the download failed (offline, DNS failure, HTTP error); the message names the URL and how to
            place the data by hand.
        ChecksumMismatchError: the archive's SHA-256 differs from the expected one.
        FileExistsError: ``dataset_dir`` already holds some split folders but not a complete release layout.
        RuntimeError: the archive does not hold the release layout.
    """
    info = _get_info(name)
    dataset_dir = Path(os.fspath(dataset_dir)).expanduser().resolve()
    if has_release_layout(dataset_dir):
        return str(dataset_dir)
    url = url or info.url
    if url is None:
        raise FileNotFoundError(
            f"dataset {name!r} cannot be downloaded automatically and {dataset_dir} does not "
            f"hold it in the release layout. {info.manual}"
        )
    filename = info.filename or (os.path.basename(url.split("?")[0]) or f"{name}.zip")
    expected, source = _expected_checksum(sha256, dataset_dir, filename, info)
    if dataset_dir.is_dir():
        present = [s for s in SPLITS if (dataset_dir / s).exists()]
        if present and not (dataset_dir / _INCOMPLETE).exists():
            raise FileExistsError(
                f"{dataset_dir} holds {present} but not a complete release layout (<split>/images with image files "
                f"and <split>/masks); remove or complete them before downloading {name!r}."
            )

    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset_dir.name}.download-", dir=dataset_dir.parent))
    try:
        archive = tmp / filename
        digest = _download_checked(url, archive, dataset_dir, expected, source, progress)
        extracted = tmp / "extracted"
        extracted.mkdir()
        extractall(filepath=archive, output_dir=extracted, hash_val=None, file_type="zip", has_base=False)
        archive.unlink()  # free the space before the data is moved
        src = _find_split_root(extracted, info.archive_root)
        splits = [s for s in SPLITS if (src / s).is_dir()]
        staged = tmp / "staged"
        staged.mkdir()
        for s in splits:
            os.replace(src / s, staged / s)
        (staged / SHA_FILE).write_text(f"{digest}  {filename}\n")
        _install(staged, dataset_dir, splits)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dataset_dir)


def _expected_checksum(sha256: str | None, dataset_dir: Path, filename: str, info) -> tuple[str | None, str]:
    """The archive's expected SHA-256 and where it comes from: ``sha256``, else the recorded one, else the registry's.

    Raises:
        ValueError: ``sha256`` is not 64 hex digits.
    """
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}.")
        return sha256, "given as sha256"
    recorded = _read_sha_record(dataset_dir).get(filename)
    if recorded:
        return recorded, f"recorded in {dataset_dir / SHA_FILE} at the first download"
    return info.sha256, info.sha256_source


def _download_checked(
    url: str, archive: Path, dataset_dir: Path, expected: str | None, source: str, progress: bool
) -> str:
    """Download ``url`` to ``archive``; return its SHA-256 after checking it against ``expected`` (when known).

    Raises:
        ConnectionError: the download failed; RuntimeError: no file was written; ChecksumMismatchError.
    """
    try:
        download_url(url=url, filepath=archive, hash_val=None, progress=progress)
    except _NETWORK_ERRORS as e:
        raise ConnectionError(_offline_message(url, dataset_dir, e)) from None
    except RuntimeError as e:  # MONAI reports some failed transfers as RuntimeError
        raise ConnectionError(_offline_message(url, dataset_dir, e)) from None
    if not archive.is_file():  # download_url swallows PermissionError / NotADirectoryError
        raise RuntimeError(f"downloading {url} produced no file at {archive} (no write permission?).")
    digest = sha256_of_file(archive)
    if expected is not None and digest != expected:
        raise ChecksumMismatchError(
            f"SHA-256 of {archive.name} from {url} is {digest}, expected {expected} ({source}). The download may be "
            f"corrupt or the file changed upstream; retry, or pass sha256=... / --sha256 after checking the file."
        )
    return digest


def _install(staged: Path, dataset_dir: Path, splits: Sequence[str]) -> None:
    """Move the staged dataset into ``dataset_dir``: one rename when the folder is new or empty, otherwise folder
    by folder with a marker that :func:`has_release_layout` treats as incomplete until the last move."""
    if dataset_dir.is_dir() and not any(dataset_dir.iterdir()):
        dataset_dir.rmdir()
    if not dataset_dir.exists():
        try:
            os.replace(staged, dataset_dir)
            return
        except OSError:
            if has_release_layout(dataset_dir):  # another process (e.g. another rank) got there first
                return
            if not dataset_dir.exists():
                raise
    marker = dataset_dir / _INCOMPLETE
    marker.touch()
    for s in splits:
        if (dataset_dir / s).exists():  # left by an interrupted earlier run (the marker was present)
            shutil.rmtree(dataset_dir / s)
        os.replace(staged / s, dataset_dir / s)
    os.replace(staged / SHA_FILE, dataset_dir / SHA_FILE)
    marker.unlink()
