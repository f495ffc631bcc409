"""Tests for monai_embedseg.data.download (no network: the download is monkeypatched to copy a local zip)."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import zipfile

import numpy as np
import pytest
import tifffile

import monai_embedseg.data.download as dl
from monai_embedseg.cli.download_command import main as download_main
from monai_embedseg.data.datalist import release_datalist

IMG = np.arange(12, dtype=np.uint16).reshape(3, 4)
MASK = np.array([[0, 1, 1, 0], [0, 1, 0, 2], [0, 0, 2, 2]], dtype=np.uint16)


def _make_zip(path, root="dsb-2018", splits=("train", "test"), extra=None):
    """Zip with ``<root>/<split>/{images,masks}/<split>_0.tif`` (``root=""``: splits at the top level)."""
    src = path.parent / (path.stem + "_src")
    for s in splits:
        for sub, arr in (("images", IMG), ("masks", MASK)):
            d = src / root / s / sub
            d.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(d / f"{s}_0.tif", arr + (s == "test"))
    if extra:
        (src / root / "notes.txt").write_text(extra)
    with zipfile.ZipFile(path, "w") as z:
        for dirpath, _, files in os.walk(src):
            for f in files:
                full = os.path.join(dirpath, f)
                z.write(full, os.path.relpath(full, src))
    shutil.rmtree(src)
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeDownload:
    """Stands in for MONAI's ``download_url``: copies ``self.source`` and records the URLs asked for."""

    def __init__(self, source):
        self.source, self.urls = source, []

    def __call__(self, url, filepath, hash_val=None, progress=True, **kwargs):
        self.urls.append(url)
        shutil.copyfile(self.source, filepath)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    f = FakeDownload(_make_zip(tmp_path / "src" / "dsb-2018.zip"))
    monkeypatch.setattr(dl, "download_url", f)
    return f


def _leftovers(parent, keep):
    return sorted(p.name for p in parent.iterdir() if p.name != keep)


def test_registry():
    assert dl.DATASETS["dsb2018"].url == f"{dl.RELEASE_URL}/dsb-2018.zip"
    assert dl.RELEASE_URL == "https://github.com/juglab/EmbedSeg/releases/download/v0.1.0"
    expect = {
        "dsb2018": "dsb-2018.zip",
        "bbbc010": "bbbc010-2012.zip",
        "usiigaci": "usiigaci-2017.zip",
        "mouse_organoid_cells_cbg": "Mouse-Organoid-Cells-CBG.zip",
        "platynereis_nuclei_cbg": "Platynereis-Nuclei-CBG.zip",
        "mouse_skull_nuclei_cbg": "Mouse-Skull-Nuclei-CBG.zip",
        "platynereis_ish_nuclei_cbg": "Platynereis-ISH-Nuclei-CBG.zip",
    }
    for key, zipname in expect.items():
        assert dl.DATASETS[key].filename == zipname and dl.DATASETS[key].url.endswith("/v0.1.0/" + zipname)
    assert dl.DATASETS["parhyale_nuclei_igfl"].url is None
    assert set(dl.DATASETS) == set(expect) | {"parhyale_nuclei_igfl"}


def test_download_layout_and_sha(tmp_path, fake):
    target = tmp_path / "data" / "dsb"
    out = dl.prepare_dataset("dsb2018", target, progress=False)
    assert out == str(target.resolve())
    assert fake.urls == [f"{dl.RELEASE_URL}/dsb-2018.zip"]
    assert sorted(p.name for p in target.iterdir()) == ["SHA256", "test", "train"]
    np.testing.assert_array_equal(tifffile.imread(target / "train" / "images" / "train_0.tif"), IMG)
    np.testing.assert_array_equal(tifffile.imread(target / "test" / "masks" / "test_0.tif"), MASK + 1)
    assert (target / "SHA256").read_text() == f"{_sha(fake.source)}  dsb-2018.zip\n"
    assert [d["name"] for d in release_datalist(target, "train")] == ["train_0"]
    assert _leftovers(target.parent, "dsb") == []  # no temporary folder left behind
    assert dl.has_release_layout(target)


def test_skip_when_present(tmp_path, fake):
    target = tmp_path / "dsb"
    dl.prepare_dataset("dsb2018", target, progress=False)
    fake.source = tmp_path / "missing.zip"  # a second download would fail
    assert dl.prepare_dataset("dsb2018", target) == str(target.resolve())
    assert len(fake.urls) == 1
    # a hand-placed layout (no SHA256) is used as is, also for a dataset without URL
    hand = tmp_path / "hand"
    (hand / "train" / "images").mkdir(parents=True)
    (hand / "train" / "masks").mkdir()
    tifffile.imwrite(hand / "train" / "images" / "a.tif", IMG)
    assert dl.prepare_dataset("parhyale_nuclei_igfl", hand) == str(hand.resolve())
    assert len(fake.urls) == 1


def test_given_checksum_mismatch(tmp_path, fake):
    target = tmp_path / "dsb"
    with pytest.raises(dl.ChecksumMismatchError, match="expected 0{64}"):
        dl.prepare_dataset("dsb2018", target, sha256="0" * 64, progress=False)
    assert not target.exists() and _leftovers(tmp_path, "src") == []
    assert dl.prepare_dataset("dsb2018", target, sha256=_sha(fake.source).upper(), progress=False)
    with pytest.raises(ValueError, match="64 hex"):
        dl.prepare_dataset("dsb2018", tmp_path / "other", sha256="abc")


