"""Notes cut into word chunks, embedded by the frozen sentence model (cached in memory and
optionally on disk) or tokenized by its WordPiece tokenizer (see
:mod:`holomed.modalities.text`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from holomed.io.pretrained import EMBED_DIM, load_sentence_model, load_tokenizer, model_id

PROBE = "The patient was admitted with fever and cough."

_CACHE: dict[str, np.ndarray] = {}


def _encode(chunks: list[str], batch_size: int) -> np.ndarray:
    """One call of the sentence model: (len(chunks), 384) float32."""
    model = load_sentence_model()
    out = model.encode(
        chunks, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(out, dtype=np.float32).reshape(len(chunks), EMBED_DIM)


def chunk_key(chunk: str) -> str:
    """sha256 of the model id and the chunk's text."""
    return hashlib.sha256(f"{model_id()}\0{chunk}".encode()).hexdigest()


def embed_chunks(chunks: list[str], batch_size: int = 32, cache_dir: str | None = None):
    """(len(chunks), 384) embeddings; cached ones (memory, then ``cache_dir``) are not
    recomputed, the others are embedded in one model call and cached."""
    keys = [chunk_key(c) for c in chunks]
    out = np.zeros((len(chunks), EMBED_DIM), np.float32)
    todo: dict[str, str] = {}
    folder = Path(cache_dir) if cache_dir else None
    for i, k in enumerate(keys):
        if k in _CACHE:
            out[i] = _CACHE[k]
            continue
        f = folder / k[:2] / f"{k}.npy" if folder else None
        if f is not None and f.exists():
            _CACHE[k] = np.load(f, allow_pickle=False).astype(np.float32)
            out[i] = _CACHE[k]
            continue
        todo.setdefault(k, chunks[i])
    if todo:
        emb = _encode(list(todo.values()), batch_size)
        for k, e in zip(todo, emb, strict=True):
            _CACHE[k] = e
            if folder is not None:
                (folder / k[:2]).mkdir(parents=True, exist_ok=True)
                np.save(folder / k[:2] / f"{k}.npy", e, allow_pickle=False)
        for i, k in enumerate(keys):
            if k in todo:
                out[i] = _CACHE[k]
    return out


def chunk_words(text: str, size: int, max_chunks: int) -> list[str]:
    """Whitespace words in consecutive chunks of at most ``size`` words; the first
    ``max_chunks`` chunks."""
    words = str(text).split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)][:max_chunks]


def tokenize_chunks(chunks: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """WordPiece ids and attention masks, both ``(len(chunks), max_len)`` int64:
    ``[CLS] ... [SEP]``, truncated to ``max_len`` tokens and right-padded with
    ``[PAD]`` (id 0, mask 0) -- what the sentence model itself feeds its transformer."""
    if not chunks:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    enc = load_tokenizer()(
        list(chunks),
        padding="max_length",
        truncation=True,
        max_length=int(max_len),
        return_attention_mask=True,
        return_token_type_ids=False,
    )
    ids = np.asarray(enc["input_ids"], np.int64).reshape(len(chunks), max_len)
    mask = np.asarray(enc["attention_mask"], np.int64).reshape(len(chunks), max_len)
    return ids, mask
