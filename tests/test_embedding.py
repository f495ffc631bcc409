import pytest
import torch

from monai_embedseg.utils.embedding import decode_prediction, encode_prediction, n_sigma_of, pixel_coordinates


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
