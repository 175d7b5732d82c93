"""Spatial tokens of the CNN image encoders: one token per grid cell of every real image,
zero on padding slots, the embedding unchanged; cross-attention fusion reads them."""

from __future__ import annotations

import pytest
import torch

import holomed.encoders.image  # noqa: F401  (registers the image encoders)
from holomed.encoders import create_encoder
from holomed.encoders.base import Encoded
from holomed.fusion.guided import GuidedFusion


@pytest.mark.parametrize("name,shape", [("cnn2d", (16, 16)), ("cnn3d", (8, 8, 8))])
def test_spatial_tokens_shape_padding_and_same_embedding(name, shape):
    torch.manual_seed(0)
    x = torch.randn(3, 2, 2, *shape)
    x[:, :, -1] = 1.0
    x[1, 1, -1] = 0.0  # patient 1 has one real image
    plain = create_encoder(name, 2, hidden=8, channels=[4, 8]).eval()
    grid = create_encoder(name, 2, hidden=8, channels=[4, 8], spatial=2).eval()
    grid.load_state_dict(plain.state_dict())
    with torch.no_grad():
        a, b = plain(x), grid(x)
    cells = 2 ** len(shape)
    assert b.tokens.shape == (3, 2 * cells, 8)
    torch.testing.assert_close(a.embedding, b.embedding)
    assert (b.tokens[1, cells:] == 0).all() and (b.tokens[1, :cells] != 0).any()
    # the grid tokens differ from cell to cell: they carry where, not only what
    assert not torch.allclose(b.tokens[0, 0], b.tokens[0, 1])


def test_cross_attention_reads_the_regions():
    torch.manual_seed(0)
    enc = create_encoder("cnn2d", 2, hidden=8, channels=[4], spatial=3)
    x = torch.randn(4, 1, 2, 12, 12)
    x[:, :, -1] = 1.0
    # the image guides: the clinical token queries the image's 9 regions
    fusion = GuidedFusion({"clin": 8, "img": 8}, 1, hidden=8, guide="img", mode="cross_attention")
    fusion.eval()  # no attention dropout
    present = {"clin": torch.ones(4, dtype=torch.bool), "img": torch.ones(4, dtype=torch.bool)}
    clin = Encoded(torch.randn(4, 8), None)
    out = fusion({"clin": clin, "img": enc(x)}, present)
    assert out.shape[0] == 4 and torch.isfinite(out).all()
    w = fusion.guide_attention[0]
    assert w.shape == (4, 9)  # one weight per region of the image
    torch.testing.assert_close(w.sum(1), torch.ones(4))


def test_bad_grid_is_refused():
    with pytest.raises(ValueError, match="spatial"):
        create_encoder("cnn2d", 2, spatial=0)


@pytest.mark.parametrize("fusion_name", ["attention", "guided"])
@pytest.mark.parametrize("spatial", [None, 2])
def test_padding_slots_do_not_change_the_output(fusion_name, spatial):
    """The same real image with or without empty set slots after it: same fused output
    (padding tokens are masked in attention and cross-attention)."""
    from holomed.fusion.attention import AttentionFusion

    torch.manual_seed(0)
    enc = create_encoder("cnn2d", 2, hidden=8, channels=[4], spatial=spatial).eval()
    one = torch.randn(3, 1, 2, 12, 12)
    one[:, :, -1] = 1.0
    padded = torch.cat([one, torch.zeros(3, 2, 2, 12, 12)], 1)  # 2 empty slots
    dims = {"clin": 8, "img": 8}
    if fusion_name == "attention":
        fusion = AttentionFusion(dims, 1, hidden=8)
    else:
        fusion = GuidedFusion(dims, 1, hidden=8, guide="img", mode="cross_attention")
    fusion.eval()
    present = {"clin": torch.ones(3, dtype=torch.bool), "img": torch.ones(3, dtype=torch.bool)}
    clin = Encoded(torch.randn(3, 8), None)
    with torch.no_grad():
        a = fusion({"clin": clin, "img": enc(one)}, present)
        b = fusion({"clin": clin, "img": enc(padded)}, present)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
