"""(being written)"""

from typing import Any


def validate_ehr(section: dict[str, Any]) -> dict[str, Any]:
    return section


def ehr_frames(spec: Any) -> Any:
    raise NotImplementedError
