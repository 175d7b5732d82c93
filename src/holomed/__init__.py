"""holomed: multimodal healthcare AI -- cohorts, fusion, missing modalities, honest evaluation."""

__version__ = "0.1.0"
