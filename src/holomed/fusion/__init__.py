"""Fusion strategies, one module each, found by name in one registry."""

from holomed.fusion import attention, early, gradual, guided, hybrid, joint, late  # noqa: E402,F401
from holomed.fusion.base import (
    FUSIONS,
    IMPUTATIONS,
    Fusion,
    Imputer,
    fusion_names,
    get_fusion,
    register_fusion,
)

DESCRIPTIONS = {
    "early": "inputs (+ missing indicators) joined before one model",
    "late": "one predictor per modality, combined over the present ones",
    "joint": "embeddings joined at one level, trained end to end",
    "gradual": "fused step by step at several depths",
    "guided": "one modality conditions another's features (FiLM / cross-attention)",
    "attention": "modality tokens through attention with a padding mask",
    "hybrid": "early inside groups of modalities, late across groups",
}

__all__ = [
    "DESCRIPTIONS",
    "FUSIONS",
    "IMPUTATIONS",
    "Fusion",
    "Imputer",
    "fusion_names",
    "get_fusion",
    "register_fusion",
]
