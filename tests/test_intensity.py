"""ScaleIntensityContentPercentiles(d): MONAI's percentile scaling for ordinary images, content tiles for mostly
empty ones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRangePercentiles

from monai_embedseg.transforms import ScaleIntensityContentPercentiles, ScaleIntensityContentPercentilesd
from monai_embedseg.transforms.intensity import SparseImageWarning


def _monai(img):
    t = ScaleIntensityRangePercentiles(1, 99.8, 0.0, 1.0, clip=False, channel_wise=True, dtype=np.float32)
    return np.asarray(t(img))


def _slide(shape, field_side, rng):
    """Noisy background with a bright square field of ``field_side`` pixels per axis in one corner."""
    img = rng.normal(100, 5, (1, *shape)).astype(np.float32)
    img[(0, *[slice(2, 2 + field_side)] * len(shape))] += 300
    return img


@pytest.mark.parametrize("shape", [(120, 150), (20, 40, 50)])
def test_an_ordinary_image_is_scaled_exactly_as_monai_does(shape):
    img = np.random.default_rng(0).gamma(2.0, 30.0, (2, *shape)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SparseImageWarning)
        out = ScaleIntensityContentPercentiles()(img)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, _monai(img))


def test_the_output_is_of_the_input_kind_and_float32():
    img = np.random.default_rng(1).integers(0, 255, (1, 40, 50), dtype=np.uint8)
    t = ScaleIntensityContentPercentiles()
    assert isinstance(t(img), np.ndarray) and t(img).dtype == np.float32
    out = t(torch.from_numpy(img))
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    meta = MetaTensor(torch.from_numpy(img), meta={"filename_or_obj": "a.tif"})
    out = ScaleIntensityContentPercentilesd("image")({"image": meta})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.tif"
    np.testing.assert_allclose(out.numpy(), _monai(img.astype(np.float32)), rtol=1e-6)


@pytest.mark.parametrize("shape, side", [((600, 700), 15), ((40, 160, 160), 8)])
def test_a_mostly_empty_image_is_scaled_over_the_tiles_holding_objects(shape, side):
    rng = np.random.default_rng(2)
    img = _slide(shape, side, rng)
    assert _monai(img).max() > 6  # whole-image percentiles are background values
    field = tuple(slice(0, 66) for _ in shape)  # the content tile(s) of the corner field
    meta = MetaTensor(torch.from_numpy(img), meta={"filename_or_obj": "slide.tif"})
    with pytest.warns(SparseImageWarning, match=r"slide.tif: a mostly empty image.* normalised over the"):
        out = ScaleIntensityContentPercentiles(tile=64, content=True)(meta)
    expected = _monai(img[(slice(None), *[slice(0, 64)] * len(shape))])  # the field's own tile
    assert 0.9 < float(out.max()) < 1.5
    np.testing.assert_allclose(out.numpy()[(0, *field)].max(), expected.max(), rtol=0.05)


def test_a_constant_slide_with_one_field_is_rescued_on_request_and_otherwise_only_warned_about():
    img = np.full((1, 1000, 1000), 3, np.uint8)
    img[0, 10:30, 10:30] = 200  # 0.04 % of the image: both percentiles are 3
    with pytest.warns(SparseImageWarning, match="normalised over"):
        out = ScaleIntensityContentPercentiles(content=True)(img)
    assert 0.9 < out.max() <= 1.0 and out.min() >= 0.0
    with pytest.warns(SparseImageWarning, match="over-segmented"):
        kept = ScaleIntensityContentPercentiles()(img)  # the default: scaled as in training, with a warning
    np.testing.assert_array_equal(kept, _monai(img.astype(np.float32)))


def test_the_threshold_is_the_models_own_training_peak():
    from monai_embedseg.intensity import PEAK_MARGIN, SPARSE_RATIO, content_default, image_peak, model_sparse_ratio

    rng = np.random.default_rng(4)
    img = _slide((600, 700), 15, rng)  # a field on 0.05 % of a slide
    peak = image_peak(img, 1, 99.8)
    assert peak == pytest.approx(float(_monai(img).max()), rel=1e-4) and peak > SPARSE_RATIO
    assert image_peak(np.full((1, 8, 8), 7.0), 1, 99.8) is None  # no spread: no peak to speak of
    # a model trained on images that peaked as high takes this one as it was trained: MONAI's scaling, no warning
    ratio = model_sparse_ratio(peak / PEAK_MARGIN * 1.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SparseImageWarning)
        out = ScaleIntensityContentPercentiles(sparse_ratio=ratio, content=True)(img)
    np.testing.assert_array_equal(out, _monai(img))
    # a model whose training images peaked at 2.5 takes it for mostly empty and, recording that peak, rescues it
    assert model_sparse_ratio(2.5) == SPARSE_RATIO and model_sparse_ratio(None) == SPARSE_RATIO
    assert model_sparse_ratio(20.0) == pytest.approx(20.0 * PEAK_MARGIN)
    assert content_default(None, 2.5) is True and content_default(None, None) is False
    assert content_default(False, 2.5) is False and content_default(True, None) is True
    with pytest.warns(SparseImageWarning, match="normalised over"):
        out = ScaleIntensityContentPercentiles(sparse_ratio=model_sparse_ratio(2.5), content=True)(img)
    assert out.max() < 1.5


def test_training_records_the_peak_of_its_images(tmp_path):
    import tifffile

    from monai_embedseg.bundle.datasets import training_intensity_peak
    from monai_embedseg.intensity import image_peak

    rng = np.random.default_rng(5)
    dense = rng.gamma(2.0, 30.0, (60, 70)).astype(np.float32)
    sparse = _slide((600, 700), 15, rng)[0]
    tifffile.imwrite(tmp_path / "a.tif", dense)
    tifffile.imwrite(tmp_path / "b.tif", sparse)
    peak = training_intensity_peak([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")])
    assert peak == pytest.approx(image_peak(sparse[None], 1, 99.8)) and peak > image_peak(dense[None], 1, 99.8)
    two_channels = np.stack([dense, dense[::-1] * 3])
    tifffile.imwrite(tmp_path / "c.tif", two_channels, metadata={"axes": "CYX"})
    assert training_intensity_peak([str(tmp_path / "c.tif")]) == pytest.approx(image_peak(two_channels, 1, 99.8))
    assert training_intensity_peak([np.full((1, 5, 5), 2.0)]) is None


def test_only_the_sparse_channel_is_rescaled():
    rng = np.random.default_rng(3)
    sparse = _slide((500, 500), 12, rng)
    dense = rng.gamma(2.0, 30.0, (1, 500, 500)).astype(np.float32)
    with pytest.warns(SparseImageWarning):
        out = ScaleIntensityContentPercentiles(content=True)(np.concatenate([sparse, dense]))
    np.testing.assert_array_equal(out[1:], _monai(dense))
    assert out[0].max() < 1.5


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize("shape, side", [((600, 700), 15), ((40, 200, 170), 10)])
def test_block_wise_percentiles_follow_the_same_rule_as_the_transform(shape, side, dtype):
    from monai_embedseg.data import ArrayVolume
    from monai_embedseg.data.percentiles import content_percentiles, volume_tile_maxima
    from monai_embedseg.intensity import tile_maxima

    rng = np.random.default_rng(4)
    img = np.clip(_slide(shape, side, rng), 0, None).astype(dtype)
    volume = ArrayVolume(img, len(shape))
    tiles = [64] * len(shape)
    maxima = volume_tile_maxima(volume, tiles, max_voxels=7_000)  # slabs cut across tiles
    np.testing.assert_array_equal(maxima[0], tile_maxima(img[0].astype(np.float32), tiles))
    found, fraction = content_percentiles(volume, max_voxels=7_000)
    channel = img[0].astype(np.float32)
    whole = np.percentile(channel, [1.0, 99.8])
    low, high, expected_fraction = ScaleIntensityContentPercentiles()._content_range(channel, *whole)
    np.testing.assert_allclose(found[0], [low, high], rtol=1e-5)
    assert fraction == pytest.approx(expected_fraction) and fraction < 0.1  # one tile of a few
    dense = ArrayVolume(rng.gamma(2.0, 30.0, (1, *shape)).astype(dtype), len(shape))
    assert content_percentiles(dense, max_voxels=7_000)[1] is None


def test_the_arithmetic_bin_index_equals_the_binary_search_on_every_edge():
    from monai_embedseg.data.percentiles import _BINS, _bin_index

    rng = np.random.default_rng(5)
    for lo, hi in [(0.0, 1.0), (44.5, 2537.9), (-3.0, 5.0), (1.0, 1.0 + 1e-13), (7.0, 7.0)]:
        edges = np.linspace(lo, hi, _BINS + 1)
        values = np.concatenate([rng.uniform(lo, hi, 200_000), edges, np.nextafter(edges, -np.inf).clip(lo, hi)])
        expected = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, _BINS - 1)
        np.testing.assert_array_equal(_bin_index(values, lo, hi), expected if hi > lo else np.zeros_like(expected))
