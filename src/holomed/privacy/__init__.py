"""De-identification and pseudonymisation (see :mod:`holomed.privacy.keys` for the one
key that ties a patient's pseudonym and date shift together across modalities)."""