def test_recorded_checksum_verified_on_refetch(tmp_path, fake):
    target = tmp_path / "dsb"
    dl.prepare_dataset("dsb2018", target, progress=False)
    good = fake.source
    shutil.rmtree(target / "train")
    shutil.rmtree(target / "test")
    (tmp_path / "changed").mkdir()
    fake.source = _make_zip(tmp_path / "changed" / "dsb-2018.zip", extra="changed")
    with pytest.raises(dl.ChecksumMismatchError, match="recorded in"):
        dl.prepare_dataset("dsb2018", target, progress=False)
    assert sorted(p.name for p in target.iterdir()) == ["SHA256"]  # nothing half-extracted
    fake.source = good
    dl.prepare_dataset("dsb2018", target, progress=False)
    assert dl.has_release_layout(target) and (target / "SHA256").read_text().startswith(_sha(good))
    assert not (target / ".prepare_incomplete").exists()


def test_known_registry_checksum_enforced(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    src = _make_zip(
        tmp_path / "src" / "Mouse-Organoid-Cells-CBG.zip", root="Mouse-Organoid-Cells-CBG", splits=["train"]
    )
    monkeypatch.setattr(dl, "download_url", FakeDownload(src))
    with pytest.raises(dl.ChecksumMismatchError, match="torch-em"):
        dl.prepare_dataset("mouse_organoid_cells_cbg", tmp_path / "org", progress=False)
    dl.prepare_dataset("Mouse-Organoid-Cells-CBG", tmp_path / "org", sha256=_sha(src), progress=False)  # alias
    assert sorted(p.name for p in (tmp_path / "org").iterdir()) == ["SHA256", "train"]


@pytest.mark.parametrize(
    "err",
    [
        urllib.error.URLError(OSError(-3, "Temporary failure in name resolution")),
        urllib.error.HTTPError(f"{dl.RELEASE_URL}/dsb-2018.zip", 404, "Not Found", {}, None),
        TimeoutError("timed out"),
    ],
)
def test_offline_error(tmp_path, monkeypatch, err):
    def boom(url, filepath, **kwargs):
        open(filepath, "wb").write(b"partial")
        raise err

    monkeypatch.setattr(dl, "download_url", boom)
    target = tmp_path / "dsb"
    with pytest.raises(ConnectionError) as info:
        dl.prepare_dataset("dsb2018", target, progress=False)
    msg = str(info.value)
    assert f"{dl.RELEASE_URL}/dsb-2018.zip" in msg and "offline" in msg and "--dataset_dir" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not target.exists() and _leftovers(tmp_path, "") == []


def test_manual_only_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="manually.*release layout|release layout.*manually") as info:
        dl.prepare_dataset("parhyale_nuclei_igfl", tmp_path / "p")
    assert "zenodo" in str(info.value).lower() and "train/images" in str(info.value)


def test_bad_inputs(tmp_path, fake):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dl.prepare_dataset("nope", tmp_path / "x")
    partial = tmp_path / "partial"
    (partial / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="complete release layout"):
        dl.prepare_dataset("dsb2018", partial, progress=False)
    assert fake.urls == []


def test_archive_without_layout_and_top_level_splits(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    bad = tmp_path / "src" / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("readme.txt", "no data")
    monkeypatch.setattr(dl, "download_url", FakeDownload(bad))
    with pytest.raises(RuntimeError, match="release layout"):
        dl.prepare_dataset("usiigaci", tmp_path / "u", progress=False)
    assert _leftovers(tmp_path, "src") == []
    flat = _make_zip(tmp_path / "src" / "flat.zip", root="", splits=["train"])
    monkeypatch.setattr(dl, "download_url", FakeDownload(flat))
    dl.prepare_dataset("usiigaci", tmp_path / "u", url="https://mirror.example/flat.zip", progress=False)
    assert (tmp_path / "u" / "SHA256").read_text().endswith("  usiigaci-2017.zip\n")
    assert (tmp_path / "u" / "train" / "masks" / "train_0.tif").is_file()


def test_interrupted_install_is_redone(tmp_path, fake):
    target = tmp_path / "dsb"
    (target / "train" / "images").mkdir(parents=True)
    (target / "train" / "masks").mkdir()
    tifffile.imwrite(target / "train" / "images" / "stale.tif", IMG)
    (target / ".prepare_incomplete").touch()
    assert not dl.has_release_layout(target)
    dl.prepare_dataset("dsb2018", target, progress=False)
    assert sorted(os.listdir(target / "train" / "images")) == ["train_0.tif"] and dl.has_release_layout(target)


def test_cli(tmp_path, fake, monkeypatch, capsys):
    target = tmp_path / "cli"
    assert download_main(["dsb2018", str(target), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(target.resolve())
    assert download_main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(k in listed for k in dl.DATASETS)

    def offline(url, filepath, **kwargs):
        raise urllib.error.URLError("no route")

    monkeypatch.setattr(dl, "download_url", offline)
    assert download_main(["bbbc010", str(tmp_path / "b"), "--no-progress"]) == 2  # a failure, in one line
    err = capsys.readouterr().err
    assert "bbbc010-2012.zip" in err and "offline" in err
