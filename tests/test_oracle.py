import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_embedseg.embedding import decode_prediction, pixel_coordinates
from monai_embedseg.medoid import object_centers
from monai_embedseg.testing import oracle_prediction


def _l_shapes_2d():
    lab = np.zeros((1, 24, 30), dtype=np.int32)
    lab[0, 2:20, 2:6] = 4  # an L: medoid and centroid differ
    lab[0, 16:20, 6:18] = 4
    lab[0, 3:12, 10:25] = 2  # touches nothing
    lab[0, 12:16, 10:25] = 7  # touches object 2
    return lab


@pytest.mark.parametrize("spacing", [None, (1.0, 0.5)])
@pytest.mark.parametrize("center", ["medoid", "centroid"])
def test_oracle_embeds_every_pixel_at_its_center(spacing, center):
    lab = _l_shapes_2d()
    raw = oracle_prediction(lab, spacing, mode=center)
    assert isinstance(raw, np.ndarray) and raw.dtype == np.float32 and raw.shape == (5, 24, 30)
    emb, sig, seed = decode_prediction(torch.as_tensor(raw), spacing, batched=False)
    sp = np.asarray(spacing if spacing is not None else (1.0, 1.0))
    ids, coords = object_centers(lab, spacing, mode=center)
    assert list(ids) == [2, 4, 7]
    for obj_id, c in zip(ids, coords):
        mask = lab[0] == obj_id
        expected = torch.as_tensor(c * sp, dtype=torch.float32)
        assert torch.allclose(emb[:, torch.as_tensor(mask)], expected[:, None], atol=1e-4)
    bg = torch.as_tensor(lab[0] == 0)
    coords_all = pixel_coordinates((24, 30), spacing)
    assert torch.allclose(emb[:, bg], coords_all[:, bg], atol=1e-4)  # background offsets are 0
    assert torch.allclose(sig, torch.full_like(sig, 0.5 * sp.min()), rtol=1e-5)
    assert torch.allclose(seed[0][~bg], torch.tensor(1 - 1e-6), atol=1e-7)
    assert torch.allclose(seed[0][bg], torch.tensor(1e-6), atol=1e-7)


def test_medoid_and_centroid_give_different_centers_for_an_l_shape():
    lab = _l_shapes_2d()
    a = oracle_prediction(lab, mode="medoid")
    b = oracle_prediction(lab, mode="centroid")
    assert not np.allclose(a[:2][:, lab[0] == 4], b[:2][:, lab[0] == 4])


def test_one_hot_later_channel_wins_and_torch_in_torch_out():
    stack = np.zeros((3, 16, 16), dtype=np.uint8)
    stack[0, 2:10, 2:10] = 1
    stack[1, 6:14, 6:14] = 1  # overlaps channel 0: channel 1 wins there
    # channel 2 empty (padding)
    lab = np.zeros((1, 16, 16), dtype=np.int32)
    lab[0][stack[0] > 0] = 1
    lab[0][stack[1] > 0] = 2
    out = oracle_prediction(torch.as_tensor(stack))
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert torch.equal(out, torch.as_tensor(oracle_prediction(lab)))


def test_3d_anisotropic_and_meta():
    lab = np.zeros((1, 6, 20, 22), dtype=np.int16)
    lab[0, 1:5, 2:12, 2:12] = 1
    lab[0, 1:5, 12:18, 2:12] = 3
    meta = MetaTensor(torch.as_tensor(lab), affine=torch.diag(torch.tensor([2.0, 0.4, 0.4, 1.0])))
    raw = oracle_prediction(meta, spacing=(2.0, 0.4, 0.4))
    assert isinstance(raw, MetaTensor) and raw.shape == (7, 6, 20, 22) and torch.equal(raw.affine, meta.affine)
    emb, sig, _ = decode_prediction(raw.as_tensor(), (2.0, 0.4, 0.4), batched=False)
    _, coords = object_centers(lab, (2.0, 0.4, 0.4))
    center = torch.as_tensor(coords[1] * np.array([2.0, 0.4, 0.4]), dtype=torch.float32)
    assert torch.allclose(emb[:, torch.as_tensor(lab[0] == 3)], center[:, None], atol=1e-4)
    assert torch.allclose(sig, torch.full_like(sig, 0.2))


def test_empty_label_and_custom_sigma():
    raw = oracle_prediction(np.zeros((1, 8, 8), dtype=np.int32), sigma=2.0, eps=1e-3)
    emb, sig, seed = decode_prediction(torch.as_tensor(raw), batched=False)
    assert torch.allclose(emb, pixel_coordinates((8, 8)), atol=1e-5)
    assert torch.allclose(sig, torch.full_like(sig, 2.0)) and torch.allclose(seed, torch.full_like(seed, 1e-3))


def test_errors():
    with pytest.raises(ValueError, match="negative"):
        oracle_prediction(-np.ones((1, 4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="integer"):
        oracle_prediction(np.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="spatial dims"):
        oracle_prediction(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="binary"):
        oracle_prediction(np.full((2, 4, 4), 3, dtype=np.int32))
    with pytest.raises(ValueError, match="sigma"):
        oracle_prediction(np.zeros((1, 4, 4), dtype=np.int32), sigma=0.0)
    with pytest.raises(ValueError, match="spacing"):
        oracle_prediction(np.zeros((1, 4, 4), dtype=np.int32), spacing=(1.0, -1.0))
    with pytest.raises(TypeError):
        oracle_prediction([[[1]]])
