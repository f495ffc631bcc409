"""Tests for monai_embedseg.data.io (TIFF reader / writer, MONAI registration) and NIfTI loading through MONAI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, LoadImaged, SaveImage

from monai_embedseg.data import TiffReader, TiffWriter, read_tiff, register_tiff_io, write_tiff
from monai_embedseg.data.io import read_tiff_spacing


def _label_2d() -> np.ndarray:
    lab = np.zeros((12, 17), dtype=np.uint16)  # not square: a transpose would show
    lab[1:4, 2:9] = 1
    lab[6:11, 10:16] = 7
    lab[6, 0] = 300
    return lab


def _only_file(folder) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------------------- plain helpers
def test_round_trip_2d_3d_and_spacing(tmp_path):
    lab = _label_2d()
    vol = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    write_tiff(tmp_path / "lab.tif", lab, spacing=(0.5, 0.25))
    write_tiff(tmp_path / "vol.tiff", vol, spacing=(2.0, 0.5, 0.5))
    out = read_tiff(tmp_path / "lab.tif")
    assert out.dtype == np.uint16 and np.array_equal(out, lab)
    out3 = read_tiff(tmp_path / "vol.tiff")
    assert out3.dtype == np.float32 and np.array_equal(out3, vol)
    assert read_tiff_spacing(tmp_path / "lab.tif") == (0.5, 0.25)
    assert read_tiff_spacing(tmp_path / "vol.tiff") == (2.0, 0.5, 0.5)
    # the X/Y resolution tags carry the in-plane spacing for other software
    with tifffile.TiffFile(tmp_path / "lab.tif") as tif:
        assert tif.pages[0].resolution == pytest.approx((4.0, 2.0))  # (x, y) pixels per unit
    # torch input, bool input
    write_tiff(tmp_path / "t.tif", torch.from_numpy(lab.astype(np.int32)))
    assert np.array_equal(read_tiff(tmp_path / "t.tif"), lab)
    assert read_tiff_spacing(tmp_path / "t.tif") is None


def test_no_overwrite_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.tif"
    write_tiff(path, np.ones((4, 5), np.uint8))
    with pytest.raises(FileExistsError, match="a.tif"):
        write_tiff(path, np.zeros((4, 5), np.uint8))
    assert np.array_equal(read_tiff(path), np.ones((4, 5)))  # untouched
    write_tiff(path, np.full((4, 5), 3, np.uint8), overwrite=True)
    assert np.array_equal(read_tiff(path), np.full((4, 5), 3))
    assert _only_file(tmp_path) == ["a.tif"]  # no temporary files left behind

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(tmp_path / "b.tif", np.ones((4, 5), np.uint8))
    with pytest.raises(OSError, match="disk full"):
        write_tiff(path, np.zeros((4, 5), np.uint8), overwrite=True)
    assert _only_file(tmp_path) == ["a.tif"]  # neither a partial b.tif nor a temp file
    assert np.array_equal(read_tiff(path), np.full((4, 5), 3))


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match="x.png"):
        write_tiff(tmp_path / "x.png", np.ones((4, 4)))
    with pytest.raises(ValueError, match="2 dimensions"):
        write_tiff(tmp_path / "x.tif", np.ones(4))
    with pytest.raises(ValueError, match="spacing"):
        write_tiff(tmp_path / "x.tif", np.ones((4, 4)), spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="axes"):
        write_tiff(tmp_path / "x.tif", np.ones((4, 4)), axes="ZYX")
    assert _only_file(tmp_path) == []


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        read_tiff(tmp_path / "missing.tif")
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"this is not a tiff file at all")
    with pytest.raises(ValueError, match="corrupt.tif"):
        read_tiff(bad)
    truncated = tmp_path / "truncated.tif"
    write_tiff(tmp_path / "full.tif", np.arange(400, dtype=np.uint16).reshape(20, 20))
    truncated.write_bytes((tmp_path / "full.tif").read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.tif"):
        TiffReader().read(truncated)


# ---------------------------------------------------------------------------------------------------------- reader
def test_reader_meta(tmp_path):
    lab = _label_2d()
    write_tiff(tmp_path / "lab.tif", lab, spacing=(0.5, 0.25))
    reader = TiffReader()
    assert reader.verify_suffix(str(tmp_path / "lab.tif")) and reader.verify_suffix(["a.TIFF", "b.tif"])
    assert not reader.verify_suffix("a.png") and not reader.verify_suffix(["a.tif", "b.nii.gz"])
    arr, meta = reader.get_data(reader.read(tmp_path / "lab.tif"))
    assert np.array_equal(arr, lab)
    assert tuple(meta["spatial_shape"]) == (12, 17)
    assert meta["original_channel_dim"] == "no_channel"
    assert meta["filename_or_obj"] == str(tmp_path / "lab.tif")
    assert np.allclose(meta["spacing"], [0.5, 0.25])
    assert np.allclose(meta["affine"], np.diag([0.5, 0.25, 1.0, 1.0]))
    # two files stack as channels
    arr2, meta2 = reader.get_data(reader.read([tmp_path / "lab.tif", tmp_path / "lab.tif"]))
    assert arr2.shape == (2, 12, 17) and meta2["original_channel_dim"] == 0


def test_reader_channel_axis(tmp_path):
    stack = np.stack([_label_2d(), 2 * _label_2d(), 3 * _label_2d()])
    write_tiff(tmp_path / "cyx.tif", stack, axes="CYX")
    arr, meta = TiffReader().get_data(TiffReader().read(tmp_path / "cyx.tif"))
    assert arr.shape == (3, 12, 17) and meta["original_channel_dim"] == 0
    assert tuple(meta["spatial_shape"]) == (12, 17)
    # a stack without axes metadata is a ZYX volume unless channel_dim says otherwise
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")
    _, meta = TiffReader().get_data(TiffReader().read(tmp_path / "plain.tif"))
    assert meta["original_channel_dim"] == "no_channel" and tuple(meta["spatial_shape"]) == (3, 12, 17)
    _, meta = TiffReader(channel_dim=0).get_data(TiffReader().read(tmp_path / "plain.tif"))
    assert meta["original_channel_dim"] == 0 and tuple(meta["spatial_shape"]) == (12, 17)
    _, meta = TiffReader(channel_dim="no_channel").get_data(TiffReader().read(tmp_path / "cyx.tif"))
    assert meta["original_channel_dim"] == "no_channel"
    img = LoadImage(reader=TiffReader(channel_dim=0), ensure_channel_first=True)(tmp_path / "plain.tif")
    assert img.shape == (3, 12, 17) and torch.equal(img, torch.as_tensor(stack, dtype=torch.float32))


def test_reader_spacing_from_foreign_metadata(tmp_path):
    vol = np.zeros((4, 6, 8), np.float32)
    # ImageJ hyperstack: z from 'spacing', y/x from the resolution tags (pixels per micron)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        vol,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.1),
        metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"},
    )
    assert read_tiff_spacing(tmp_path / "ij.tif") == pytest.approx((1.5, 0.1, 0.2))
    # resolution in pixels per centimetre -> micrometres
    tifffile.imwrite(tmp_path / "cm.tif", vol[0], resolution=(1e4 / 0.5, 1e4 / 0.25), resolutionunit=3)
    assert read_tiff_spacing(tmp_path / "cm.tif") == pytest.approx((0.25, 0.5))
    # a DPI in inches is a display setting, ignored
    tifffile.imwrite(tmp_path / "dpi.tif", vol[0], resolution=(72, 72), resolutionunit=2)
    assert read_tiff_spacing(tmp_path / "dpi.tif") is None
    _, meta = TiffReader().get_data(TiffReader().read(tmp_path / "dpi.tif"))
    assert np.allclose(meta["spacing"], [1.0, 1.0])


# ------------------------------------------------------------------------------------------------ MONAI integration
def test_load_imaged_with_reader(tmp_path):
    register_tiff_io()
    register_tiff_io()  # idempotent
    lab = _label_2d()
    write_tiff(tmp_path / "lab.tif", lab, spacing=(0.5, 0.25))
    for reader in (TiffReader, "TiffReader", "monai_embedseg.data.TiffReader", None):
        out = LoadImaged("label", reader=reader, ensure_channel_first=True)({"label": str(tmp_path / "lab.tif")})
        img = out["label"]
        assert isinstance(img, MetaTensor) and img.shape == (1, 12, 17), reader
        assert torch.equal(img[0], torch.as_tensor(lab, dtype=torch.float32)), reader
        assert np.allclose(img.meta["spacing"], [0.5, 0.25])
        assert torch.allclose(img.affine, torch.diag(torch.tensor([0.5, 0.25, 1.0, 1.0], dtype=torch.float64)))


@pytest.mark.parametrize("output_dtype", [np.uint16, None, np.float32])
def test_save_image_label_round_trip(tmp_path, output_dtype):
    lab = _label_2d()
    write_tiff(tmp_path / "case1.tif", lab, spacing=(0.5, 0.25))
    img = LoadImage(reader=TiffReader, ensure_channel_first=True, dtype=None)(tmp_path / "case1.tif")
    out_dir = tmp_path / "out"
    saver = SaveImage(
        output_dir=out_dir,
        writer=TiffWriter,
        output_ext=".tif",
        separate_folder=False,
        output_postfix="labels",
        output_dtype=output_dtype,
        print_log=False,
    )
    saver(img)
    saved = read_tiff(out_dir / "case1_labels.tif")
    assert saved.shape == lab.shape and np.array_equal(saved, lab)
    if output_dtype is not None:
        assert saved.dtype == output_dtype
    assert read_tiff_spacing(out_dir / "case1_labels.tif") == (0.5, 0.25)
    # MONAI's resampling path (resample=True) leaves an unchanged image unchanged
    SaveImage(
        output_dir=out_dir,
        writer=TiffWriter,
        output_ext=".tif",
        separate_folder=False,
        output_postfix="rs",
        output_dtype=output_dtype,
        resample=True,
        print_log=False,
    )(img)
    assert np.array_equal(read_tiff(out_dir / "case1_rs.tif"), lab)
    # saving again refuses to overwrite (SaveImage wraps the FileExistsError) ...
    with pytest.raises(RuntimeError, match="refusing to overwrite"):
        saver(img)
    # ... unless asked to
    saver.set_options(init_kwargs={"overwrite": True})
    saver(img * 2)
    assert np.array_equal(read_tiff(out_dir / "case1_labels.tif"), 2 * lab)


def test_save_image_resample_and_channels(tmp_path):
    lab = _label_2d()
    meta = {"filename_or_obj": "x.tif", "spatial_shape": np.array([24, 34]), "affine": np.diag([2.0, 3.0, 1.0, 1.0])}
    img = MetaTensor(torch.as_tensor(lab[None].astype(np.int32)), meta=meta)
    SaveImage(
        output_dir=tmp_path,
        writer=TiffWriter,
        output_ext=".tif",
        separate_folder=False,
        output_postfix="up",
        output_dtype=np.uint16,
        resample=True,
        print_log=False,
    )(img)
    up = read_tiff(tmp_path / "x_up.tif")
    assert up.shape == (24, 34) and np.array_equal(up[::2, ::2], lab)  # nearest-neighbour resize to spatial_shape
    assert read_tiff_spacing(tmp_path / "x_up.tif") == (1.0, 1.5)  # same field of view, twice the pixels
    # several channels are kept channel-first and read back as channels
    two = MetaTensor(torch.as_tensor(np.stack([lab, lab + 1])).float(), meta={"filename_or_obj": "y.tif"})
    SaveImage(
        output_dir=tmp_path,
        writer=TiffWriter,
        output_ext=".tif",
        separate_folder=False,
        output_postfix="c",
        output_dtype=None,
        print_log=False,
    )(two)
    back = LoadImage(reader=TiffReader, ensure_channel_first=True)(tmp_path / "y_c.tif")
    assert back.shape == (2, 12, 17) and torch.equal(back, two)
    # 3D, spacing from the affine
    vol = MetaTensor(
        torch.arange(60, dtype=torch.float32).reshape(1, 3, 4, 5),
        meta={"filename_or_obj": "v.tif", "affine": np.diag([3.0, 1.0, 0.5, 1.0])},
    )
    SaveImage(
        output_dir=tmp_path,
        writer=TiffWriter,
        output_ext=".tif",
        separate_folder=False,
        output_postfix="v",
        print_log=False,
    )(vol)
    assert np.array_equal(read_tiff(tmp_path / "v_v.tif"), vol[0].numpy())
    assert read_tiff_spacing(tmp_path / "v_v.tif") == (3.0, 1.0, 0.5)


def test_registered_writer_by_extension(tmp_path):
    register_tiff_io()
    from monai.data.image_writer import resolve_writer

    assert resolve_writer("tif") == (TiffWriter,) and resolve_writer(".TIFF") == (TiffWriter,)
    assert len(resolve_writer("nii.gz")) >= 1 and len(resolve_writer("png")) >= 1  # MONAI's defaults still there
    lab = _label_2d()
    img = MetaTensor(torch.as_tensor(lab[None]).int(), meta={"filename_or_obj": "z.tif"})
    SaveImage(
        output_dir=tmp_path,
        output_ext=".tif",
        separate_folder=False,
        output_postfix="p",
        output_dtype=np.uint16,
        print_log=False,
    )(img)
    assert np.array_equal(read_tiff(tmp_path / "z_p.tif"), lab)  # not transposed as PIL would


def test_nifti_through_monai(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.random.default_rng(1).integers(0, 5, size=(6, 7, 8)).astype(np.int16)
    affine = np.diag([0.5, 0.6, 2.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "v.nii.gz"))
    out = LoadImaged("image", ensure_channel_first=True)({"image": str(tmp_path / "v.nii.gz")})["image"]
    assert out.shape == (1, 6, 7, 8)
    assert torch.equal(out[0], torch.as_tensor(vol, dtype=torch.float32))
    assert np.allclose(np.abs(np.diag(out.affine.numpy())), [0.5, 0.6, 2.0, 1.0])


def test_label_maps_past_65535_objects_are_written_as_uint32_without_wrapping(tmp_path):
    import torch
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    from monai_embedseg.bundle.paths import bundle_path
    from monai_embedseg.data.io import as_label_dtype, read_tiff

    labels = np.arange(1, 75_626, dtype=np.int32).reshape(1, 275, 275)  # 75,625 objects, one pixel each
    assert as_label_dtype(labels).dtype == np.uint32 and as_label_dtype(labels % 1000).dtype == np.uint16
    with pytest.raises(ValueError, match=">= 0"):
        as_label_dtype(-labels)
    # the bundles' postprocessing (inference.json): cluster (skipped here) then save
    parser = ConfigParser()
    parser.read_config(f"{bundle_path('synthetic_2d')}/configs/inference.json")
    parser.update(
        {
            "prediction_dir": str(tmp_path),
            "voxel_spacing": None,
            "seed_thresh": 0.9,
            "fg_thresh": 0.5,
            "min_object_size": 0,
        }
    )
    post = parser.get_parsed_content("postprocessing")
    save = post.transforms[1:]
    data = {"pred_labels": MetaTensor(torch.as_tensor(labels), meta={"filename_or_obj": str(tmp_path / "big.tif")})}
    for t in save:
        data = t(data)
    back = read_tiff(str(tmp_path / "big_labels.tif"))
    assert back.dtype == np.uint32 and back.max() == 75_625 and np.unique(back).size == 75_625
