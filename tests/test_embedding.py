import pytest
import torch

from monai_embedseg.embedding import decode_prediction, encode_prediction, n_sigma_of, pixel_coordinates


@pytest.mark.parametrize("shape,spacing", [((7, 9), None), ((4, 6, 5), (2.0, 0.4, 0.4))])
def test_encode_decode_roundtrip(shape, spacing):
    d = len(shape)
    raw = torch.randn(1, 2 * d + 1, *shape)
    emb, sig, seed = decode_prediction(raw, spacing)
    assert emb.shape == (1, d, *shape) and sig.shape == (1, d, *shape) and seed.shape == (1, 1, *shape)
    back = encode_prediction(emb[0], sig[0], seed[0], spacing)
    assert torch.allclose(back, raw[0], atol=1e-4)


def test_zero_offsets_give_pixel_coordinates_in_physical_units():
    raw = torch.zeros(1, 5, 3, 4)
    emb, _, _ = decode_prediction(raw, (2.0, 0.5))
    assert torch.equal(emb[0], pixel_coordinates((3, 4), (2.0, 0.5)))
    assert emb[0, 0, 2, 0] == 4.0 and emb[0, 1, 0, 3] == 1.5


def test_embedding_is_translation_equivariant():
    raw = torch.randn(1, 5, 10, 12)
    emb_full, _, _ = decode_prediction(raw)
    emb_crop, _, _ = decode_prediction(raw[..., 3:, 4:])
    assert torch.allclose(emb_full[..., 3:, 4:] - emb_crop, torch.tensor([3.0, 4.0]).view(1, 2, 1, 1))


def test_isotropic_sigma_and_bad_channel_count():
    raw = torch.randn(1, 4, 5, 5)  # 2 offsets + 1 sigma + seed
    assert n_sigma_of(4, 2) == 1
    _, sig, _ = decode_prediction(raw)
    assert torch.equal(sig[0, 0], sig[0, 1])
    with pytest.raises(ValueError, match="channels"):
        decode_prediction(torch.randn(1, 6, 5, 5))


@pytest.mark.parametrize(
    "shape,spacing,channels", [((37, 53), (0.5, 1.5), 5), ((6, 17, 19), (2.0, 0.4, 0.4), 7), ((9, 11, 13), None, 5)]
)
def test_decode_pixels_equals_indexed_full_decoding(shape, spacing, channels, monkeypatch):
    import monai_embedseg.embedding as embedding_mod
    from monai_embedseg.embedding import decode_pixels

    monkeypatch.setattr(embedding_mod, "_UNRAVEL_CHUNK", 37)  # several chunks of indices, a ragged last one

    g = torch.Generator().manual_seed(len(shape) + channels)
    pred = torch.randn(channels, *shape, generator=g) * 2
    d = len(shape)
    emb, sig, seed = decode_prediction(pred, spacing, batched=False)
    emb, sig, seed = emb.reshape(d, -1), sig.reshape(d, -1), seed.reshape(-1)
    for frac in (1.0, 0.3, 0.02):
        index = torch.nonzero(torch.rand(seed.numel(), generator=g) < frac).squeeze(1)
        e, s, p = decode_pixels(pred, index, spacing)
        assert e.shape == (d, index.numel()) and s.shape == (d, index.numel()) and p.shape == (index.numel(),)
        assert torch.equal(e, emb[:, index]) and torch.equal(s, sig[:, index])  # bitwise: same ops, same values
        assert torch.allclose(p, seed[index], rtol=1e-6, atol=0)  # sigmoid: vector/scalar kernels, last bit
    # numpy indices, float64 decoding of a half prediction == full decoding of the upcast prediction
    half = pred.half()
    e, s, _ = decode_pixels(half, index.numpy(), spacing, dtype=torch.float64)
    emb64, sig64, _ = decode_prediction(half.double(), spacing, batched=False)
    assert e.dtype == torch.float64 and torch.equal(e, emb64.reshape(d, -1)[:, index])
    assert torch.equal(s, sig64.reshape(d, -1)[:, index])


def test_decode_pixels_coordinates_and_errors():
    from monai_embedseg.embedding import decode_pixels

    raw = torch.zeros(4, 3, 5)  # isotropic sigma, zero offsets: embeddings are the pixel positions
    emb, sig, seed = decode_pixels(raw, torch.tensor([0, 7, 14]), (2.0, 0.5))
    assert torch.equal(emb, torch.tensor([[0.0, 2.0, 4.0], [0.0, 1.0, 2.0]]))  # (0,0), (1,2), (2,4)
    assert torch.equal(sig, torch.full((2, 3), 4.0 * 0.5)) and torch.equal(seed, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="index"):
        decode_pixels(raw, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="index"):
        decode_pixels(raw, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="channels"):
        decode_pixels(torch.zeros(6, 3, 5), torch.tensor([0]))
    with pytest.raises(ValueError, match="spatial"):
        decode_pixels(torch.zeros(5, 3), torch.tensor([0]))
