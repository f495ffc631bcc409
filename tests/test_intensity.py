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
