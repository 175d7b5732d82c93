"""holomed: multimodal healthcare AI -- cohorts, fusion, missing modalities, honest evaluation."""

__version__ = "0.1.0"

from holomed.cohort import Cohort, build_cohort, load_cohort, patient_splits  # noqa: E402
from holomed.encoders import register_encoder  # noqa: E402
from holomed.fusion import fusion_names, register_fusion  # noqa: E402
from holomed.modalities import ModalityData, register_modality  # noqa: E402
from holomed.model import Model, load  # noqa: E402
from holomed.spec import Spec, SpecError, load_spec, parse_spec  # noqa: E402

__all__ = [
    "Cohort",
    "ModalityData",
    "Model",
    "Spec",
    "SpecError",
    "build_cohort",
    "fusion_names",
    "load",
    "load_cohort",
    "load_spec",
    "parse_spec",
    "patient_splits",
    "register_encoder",
    "register_fusion",
    "register_modality",
]
