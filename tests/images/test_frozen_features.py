"""The frozen EfficientNet's remembered features are shared by every model of a process
(folds, seeds, strategies): a second encoder never runs the backbone on a seen image."""

from __future__ import annotations

import torch

from holomed.encoders.image import FrozenEfficientNet


def test_a_second_encoder_reuses_the_features(monkeypatch):
    a = FrozenEfficientNet(input_size=32)
    b = FrozenEfficientNet(input_size=32)
    assert a._features is b._features
    calls = []
    real = FrozenEfficientNet._extract

    def counting(self, x):
        calls.append(len(x))
        return real(self, x)

    monkeypatch.setattr(FrozenEfficientNet, "_extract", counting)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        fa = a(x)
        fb = b(x)
        b(torch.cat([x, torch.rand(1, 1, 32, 32)]))
    assert calls == [3, 1]  # the second encoder computed only the new image
    torch.testing.assert_close(fa, fb)
    assert FrozenEfficientNet(input_size=64)._features is not a._features  # other input size
