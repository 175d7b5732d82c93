"""Training-only augmentation of the image encoders (``augment``): random per image in
training mode, absent in eval mode (the same function as the encoder without it), the
set layout left alone (presence channel, padding slots), every option checked, and the
option reaching the encoder from a spec."""

from __future__ import annotations

import pytest
import torch

import holomed.encoders.image  # noqa: F401  (registers the image encoders)
from holomed.encoders import create_encoder
from holomed.encoders.image import AUGMENT_KEYS, RandomAugment
from holomed.spec import parse_spec

FULL = {"flip": True, "rotate": 10, "shift": 0.1, "scale": 0.1, "intensity": 0.1}
SPATIAL = {"cnn2d": (16, 16), "cnn3d": (8, 8, 8)}


def sets(name: str, seed: int = 0) -> torch.Tensor:
    """(3, 3, 2, *spatial): patient 0 has 2 images (slot 2 padding), patient 1 has 3,
    patient 2 none."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 2, *SPATIAL[name], generator=g)
    x[:, :, 1] = 1.0
    x[0, 2] = 0.0
    x[2] = 0.0
    return x


@pytest.mark.parametrize("name", ["cnn2d", "cnn3d"])
def test_train_mode_augments_and_eval_mode_is_the_plain_encoder(name):
    torch.manual_seed(0)
    aug = create_encoder(name, 2, hidden=8, augment=FULL)
    plain = create_encoder(name, 2, hidden=8)
    plain.load_state_dict(aug.state_dict())  # augmentation holds no weights
    x = sets(name)
    aug.train()
    a, b = aug(x).embedding, aug(x).embedding
    assert not torch.allclose(a[:2], b[:2])  # a new draw per call
    assert (a[2] == 0).all() and (b[2] == 0).all()  # no image stays no image
    aug.eval()
    plain.eval()
    e1, e2 = aug(x).embedding, aug(x).embedding
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    torch.testing.assert_close(e1, plain(x).embedding, rtol=0, atol=0)
    with torch.no_grad():  # predict / explain run in eval mode
        torch.testing.assert_close(aug(x).embedding, e1, rtol=0, atol=0)
    # seeded: a training step repeats
    aug.train()
    torch.manual_seed(5)
    c = aug(x).embedding
    torch.manual_seed(5)
    torch.testing.assert_close(aug(x).embedding, c)


@pytest.mark.parametrize("name", ["cnn2d", "cnn3d"])
def test_presence_channel_and_padding_slots_are_left_alone(name):
    x = sets(name)
    x[0, 2, 0] = 7.0  # a padding slot's pixels (never read, never changed)
    out = RandomAugment(len(SPATIAL[name]), **FULL)(x)
    torch.testing.assert_close(out[:, :, -1], x[:, :, -1], rtol=0, atol=0)
    torch.testing.assert_close(out[0, 2], x[0, 2], rtol=0, atol=0)
    torch.testing.assert_close(out[2], x[2], rtol=0, atol=0)
    for b, m in [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]:
        assert not torch.allclose(out[b, m, 0], x[b, m, 0])  # real images changed
    # inside the encoder: only the 5 real images reach the backbone
    enc = create_encoder(name, 2, hidden=8, augment=FULL).train()
    seen = []
    enc.backbone.register_forward_hook(lambda mod, inp, res: seen.append(inp[0].shape))
    enc(x)
    assert seen == [torch.Size([5, 1, *SPATIAL[name]])]
    assert enc.last_weights_[0, 2] == 0 and (enc.last_weights_[2] == 0).all()


def test_each_image_gets_its_own_draw_and_options_do_what_they_say():
    img = torch.randn(1, 1, 12, 10)
    batch = img.repeat(6, 1, 1, 1)
    out = RandomAugment(2, rotate=10, shift=0.1).images(batch)
    assert len({round(float(o.sum()), 4) for o in out}) == 6
    # flip only: each image is itself or its mirror along the chosen axis (W = 1)
    g = torch.Generator().manual_seed(0)
    out = RandomAugment(2, flip=[1]).images(batch, g)
    mirrored = [torch.allclose(o, img[0].flip(-1), atol=1e-5) for o in out]
    same = [torch.allclose(o, img[0], atol=1e-5) for o in out]
    assert all(m or s for m, s in zip(mirrored, same, strict=True)) and any(mirrored)
    # intensity only: a gain in [0.8, 1.2] and an offset in [-0.2, 0.2], no resampling
    out = RandomAugment(2, intensity=0.2).images(batch, g)
    for o in out:
        flat = torch.stack([img.flatten(), torch.ones(img.numel())], 1)
        gain, off = torch.linalg.lstsq(flat, o.flatten()[:, None]).solution.flatten()
        assert 0.8 - 1e-4 <= gain <= 1.2 + 1e-4 and abs(off) <= 0.2 + 1e-4
    # shift only: a bright dot moves by at most 10 % of each axis
    dot = torch.zeros(8, 1, 20, 30)
    dot[:, :, 10, 15] = 1.0
    out = RandomAugment(2, shift=0.1).images(dot, g)
    for o in out:
        r, c = divmod(int(o[0].argmax()), 30)
        assert abs(r - 10) <= 2 + 1 and abs(c - 15) <= 3 + 1
    # 3D volumes of any shape
    vol = torch.randn(2, 1, 6, 8, 10)
    assert RandomAugment(3, **FULL).images(vol).shape == vol.shape


def test_unknown_or_bad_options_raise_naming_them():
    with pytest.raises(ValueError, match="'rotation'"):
        create_encoder("cnn2d", 2, augment={"rotation": 10})
    with pytest.raises(ValueError, match=r"augment\.flip.*out of range"):
        create_encoder("cnn2d", 2, augment={"flip": [2]})
    with pytest.raises(ValueError, match=r"augment\.shift"):
        create_encoder("cnn3d", 2, augment={"shift": -0.1})
    with pytest.raises(ValueError, match=r"augment\.scale"):
        create_encoder("cnn3d", 2, augment={"scale": "big"})
    with pytest.raises(ValueError, match="augment"):
        create_encoder("cnn2d", 2, augment="yes")
    enc = create_encoder("cnn2d", 2)
    with pytest.raises(ValueError, match="'warp'"):
        enc.augment = {"warp": 1}
    assert set(AUGMENT_KEYS) == {"flip", "rotate", "shift", "scale", "intensity"}
    # off: false, null, {} or all zeros; true: the small defaults
    for off in (False, None, {}, {"rotate": 0, "flip": False}):
        assert create_encoder("cnn2d", 2, augment=off).augmenter is None
    on = create_encoder("cnn2d", 2, augment=True).augmenter
    assert on.rotate == 5 and on.shift == 0.05 and on.scale == 0.05 and not on.flip


def test_the_option_flows_from_the_spec():
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "ct",
                    "kind": "image",
                    "encoder": {
                        "name": "cnn3d",
                        "options": {"hidden": 4, "augment": {"flip": [0, 2], "rotate": 8}},
                    },
                }
            ],
            "target": {"column": "y"},
        }
    )
    m = spec.modalities[0]
    enc = create_encoder(m.encoder.name, 2, **dict(m.encoder.options))  # as the model does
    assert enc.augmenter.flip == [0, 2] and enc.augmenter.rotate == 8.0


def test_efficientnet_takes_the_option_and_skips_its_feature_memory():
    import efficientnet_lite_pytorch  # noqa: F401

    enc = create_encoder("efficientnet_lite0", 2, hidden=4, augment={"shift": 0.1})
    assert enc.backbone.feature_cache == 0 and enc.augmenter.shift == 0.1
    x = torch.randn(2, 1, 2, 32, 32)
    x[:, :, 1] = 1
    enc.eval()
    torch.testing.assert_close(enc(x).embedding, enc(x).embedding)
    with pytest.raises(ValueError, match="'zoom'"):
        create_encoder("efficientnet_lite0", 2, augment={"zoom": 0.1})
