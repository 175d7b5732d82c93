"""``TextPreprocessor``: notes to tf-idf + SVD vectors, sentence-embedded chunks or
tokenized chunks (see :mod:`holomed.modalities.text`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from holomed.io.pretrained import (
    EMBED_DIM,
    MODEL_NAME,
    MODEL_PACKAGE,
    load_sentence_model,
    load_tokenizer,
    model_id,
    sentence_model_available,
)
from holomed.modalities.base import ModalityData, Preprocessor
from holomed.modalities.text.chunks import PROBE, chunk_words, embed_chunks, tokenize_chunks
from holomed.modalities.text.reading import note_texts

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default
METHODS = ("tfidf", "sentence", "tokens")
MAX_POSITIONS = 512  # the model's position embeddings


class TextPreprocessor(Preprocessor):
    """Notes -> tf-idf + SVD vectors ``(n, dim)``, sentence-embedded chunks
    ``(n, max_chunks, 384)``, or tokenized chunks ``(n, max_chunks, 2, max_len)`` (see
    the module docstring).

    ``method``: ``tfidf``, ``sentence`` or ``tokens`` (``None``: ``sentence`` when its
    package is installed, else ``tfidf``). tf-idf: ``dim`` SVD components (fewer when
    the training notes cannot support them), ``ngram_max`` (word n-grams 1..ngram_max),
    ``min_df`` (minimum training patients per term, default 5: a term seen in fewer
    patients can identify one, and the vocabulary is stored in the bundle; the bag of
    word pieces of ``tokens`` keeps the same floor), ``max_features``, ``stop_words``
    (``None`` or ``english``), ``sublinear_tf``. Sentence and tokens: ``chunk_words``,
    ``max_chunks``. Sentence: ``batch_size``, ``cache_dir`` (a folder for the on-disk
    embedding cache). Tokens: ``max_len`` (WordPiece tokens per chunk, [CLS] and [SEP]
    included, at most 512), ``bag_size`` (word pieces in the bag of
    :meth:`flat_features`).
    """

    kind = "text"

    def __init__(
        self,
        method: str | None = None,
        dim: int = 64,
        ngram_max: int = 2,
        min_df: int = 5,
        max_features: int | None = 20000,
        stop_words: str | None = None,
        sublinear_tf: bool = False,
        chunk_words: int = 128,
        max_chunks: int = 8,
        batch_size: int = 32,
        cache_dir: str | None = None,
        max_len: int = 256,
        bag_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.method = method
        self.dim = dim
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features
        self.stop_words = stop_words
        self.sublinear_tf = sublinear_tf
        self.chunk_words = chunk_words
        self.max_chunks = max_chunks
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.max_len = max_len
        self.bag_size = bag_size
        self.seed = seed

    @property
    def differentiable(self) -> bool:
        """False for ``tokens``: token ids are not a continuous input, so gradient
        attributions go through the encoder's embedding layer instead
        (:mod:`holomed.explain.features`)."""
        return getattr(self, "method_", None) != "tokens"

    # -- fit ------------------------------------------------------------------------
    def _resolve_method(self) -> str:
        m = self.method or ("sentence" if sentence_model_available() else "tfidf")
        if m not in METHODS:
            raise ValueError(
                f"preprocessing.method {m!r} unknown; expected one of {', '.join(METHODS)}"
            )
        return m

    def fit(self, data: ModalityData) -> TextPreprocessor:
        texts = note_texts(data)
        docs = [str(texts[i]) for i in np.nonzero(data.present)[0]]
        if not docs:
            raise ValueError("no training patient has a note")
        self.method_ = self._resolve_method()
        if self.method_ in ("sentence", "tokens") and (self.chunk_words < 1 or self.max_chunks < 1):
            raise ValueError("chunk_words and max_chunks must be >= 1")
        if self.method_ == "sentence":
            load_sentence_model()  # fail early, with the install hint, when it is missing
            self.probe_ = embed_chunks([PROBE], self.batch_size, self.cache_dir)[0]
            self.feature_names_out_ = [f"emb{i}" for i in range(EMBED_DIM)]
            return self
        if self.method_ == "tokens":
            self._fit_tokens(docs)
            return self
        self._fit_tfidf(docs)
        return self

    def _fit_tokens(self, docs: list[str]) -> None:
        if not 3 <= int(self.max_len) <= MAX_POSITIONS:
            raise ValueError(f"max_len must be within 3..{MAX_POSITIONS}; got {self.max_len}")
        if int(self.bag_size) < 1:
            raise ValueError(f"bag_size must be >= 1; got {self.bag_size}")
        tok = load_tokenizer()  # fail early, with the install hint, when it is missing
        self.model_id_ = model_id()
        self.probe_ids_ = tokenize_chunks([PROBE], 32)[0][0]
        self.feature_names_out_ = [f"chunk{i}" for i in range(int(self.max_chunks))]
        chunks = [c for d in docs for c in self._chunks(d)]
        full = tok(chunks, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        # training chunks longer than max_len lose their tail: said, not silent
        self.truncated_ = round(float(np.mean([len(t) > int(self.max_len) for t in full])), 4)
        x = self._token_array(docs)
        ids, real = self._real_tokens(x)
        df = np.zeros(len(tok), np.int64)  # document frequency over training patients
        for row_ids, row_real in zip(ids, real, strict=True):
            df[np.unique(row_ids[row_real])] += 1
        order = np.argsort(-df, kind="stable")
        keep = order[: int(self.bag_size)]
        floor = max(1, min(int(self.min_df), len(docs)))  # privacy: seen in >= k patients
        self.bag_ids_ = np.sort(keep[df[keep] >= floor]).astype(np.int64)
        self.bag_tokens_ = [str(t) for t in tok.convert_ids_to_tokens(self.bag_ids_.tolist())]

    def _chunks(self, doc: str) -> list[str]:
        return chunk_words(doc, int(self.chunk_words), int(self.max_chunks))

    def _token_array(self, docs: list[str]) -> np.ndarray:
        """``(len(docs), max_chunks, 2, max_len)`` float32: ids, then masks; zero rows
        pad short notes."""
        t, L = int(self.max_chunks), int(self.max_len)
        chunks = [self._chunks(d) for d in docs]
        ids, mask = tokenize_chunks([c for cs in chunks for c in cs], L)
        out = np.zeros((len(docs), t, 2, L), np.float32)  # ids < 2**24: exact in float32
        pos = 0
        for r, cs in enumerate(chunks):
            out[r, : len(cs), 0] = ids[pos : pos + len(cs)]
            out[r, : len(cs), 1] = mask[pos : pos + len(cs)]
            pos += len(cs)
        return out

    def _real_tokens(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per patient, flattened ids ``(n, T*L)`` and which of them are real word
        pieces (attended to, not [CLS]/[SEP]/[PAD]/[UNK]/[MASK])."""
        filled = np.nan_to_num(x)
        ids = filled[:, :, 0].reshape(len(x), -1).astype(np.int64)
        real = filled[:, :, 1].reshape(len(x), -1) > 0.5
        special = load_tokenizer().all_special_ids
        return ids, real & ~np.isin(ids, special)

    def _vectorizer_options(self) -> dict[str, Any]:
        return {
            "ngram_range": (1, int(self.ngram_max)),
            "lowercase": True,
            "token_pattern": TOKEN_PATTERN,
            "stop_words": self.stop_words,
            "dtype": np.float64,
        }

    def _fit_tfidf(self, docs: list[str]) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(
            min_df=min(int(self.min_df), len(docs)),
            max_features=self.max_features,
            sublinear_tf=self.sublinear_tf,
            **self._vectorizer_options(),
        )
        vec.fit(docs)  # raises ValueError when no term is left
        self.vocabulary_ = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
        self.idf_ = vec.idf_.astype(np.float64)
        x = self.tfidf(docs)
        k = min(int(self.dim), x.shape[1] - 1, len(docs) - 1)
        if k < 1:
            raise ValueError(
                f"tf-idf: {len(docs)} training notes and {x.shape[1]} terms cannot make an SVD "
                "component; lower min_df or provide more notes"
            )
        svd = TruncatedSVD(k, algorithm="randomized", n_iter=7, random_state=self.seed)
        svd.fit(x)
        self.components_ = svd.components_.astype(np.float64)
        z = np.asarray(x @ self.components_.T)
        self.loc_ = z.mean(0)
        sd = z.std(0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        self.feature_names_out_ = [f"svd{i}" for i in range(k)]

    # -- transform ------------------------------------------------------------------
    def tfidf(self, docs: list[str]):
        """tf-idf rows (sparse, ``(len(docs), len(vocabulary_))``) from the stored
        vocabulary and idf: scikit-learn's TfidfVectorizer formula (raw or sublinear tf
        times idf, rows l2-normalised), without a fitted estimator."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        cv = CountVectorizer(vocabulary=self.vocabulary_, **self._vectorizer_options())
        x = cv.transform(docs).tocsr().astype(np.float64)
        if self.sublinear_tf:
            np.log(x.data, x.data)
            x.data += 1.0
        x = x.multiply(self.idf_[None, :]).tocsr()
        return normalize(x, norm="l2", copy=False)

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.method_ == "sentence":
            return (int(self.max_chunks), EMBED_DIM)
        if self.method_ == "tokens":
            return (int(self.max_chunks), 2, int(self.max_len))
        return (len(self.feature_names_out_),)

    def transform(self, data: ModalityData) -> np.ndarray:
        n = len(data)
        out = np.full((n, *self.out_shape), np.nan, np.float32)
        rows = np.nonzero(data.present)[0]
        if not len(rows):
            return out
        texts = note_texts(data)
        docs = [str(texts[i]) for i in rows]
        if self.method_ == "tfidf":
            z = np.asarray(self.tfidf(docs) @ self.components_.T)
            out[rows] = ((z - self.loc_) / self.scale_).astype(np.float32)
            return out
        if self.method_ == "tokens":
            self._check_tokenizer()
            out[rows] = self._token_array(docs)
            return out
        self._check_probe()
        chunks = [chunk_words(d, int(self.chunk_words), int(self.max_chunks)) for d in docs]
        flat = [c for cs in chunks for c in cs]
        emb = embed_chunks(flat, int(self.batch_size), self.cache_dir) if flat else None
        out[rows] = 0.0
        pos = 0
        for r, cs in zip(rows, chunks, strict=True):
            out[r, : len(cs)] = emb[pos : pos + len(cs)]
            pos += len(cs)
        return out

    def _check_probe(self) -> None:
        """A saved model must see the embeddings it was trained on: the stored embedding
        of a fixed sentence is compared once with what the installed model gives."""
        if getattr(self, "_probe_ok", False):
            return
        now = embed_chunks([PROBE], int(self.batch_size), self.cache_dir)[0]
        if not np.allclose(now, self.probe_, atol=1e-4):
            raise ValueError(
                f"the installed sentence model ({MODEL_PACKAGE}) embeds differently from the "
                "one this preprocessor was fitted with; refit the model"
            )
        self._probe_ok = True

    def _check_tokenizer(self) -> None:
        """The same for ``tokens``: the stored ids of a fixed sentence against what the
        installed tokenizer gives (the encoder checks the weights, see
        :mod:`holomed.encoders.text`)."""
        if getattr(self, "_probe_ok", False):
            return
        now = tokenize_chunks([PROBE], len(self.probe_ids_))[0][0]
        if not np.array_equal(now, self.probe_ids_):
            raise ValueError(
                f"the installed tokenizer ({MODEL_PACKAGE}) splits text differently from the "
                "one this preprocessor was fitted with; refit the model"
            )
        self._probe_ok = True

    def flat_features(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """tf-idf: the SVD features themselves. Sentence: the mean of the non-empty
        chunk embeddings ``(n, 384)``. Tokens: a bag of word pieces ``(n, bag_size)``,
        the share of the patient's word pieces that are each of the ``bag_size`` pieces
        found in most training patients (names: the pieces, e.g. ``fever``, ``##itis``).
        NaN for absent patients."""
        if x.ndim == 2:
            return x, list(self.feature_names_out_)
        if x.ndim == 4:
            return self._bag(x), list(self.bag_tokens_)
        filled = np.nan_to_num(x)
        used = np.abs(filled).sum(-1) > 0  # (n, T) non-padding chunks
        cnt = used.sum(1, keepdims=True)
        mean = np.divide(
            (filled * used[..., None]).sum(1),
            cnt,
            out=np.zeros((len(x), x.shape[-1]), np.float32),
            where=cnt > 0,
        ).astype(np.float32)
        mean[np.isnan(x).all(axis=(1, 2))] = np.nan
        return mean, list(self.feature_names_out_)

    def _bag(self, x: np.ndarray) -> np.ndarray:
        ids, real = self._real_tokens(x)
        lookup = np.full(int(self.bag_ids_.max(initial=0)) + 1, -1, np.int64)
        lookup[self.bag_ids_] = np.arange(len(self.bag_ids_))
        slot = np.where(ids < len(lookup), lookup[np.minimum(ids, len(lookup) - 1)], -1)
        hit = real & (slot >= 0)
        out = np.zeros((len(x), len(self.bag_ids_)), np.float32)
        np.add.at(out, (np.nonzero(hit)[0], slot[hit]), 1.0)
        out /= np.maximum(real.sum(1, keepdims=True), 1)
        out[np.isnan(x).all(axis=(1, 2, 3))] = np.nan
        return out

    def top_words(self, k: int = 10) -> dict[str, list[tuple[str, float]]]:
        """tf-idf only: per SVD component (``svd0`` ...), the ``k`` terms with the
        largest positive loadings and their weights — what a high value of that feature
        means, for explanations."""
        if self.method_ != "tfidf":
            raise ValueError("top_words applies to the 'tfidf' method only")
        out = {}
        for name, comp in zip(self.feature_names_out_, self.components_, strict=True):
            idx = np.argsort(-comp, kind="stable")[:k]
            out[name] = [(self.vocabulary_[j], round(float(comp[j]), 6)) for j in idx]
        return out

    # -- state ----------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "dim": self.dim,
            "ngram_max": self.ngram_max,
            "min_df": self.min_df,
            "max_features": self.max_features,
            "stop_words": self.stop_words,
            "sublinear_tf": self.sublinear_tf,
            "chunk_words": self.chunk_words,
            "max_chunks": self.max_chunks,
            "batch_size": self.batch_size,
            "cache_dir": self.cache_dir,
            "max_len": self.max_len,
            "bag_size": self.bag_size,
            "seed": self.seed,
        }

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"params": self._params(), "method_": self.method_}
        if self.method_ == "sentence":
            meta["model"] = MODEL_NAME
            return meta, {"probe": self.probe_}
        if self.method_ == "tokens":
            meta.update(
                model=MODEL_NAME,
                model_id=self.model_id_,
                bag_tokens=list(self.bag_tokens_),
                truncated=self.truncated_,
            )
            return meta, {"probe_ids": self.probe_ids_, "bag_ids": self.bag_ids_}
        meta["vocabulary"] = list(self.vocabulary_)
        arrays = {
            "idf": self.idf_,
            "components": self.components_,
            "loc": self.loc_,
            "scale": self.scale_,
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TextPreprocessor:
        p = cls(**meta["params"])
        p.method_ = meta["method_"]
        if p.method_ == "sentence":
            if meta.get("model") != MODEL_NAME:
                raise ValueError(f"saved with sentence model {meta.get('model')!r}")
            p.probe_ = np.asarray(arrays["probe"], np.float32)
            p.feature_names_out_ = [f"emb{i}" for i in range(EMBED_DIM)]
            return p
        if p.method_ == "tokens":
            if meta.get("model") != MODEL_NAME:
                raise ValueError(
                    f"text modality saved with tokenizer {meta.get('model')!r}; this holomed "
                    f"tokenizes with {MODEL_NAME!r}"
                )
            p.model_id_ = str(meta.get("model_id", MODEL_NAME))
            p.bag_tokens_ = list(meta["bag_tokens"])
            p.truncated_ = float(meta.get("truncated", 0.0))
            p.probe_ids_ = np.asarray(arrays["probe_ids"], np.int64)
            p.bag_ids_ = np.asarray(arrays["bag_ids"], np.int64)
            p.feature_names_out_ = [f"chunk{i}" for i in range(int(p.max_chunks))]
            return p
        p.vocabulary_ = list(meta["vocabulary"])
        p.idf_ = np.asarray(arrays["idf"], np.float64)
        p.components_ = np.asarray(arrays["components"], np.float64)
        p.loc_, p.scale_ = np.asarray(arrays["loc"]), np.asarray(arrays["scale"])
        p.feature_names_out_ = [f"svd{i}" for i in range(len(p.components_))]
        return p
