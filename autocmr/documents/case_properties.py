"""Per-case properties: what preprocessing did to one image, so a prediction can be mapped back to the
image's native space (and, for training cases, where the case came from).

Written next to each preprocessed case (``CASE.json``) and built in memory for every image at inference.
Version 1 (before this document) had the same keys without ``schema_version``; it reads unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autocmr.documents.versioning import check_version
from autocmr.errors import DocumentError

CASE_PROPERTIES_SCHEMA_VERSION = 2
LEGACY_SCHEMA_VERSION = 1
_RERUN = "re-run autocmr_plan for this dataset"
_REQUIRED = ("spacing", "target_spacing", "shape_before_crop", "bbox", "shape_after_crop", "shape_after_resampling")


@dataclass(frozen=True)
class CaseProperties:
    """Spacings and shapes are in the plans' transposed numpy order; ``bbox`` is the crop, [start, stop) per axis."""

    spacing: list[float]
    target_spacing: list[float]
    shape_before_crop: list[int]
    bbox: list[list[int]]
    shape_after_crop: list[int]
    shape_after_resampling: list[int]
    reorientation: dict[str, Any] | None = None  # canonical order <-> stored order of the input
    geometry: dict[str, Any] | None = None  # the input's header (training cases)
    case_id: str | None = None
    signature: str | None = None  # of the input files and settings: decides when to preprocess again
    classes: list[int] = field(default_factory=list)  # label values present (training cases)
    schema_version: int = CASE_PROPERTIES_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schema_version": CASE_PROPERTIES_SCHEMA_VERSION}

    @classmethod
    def from_dict(cls, data: "dict[str, Any] | CaseProperties", source: str = "case properties") -> "CaseProperties":
        if isinstance(data, CaseProperties):
            return data
        version = check_version(source, data.get("schema_version", LEGACY_SCHEMA_VERSION), kind="case properties",
                                supported=(LEGACY_SCHEMA_VERSION, CASE_PROPERTIES_SCHEMA_VERSION),
                                what_to_rerun=_RERUN)
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise DocumentError(f"{source}: case properties lack {missing}; {_RERUN}")
        return cls(list(data["spacing"]), list(data["target_spacing"]), list(data["shape_before_crop"]),
                   [list(b) for b in data["bbox"]], list(data["shape_after_crop"]),
                   list(data["shape_after_resampling"]),
                   data.get("reorientation"), data.get("geometry"), data.get("case_id"), data.get("signature"),
                   list(data.get("classes") or []), version)
